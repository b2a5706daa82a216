//! The underlay: the interface VXLAN packets leave by, the address they leave from (the VXLAN
//! `local`) and the address peers send to (the lease's PublicIP), chosen by flanneld's rules.
//!
//! flanneld v0.20.2 (`main.go` and `pkg/ipmatch`), IPv4:
//! - the usable addresses of an interface are its IPv4 addresses in the kernel's order, global
//!   unicast first, then link-local; loopback, multicast, 0.0.0.0 and 255.255.255.255 never count,
//!   and secondary addresses count like primary ones;
//! - each `--iface` is tried in order: an IPv4 address selects the interface that holds it and
//!   that very address; a name selects that interface and its first usable address;
//! - then each `--iface-regex` in order: the first usable address, interface by interface, that
//!   the pattern matches; if none does, the first interface whose name it matches;
//! - then `--iface-can-reach`: the interface and preferred source of `ip route get <address>`;
//! - with none of those flags: `--public-ip` selects the interface that holds it (none is an
//!   error), else the default route's interface gives its first usable address;
//! - the lease's PublicIP is `--public-ip` when given, else the chosen address.
//!
//! When the network config enables IPv6, the same interface also gives the IPv6 addresses (the
//! rules are in the `ipv6` submodule); when it is IPv6 only, IPv6 addresses and the IPv6 default
//! route alone choose (the `ipv6_only` submodule).
//!
//! [`choose`] is the pure rule set; [`find`] reads the kernel and applies it.

mod error;
mod ipv6;
mod ipv6_only;
mod lookup;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::errno::Errno;

pub use self::error::{Available, Miss, UnderlayError};
pub use self::ipv6::Ipv6View;
use self::ipv6::{ipv6_holder, matching_ipv6, pattern_ipv6, same_default_route, with_ipv6};
pub use self::lookup::{by_index, find};
use crate::config::NetworkConfig;
use crate::netlink::{Ipv4Link, RouteHop};

/// Which address families the underlay carries: the network config's (`EnableIPv4`,
/// `EnableIPv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    Ipv4,
    DualStack,
    /// `"EnableIPv4": false`: only IPv6 addresses and the IPv6 default route count.
    Ipv6,
}

impl Families {
    /// The families `config` enables.
    pub fn of(config: &NetworkConfig) -> Self {
        match (config.ipv4.is_some(), config.ipv6.is_some()) {
            (true, true) => Self::DualStack,
            (false, _) => Self::Ipv6,
            (true, false) => Self::Ipv4,
        }
    }

    /// Whether IPv6 addresses are looked at.
    pub fn has_ipv6(self) -> bool {
        self != Self::Ipv4
    }
}

/// The flags that choose the underlay, as given.
#[derive(Debug, Clone, Default)]
pub struct UnderlayChoice {
    /// `--iface`: interface names or IPv4 addresses, tried in order.
    pub ifaces: Vec<String>,
    /// `--iface-regex`: tried in order, after every `--iface`.
    pub iface_regex: Vec<regex::Regex>,
    /// `--iface-can-reach`: tried after every `--iface` and `--iface-regex`.
    pub can_reach: Option<Ipv4Addr>,
    /// `--public-ip`: what the lease advertises; without the three flags above, also which
    /// interface is used (the one holding it).
    pub public_ip: Option<Ipv4Addr>,
    /// `--public-ipv6`: what the lease advertises as PublicIPv6 when the config enables IPv6;
    /// with neither the interface flags nor `--public-ip`, also which interface is used.
    pub public_ipv6: Option<Ipv6Addr>,
}

impl UnderlayChoice {
    /// Whether any of `--iface`, `--iface-regex` or `--iface-can-reach` was given; without
    /// them the default route (or `--public-ip`) decides.
    fn names_an_interface(&self) -> bool {
        !self.ifaces.is_empty() || !self.iface_regex.is_empty() || self.can_reach.is_some()
    }

    /// Whether the flags may choose an underlay with IPv6 addresses looked at that they do not
    /// choose without: an IPv6 `--iface` address, an `--iface-regex`, or `--public-ipv6`.
    pub fn may_need_ipv6(&self) -> bool {
        let ipv6_iface = |v: &String| v.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_ipv6());
        self.ifaces.iter().any(ipv6_iface) || !self.iface_regex.is_empty() || self.public_ipv6.is_some()
    }
}

