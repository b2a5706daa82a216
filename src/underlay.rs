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
//! [`choose`] is the pure rule set; [`find`] reads the kernel and applies it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use nix::errno::Errno;
use thiserror::Error;

use crate::netlink::{Ipv4Link, Kernel, NetlinkError, RouteHop};

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
}

impl UnderlayChoice {
    /// Whether any of `--iface`, `--iface-regex` or `--iface-can-reach` was given; without
    /// them the default route (or `--public-ip`) decides.
    fn names_an_interface(&self) -> bool {
        !self.ifaces.is_empty() || !self.iface_regex.is_empty() || self.can_reach.is_some()
    }
}

/// The chosen underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// The interface VXLAN packets leave by.
    pub name: String,
    pub index: u32,
    /// The address VXLAN packets leave from (the device's `local`).
    pub ip: Ipv4Addr,
    /// The interface's MTU, bytes.
    pub mtu: u32,
    /// The address peers send to: the lease's PublicIP.
    pub public_ip: Ipv4Addr,
    /// The IPv6 address peers send IPv6 VXLAN packets to (the lease's PublicIPv6), and the IPv6
    /// device's `local`; `None` when the config is IPv4 only or the underlay has none.
    pub public_ipv6: Option<std::net::Ipv6Addr>,
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
}

/// Why one flag (or the default route) gave no underlay; the next flag is tried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Miss {
    #[error("--iface={value}: no interface has the IPv4 address {value}")]
    NoSuchAddress { value: String },
    #[error("--iface={value}: an IPv6 address; weft chooses an IPv4 underlay")]
    Ipv6Address { value: String },
    #[error("--iface={value}: no interface is named {value:?}")]
    NoSuchName { value: String },
    #[error("{via}: interface {name} has no usable IPv4 address (global or link-local)")]
    NoAddress { via: String, name: String },
    #[error("{via}: interface {name} reports an MTU of 0")]
    NoMtu { via: String, name: String },
    #[error("--iface-regex={pattern}: matches no interface's IPv4 address or name")]
    NoPatternMatch { pattern: String },
    #[error("--iface-can-reach={destination}: the kernel has no route to it ({errno})")]
    NoRoute { destination: Ipv4Addr, errno: Errno },
    #[error("{via}: the route has no single output interface (multipath or unreachable)")]
    RouteWithoutInterface { via: String },
    #[error("{via}: the route's output interface (index {index}) no longer exists")]
    RouteInterfaceGone { via: String, index: u32 },
}

/// The interfaces an error offers instead, as flanneld lists them: `eth0:[192.168.78.11]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available(pub Vec<(String, Vec<Ipv4Addr>)>);

impl Available {
    fn of(links: &[Ipv4Link]) -> Self {
        Self(links.iter().map(|l| (l.name.clone(), usable_addresses(&l.addresses))).collect())
    }
}

impl fmt::Display for Available {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, addresses)) in self.0.iter().enumerate() {
            let addresses: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
            write!(f, "{}{name}:[{}]", if i == 0 { "" } else { ", " }, addresses.join(" "))?;
        }
        Ok(())
    }
}

/// Why no underlay could be chosen.
#[derive(Debug, Error)]
pub enum UnderlayError {
    #[error("cannot read this host's interfaces and routes: {0}")]
    Kernel(#[from] NetlinkError),
    #[error(
        "no interface matches --iface/--iface-regex/--iface-can-reach ({}); available interfaces: {available}; \
         give an interface name or one of its IPv4 addresses with --iface, or a pattern for either with --iface-regex",
        join(misses)
    )]
    NoMatch { misses: Vec<Miss>, available: Available },
    #[error(
        "--public-ip={public_ip}: no interface has this address, so it cannot tell which interface to use \
         (available interfaces: {available}); if peers reach this host at an address it does not hold (NAT), \
         keep --public-ip and choose the interface with --iface=<name or address>"
    )]
    PublicIpNotLocal { public_ip: Ipv4Addr, available: Available },
    #[error(
        "there is no IPv4 default route to take the underlay from (available interfaces: {available}); \
         choose one with --iface=<name or address>, --iface-regex or --iface-can-reach, or add a default route"
    )]
    NoDefaultRoute { available: Available },
    #[error("{miss} (available interfaces: {available}); choose another with --iface=<name or address>")]
    Unusable { miss: Miss, available: Available },
}

fn join(misses: &[Miss]) -> String {
    misses.iter().map(Miss::to_string).collect::<Vec<_>>().join("; ")
}

