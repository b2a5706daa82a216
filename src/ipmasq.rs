//! iptables rules for `--ip-masq` (nat) and `--iptables-forward-rules` (filter), with flanneld's
//! chains and comments, kept in place by a periodic check.
//!
//! Each rule set is one chain of ours plus the jumps into it. When the chain differs from what it
//! should be in any way, it is flushed and refilled in order, because order matters (RETURNs
//! before MASQUERADE) and a partial repair could leave it wrong.
//!
//! Docker 28 and later drop traffic from other interfaces addressed straight to a container: in
//! filter FORWARD (its DOCKER-FORWARD chain, jumped to from the top) and in raw PREROUTING (one
//! appended DROP per container). So the overlay's accepts are also jumped to from DOCKER-USER,
//! which Docker jumps to first and leaves to other programs, and from the top of raw PREROUTING.
//!
//! Every listing is `iptables -S`, one per table and check, which never resolves names: `-L`
//! without `-n` asks the resolver for a name per address, and made one check wait minutes on an
//! unreachable DNS server.

use std::time::Duration;

use ipnetwork::Ipv4Network;
use thiserror::Error;
use tokio::sync::watch;

use crate::lease::Lease;

#[derive(Debug, Error)]
#[error("iptables {op} failed: {message}")]
pub struct IpTablesError {
    pub op: String,
    pub message: String,
}

/// One chain of ours, the jump that sends traffic into it, and its rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub table: &'static str,
    /// The chains that jump to ours, each ahead of any rule there that drops or returns;
    /// one that does not exist (DOCKER-USER before docker starts) is created.
    pub hooks: &'static [&'static str],
    pub chain: &'static str,
    pub jump: String,
    pub rules: Vec<String>,
}

const MASQ_COMMENT: &str = "-m comment --comment \"flanneld masq\"";
const FORWARD_COMMENT: &str = "-m comment --comment \"flanneld forward\"";

/// flanneld's masquerade rules for Network `n` and our subnet `p`: traffic inside the overlay
/// keeps its addresses; traffic leaving it is masqueraded (except multicast).
pub fn masquerade_rules(n: Ipv4Network, p: Ipv4Network) -> RuleSet {
    let c = MASQ_COMMENT;
    RuleSet {
        table: "nat",
        hooks: &["POSTROUTING"],
        chain: "FLANNEL-POSTRTG",
        jump: format!("{c} -j FLANNEL-POSTRTG"),
        rules: vec![
            format!("-s {p} -d {n} {c} -j RETURN"),
            format!("-s {n} -d {p} {c} -j RETURN"),
            format!("! -s {n} -d {p} {c} -j RETURN"),
            format!("-s {n} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully"),
            format!("! -s {n} -d {n} {c} -j MASQUERADE --random-fully"),
        ],
    }
}

/// flanneld's FORWARD rules: accept overlay traffic even where the policy is DROP (docker sets
/// it), or where Docker 28's DOCKER-FORWARD chain drops it (hence the jump from DOCKER-USER).
pub fn forward_rules(n: Ipv4Network) -> RuleSet {
    let c = FORWARD_COMMENT;
    RuleSet {
        table: "filter",
        hooks: &["FORWARD", "DOCKER-USER"],
        chain: "FLANNEL-FWD",
        jump: format!("{c} -j FLANNEL-FWD"),
        rules: vec![format!("-s {n} {c} -j ACCEPT"), format!("-d {n} {c} -j ACCEPT")],
    }
}

/// Accepts, in the raw table, traffic from the overlay Network `n` to our subnet `p` before
/// Docker 28's per-container `-d <container> ! -i docker0 -j DROP` (appended to raw PREROUTING)
/// sees it. Only the overlay's sources: direct access from elsewhere stays dropped.
pub fn direct_routing_rules(n: Ipv4Network, p: Ipv4Network) -> RuleSet {
    let c = FORWARD_COMMENT;
    RuleSet {
        table: "raw",
        hooks: &["PREROUTING"],
        chain: "FLANNEL-PRERTG",
        jump: format!("{c} -j FLANNEL-PRERTG"),
        rules: vec![format!("-s {n} -d {p} {c} -j ACCEPT")],
    }
}

fn failed(op: impl Into<String>) -> impl FnOnce(Box<dyn std::error::Error>) -> IpTablesError {
    let op = op.into();
    move |e| IpTablesError { op, message: e.to_string() }
}