/// The chosen underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// The interface VXLAN packets leave by.
    pub name: String,
    pub index: u32,
    /// The address IPv4 VXLAN packets leave from (`flannel.<VNI>`'s `local`); `None` when the
    /// network config is IPv6 only (`"EnableIPv4": false`).
    pub ip: Option<Ipv4Addr>,
    /// The interface's MTU, bytes.
    pub mtu: u32,
    /// The address peers send IPv4 VXLAN packets to: the lease's PublicIP; `None` as `ip`.
    pub public_ip: Option<Ipv4Addr>,
    /// The IPv6 address the IPv6 VXLAN device's packets leave from (its `local`); `None` when
    /// the network config does not enable IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// The IPv6 address peers send to: the lease's PublicIPv6; `None` when the network config
    /// does not enable IPv6.
    pub public_ipv6: Option<Ipv6Addr>,
}

/// What the kernel showed, all [`choose`] needs.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// Every link in the kernel's order (flanneld walks them in this order).
    pub links: Vec<Ipv4Link>,
    /// `ip route get` for `--iface-can-reach`: the destination and the route or the kernel's
    /// reason for having none; `None` when it was not asked.
    pub can_reach: Option<(Ipv4Addr, Result<RouteHop, Errno>)>,
    /// The main table's first default route, when one was looked for and found.
    pub default_route: Option<RouteHop>,
    /// What the kernel showed of IPv6; `None` when the network config does not enable IPv6,
    /// and then nothing about IPv6 is chosen.
    pub ipv6: Option<Ipv6View>,
}

impl HostView {
    /// The IPv6 view when the network config is IPv6 only: then nothing of IPv4 counts.
    fn ipv6_only(&self) -> Option<&Ipv6View> {
        self.ipv6.as_ref().filter(|v6| v6.only)
    }
}

/// An underlay and the flags tried before it that gave none (worth a log line each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub underlay: Underlay,
    pub skipped: Vec<Miss>,
}

/// Chooses the underlay from what the kernel showed, by flanneld's rules (see the module doc);
/// its IPv6 addresses only when `host` has an IPv6 view (the config enables IPv6).
///
/// # Errors
/// Nothing matched (every miss is in the error, with the interfaces there are), `--public-ip`
/// (or `--public-ipv6`) alone names an address no interface holds, or there is no usable
/// default route (with IPv6, none by the IPv4 one's interface).
pub fn choose(choice: &UnderlayChoice, host: &HostView) -> Result<Chosen, UnderlayError> {
    let (found, skipped) = if choice.names_an_interface() {
        let mut misses = Vec::new();
        match by_flags(choice, host, &mut misses) {
            Some(found) => (found, misses),
            None => {
                let family = if host.ipv6_only().is_some() { "IPv6" } else { "IPv4" };
                return Err(UnderlayError::NoMatch { misses, available: Available::of(host), family });
            }
        }
    } else {
        (by_default(choice, host)?, Vec::new())
    };
    let Found { link, ip, ipv6 } = found;
    let public_ipv6 = ipv6.map(|ipv6| choice.public_ipv6.unwrap_or(ipv6));
    let underlay = Underlay {
        name: link.name.clone(),
        index: link.index,
        ip,
        mtu: link.mtu,
        public_ip: ip.map(|ip| choice.public_ip.unwrap_or(ip)),
        ipv6,
        public_ipv6,
    };
    Ok(Chosen { underlay, skipped })
}

/// An interface and the addresses a flag chose on it; `ip` is `None` when the config is IPv6
/// only; `ipv6` is `None` until the IPv6 side is settled, and stays so when the config does not
/// enable IPv6.
struct Found<'a> {
    link: &'a Ipv4Link,
    ip: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

/// `--iface`s, then `--iface-regex`es, then `--iface-can-reach`: the first that gives an
/// underlay; each one that does not leaves its miss in `misses`.
fn by_flags<'a>(choice: &UnderlayChoice, host: &'a HostView, misses: &mut Vec<Miss>) -> Option<Found<'a>> {
    // Lazy: a flag is only looked at when every flag before it missed.
    let attempts = (choice.ifaces.iter().map(|value| by_iface(value, choice, host)))
        .chain(choice.iface_regex.iter().map(|pattern| by_pattern(pattern, choice, host)))
        .chain(can_reach_attempts(choice, host));
    for (attempt, via) in attempts.zip(vias(choice)) {
        match attempt.and_then(|found| with_ipv6(found, choice, host, &via)) {
            Ok(found) => return Some(found),
            Err(miss) => misses.push(miss),
        }
    }
    None
}

