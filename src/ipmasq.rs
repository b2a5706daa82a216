//! iptables rules for `--ip-masq` (nat) and `--iptables-forward-rules` (filter), with flanneld's
//! chains and comments, kept in place by a periodic check.
//!
//! Each rule set is one chain of ours plus one jump into it. When the chain differs from what it
//! should be in any way, it is flushed and refilled in order, because order matters (RETURNs
//! before MASQUERADE) and a partial repair could leave it wrong.

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
    /// The built-in chain that jumps to ours (its first rule).
    pub hook: &'static str,
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
        hook: "POSTROUTING",
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

/// flanneld's FORWARD rules: accept overlay traffic even where the policy is DROP (docker sets it).
pub fn forward_rules(n: Ipv4Network) -> RuleSet {
    let c = FORWARD_COMMENT;
    RuleSet {
        table: "filter",
        hook: "FORWARD",
        chain: "FLANNEL-FWD",
        jump: format!("{c} -j FLANNEL-FWD"),
        rules: vec![format!("-s {n} {c} -j ACCEPT"), format!("-d {n} {c} -j ACCEPT")],
    }
}

fn failed(op: impl Into<String>) -> impl FnOnce(Box<dyn std::error::Error>) -> IpTablesError {
    let op = op.into();
    move |e| IpTablesError { op, message: e.to_string() }
}

/// `iptables -t <table> -C/-N/-F/-A/-I`: makes the rule set exactly right. Returns whether
/// anything had to change.
pub fn ensure(ipt: &iptables::IPTables, set: &RuleSet) -> Result<bool, IpTablesError> {
    let mut changed = false;
    if !chain_is_exact(ipt, set)? {
        if !ipt.chain_exists(set.table, set.chain).map_err(failed("list chain"))? {
            ipt.new_chain(set.table, set.chain).map_err(failed(format!("create chain {}", set.chain)))?;
        }
        ipt.flush_chain(set.table, set.chain).map_err(failed(format!("flush {}", set.chain)))?;
        for rule in &set.rules {
            ipt.append(set.table, set.chain, rule).map_err(failed(format!("append {rule}")))?;
        }
        changed = true;
    }
    if !ipt.exists(set.table, set.hook, &set.jump).map_err(failed("check jump"))? {
        ipt.insert(set.table, set.hook, &set.jump, 1).map_err(failed(format!("insert jump into {}", set.hook)))?;
        changed = true;
    }
    Ok(changed)
}

/// Whether the chain exists and holds exactly our rules, no more and no fewer. One `iptables -S`
/// settles it when the listing prints our rules as we write them (it does with iptables 1.8);
/// otherwise each rule is checked with `iptables -C`.
fn chain_is_exact(ipt: &iptables::IPTables, set: &RuleSet) -> Result<bool, IpTablesError> {
    let listed = match ipt.list(set.table, set.chain) {
        Ok(listed) => listed,
        // No such chain; but a chain that exists and cannot be listed must not be refilled.
        Err(e) if ipt.chain_exists(set.table, set.chain).map_err(failed("list chain"))? => {
            return Err(failed(format!("list {}", set.chain))(e))
        }
        Err(_) => return Ok(false),
    };
    let prefix = format!("-A {} ", set.chain);
    let rules: Vec<&str> = listed.iter().filter_map(|line| line.strip_prefix(&prefix)).collect();
    if rules.len() != set.rules.len() {
        return Ok(false);
    }
    if rules == set.rules {
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
    fn masquerade_rules_are_flanneld_s_in_order() {
        let set = masquerade_rules("10.5.0.0/16".parse().unwrap(), "10.5.72.0/24".parse().unwrap());
        assert_eq!((set.table, set.hook, set.chain), ("nat", "POSTROUTING", "FLANNEL-POSTRTG"));
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
        assert_eq!((set.table, set.hook, set.chain), ("filter", "FORWARD", "FLANNEL-FWD"));
        assert_eq!(set.rules.len(), 2);
        assert!(set.rules[0].starts_with("-s 10.5.0.0/16 ") && set.rules[1].starts_with("-d 10.5.0.0/16 "));
    }
}
