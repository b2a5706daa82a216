//! Addresses: every link's IPv4 addresses and IPv6 addresses with their flags (the raw material
//! of the underlay choice), and a VXLAN device's own address of its family (`ip addr`,
//! `ip -6 addr`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::AddressFamily;

use super::family::KernelFamily;
use super::link::{link_mtu, link_name};
use super::{request_error, Kernel, NetlinkError};
use crate::model::Subnet;

/// A link and its IPv4 addresses, as `ip -4 addr show` lists them: the raw material of the
/// underlay choice (see the `underlay` module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Link {
    pub name: String,
    pub index: u32,
    /// Bytes.
    pub mtu: u32,
    /// Every IPv4 address (primary and secondary, any scope), in the kernel's order.
    pub addresses: Vec<Ipv4Addr>,
}

/// One IPv6 address of a link, as `ip -6 addr show` lists it: the address and the states its
/// flags give (`IFA_F_*`), which decide whether the underlay may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Address {
    /// The link's index.
    pub index: u32,
    pub ip: Ipv6Addr,
    pub flags: Ipv6AddressFlags,
}

/// The `IFA_F_*` flags of an IPv6 address that matter to the underlay choice (`ip -6 addr`
/// prints them as `permanent`, `deprecated`, `tentative`, `temporary`, `dadfailed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ipv6AddressFlags {
    /// Configured by hand (or by a tool), not by autoconfiguration with a lifetime.
    pub permanent: bool,
    /// Its preferred lifetime is over: still valid, but new traffic should not start from it.
    pub deprecated: bool,
    /// Duplicate address detection has not finished: the kernel does not send from it yet.
    pub tentative: bool,
    /// A privacy address (RFC 8981), replaced every few hours.
    pub temporary: bool,
    /// Duplicate address detection found another host using it: never usable.
    pub dad_failed: bool,
}

impl Ipv6AddressFlags {
    /// From the kernel's flags: `IFA_FLAGS` (32 bits) when the message has it, else the header's
    /// 8. For IPv6, `IFA_F_SECONDARY` is `IFA_F_TEMPORARY`.
    fn of(message: &AddressMessage) -> Self {
        let header = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
        let flags = message
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(flags) => Some(*flags),
                _ => None,
            })
            .unwrap_or(header);
        Ipv6AddressFlags {
            permanent: flags.contains(AddressFlags::Permanent),
            deprecated: flags.contains(AddressFlags::Deprecated),
            tentative: flags.contains(AddressFlags::Tentative),
            temporary: flags.contains(AddressFlags::Secondary),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
        }
    }
}

impl Kernel {
    /// `ip -6 addr show`: every link's IPv6 addresses with their flags, in the kernel's order.
    ///
    /// # Errors
    /// The address dump failed.
    pub async fn ipv6_addresses(&self) -> Result<Vec<Ipv6Address>, NetlinkError> {
        let mut request = self.handle.address().get();
        request.message_mut().header.family = AddressFamily::Inet6;
        let addresses: Vec<AddressMessage> =
            request.execute().try_collect().await.map_err(request_error("dump IPv6 addresses"))?;
        Ok(addresses.iter().filter_map(ipv6_address).collect())
    }

    /// `ip -4 addr show`: every link with its IPv4 addresses, both in the kernel's order.
    ///
    /// # Errors
    /// The dump of links or addresses failed.
    pub async fn ipv4_links(&self) -> Result<Vec<Ipv4Link>, NetlinkError> {
        let links: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(request_error("dump links"))?;
        let addresses: Vec<_> =
            self.handle.address().get().execute().try_collect().await.map_err(request_error("dump addresses"))?;
        Ok(links
            .iter()
            .map(|link| Ipv4Link {
                name: link_name(link),
                index: link.header.index,
                mtu: link_mtu(link),
                addresses: addresses.iter().filter(|a| a.header.index == link.header.index).filter_map(address_ipv4).collect(),
            })
            .collect())
    }

    /// `ip addr show dev <index>`: the link's addresses of every family.
    async fn link_addresses(&self, index: u32) -> Result<Vec<AddressMessage>, NetlinkError> {
        let addresses = self.handle.address().get().set_link_index_filter(index).execute();
        addresses.try_collect().await.map_err(request_error("dump addresses"))
    }

    /// `ip addr replace <address> dev <device>` (`ip -6 addr` for an IPv6 one), removing every
    /// other address of its family from the device (a previous lease's subnet must not linger)
    /// but an IPv6 link-local one, which the kernel gives every device and IPv6 needs.
    ///
    /// # Errors
    /// The dump, a deletion or the addition failed.
    pub async fn ensure_address<A: KernelFamily>(&self, index: u32, address: A::Network) -> Result<(), NetlinkError> {
        let current = self.link_addresses(index).await?;
        let wanted = (address.network_address().into(), address.prefix_len());
        let mut present = false;
        for message in current {
            let Some(ip) = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => A::from_ip(*ip).map(Into::into),
                _ => None,
            }) else {
                continue;
            };
            if (ip, message.header.prefix_len) == wanted {
                present = true;
            } else if !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                tracing::info!(%ip, "removing stale address from the VXLAN device");
                self.handle.address().del(message).execute().await.map_err(request_error("delete address"))?;
            }
        }
        if !present {
            self.handle
                .address()
                .add(index, wanted.0, wanted.1)
                .replace()
                .execute()
                .await
                .map_err(request_error("add address"))?;
        }
        Ok(())
    }
}

/// An address message's IPv4 address (see [`local_address`]).
fn address_ipv4(message: &AddressMessage) -> Option<Ipv4Addr> {
    match local_address(message)? {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// An address message's address: `IFA_LOCAL` when present, since on a point-to-point link
/// `IFA_ADDRESS` is the peer's.
fn local_address(message: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

/// An address message's IPv6 address, link and flags; `None` for another family's.
fn ipv6_address(message: &AddressMessage) -> Option<Ipv6Address> {
    let IpAddr::V6(ip) = local_address(message)? else { return None };
    Some(Ipv6Address { index: message.header.index, ip, flags: Ipv6AddressFlags::of(message) })
}