/// An underlay and the flags tried before it that gave none (worth a log line each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub underlay: Underlay,
    pub skipped: Vec<Miss>,
}

/// Chooses the underlay from what the kernel showed, by flanneld's rules (see the module doc).
///
/// # Errors
/// Nothing matched (every miss is in the error, with the interfaces there are), `--public-ip`
/// alone names an address no interface holds, or there is no usable default route.
pub fn choose(choice: &UnderlayChoice, host: &HostView) -> Result<Chosen, UnderlayError> {
    let available = || Available::of(&host.links);
    let (link, ip, skipped) = if choice.names_an_interface() {
        let mut misses = Vec::new();
        match by_flags(choice, host, &mut misses) {
            Some((link, ip)) => (link, ip, misses),
            None => return Err(UnderlayError::NoMatch { misses, available: available() }),
        }
    } else {
        let (link, ip) = by_default(choice, host)?;
        (link, ip, Vec::new())
    };
    let public_ip = choice.public_ip.unwrap_or(ip);
    let underlay = Underlay { name: link.name.clone(), index: link.index, ip, mtu: link.mtu, public_ip, public_ipv6: None };
    Ok(Chosen { underlay, skipped })
}

type Found<'a> = (&'a Ipv4Link, Ipv4Addr);

/// `--iface`s, then `--iface-regex`es, then `--iface-can-reach`: the first that gives an
/// underlay; each one that does not leaves its miss in `misses`.
fn by_flags<'a>(choice: &UnderlayChoice, host: &'a HostView, misses: &mut Vec<Miss>) -> Option<Found<'a>> {
    let links = &host.links;
    // Lazy: a flag is only looked at when every flag before it missed.
    let attempts = (choice.ifaces.iter().map(|value| by_iface(value, links)))
        .chain(choice.iface_regex.iter().map(|pattern| by_pattern(pattern, links)))
        .chain(host.can_reach.iter().map(|(destination, route)| by_route(*destination, route, links)));
    for attempt in attempts {
        match attempt {
            Ok(found) => return Some(found),
            Err(miss) => misses.push(miss),
        }
    }
    None
}

/// One `--iface`: an IPv4 address selects itself on whichever interface holds it (any address,
/// as flanneld compares against all of them); anything else is an interface name.
fn by_iface<'a>(value: &str, links: &'a [Ipv4Link]) -> Result<Found<'a>, Miss> {
    let ip = match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip,
        Ok(IpAddr::V6(ip)) => ip.to_ipv4_mapped().ok_or_else(|| Miss::Ipv6Address { value: value.to_string() })?,
        Err(_) => {
            let link = links.iter().find(|l| l.name == value).ok_or_else(|| Miss::NoSuchName { value: value.to_string() })?;
            return first_usable(link, &format!("--iface={value}"));
        }
    };
    let link = holding(links, ip).ok_or_else(|| Miss::NoSuchAddress { value: value.to_string() })?;
    with_mtu(link, ip, &format!("--iface={value}"))
}

/// One `--iface-regex`: addresses first, across every interface, then names. Like flanneld,
/// the first interface whose name matches is final even when it has no usable address.
fn by_pattern<'a>(pattern: &regex::Regex, links: &'a [Ipv4Link]) -> Result<Found<'a>, Miss> {
    let via = format!("--iface-regex={}", pattern.as_str());
    let by_address = links.iter().find_map(|link| {
        usable_addresses(&link.addresses).into_iter().find(|ip| pattern.is_match(&ip.to_string())).map(|ip| (link, ip))
    });
    if let Some((link, ip)) = by_address {
        return with_mtu(link, ip, &via);
    }
    match links.iter().find(|l| pattern.is_match(&l.name)) {
        Some(link) => first_usable(link, &via),
        None => Err(Miss::NoPatternMatch { pattern: pattern.as_str().to_string() }),
    }
}

/// `--iface-can-reach`: the route's interface, and its preferred source when it has one (taken
/// as is, as flanneld does), else the interface's first usable address.
fn by_route<'a>(destination: Ipv4Addr, route: &Result<RouteHop, Errno>, links: &'a [Ipv4Link]) -> Result<Found<'a>, Miss> {
    let via = format!("--iface-can-reach={destination}");
    let hop = route.as_ref().map_err(|&errno| Miss::NoRoute { destination, errno })?;
    let link = route_link(hop, links, &via)?;
    match hop.source {
        Some(source) => with_mtu(link, source, &via),
        None => first_usable(link, &via),
    }
}

