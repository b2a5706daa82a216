//! The underlay's IPv6 side: which of an interface's IPv6 addresses may carry the IPv6 VXLAN
//! device and be its lease's PublicIPv6, best first, and how an error lists them.
//!
//! When the network config enables IPv6 (and only then: an IPv4-only config never looks at
//! IPv6), the same interface also gives the IPv6 VXLAN device's local address and the lease's
//! PublicIPv6 (flanneld's `LookupExtIface` for a dual stack, its gaps filled):
//! - an IPv6 `--iface` address selects the interface that holds it and that address (flanneld
//!   then looks for the interface of `--public-ipv6` instead, and without it has none);
//! - `--iface-regex` is matched against IPv6 addresses too, after every interface's IPv4
//!   addresses and before names; on the interface an IPv4 address chose, the first IPv6 address
//!   the pattern matches is preferred;
//! - otherwise the interface's best IPv6 address (ranked as below), or
//!   `--public-ipv6` when the interface holds it; an interface without one is a miss, and the
//!   next flag is tried;
//! - with no interface flag and neither `--public-ip` nor `--public-ipv6`, the IPv6 default
//!   route must leave by the IPv4 default route's interface;
//! - `--public-ipv6` alone selects the interface that holds it, as `--public-ip` does;
//! - the lease's PublicIPv6 is `--public-ipv6` when given, else the chosen IPv6 address.
//!
//! flanneld v0.20.2 (`pkg/ip` `GetInterfaceIP6Addrs`) takes global addresses (Go's "global
//! unicast", which includes unique local `fd00::/8`) before link-local ones, in the kernel's
//! order, whatever their flags. weft keeps that order and ranks by the flags within it: an
//! address the kernel will not send from yet (tentative), one that should no longer start
//! traffic (deprecated) or one replaced every few hours (temporary, a privacy address) comes
//! after every other global one; a configured (permanent) address comes before an
//! autoconfigured (dynamic) one; an address that failed duplicate address detection never counts.

use std::fmt;
use std::net::Ipv6Addr;

use super::{Available, Found, HostView, Miss, Underlay, UnderlayChoice, UnderlayError};
use crate::netlink::{Ipv4Link, Ipv6Address, RouteHop};

/// Whether `ip` is in `fe80::/10`, which a peer on another link cannot reach without a scope.
fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether the address can never carry the underlay: unspecified, loopback, multicast,
/// IPv4-mapped, link-local, or refused by duplicate address detection.
fn never_usable(address: &Ipv6Address) -> bool {
    let ip = address.ip;
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.to_ipv4_mapped().is_some()
        // A peer cannot send to a link-local address: it names no interface of the peer's.
        || is_link_local(ip)
        || address.flags.dad_failed
}

/// Whether the address is kept only as a last resort among its kind (see the module doc).
fn demoted(address: &Ipv6Address) -> bool {
    let flags = address.flags;
    flags.tentative || flags.deprecated || flags.temporary
}

/// The IPv6 addresses of link `index` that may carry the underlay (global ones: flanneld's
/// global unicast, unique local `fd00::/8` included), best first: clean before tentative,
/// deprecated or temporary, then permanent before dynamic; the kernel's order otherwise.
pub fn usable_ipv6(addresses: &[Ipv6Address], index: u32) -> Vec<Ipv6Address> {
    let mut usable: Vec<Ipv6Address> = addresses.iter().filter(|a| a.index == index && !never_usable(a)).copied().collect();
    // A stable sort keeps the kernel's order among equals.
    usable.sort_by_key(|a| (demoted(a), !a.flags.permanent));
    usable
}

/// A link's IPv6 addresses as errors list them: the usable ones best first, then its link-local
/// ones, never used but shown so the operator sees what the interface has.
pub fn listed_ipv6(addresses: &[Ipv6Address], index: u32) -> Vec<Ipv6Address> {
    let mut listed = usable_ipv6(addresses, index);
    listed.extend(addresses.iter().filter(|a| a.index == index && is_link_local(a.ip)).copied());
    listed
}

/// The interface that holds `ip` among any of its IPv6 addresses (an exact match counts
/// whatever the address's flags, as flanneld's `GetInterfaceByIP6`), first in the kernel's order.
pub(super) fn ipv6_holder<'a>(links: &'a [Ipv4Link], v6: &Ipv6View, ip: Ipv6Addr) -> Option<&'a Ipv4Link> {
    let index = v6.addresses.iter().find(|a| a.ip == ip).map(|a| a.index)?;
    links.iter().find(|l| l.index == index)
}

