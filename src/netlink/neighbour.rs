//! Neighbours on the VXLAN device: ARP entries (`ip neigh`) for peers' VTEP addresses, and FDB
//! entries (`bridge fdb`) that send a peer's VTEP MAC to its PublicIP.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use netlink_packet_route::AddressFamily;

use super::{ignore_missing, request_error, Kernel, NetlinkError};
use crate::model::{ArpEntry, FdbEntry, MacAddr};

impl Kernel {
    /// `ip neigh replace <ip> lladdr <mac> dev <device> nud permanent`
    ///
    /// # Errors
    /// The kernel refused the entry.
    pub async fn replace_arp(&self, index: u32, entry: ArpEntry) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(entry.ip))
            .link_layer_address(&entry.mac.0)
            .replace()
            .execute()
            .await
            .map_err(request_error("replace neighbour"))
    }

    /// `ip neigh del <ip> dev <device>`; an entry already gone is success.
    ///
    /// # Errors
    /// The kernel refused the deletion.
    pub async fn delete_arp(&self, index: u32, entry: ArpEntry) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = index;
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.ip)));
        ignore_missing(self.handle.neighbours().del(message).execute().await.map_err(request_error("delete neighbour")))
    }

    /// `bridge fdb replace <mac> dev <device> dst <ip> self permanent`
    ///
    /// # Errors
    /// The kernel refused the entry (e.g. `EOPNOTSUPP` for a multicast MAC).
    pub async fn replace_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add_bridge(index, &entry.mac.0)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(entry.dst))
            .replace()
            .execute()
            .await
            .map_err(request_error("replace fdb entry"))
    }

    /// `bridge fdb del <mac> dev <device> dst <ip> self`; an entry already gone is success.
    ///
    /// # Errors
    /// The kernel refused the deletion.
    pub async fn delete_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.flags = NeighbourFlags::Own;
        message.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)));
        ignore_missing(self.handle.neighbours().del(message).execute().await.map_err(request_error("delete fdb entry")))
    }
}

/// A neighbour message's IPv4 destination, if it has one.
pub(super) fn neighbour_ip(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// The ARP entry a neighbour message describes; `None` without an address or a MAC.
pub(super) fn arp_entry(message: &NeighbourMessage) -> Option<ArpEntry> {
    let mut ip = None;
    let mut mac = None;
    for attr in &message.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => ip = Some(*addr),
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = bytes.as_slice().try_into().ok().map(MacAddr),
            _ => {}
        }
    }
    Some(ArpEntry { ip: ip?, mac: mac? })
}

/// The FDB entry a bridge-family neighbour message describes; `None` for one without `self`
/// (the kernel's own) or without a MAC or destination. FDB dumps carry the destination as raw
/// bytes (`NeighbourAddress::Other`) because the bridge family has no IP address family of its
/// own.
pub(super) fn fdb_entry(message: &NeighbourMessage) -> Option<FdbEntry> {
    if !message.header.flags.contains(NeighbourFlags::Own) {
        return None;
    }
    let mut dst = None;
    let mut mac = None;
    for attr in &message.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => dst = Some(*addr),
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                dst = <[u8; 4]>::try_from(bytes.as_slice()).ok().map(Ipv4Addr::from)
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = bytes.as_slice().try_into().ok().map(MacAddr),
            _ => {}
        }
    }
    Some(FdbEntry { mac: mac?, dst: dst? })
}