/// One table as `iptables -t <table> -S` prints it: the chains that exist and each one's rules
/// (without `-A <chain> `), in order. `-S` never resolves names, so the check never waits on DNS.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TableListing {
    chains: std::collections::BTreeMap<String, Vec<String>>,
}

impl TableListing {
    /// Parses `-S` output; `None` when it lacks the built-in chains' `-P` lines, which every
    /// successful listing has (the crate does not report a failed listing otherwise).
    fn parse(lines: &[String]) -> Option<Self> {
        let mut listing = TableListing::default();
        let mut policies = 0;
        for line in lines {
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("-P"), Some(chain), _) => {
                    policies += 1;
                    listing.chains.entry(chain.to_string()).or_default();
                }
                (Some("-N"), Some(chain), _) => {
                    listing.chains.entry(chain.to_string()).or_default();
                }
                (Some("-A"), Some(chain), Some(rule)) => {
                    listing.chains.entry(chain.to_string()).or_default().push(rule.to_string())
                }
                _ => {}
            }
        }
        (policies > 0).then_some(listing)
    }

    fn rules(&self, chain: &str) -> Option<&[String]> {
        self.chains.get(chain).map(Vec::as_slice)
    }
}

/// `iptables -t <table> -S`.
fn list_table(ipt: &iptables::IPTables, table: &str) -> Result<TableListing, IpTablesError> {
    let lines = ipt.list_table(table).map_err(failed(format!("list table {table}")))?;
    TableListing::parse(&lines)
        .ok_or_else(|| IpTablesError { op: format!("list table {table}"), message: "iptables -S printed no chains".into() })
}

/// `iptables -t <table> -S`, then `-N/-F/-A/-I` where needed: makes the rule set exactly right.
/// Returns whether anything had to change.
pub fn ensure(ipt: &iptables::IPTables, set: &RuleSet) -> Result<bool, IpTablesError> {
    let listing = list_table(ipt, set.table)?;
    let mut changed = false;
    if !chain_is_exact(ipt, set, &listing)? {
        if listing.rules(set.chain).is_none() {
            ipt.new_chain(set.table, set.chain).map_err(failed(format!("create chain {}", set.chain)))?;
        }
        ipt.flush_chain(set.table, set.chain).map_err(failed(format!("flush {}", set.chain)))?;
        for rule in &set.rules {
            ipt.append(set.table, set.chain, rule).map_err(failed(format!("append {rule}")))?;
        }
        changed = true;
    }
    for hook in set.hooks {
        changed |= ensure_jump(ipt, set.table, hook, &set.jump, listing.rules(hook))?;
    }
    Ok(changed)
}

/// Makes `jump` a rule of `hook` that none of Docker's rules precedes. Missing, it is inserted
/// first, as flanneld does (`-I`). Behind a rule of Docker's, it is moved to just before the
/// first one. Behind anything else it stays: an operator's rule above it (a DROP in DOCKER-USER,
/// a RETURN in POSTROUTING) is theirs to keep in force. Creates `hook` if it is absent (`rules`
/// is `None`).
fn ensure_jump(
    ipt: &iptables::IPTables,
    table: &str,
    hook: &str,
    jump: &str,
    rules: Option<&[String]>,
) -> Result<bool, IpTablesError> {
    let Some(rules) = rules else {
        ipt.new_chain(table, hook).map_err(failed(format!("create chain {hook}")))?;
        ipt.insert(table, hook, jump, 1).map_err(failed(format!("insert jump into {hook}")))?;
        return Ok(true);
    };
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let position = match jump_placement(&rules, jump) {
        JumpPlacement::InPlace => return Ok(false),
        JumpPlacement::Preempted { docker_rule } => {
            ipt.delete(table, hook, jump).map_err(failed(format!("move jump in {hook}")))?;
            docker_rule + 1
        }
        // iptables may print a rule differently from how we wrote it; then `-C` decides.
        JumpPlacement::Unlisted if ipt.exists(table, hook, jump).map_err(failed("check jump"))? => return Ok(false),
        JumpPlacement::Unlisted => 1,
    };
    ipt.insert(table, hook, jump, position as i32).map_err(failed(format!("insert jump into {hook}")))?;
    Ok(true)
}

/// Where our jump stands among a chain's rules (as `-S` prints them, without `-A <chain> `).
#[derive(Debug, PartialEq, Eq)]
enum JumpPlacement {
    /// Present, and none of Docker's rules comes before it.
    InPlace,
    /// Present, but after one of Docker's rules (index `docker_rule`, from 0), which may drop
    /// overlay traffic before it is reached.
    Preempted { docker_rule: usize },
    /// Not in the listing.
    Unlisted,
}