/// `--iface-can-reach`'s attempt, as `ip route get` answered it; an IPv4 destination is a miss
/// when the config is IPv6 only (the route was not asked for).
fn can_reach_attempts<'a>(choice: &UnderlayChoice, host: &'a HostView) -> impl Iterator<Item = Result<Found<'a>, Miss>> {
    let ipv6_only = host.ipv6_only().is_some();
    let routed = host.can_reach.iter().filter(move |_| !ipv6_only);
    let routed = routed.map(|(destination, route)| by_route(*destination, route, &host.links));
    let refused = choice.can_reach.filter(|_| ipv6_only).map(|destination| Err(Miss::CanReachNeedsIpv4 { destination }));
    routed.chain(refused)
}

/// How each attempt of [`by_flags`] is named in its misses, in the same order.
fn vias(choice: &UnderlayChoice) -> impl Iterator<Item = String> + '_ {
    (choice.ifaces.iter().map(|value| format!("--iface={value}")))
        .chain(choice.iface_regex.iter().map(|pattern| format!("--iface-regex={}", pattern.as_str())))
        .chain(choice.can_reach.iter().map(|destination| format!("--iface-can-reach={destination}")))
}

/// One `--iface`: an IPv4 address selects itself on whichever interface holds it (any address,
/// as flanneld compares against all of them); so does an IPv6 address when the config enables
/// IPv6; anything else is an interface name.
fn by_iface<'a>(value: &str, choice: &UnderlayChoice, host: &'a HostView) -> Result<Found<'a>, Miss> {
    if host.ipv6_only().is_some() {
        return ipv6_only::by_iface(value, choice, host);
    }
    let (links, via) = (&host.links, format!("--iface={value}"));
    let ip = match value.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(ip)) => ip,
        Ok(IpAddr::V6(ip)) => {
            let v6 = host.ipv6.as_ref().ok_or_else(|| Miss::Ipv6Address { value: value.to_string() })?;
            let link = ipv6_holder(links, v6, ip).ok_or_else(|| Miss::NoSuchIpv6Address { value: value.to_string() })?;
            return first_usable(link, &via).map(|found| Found { ipv6: Some(ip), ..found });
        }
        Err(_) => {
            let link = links.iter().find(|l| l.name == value).ok_or_else(|| Miss::NoSuchName { value: value.to_string() })?;
            return first_usable(link, &via);
        }
    };
    let link = holding(links, ip).ok_or_else(|| Miss::NoSuchAddress { value: value.to_string() })?;
    with_mtu(link, Some(ip), &via)
}

/// One `--iface-regex`: IPv4 addresses first, across every interface, then (with IPv6) IPv6
/// addresses, then names. Like flanneld, the first interface whose name matches is final even
/// when it has no usable address.
fn by_pattern<'a>(pattern: &regex::Regex, choice: &UnderlayChoice, host: &'a HostView) -> Result<Found<'a>, Miss> {
    if host.ipv6_only().is_some() {
        return ipv6_only::by_pattern(pattern, choice, host);
    }
    let (links, via) = (&host.links, format!("--iface-regex={}", pattern.as_str()));
    let by_address = links.iter().find_map(|link| {
        usable_addresses(&link.addresses).into_iter().find(|ip| pattern.is_match(&ip.to_string())).map(|ip| (link, ip))
    });
    if let Some((link, ip)) = by_address {
        let ipv6 = host.ipv6.as_ref().and_then(|v6| matching_ipv6(pattern, &v6.addresses, link.index));
        return with_mtu(link, Some(ip), &via).map(|found| Found { ipv6, ..found });
    }
    if let Some((link, ipv6)) = host.ipv6.as_ref().and_then(|v6| pattern_ipv6(pattern, links, v6)) {
        return first_usable(link, &via).map(|found| Found { ipv6: Some(ipv6), ..found });
    }
    let families = if host.ipv6.is_some() { "IPv4 or IPv6" } else { "IPv4" };
    match links.iter().find(|l| pattern.is_match(&l.name)) {
        Some(link) => first_usable(link, &via),
        None => Err(Miss::NoPatternMatch { pattern: pattern.as_str().to_string(), families }),
    }
}

/// `--iface-can-reach`: the route's interface, and its preferred source when it has one (taken
/// as is, as flanneld does), else the interface's first usable address.
fn by_route<'a>(destination: Ipv4Addr, route: &Result<RouteHop, Errno>, links: &'a [Ipv4Link]) -> Result<Found<'a>, Miss> {
    let via = format!("--iface-can-reach={destination}");
    let hop = route.as_ref().map_err(|&errno| Miss::NoRoute { destination, errno })?;
    let link = route_link(hop, links, &via)?;
    match hop.source {
        Some(source) => with_mtu(link, Some(source), &via),
        None => first_usable(link, &via),
    }
}

