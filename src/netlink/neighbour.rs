//! Neighbours on a VXLAN device: ARP (IPv4) and NDP (IPv6) entries (`ip neigh`) for peers' VTEP
//! addresses, and FDB entries (`bridge fdb`) that send a peer's VTEP MAC to its public address.
//! One code path for both families: [`KernelFamily`] picks the address family and attributes.

use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use netlink_packet_route::AddressFamily;

use super::family::KernelFamily;
use super::{ignore_missing, request_error, Kernel, NetlinkError};
use crate::model::{ArpEntry, FdbEntry, MacAddr};

impl Kernel {
    /// `ip neigh replace <ip> lladdr <mac> dev <device> nud permanent` (`ip -6 neigh` for an
    /// IPv6 entry).
    ///
    /// # Errors
    /// The kernel refused the entry.
    pub async fn replace_arp<A: KernelFamily>(&self, index: u32, entry: ArpEntry<A>) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add(index, entry.ip.into())
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
    pub async fn delete_arp<A: KernelFamily>(&self, index: u32, entry: ArpEntry<A>) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = A::ADDRESS_FAMILY;
        message.header.ifindex = index;
        message.attributes.push(NeighbourAttribute::Destination(entry.ip.neighbour_address()));
        ignore_missing(self.handle.neighbours().del(message).execute().await.map_err(request_error("delete neighbour")))
    }

    /// `bridge fdb replace <mac> dev <device> dst <ip> self permanent`
    ///
    /// # Errors
    /// The kernel refused the entry (e.g. `EOPNOTSUPP` for a multicast MAC).
    pub async fn replace_fdb<A: KernelFamily>(&self, index: u32, entry: FdbEntry<A>) -> Result<(), NetlinkError> {
        self.handle
            .neighbours()
            .add_bridge(index, &entry.mac.0)
            .flags(NeighbourFlags::Own)
            .destination(entry.dst.into())
            .replace()
            .execute()
            .await
            .map_err(request_error("replace fdb entry"))
    }

    /// `bridge fdb del <mac> dev <device> dst <ip> self`; an entry already gone is success.
    ///
    /// # Errors
    /// The kernel refused the deletion.
    pub async fn delete_fdb<A: KernelFamily>(&self, index: u32, entry: FdbEntry<A>) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.flags = NeighbourFlags::Own;
        message.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
        message.attributes.push(NeighbourAttribute::Destination(entry.dst.neighbour_address()));
        ignore_missing(self.handle.neighbours().del(message).execute().await.map_err(request_error("delete fdb entry")))
    }
}

/// A neighbour message's destination of family `A`, if it has one.
pub(super) fn neighbour_ip<A: KernelFamily>(message: &NeighbourMessage) -> Option<A> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(address) => A::from_neighbour_address(address),
        _ => None,
    })
}

/// A neighbour message's MAC, if it has one of six bytes.
fn neighbour_mac(message: &NeighbourMessage) -> Option<MacAddr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => bytes.as_slice().try_into().ok().map(MacAddr),
        _ => None,
    })
}

/// The ARP (or NDP) entry a neighbour message of family `A` describes; `None` without an
/// address of that family or a MAC.
pub(super) fn arp_entry<A: KernelFamily>(message: &NeighbourMessage) -> Option<ArpEntry<A>> {
    if message.header.family != A::ADDRESS_FAMILY {
        return None;
    }
    Some(ArpEntry { ip: neighbour_ip(message)?, mac: neighbour_mac(message)? })
}

/// The FDB entry a bridge-family neighbour message describes, if its destination is of family
/// `A`; `None` for one without `self` (the kernel's own) or without a MAC or destination.
pub(super) fn fdb_entry<A: KernelFamily>(message: &NeighbourMessage) -> Option<FdbEntry<A>> {
    if !message.header.flags.contains(NeighbourFlags::Own) {
        return None;
    }
    Some(FdbEntry { mac: neighbour_mac(message)?, dst: neighbour_ip(message)? })
}
