//! Lease keys: flanneld's key grammar (`10.5.52.0-24`, optionally with a dual-stack part).

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use ipnetwork::{Ipv4Network, Ipv6Network};
use regex::Regex;

use super::codec::{go_parse_ipv6, go_parse_prefix};
use super::LeaseError;

/// The last path element of a lease key: `10.5.52.0-24`.
pub fn subnet_key(subnet: Ipv4Network) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

/// The last path element of a lease's key as flanneld's `MakeSubnetKey` writes it: the IPv4
/// part, then for a dual-stack lease `&` and the IPv6 subnet, compressed and lower case
/// (`10.5.52.0-24&fd00:5:0:34::-64`).
pub fn lease_key(subnet: Ipv4Network, ipv6_subnet: Option<Ipv6Network>) -> String {
    match ipv6_subnet {
        None => subnet_key(subnet),
        Some(v6) => format!("{}&{}-{}", subnet_key(subnet), v6.network(), v6.prefix()),
    }
}

/// flanneld's lease key pattern (`subnetRegex`), with Go's ASCII-only `\d`: searched, not
/// anchored at the start, and the leftmost match taken, as Go's `FindStringSubmatch` does.
static KEY_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]+\.[0-9]+.[0-9]+.[0-9]+)-([0-9]+)(?:&([a-f0-9:]+)-([0-9]+))?$").expect("a valid pattern")
});

/// Parses the last path element of a lease key. Accepts a key only if flanneld v0.20.2's
/// `ParseSubnetKey` reads it, and only in the form flannel writes (`10.5.52.0-24`, or with a
/// dual-stack `&fd00::-64` part, of which the IPv4 subnet is returned): flanneld also reads
/// `10.5.52.0-024` or `x10.5.52.0-24` as 10.5.52.0/24, but no flannel host writes them, and
/// taking them would let one key alias another's subnet.
///
/// # Errors
/// [`LeaseError::BadKey`] if flanneld refuses the key; [`LeaseError::AliasKey`] if it reads
/// it but it is not written the way flannel writes that subnet's key.
pub fn parse_subnet_key(name: &str) -> Result<Ipv4Network, LeaseError> {
    parse_lease_key(name).map(|(subnet, _)| subnet)
}

/// Parses the last path element of a lease key into both its parts: the IPv4 subnet (checked
/// as [`parse_subnet_key`] does) and, for a dual-stack key, the IPv6 subnet as written (host
/// bits kept, so a misaligned one can be refused by name later).
///
/// # Errors
/// As [`parse_subnet_key`]; an IPv6 part flanneld cannot read makes the whole key
/// [`LeaseError::BadKey`], as it does for flanneld.
pub fn parse_lease_key(name: &str) -> Result<(Ipv4Network, Option<Ipv6Network>), LeaseError> {
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