/// No interface flag: the interface holding `--public-ip`, else (with IPv6) the one holding
/// `--public-ipv6`, else the default route's, which with IPv6 must be the IPv6 default route's
/// too.
fn by_default<'a>(choice: &UnderlayChoice, host: &'a HostView) -> Result<Found<'a>, UnderlayError> {
    if let Some(v6) = host.ipv6_only() {
        return ipv6_only::by_default(choice, host, v6);
    }
    let available = || Available::of(host);
    let unusable = |miss| UnderlayError::Unusable { miss, available: available() };
    if let Some(public_ip) = choice.public_ip {
        let link = holding(&host.links, public_ip)
            .ok_or_else(|| UnderlayError::PublicIpNotLocal { public_ip, available: available() })?;
        let via = format!("--public-ip={public_ip}");
        return with_mtu(link, Some(public_ip), &via).and_then(|found| with_ipv6(found, choice, host, &via)).map_err(unusable);
    }
    if let (Some(v6), Some(public_ipv6)) = (&host.ipv6, choice.public_ipv6) {
        let link = ipv6_holder(&host.links, v6, public_ipv6);
        let link = link.ok_or_else(|| UnderlayError::PublicIpv6NotLocal { public_ipv6, available: available() })?;
        let found = first_usable(link, &format!("--public-ipv6={public_ipv6}")).map_err(unusable)?;
        return Ok(Found { ipv6: Some(public_ipv6), ..found });
    }
    let hop = host.default_route.ok_or_else(|| UnderlayError::NoDefaultRoute { available: available() })?;
    let via = "the IPv4 default route";
    let found = route_link(&hop, &host.links, via).and_then(|link| first_usable(link, via)).map_err(unusable)?;
    same_default_route(found.link, host)?;
    with_ipv6(found, choice, host, via).map_err(unusable)
}

fn route_link<'a>(hop: &RouteHop, links: &'a [Ipv4Link], via: &str) -> Result<&'a Ipv4Link, Miss> {
    let index = hop.interface.ok_or_else(|| Miss::RouteWithoutInterface { via: via.to_string() })?;
    links.iter().find(|l| l.index == index).ok_or_else(|| Miss::RouteInterfaceGone { via: via.to_string(), index })
}

/// The first interface, in the kernel's order, that holds `ip` among any of its addresses.
fn holding(links: &[Ipv4Link], ip: Ipv4Addr) -> Option<&Ipv4Link> {
    links.iter().find(|l| l.addresses.contains(&ip))
}

fn first_usable<'a>(link: &'a Ipv4Link, via: &str) -> Result<Found<'a>, Miss> {
    let ip = usable_addresses(&link.addresses)
        .first()
        .copied()
        .ok_or_else(|| Miss::NoAddress { via: via.to_string(), name: link.name.clone() })?;
    with_mtu(link, Some(ip), via)
}

/// flanneld refuses an interface whose MTU it cannot tell (0), since the VXLAN MTU derives from it.
fn with_mtu<'a>(link: &'a Ipv4Link, ip: Option<Ipv4Addr>, via: &str) -> Result<Found<'a>, Miss> {
    if link.mtu == 0 {
        return Err(Miss::NoMtu { via: via.to_string(), name: link.name.clone() });
    }
    Ok(Found { link, ip, ipv6: None })
}

/// The addresses that may carry the underlay, in preference order: global unicast ones in the
/// kernel's order, then link-local ones (flanneld's `GetInterfaceIP4Addrs`).
pub fn usable_addresses(addresses: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let global = addresses
        .iter()
        .filter(|ip| !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_link_local() || ip.is_broadcast()));
    global.chain(addresses.iter().filter(|ip| ip.is_link_local())).copied().collect()
}

/// eth0, index 4, 198.18.0.11, MTU 1500, no IPv6: the underlay unit tests elsewhere build on.
#[cfg(test)]
impl Underlay {
    pub(crate) fn example() -> Self {
        let ip = Ipv4Addr::new(198, 18, 0, 11);
        Underlay { name: "eth0".into(), index: 4, ip: Some(ip), mtu: 1500, public_ip: Some(ip), ipv6: None, public_ipv6: None }
    }
}

#[cfg(test)]
#[path = "underlay_tests.rs"]
mod tests;
