//! The rule sets themselves: flanneld's nat and filter chains, and the raw-table accepts Docker 28
//! needs, written once for both families (the family decides the multicast range).

use crate::model::{Family, Subnet};

use super::Firewall;

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
const DNS_COMMENT: &str = "-m comment --comment \"weft dns\"";

/// flanneld's masquerade rules for Network `n` and our subnet `p` (`IPv6Network` and our IPv6
/// subnet for IPv6): traffic inside the overlay keeps its addresses; traffic leaving it is
/// masqueraded, except multicast (`224.0.0.0/4`, `ff00::/8`).
pub fn masquerade_rules<N: Subnet>(n: N, p: N) -> RuleSet
where
    N::Addr: Firewall,
{
    let c = MASQ_COMMENT;
    let multicast = <N::Addr as Firewall>::MULTICAST;
    RuleSet {
        table: "nat",
        hooks: &["POSTROUTING"],
        chain: "FLANNEL-POSTRTG",
        jump: format!("{c} -j FLANNEL-POSTRTG"),
        rules: vec![
            format!("-s {p} -d {n} {c} -j RETURN"),
            format!("-s {n} -d {p} {c} -j RETURN"),
            format!("! -s {n} -d {p} {c} -j RETURN"),
            format!("-s {n} ! -d {multicast} {c} -j MASQUERADE --random-fully"),
            format!("! -s {n} -d {n} {c} -j MASQUERADE --random-fully"),
        ],
    }
}

/// flanneld's FORWARD rules: accept overlay traffic even where the policy is DROP (docker sets
/// it), or where Docker 28's DOCKER-FORWARD chain drops it (hence the jump from DOCKER-USER).
pub fn forward_rules<N: Subnet>(n: N) -> RuleSet {
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
/// Docker 28's per-container `-d <container> ! -i docker0 -j DROP` (appended to raw PREROUTING,
/// in ip6tables too when docker runs with `--ipv6`) sees it. Only the overlay's sources: direct
/// access from elsewhere stays dropped.
pub fn direct_routing_rules<N: Subnet>(n: N, p: N) -> RuleSet {
    let c = FORWARD_COMMENT;
    RuleSet {
        table: "raw",
        hooks: &["PREROUTING"],
        chain: "FLANNEL-PRERTG",
        jump: format!("{c} -j FLANNEL-PRERTG"),
        rules: vec![format!("-s {n} -d {p} {c} -j ACCEPT")],
    }
}

/// Who may query the DNS server on docker0's address `server` (`--names`), in INPUT: the host
/// itself (`-i lo`) and its containers (our subnet `p`); queries to it from anywhere else (the
/// underlay, other hosts' containers) are dropped, UDP and TCP alike. Accepting also keeps an
/// INPUT policy of DROP from cutting containers off their resolver.
pub fn dns_rules<N: Subnet>(p: N, server: N::Addr) -> RuleSet {
    let c = DNS_COMMENT;
    let to = format!("-d {server}/{}", <N::Addr as Family>::HOST_PREFIX);
    let rules = [("-i lo ", "ACCEPT"), ("", "ACCEPT"), ("", "DROP")]
        .into_iter()
        .enumerate()
        .flat_map(|(at, (iface, verdict))| {
            let source = if at == 1 { format!("-s {p} ") } else { String::new() };
            let to = &to;
            ["udp", "tcp"].map(move |proto| format!("{source}{to} {iface}-p {proto} -m {proto} --dport 53 {c} -j {verdict}"))
        })
        .collect();
    RuleSet { table: "filter", hooks: &["INPUT"], chain: "WEFT-DNS", jump: format!("{c} -j WEFT-DNS"), rules }
}
