//! A host's iptables and ip6tables as a test reads and edits them: one chain's rules as `-S`
//! prints them, the chains of a table, and a rule deleted by its place in the listing (the way an
//! operator or a firewall reload would take it away).

use crate::Host;

impl Host {
    /// `<command> -w -t <table> -S <chain>`'s rules: the `-A <chain> …` lines, in order; none
    /// when the chain does not exist. `command` is `iptables` or `ip6tables`.
    pub fn firewall_rules(&self, command: &str, table: &str, chain: &str) -> Vec<String> {
        let out = self.exec(&[command, "-w", "-t", table, "-S", chain]);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect()
    }

    /// The chains of `<command> -w -t <table> -S`, built-in (`-P`) and user-defined (`-N`).
    pub fn firewall_chains(&self, command: &str, table: &str) -> Vec<String> {
        let out = self.exec(&[command, "-w", "-t", table, "-S"]);
        assert!(out.status.success(), "{command} -t {table} -S in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let chain = |line: &str| line.split(' ').nth(1).map(str::to_string);
        text.lines().filter(|l| l.starts_with("-P ") || l.starts_with("-N ")).filter_map(chain).collect()
    }

    /// Deletes `rule` (an `-A <chain> …` line as `firewall_rules` gives it) by its number in
    /// its chain: `<command> -w -t <table> -D <chain> <number>`. Panics if it is not there.
    pub fn delete_firewall_rule(&self, command: &str, table: &str, rule: &str) {
        let chain = rule.split(' ').nth(1).unwrap_or_else(|| panic!("not an -A line: {rule}"));
        let rules = self.firewall_rules(command, table, chain);
        let number = rules.iter().position(|r| r == rule).unwrap_or_else(|| panic!("{rule} is not in {rules:?}")) + 1;
        self.exec_ok(&[command, "-w", "-t", table, "-D", chain, &number.to_string()]);
    }
}
