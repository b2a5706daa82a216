//! Addresses: every link's IPv4 addresses (the raw material of the underlay choice), and a
//! VXLAN device's own address of its family (`ip addr`, `ip -6 addr`).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::LinkMessage;

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

impl Kernel {
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

    /// `ip -6 addr show dev <index> scope global`: the first global IPv6 address of a link, in
    /// the kernel's order; `None` when it has none.
    ///
    /// # Errors
    /// The address dump failed.
    pub async fn first_global_ipv6(&self, index: u32) -> Result<Option<std::net::Ipv6Addr>, NetlinkError> {
        let addresses = self.link_addresses(index).await?;
        // RT_SCOPE_UNIVERSE: not link-local, not host.
        Ok(addresses.iter().filter(|a| a.header.scope == netlink_packet_route::address::AddressScope::Universe).find_map(|a| {
            a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                _ => None,
            })
        }))
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

/// An address message's IPv4 address: `IFA_LOCAL` when present, since on a point-to-point link
/// `IFA_ADDRESS` is the peer's.
fn address_ipv4(message: &AddressMessage) -> Option<Ipv4Addr> {
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(IpAddr::V4(ip)) => return Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            _ => {}
        }
    }
    address
}
