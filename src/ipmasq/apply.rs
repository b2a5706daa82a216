//! Making a rule set exactly right in one table: one `iptables -S` (or `ip6tables -S`) listing,
//! then `-N/-F/-A` where the chain differs, and the jumps into it.
//!
//! When the chain differs from what it should be in any way, it is flushed and refilled in
//! order, because order matters (RETURNs before MASQUERADE) and a partial repair could leave it
//! wrong.

use super::docker::ensure_jump;
use super::rules::RuleSet;
use super::{failed, IpTablesError};

/// One table as `iptables -t <table> -S` prints it: the chains that exist and each one's rules
/// (without `-A <chain> `), in order. `-S` never resolves names, so the check never waits on DNS.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct TableListing {
    chains: std::collections::BTreeMap<String, Vec<String>>,
}

impl TableListing {
    /// Parses `-S` output; `None` when it lacks the built-in chains' `-P` lines, which every
    /// successful listing has (the crate does not report a failed listing otherwise).
    pub(super) fn parse(lines: &[String]) -> Option<Self> {
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

    pub(super) fn rules(&self, chain: &str) -> Option<&[String]> {
        self.chains.get(chain).map(Vec::as_slice)
    }
}

/// `iptables -t <table> -S` (`ip6tables` for an IPv6 handle).
fn list_table(ipt: &iptables::IPTables, table: &str) -> Result<TableListing, IpTablesError> {
    let op = format!("list table {table}");
    let lines = ipt.list_table(table).map_err(failed(ipt, op.clone()))?;
    TableListing::parse(&lines).ok_or_else(|| IpTablesError { command: ipt.cmd, op, message: "-S printed no chains".into() })
}

/// `iptables -t <table> -S`, then `-N/-F/-A/-I` where needed: makes the rule set exactly right.
/// Returns whether anything had to change.
///
/// # Errors
/// The first `iptables` (or `ip6tables`) run that fails, or a listing without chains.
pub fn ensure(ipt: &iptables::IPTables, set: &RuleSet) -> Result<bool, IpTablesError> {
    let listing = list_table(ipt, set.table)?;
    let mut changed = false;
    if !chain_is_exact(ipt, set, &listing)? {
        if listing.rules(set.chain).is_none() {
            ipt.new_chain(set.table, set.chain).map_err(failed(ipt, format!("create chain {}", set.chain)))?;
        }
        ipt.flush_chain(set.table, set.chain).map_err(failed(ipt, format!("flush {}", set.chain)))?;
        for rule in &set.rules {
            ipt.append(set.table, set.chain, rule).map_err(failed(ipt, format!("append {rule}")))?;
        }
        changed = true;
    }
    for hook in set.hooks {
        changed |= ensure_jump(ipt, set.table, hook, &set.jump, listing.rules(hook))?;
    }
    Ok(changed)
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
        if !ipt.exists(set.table, set.chain, rule).map_err(failed(ipt, "check rule"))? {
            return Ok(false);
        }
    }
    Ok(true)
}
