//! iptables rules for `--ip-masq` (nat) and `--iptables-forward-rules` (filter), with flanneld's
//! chains and comments, kept in place by a periodic check; the same rules through ip6tables for
//! an overlay with IPv6, as flanneld does.
//!
//! Each rule set is one chain of ours plus the jumps into it (`rules`), made exactly right from
//! one listing of its table (`apply`), with the jumps kept ahead of Docker's rules (`docker`).
//! One code path serves both families: the family names the command and the multicast range,
//! and which of our lease's subnets is ours.
//!
//! Every listing is `iptables -S`, one per table and check, which never resolves names: `-L`
//! without `-n` asks the resolver for a name per address, and made one check wait minutes on an
//! unreachable DNS server.

mod apply;
mod docker;
mod rules;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::Ipv6Network;
use thiserror::Error;
use tokio::sync::watch;

use crate::lease::Lease;
use crate::model::{Family, Subnet};

pub use apply::ensure;
pub use rules::{direct_routing_rules, dns_rules, forward_rules, masquerade_rules, RuleSet};

/// A run of `iptables` (or `ip6tables`) that failed, or printed what it should not.
#[derive(Debug, Error)]
#[error("{command} {op} failed: {message}")]
pub struct IpTablesError {
    /// `iptables` or `ip6tables`.
    pub command: &'static str,
    pub op: String,
    /// What the command (or the crate running it) said; the crate gives it as text only.
    pub message: String,
}

/// What the firewall rules need of an address family.
pub trait Firewall: Family {
    /// The command that edits this family's tables: `iptables` or `ip6tables`.
    const COMMAND: &'static str;
    /// Whether that command is `ip6tables` (how the `iptables` crate is told).
    const IPV6: bool;
    /// The family's multicast range, never masqueraded: `224.0.0.0/4` or `ff00::/8`.
    const MULTICAST: &'static str;

    /// Our subnet of this family in our lease (`None`: the lease has no part of this family).
    fn own_subnet(lease: &Lease) -> Option<Self::Network>;

    /// The address the DNS server (`--names`) listens on in this family: docker0's in our
    /// lease's subnet; `None` for IPv6, where it does not listen.
    fn dns_server(lease: &Lease) -> Option<Self>;
}

impl Firewall for Ipv4Addr {
    const COMMAND: &'static str = "iptables";
    const IPV6: bool = false;
    const MULTICAST: &'static str = "224.0.0.0/4";

    fn own_subnet(lease: &Lease) -> Option<Self::Network> {
        lease.subnet
    }

    fn dns_server(lease: &Lease) -> Option<Self> {
        lease.subnet.map(crate::names::dns::bridge_address)
    }
}

impl Firewall for Ipv6Addr {
    const COMMAND: &'static str = "ip6tables";
    const IPV6: bool = true;
    const MULTICAST: &'static str = "ff00::/8";

    /// Host bits cleared: iptables prints the network so, and the listing then matches ours.
    fn own_subnet(lease: &Lease) -> Option<Self::Network> {
        lease.ipv6_subnet.and_then(|subnet| Ipv6Network::new(subnet.network(), subnet.prefix()).ok())
    }

    fn dns_server(_: &Lease) -> Option<Self> {
        None
    }
}

fn failed(ipt: &iptables::IPTables, op: impl Into<String>) -> impl FnOnce(Box<dyn std::error::Error>) -> IpTablesError {
    let (command, op) = (ipt.cmd, op.into());
    move |e| IpTablesError { command, op, message: e.to_string() }
}

/// The rule sets the flags ask for, in Network `network` with our subnet `own` of the same
/// family. Without `own` (a lease with no part of this family) only the FORWARD accepts, which
/// do not name it.
pub fn wanted_rules<N: Subnet>(network: N, own: Option<N>, ip_masq: bool, forward: bool) -> Vec<RuleSet>
where
    N::Addr: Firewall,
{
    let mut sets = Vec::new();
    if let (true, Some(own)) = (ip_masq, own) {
        sets.push(masquerade_rules(network, own));
    }
    if forward {
        sets.push(forward_rules(network));
        sets.extend(own.map(|own| direct_routing_rules(network, own)));
    }
    sets
}

/// Which rules to keep, and how often to check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleOptions {
    /// `--ip-masq`: the nat chain.
    pub ip_masq: bool,
    /// `--iptables-forward-rules`: the filter and raw chains.
    pub forward: bool,
    /// `--names`: the filter chain WEFT-DNS guarding the DNS server on docker0.
    pub dns: bool,
    /// `--iptables-resync`: time between two checks.
    pub interval: Duration,
}

/// Keeps the rules of Network `network`'s family in place (through `iptables` for an
/// `Ipv4Network`, `ip6tables` for an `Ipv6Network`): on start, whenever our lease changes, and
/// every `options.interval` (so a rule deleted by hand, or by a firewall reload, comes back).
pub async fn keep_rules<N: Subnet>(network: N, options: RuleOptions, mut own: watch::Receiver<Lease>)
where
    N::Addr: Firewall,
{
    let RuleOptions { ip_masq, forward, dns, interval } = options;
    if !ip_masq && !forward && !dns {
        return;
    }
    let command = <N::Addr as Firewall>::COMMAND;
    let mut first = true;
    // Made once: making it runs `iptables --version`.
    let mut ipt: Option<iptables::IPTables> = None;
    loop {
        let lease = own.borrow_and_update().clone();
        let subnet = <N::Addr as Firewall>::own_subnet(&lease);
        let mut sets = wanted_rules(network, subnet, ip_masq, forward);
        let server = <N::Addr as Firewall>::dns_server(&lease).filter(|_| dns);
        sets.extend(subnet.zip(server).map(|(subnet, server)| dns_rules(subnet, server)));
        let handle = ipt.take();
        let (handle, result) = tokio::task::spawn_blocking(move || check_rules::<N::Addr>(handle, &sets))
            .await
            .expect("the iptables check does not panic");
        ipt = handle;
        match result {
            Ok(true) if first => tracing::info!(ip_masq, forward, dns, "{command} rules installed"),
            Ok(true) => tracing::warn!("{command} rules were missing or changed; restored"),
            Ok(false) => {}
            Err(error) => tracing::error!(%error, "cannot install {command} rules; retrying"),
        }
        first = false;
        tokio::select! {
            _ = own.changed() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One check of every rule set (blocking). The handle for family `A`'s command, made on first
/// use, is handed back for the next check.
fn check_rules<A: Firewall>(
    ipt: Option<iptables::IPTables>,
    sets: &[RuleSet],
) -> (Option<iptables::IPTables>, Result<bool, IpTablesError>) {
    let made = ipt.map_or_else(|| iptables::new(A::IPV6), Ok);
    let ipt = match made {
        Ok(ipt) => ipt,
        Err(e) => return (None, Err(IpTablesError { command: A::COMMAND, op: "start".into(), message: e.to_string() })),
    };
    let result = sets.iter().try_fold(false, |changed, set| Ok(ensure(&ipt, set)? || changed));
    (Some(ipt), result)
}

#[cfg(test)]
mod tests;
