//! Lease keys: flanneld's key grammar (`10.5.52.0-24`, optionally with a dual-stack part), and
//! weft's IPv6-only key (`fd00:5:0:34::-64`, the IPv6 part alone).

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use ipnetwork::{Ipv4Network, Ipv6Network};
use regex::Regex;

use super::codec::{go_parse_ipv6, go_parse_prefix};
use super::{LeaseError, LeaseId};

/// The last path element of a lease key: `10.5.52.0-24`.
pub fn subnet_key(subnet: Ipv4Network) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

/// The IPv6 part of a lease key: the subnet's network address, compressed and lower case, and
/// its prefix length (`fd00:5:0:34::-64`).
fn ipv6_part(subnet: Ipv6Network) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

/// The last path element of the key of the lease `id` (with `ipv6_subnet`, its IPv6 part if
/// any) as weft writes it: flanneld's `MakeSubnetKey` for an IPv4 lease, `10.5.52.0-24`, or a
/// dual-stack one, `10.5.52.0-24&fd00:5:0:34::-64`; for an IPv6-only lease the IPv6 part
/// alone, `fd00:5:0:34::-64` (flanneld writes `0.0.0.0-0&…`, which names one IPv4 subnet for
/// every such host; weft reads it, never writes it).
pub fn lease_key(id: LeaseId, ipv6_subnet: Option<Ipv6Network>) -> String {
    match (id, ipv6_subnet) {
        (LeaseId::Ipv4(subnet), None) => subnet_key(subnet),
        (LeaseId::Ipv4(subnet), Some(v6)) => format!("{}&{}", subnet_key(subnet), ipv6_part(v6)),
        (LeaseId::Ipv6(v6), _) => ipv6_part(v6),
    }
}

/// flanneld's lease key pattern (`subnetRegex`), with Go's ASCII-only `\d`: searched, not
/// anchored at the start, and the leftmost match taken, as Go's `FindStringSubmatch` does.
static KEY_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]+\.[0-9]+.[0-9]+.[0-9]+)-([0-9]+)(?:&([a-f0-9:]+)-([0-9]+))?$").expect("a valid pattern")
});

/// weft's IPv6-only key: the IPv6 part of flanneld's pattern alone, anchored.
static IPV6_ONLY_PATTERN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^([a-f0-9:]+)-([0-9]+)$").expect("a valid pattern"));

/// Parses the last path element of a lease key into what names the lease (see
/// [`parse_lease_key`]).
///
/// # Errors
/// As [`parse_lease_key`].
pub fn parse_lease_id(name: &str) -> Result<LeaseId, LeaseError> {
    match parse_lease_key(name)? {
        (Some(subnet), _) => Ok(LeaseId::Ipv4(subnet)),
        (None, Some(v6)) => Ok(LeaseId::Ipv6(v6)),
        (None, None) => unreachable!("parse_lease_key returns a subnet"),
    }
}

/// Parses the last path element of a lease key into its IPv4 subnet and its IPv6 subnet, as
/// written (host bits kept, so a misaligned one can be refused by name later); at least one is
/// there. Accepts a flanneld key only if flanneld v0.20.2's `ParseSubnetKey` reads it, and only
/// in the form flannel writes (`10.5.52.0-24`, or with a dual-stack `&fd00::-64` part):
/// flanneld also reads `10.5.52.0-024` or `x10.5.52.0-24` as 10.5.52.0/24, but no flannel host
/// writes them, and taking them would let one key alias another's subnet. An IPv6-only lease's
/// key is weft's `fd00:5:0:34::-64` or flanneld's `0.0.0.0-0&fd00:5:0:34::-64` (both IPv6-only:
/// `0.0.0.0/0` is no host's IPv4 subnet).
///
/// # Errors
/// [`LeaseError::BadKey`] if flanneld refuses the key (an IPv6 part it cannot read makes the
/// whole key bad, as for flanneld) and it is not an IPv6-only key written as weft writes it;
/// [`LeaseError::AliasKey`] if flanneld reads it but it is not written the way flannel writes
/// that subnet's key.
pub fn parse_lease_key(name: &str) -> Result<(Option<Ipv4Network>, Option<Ipv6Network>), LeaseError> {
    if let Some(ipv6_only) = parse_ipv6_only_key(name) {
        return ipv6_only.map(|subnet| (None, Some(subnet)));
    }
    let (subnet, ipv6_subnet) = parse_flanneld_key(name)?;
    match (subnet.prefix(), ipv6_subnet) {
        (0, Some(v6)) if subnet.ip().is_unspecified() => Ok((None, Some(v6))),
        _ => Ok((Some(subnet), ipv6_subnet)),
    }
}

/// weft's IPv6-only key, `fd00:5:0:34::-64`: `None` if `name` is not of that shape, an error if
/// it is but is not written as weft writes an IPv6 subnet (compressed, lower case, no leading
/// zeros in the length).
fn parse_ipv6_only_key(name: &str) -> Option<Result<Ipv6Network, LeaseError>> {
    let parts = IPV6_ONLY_PATTERN.captures(name)?;
    let bad = || LeaseError::BadKey(name.to_string());
    let parsed = go_parse_ipv6(&parts[1])
        .zip(go_parse_prefix(&parts[2], 127))
        .and_then(|(ip, prefix)| Ipv6Network::new(ip, prefix).ok())
        .filter(|subnet| format!("{}-{}", subnet.ip(), subnet.prefix()) == name);
    Some(parsed.ok_or_else(bad))
}

/// flanneld's own key grammar: the IPv4 part and the optional dual-stack part.
fn parse_flanneld_key(name: &str) -> Result<(Ipv4Network, Option<Ipv6Network>), LeaseError> {
    let bad = || LeaseError::BadKey(name.to_string());
    let parts = KEY_PATTERN.captures(name).ok_or_else(bad)?;
    let ip: Ipv4Addr = parts[1].parse().map_err(|_| bad())?;
    let prefix = go_parse_prefix(&parts[2], 31).ok_or_else(bad)?;
    let mut ipv6_subnet = None;
    if let (Some(ipv6), Some(ipv6_prefix)) = (parts.get(3), parts.get(4)) {
        let ipv6 = go_parse_ipv6(ipv6.as_str()).ok_or_else(bad)?;
        let ipv6_prefix = go_parse_prefix(ipv6_prefix.as_str(), 127).ok_or_else(bad)?;
        ipv6_subnet = Some(Ipv6Network::new(ipv6, ipv6_prefix).map_err(|_| bad())?);
    }
    let subnet = Ipv4Network::new(ip, prefix).map_err(|_| bad())?;
    let canonical = subnet_key(subnet);
    let whole = parts.get(0).expect("a match");
    if whole.start() != 0 || name[..parts.get(2).expect("a prefix").end()] != canonical {
        let subnet = Ipv4Network::new(subnet.network(), prefix).expect("a valid prefix");
        return Err(LeaseError::AliasKey { key: name.to_string(), subnet, canonical });
    }
    Ok((subnet, ipv6_subnet))
}