fn jump_placement(rules: &[&str], jump: &str) -> JumpPlacement {
    let Some(at) = rules.iter().position(|rule| *rule == jump) else {
        return JumpPlacement::Unlisted;
    };
    match rules[..at].iter().position(|rule| dockers_rule(rule)) {
        Some(docker_rule) => JumpPlacement::Preempted { docker_rule },
        None => JumpPlacement::InPlace,
    }
}

/// Whether a rule is one of those dockerd puts ahead of ours: a jump to one of its chains other
/// than DOCKER-USER (`-j DOCKER-FORWARD`, `-o docker0 -j DOCKER`, `-j DOCKER-ISOLATION-STAGE-1`),
/// or a bare `-j RETURN` / `-j DROP` / `-j REJECT` that ends the chain for everything (Docker
/// appends `-j RETURN` to DOCKER-USER). A rule with conditions of its own is an operator's.
fn dockers_rule(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let target = words.iter().position(|w| *w == "-j").and_then(|i| words.get(i + 1)).copied().unwrap_or_default();
    let docker_chain = target.starts_with("DOCKER") && target != "DOCKER-USER";
    let bare_end = words.len() == 2 && ["RETURN", "DROP", "REJECT"].contains(&target);
    docker_chain || bare_end
}

/// Whether the chain exists and holds exactly our rules, no more and no fewer. The listing
/// settles it when it prints our rules as we write them (it does with iptables 1.8); otherwise
/// each rule is checked with `iptables -C`.
fn chain_is_exact(ipt: &iptables::IPTables, set: &RuleSet, listing: &TableListing) -> Result<bool, IpTablesError> {
    let Some(rules) = listing.rules(set.chain) else { return Ok(false) };
    if rules.len() != set.rules.len() {
        return Ok(false);
    }
    if rules == set.rules.as_slice() {
        return Ok(true);
    }
    for rule in &set.rules {
        if !ipt.exists(set.table, set.chain, rule).map_err(failed("check rule"))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rule sets the flags ask for, for our current lease.
pub fn wanted_rules(network: Ipv4Network, own: &Lease, ip_masq: bool, forward: bool) -> Vec<RuleSet> {
    let mut sets = Vec::new();
    if ip_masq {
        sets.push(masquerade_rules(network, own.subnet));
    }
    if forward {
        sets.push(forward_rules(network));
        sets.push(direct_routing_rules(network, own.subnet));
    }
    sets
}

/// Keeps the rules in place: on start, whenever our lease changes, and every `interval` (so a
/// rule deleted by hand, or by a firewall reload, comes back).
pub async fn keep_rules(network: Ipv4Network, ip_masq: bool, forward: bool, interval: Duration, mut own: watch::Receiver<Lease>) {
    if !ip_masq && !forward {
        return;
    }
    let mut first = true;
    // Made once: making it runs `iptables --version`.
    let mut ipt: Option<iptables::IPTables> = None;
    loop {
        let sets = wanted_rules(network, &own.borrow_and_update(), ip_masq, forward);
        let handle = ipt.take();
        let (handle, result) =
            tokio::task::spawn_blocking(move || check_rules(handle, &sets)).await.expect("the iptables check does not panic");
        ipt = handle;
        match result {
            Ok(true) if first => tracing::info!(ip_masq, forward, "iptables rules installed"),
            Ok(true) => tracing::warn!("iptables rules were missing or changed; restored"),
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "cannot install iptables rules; retrying"),
        }
        first = false;
        tokio::select! {
            _ = own.changed() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One check of every rule set (blocking). The iptables handle, made on first use, is handed
/// back for the next check.
fn check_rules(ipt: Option<iptables::IPTables>, sets: &[RuleSet]) -> (Option<iptables::IPTables>, Result<bool, IpTablesError>) {
    let ipt = match ipt.map_or_else(|| iptables::new(false).map_err(failed("start")), Ok) {
        Ok(ipt) => ipt,
        Err(e) => return (None, Err(e)),
    };
    let result = sets.iter().try_fold(false, |changed, set| Ok(ensure(&ipt, set)? || changed));
    (Some(ipt), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_listing_knows_every_chain_and_its_rules_and_refuses_an_empty_one() {
        let lines: Vec<String> = [
            "-P FORWARD DROP",
            "-N DOCKER-USER",
            "-N FLANNEL-FWD",
            "-A FORWARD -j DOCKER-USER",
            "-A FLANNEL-FWD -s 10.5.0.0/16 -j ACCEPT",
        ]
        .map(String::from)
        .to_vec();
        let listing = TableListing::parse(&lines).unwrap();
        assert_eq!(listing.rules("FORWARD"), Some(&["-j DOCKER-USER".to_string()][..]));
        assert_eq!(listing.rules("DOCKER-USER"), Some(&[][..]));
        assert_eq!(listing.rules("FLANNEL-FWD").map(<[String]>::len), Some(1));
        assert_eq!(listing.rules("FLANNEL-PRERTG"), None);
        // What the crate returns for a listing that failed: no chains at all.
        assert_eq!(TableListing::parse(&[String::new()]), None);
    }

    #[test]
    fn masquerade_rules_are_flanneld_s_in_order() {
        let set = masquerade_rules("10.5.0.0/16".parse().unwrap(), "10.5.72.0/24".parse().unwrap());
        assert_eq!((set.table, set.hooks, set.chain), ("nat", &["POSTROUTING"][..], "FLANNEL-POSTRTG"));
        assert_eq!(set.jump, "-m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG");
        assert_eq!(
            set.rules,
            [
                "-s 10.5.72.0/24 -d 10.5.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN",
                "-s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld masq\" -j RETURN",
                "! -s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld masq\" -j RETURN",
                "-s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
                "! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully",
            ]
        );
    }

    #[test]
    fn forward_rules_accept_the_network_both_ways() {
        let set = forward_rules("10.5.0.0/16".parse().unwrap());
        assert_eq!((set.table, set.hooks, set.chain), ("filter", &["FORWARD", "DOCKER-USER"][..], "FLANNEL-FWD"));
        assert_eq!(set.rules.len(), 2);
        assert!(set.rules[0].starts_with("-s 10.5.0.0/16 ") && set.rules[1].starts_with("-d 10.5.0.0/16 "));
    }

    #[test]
    fn direct_routing_rules_accept_only_the_overlay_into_our_subnet() {
        let set = direct_routing_rules("10.5.0.0/16".parse().unwrap(), "10.5.72.0/24".parse().unwrap());
        assert_eq!((set.table, set.hooks, set.chain), ("raw", &["PREROUTING"][..], "FLANNEL-PRERTG"));
        assert_eq!(set.rules, ["-s 10.5.0.0/16 -d 10.5.72.0/24 -m comment --comment \"flanneld forward\" -j ACCEPT"]);
    }

    #[test]
    fn only_dockers_rules_preempt_the_jump_and_an_operators_rules_above_it_stay() {
        let jump = "-m comment --comment \"flanneld forward\" -j FLANNEL-FWD";
        let docker_drop = "-d 10.5.72.2/32 ! -i docker0 -j DROP";
        assert_eq!(jump_placement(&[jump, docker_drop], jump), JumpPlacement::InPlace);
        assert_eq!(jump_placement(&["-j DOCKER-USER", jump], jump), JumpPlacement::InPlace);
        let forward = ["-j DOCKER-USER", "-j DOCKER-FORWARD", "-o docker0 -j ACCEPT", jump];
        assert_eq!(jump_placement(&forward, jump), JumpPlacement::Preempted { docker_rule: 1 });
        assert_eq!(
            jump_placement(&["-s 10.5.0.9/32 -j DROP", "-j RETURN", jump], jump),
            JumpPlacement::Preempted { docker_rule: 1 }
        );
        // An operator's rules, with conditions of their own, are theirs to keep above ours.
        assert_eq!(jump_placement(&["-s 10.5.0.9/32 -d 10.5.1.2/32 -p icmp -j DROP", jump], jump), JumpPlacement::InPlace);
        assert_eq!(jump_placement(&["-p tcp -j REJECT --reject-with tcp-reset", jump], jump), JumpPlacement::InPlace);
        assert_eq!(jump_placement(&["-d 10.5.0.0/16 -j RETURN", jump], jump), JumpPlacement::InPlace);
        assert_eq!(jump_placement(&[docker_drop], jump), JumpPlacement::Unlisted);
        assert_eq!(jump_placement(&["-j DROPPER", jump], jump), JumpPlacement::InPlace, "a chain named DROPPER is a jump");
    }
}
