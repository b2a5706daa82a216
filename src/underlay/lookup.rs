//! Reading the kernel for the underlay choice: [`find`] dumps what the rules need and applies
//! them; [`by_index`] re-reads the interface in use when the flags no longer match.

use std::net::Ipv4Addr;

use super::ipv6::kept_ipv6;
use super::{choose, usable_addresses, Families, HostView, Ipv6View, Underlay, UnderlayChoice, UnderlayError};
use crate::netlink::{Ipv4Link, Ipv6Address, Kernel, NetlinkError};

/// Reads links and addresses (and the routes the choice needs) and chooses the underlay, with
/// its IPv6 addresses when `families` has IPv6 (the network config enables IPv6), from IPv6
/// alone when `families` is IPv6 only (no IPv4 route is asked for: the host may have none); a
/// flag that gave nothing before the one that did is logged as a warning.
///
/// # Errors
/// The kernel could not be read, or [`choose`] found no underlay.
pub async fn find(kernel: &Kernel, choice: &UnderlayChoice, families: Families) -> Result<Underlay, UnderlayError> {
    let only = families == Families::Ipv6;
    let mut host = HostView { links: kernel.ipv4_links().await?, ..HostView::default() };
    if let Some(destination) = choice.can_reach.filter(|_| !only) {
        host.can_reach = Some((destination, kernel.route_get(destination).await?));
    }
    // IPv6 only: `--public-ip` does not choose the interface (it is ignored).
    let by_default_route = !choice.names_an_interface() && (only || choice.public_ip.is_none());
    if by_default_route && !only {
        host.default_route = kernel.default_route().await?;
    }
    if families.has_ipv6() {
        let default_route = match by_default_route && choice.public_ipv6.is_none() {
            true => kernel.default_route_v6().await?,
            false => None,
        };
        host.ipv6 = Some(Ipv6View { addresses: kernel.ipv6_addresses().await?, default_route, only });
    }
    let chosen = choose(choice, &host)?;
    for miss in &chosen.skipped {
        tracing::warn!(%miss, "underlay flag matched nothing; trying the next one");
    }
    Ok(chosen.underlay)
}

/// `ip -4 addr show` (and `ip -6 addr show` when the underlay has IPv6), for the interface
/// `underlay` names by index, when the flags no longer match anything (an interface chosen by
/// name was renamed, the default route went with its address): the same interface as it is now,
/// as [`kept`] keeps it. `None` when the interface is gone or [`kept`] gives nothing.
///
/// # Errors
/// The link or address dump failed.
pub async fn by_index(kernel: &Kernel, underlay: &Underlay) -> Result<Option<Underlay>, NetlinkError> {
    let links = kernel.ipv4_links().await?;
    let Some(link) = links.iter().find(|link| link.index == underlay.index) else { return Ok(None) };
    let ipv6_addresses = match underlay.ipv6 {
        Some(_) => kernel.ipv6_addresses().await?,
        None => Vec::new(),
    };
    Ok(kept(underlay, link, &ipv6_addresses))
}

/// `underlay` on its interface as `link` (and the IPv6 `ipv6_addresses`) now show it, with its
/// name and MTU, keeping each of the underlay's addresses while it holds it and otherwise taking
/// its first usable one (flanneld's rule for an interface named by `--iface`); each public
/// address follows its local one unless a flag set it apart. `None` when the interface lacks a
/// usable address of the family the overlay stands on: IPv4 when the underlay has it, else IPv6.
pub(super) fn kept(underlay: &Underlay, link: &Ipv4Link, ipv6_addresses: &[Ipv6Address]) -> Option<Underlay> {
    let (ip, public_ip) = match underlay.ip {
        Some(ip) => kept_ipv4(underlay, ip, &link.addresses).map(|(ip, public_ip)| (Some(ip), Some(public_ip)))?,
        None => (None, None),
    };
    let (ipv6, public_ipv6) = match (underlay.ipv6, kept_ipv6(underlay, ipv6_addresses)) {
        (Some(_), Some((ipv6, public_ipv6))) => (Some(ipv6), Some(public_ipv6)),
        // An IPv6-only underlay without a usable IPv6 address has nothing to stand on.
        (Some(_), None) if underlay.ip.is_none() => return None,
        // Dual stack without a global IPv6 address for now: the lease keeps advertising the last
        // one (a lease without its IPv6 part would crash flanneld dual-stack peers, a link-local
        // one no peer can use), and the IPv4 overlay carries on until an address comes back.
        (Some(_), None) => (underlay.ipv6, underlay.public_ipv6),
        (None, _) => (None, None),
    };
    Some(Underlay { name: link.name.clone(), index: link.index, ip, mtu: link.mtu, public_ip, ipv6, public_ipv6 })
}

/// The IPv4 addresses `underlay` (whose local one is `ip`) has on an interface holding
/// `addresses` now: `ip` while it is there, else the first usable one; the public one follows
/// the local one unless a flag set it apart. `None` without a usable address.
fn kept_ipv4(underlay: &Underlay, ip: Ipv4Addr, addresses: &[Ipv4Addr]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let now = match addresses.contains(&ip) {
        true => ip,
        false => *usable_addresses(addresses).first()?,
    };
    let public_ip = underlay.public_ip.filter(|public_ip| *public_ip != ip).unwrap_or(now);
    Some((now, public_ip))
}