/// One address as an error lists it: `fd18::11`, with the flags that ranked it low in brackets.
pub struct Listed(pub Ipv6Address);

impl fmt::Display for Listed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = self.0.flags;
        let named = [(flags.tentative, "tentative"), (flags.deprecated, "deprecated"), (flags.temporary, "temporary")];
        let tags: Vec<&str> = named.iter().filter(|(set, _)| *set).map(|(_, name)| *name).collect();
        match tags.is_empty() {
            true => write!(f, "{}", self.0.ip),
            false => write!(f, "{}({})", self.0.ip, tags.join(",")),
        }
    }
}

/// The IPv6 part of [`HostView`].
#[derive(Debug, Clone, Default)]
pub struct Ipv6View {
    /// Every link's IPv6 addresses with their flags, in the kernel's order.
    pub addresses: Vec<Ipv6Address>,
    /// The main table's first IPv6 default route, when one was looked for and found.
    pub default_route: Option<RouteHop>,
    /// The network config is IPv6 only (`"EnableIPv4": false`): IPv4 addresses, the IPv4
    /// default route and `--iface-can-reach` (an IPv4 destination) do not count.
    pub only: bool,
}

/// Settles the IPv6 side of `found` when the config enables IPv6 and the flag did not: the
/// interface's `--public-ipv6` if it holds it, else its best usable IPv6 address.
pub(super) fn with_ipv6<'a>(found: Found<'a>, choice: &UnderlayChoice, host: &HostView, via: &str) -> Result<Found<'a>, Miss> {
    let Some(v6) = host.ipv6.as_ref().filter(|_| found.ipv6.is_none()) else { return Ok(found) };
    let usable = usable_ipv6(&v6.addresses, found.link.index);
    let public = usable.iter().find(|a| Some(a.ip) == choice.public_ipv6);
    match public.or(usable.first()) {
        Some(address) => Ok(Found { ipv6: Some(address.ip), ..found }),
        None => Err(Miss::NoIpv6Address { via: via.to_string(), name: found.link.name.clone() }),
    }
}

/// The first interface, in the kernel's order, with a usable IPv6 address `pattern` matches,
/// and its best such address.
pub(super) fn pattern_ipv6<'a>(pattern: &regex::Regex, links: &'a [Ipv4Link], v6: &Ipv6View) -> Option<(&'a Ipv4Link, Ipv6Addr)> {
    links.iter().find_map(|link| matching_ipv6(pattern, &v6.addresses, link.index).map(|ip| (link, ip)))
}

/// The best usable IPv6 address of link `index` that `pattern` matches.
pub(super) fn matching_ipv6(pattern: &regex::Regex, addresses: &[Ipv6Address], index: u32) -> Option<Ipv6Addr> {
    usable_ipv6(addresses, index).into_iter().map(|a| a.ip).find(|ip| pattern.is_match(&ip.to_string()))
}

/// With no interface flag: the IPv6 default route must leave by `ipv4` (the IPv4 default
/// route's interface), since one underlay interface carries both families.
pub(super) fn same_default_route(ipv4: &Ipv4Link, host: &HostView) -> Result<(), UnderlayError> {
    let Some(v6) = &host.ipv6 else { return Ok(()) };
    let available = || Available::of(host);
    let ipv4_iface = ipv4.name.clone();
    let hop = v6.default_route.ok_or_else(|| UnderlayError::NoIpv6DefaultRoute { ipv4_iface, available: available() })?;
    let link = super::route_link(&hop, &host.links, "the IPv6 default route")
        .map_err(|miss| UnderlayError::Unusable { miss, available: available() })?;
    if link.index != ipv4.index {
        let (ipv4_iface, ipv6_iface) = (ipv4.name.clone(), link.name.clone());
        return Err(UnderlayError::DefaultRoutesDiffer { ipv4_iface, ipv6_iface, available: available() });
    }
    Ok(())
}

/// The IPv6 local and public addresses `underlay` keeps on its interface as `addresses` now
/// show it: its local address while the interface holds it, else the interface's best usable
/// one; the public address follows the local one unless `--public-ipv6` set it apart. `None`
/// when the interface has no usable IPv6 address.
pub(super) fn kept_ipv6(underlay: &Underlay, addresses: &[Ipv6Address]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let usable = usable_ipv6(addresses, underlay.index);
    let now = usable.iter().find(|a| Some(a.ip) == underlay.ipv6).or(usable.first())?.ip;
    let public = underlay.public_ipv6.filter(|public| Some(*public) != underlay.ipv6).unwrap_or(now);
    Some((now, public))
}