/// No interface flag: the interface holding `--public-ip`, else the default route's.
fn by_default<'a>(choice: &UnderlayChoice, host: &'a HostView) -> Result<Found<'a>, UnderlayError> {
    let available = || Available::of(&host.links);
    let unusable = |miss| UnderlayError::Unusable { miss, available: available() };
    if let Some(public_ip) = choice.public_ip {
        let link = holding(&host.links, public_ip)
            .ok_or_else(|| UnderlayError::PublicIpNotLocal { public_ip, available: available() })?;
        return with_mtu(link, public_ip, &format!("--public-ip={public_ip}")).map_err(unusable);
    }
    let hop = host.default_route.ok_or_else(|| UnderlayError::NoDefaultRoute { available: available() })?;
    let via = "the IPv4 default route";
    route_link(&hop, &host.links, via).and_then(|link| first_usable(link, via)).map_err(unusable)
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
    with_mtu(link, ip, via)
}

/// flanneld refuses an interface whose MTU it cannot tell (0), since the VXLAN MTU derives from it.
fn with_mtu<'a>(link: &'a Ipv4Link, ip: Ipv4Addr, via: &str) -> Result<Found<'a>, Miss> {
    if link.mtu == 0 {
        return Err(Miss::NoMtu { via: via.to_string(), name: link.name.clone() });
    }
    Ok((link, ip))
}

/// The addresses that may carry the underlay, in preference order: global unicast ones in the
/// kernel's order, then link-local ones (flanneld's `GetInterfaceIP4Addrs`).
pub fn usable_addresses(addresses: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let global = addresses
        .iter()
        .filter(|ip| !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_link_local() || ip.is_broadcast()));
    global.chain(addresses.iter().filter(|ip| ip.is_link_local())).copied().collect()
}

/// Reads links and addresses (and the one route the choice needs) and chooses the underlay; a
/// flag that gave nothing before the one that did is logged as a warning.
///
/// # Errors
/// The kernel could not be read, or [`choose`] found no underlay.
pub async fn find(kernel: &Kernel, choice: &UnderlayChoice) -> Result<Underlay, UnderlayError> {
    let mut host = HostView { links: kernel.ipv4_links().await?, ..HostView::default() };
    if let Some(destination) = choice.can_reach {
        host.can_reach = Some((destination, kernel.route_get(destination).await?));
    }
    if !choice.names_an_interface() && choice.public_ip.is_none() {
        host.default_route = kernel.default_route().await?;
    }
    let mut chosen = choose(choice, &host)?;
    for miss in &chosen.skipped {
        tracing::warn!(%miss, "underlay flag matched nothing; trying the next one");
    }
    chosen.underlay.public_ipv6 = kernel.first_global_ipv6(chosen.underlay.index).await?;
    Ok(chosen.underlay)
}

/// `ip -4 addr show`, for the interface `underlay` names by index, when the flags no longer
/// match anything (an interface chosen by name was renamed, the default route went with its
/// address): the same interface as it is now, with its name and MTU, keeping the underlay's
/// address while it holds it and otherwise taking its first usable one (flanneld's rule for an
/// interface named by `--iface`); the PublicIP follows the address unless `--public-ip` set it.
/// `None` when the interface is gone or has no usable address.
///
/// # Errors
/// The link or address dump failed.
pub async fn by_index(kernel: &Kernel, underlay: &Underlay) -> Result<Option<Underlay>, NetlinkError> {
    let links = kernel.ipv4_links().await?;
    let Some(link) = links.iter().find(|link| link.index == underlay.index) else { return Ok(None) };
    let ip = match link.addresses.contains(&underlay.ip) {
        true => underlay.ip,
        false => match usable_addresses(&link.addresses).first() {
            Some(ip) => *ip,
            None => return Ok(None),
        },
    };
    let public_ip = if underlay.public_ip == underlay.ip { ip } else { underlay.public_ip };
    let public_ipv6 = kernel.first_global_ipv6(link.index).await?;
    Ok(Some(Underlay { name: link.name.clone(), index: link.index, ip, mtu: link.mtu, public_ip, public_ipv6 }))
}

/// eth0, index 4, 198.18.0.11, MTU 1500: the underlay unit tests elsewhere build on.
#[cfg(test)]
impl Underlay {
    pub(crate) fn example() -> Self {
        let ip = Ipv4Addr::new(198, 18, 0, 11);
        Underlay { name: "eth0".into(), index: 4, ip, mtu: 1500, public_ip: ip, public_ipv6: None }
    }
}

#[cfg(test)]
#[path = "underlay_tests.rs"]
mod tests;
