//! Kernel notifications (`ip monitor link neigh route`, and `ip monitor nexthop`): what wakes
//! the reconciler when our device, its tables or the underlay changed by someone else's hand.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ipnetwork::Ipv4Network;
use netlink_packet_route::neighbour::{NeighbourMessage, NeighbourState};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::MulticastGroup;
use tokio::sync::Notify;

use super::link::link_name;
use super::neighbour::{arp_entry, fdb_entry, neighbour_ip};
use super::nexthop;
use super::route::{route_table, MAIN_TABLE};
use super::snapshot::{direct_route, our_route};
use super::{Kernel, NetlinkError, OwnedTask};
use crate::model::{ArpEntry, FdbEntry, KernelState, MacAddr};

/// Kernel notifications, as `ip monitor link neigh route` prints them.
type NetlinkEvent = NetlinkMessage<RouteNetlinkMessage>;

/// Wakes the reconciler when our device or its tables changed by someone else's hand.
pub struct DeviceChanges {
    changed: Arc<Notify>,
    index: Arc<AtomicU32>,
    /// The state the reconciler is moving the device to: a neighbour notification that agrees
    /// with it (the echo of our own write) wakes nobody. `None` while it is not known: then
    /// every neighbour notification on the device wakes the reconciler.
    wanted: Arc<Mutex<Option<Arc<KernelState>>>>,
    /// Set when a link or an IPv4 or IPv6 address changed elsewhere than on our device: the underlay
    /// may have gone, come back, been renamed or readdressed, and must be looked up again.
    underlay_changed: Arc<AtomicBool>,
    /// The notification socket's connection, the nexthop watcher and the filter: aborted when
    /// the reconciler that owns this drops. Their ending is not fatal (repairs then wait for
    /// the periodic resync), so they are not supervised by the daemon.
    _tasks: Vec<OwnedTask>,
}

impl DeviceChanges {
    /// Tells the monitor what the device's tables are about to be.
    pub fn want(&self, state: Arc<KernelState>) {
        *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }

    /// Forgets the wanted state (and frees it) while the reconciler reads the kernel: a change
    /// made meanwhile must wake it, whatever the last pass wanted.
    pub fn forget_wanted(&self) {
        *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Follows the device under a new index once it has been recreated.
    pub fn follow_index(&self, index: u32) {
        self.index.store(index, Ordering::Relaxed);
    }

    /// Whether a link or address changed since the last call, which clears it.
    pub fn take_underlay_changed(&self) -> bool {
        self.underlay_changed.swap(false, Ordering::Relaxed)
    }

    /// Completes when a change arrived since the last call; any number of changes in between
    /// wake us once.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// `ip monitor link neigh address route` (and `ip monitor nexthop`): subscribes to link,
/// neighbour, IPv4 and IPv6 address and IPv4 route notifications so a hand-deleted
/// entry or device is repaired at once instead of at the next periodic resync, and an underlay
/// that vanished, came back or was renamed or readdressed is looked up again at once
/// ([`DeviceChanges::take_underlay_changed`]). A task of its own filters them
/// as they arrive, so a burst (our own thousands of writes echoing back at start-up) never
/// queues up in memory. Echoes of our own route and nexthop writes carry our port id and wake
/// nobody. The kernel stamps VXLAN FDB notifications and ARP deletions with port 0, so a
/// neighbour notification wakes the reconciler only if it disagrees with the state it last
/// said it wants ([`DeviceChanges::want`]). Nexthop notifications, which rtnetlink cannot parse, are
/// watched on a socket of their own (`nexthop::watch`). With `any_main_route` (DirectRouting),
/// every main-table route notification and every link change wakes the reconciler: a route
/// elsewhere can make a peer's PublicIP on-link or stop being so, which switches that peer
/// between direct and VXLAN, and an interface going down drops its routes without a route
/// notification.
///
/// # Errors
/// A notification socket could not be opened or subscribed.
pub fn monitor(
    kernel: &Kernel,
    name: &str,
    index: u32,
    network: Ipv4Network,
    any_main_route: bool,
) -> Result<DeviceChanges, NetlinkError> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
    ];
    let (connection, _handle, mut events) = rtnetlink::new_multicast_connection(&groups).map_err(NetlinkError::Socket)?;
    let mut tasks = vec![OwnedTask::spawn(connection)];
    let mut changes = DeviceChanges {
        changed: Arc::new(Notify::new()),
        index: Arc::new(AtomicU32::new(index)),
        wanted: Arc::new(Mutex::new(None)),
        underlay_changed: Arc::new(AtomicBool::new(false)),
        _tasks: Vec::new(),
    };
    if kernel.nexthops.load(Ordering::Relaxed) {
        let socket = nexthop::subscribe().map_err(NetlinkError::Socket)?;
        tasks.push(OwnedTask::spawn(nexthop::watch(socket, kernel.raw_port, changes.changed.clone())));
    }
    let (changed, watched, name) = (changes.changed.clone(), changes.index.clone(), name.to_string());
    let (wanted_state, underlay_changed) = (changes.wanted.clone(), changes.underlay_changed.clone());
    let own_ports = [kernel.port, kernel.raw_port];
    tasks.push(OwnedTask::spawn(async move {
        while let Some((event, _)) = futures::StreamExt::next(&mut events).await {
            // Lost notifications (socket buffer overrun) could be about anything: look again.
            let overrun = matches!(event.payload, NetlinkPayload::Overrun(_));
            let ours = own_ports.contains(&event.header.port_number);
            let index = watched.load(Ordering::Relaxed);
            let wanted = || wanted_state.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let underlay = overrun || (!ours && may_concern_underlay(&event, index));
            if underlay {
                underlay_changed.store(true, Ordering::Relaxed);
            }
            if underlay || overrun || (!ours && concerns_device(&event, index, &name, network, any_main_route, wanted)) {
                tracing::trace!(message = ?event.payload, "a kernel notification wakes the reconciler");
                changed.notify_one();
            }
        }
        tracing::warn!("kernel notifications stopped; repairs wait for the periodic resync");
    }));
    changes._tasks = tasks;
    Ok(changes)
}

/// Whether a notification may change which interface and address the underlay is: any link,
/// IPv4 or IPv6 address change other than on our device (index `device`); an IPv6 address also
/// changes when its flags do (duplicate address detection ends, its preferred lifetime ends). The underlay's index is not
/// enough: a NIC deleted and created again, or another NIC that now matches `--iface`, has a
/// new one. Links and addresses change rarely, and a lookup is a small dump.
fn may_concern_underlay(message: &NetlinkEvent, device: u32) -> bool {
    let NetlinkPayload::InnerMessage(inner) = &message.payload else { return false };
    match inner {
        RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link) => link.header.index != device,
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            matches!(a.header.family, AddressFamily::Inet | AddressFamily::Inet6) && a.header.index != device
        }
        _ => false,
    }
}

/// Whether a notification concerns the device with this index or name (for its neighbours:
/// one that departs from the `wanted` state), or a direct route to a subnet of the overlay
/// `network`, or (with `any_main_route`) any main-table route.
fn concerns_device(
    message: &NetlinkEvent,
    index: u32,
    name: &str,
    network: Ipv4Network,
    any_main_route: bool,
    wanted: impl Fn() -> Option<Arc<KernelState>>,
) -> bool {
    let NetlinkPayload::InnerMessage(inner) = &message.payload else { return false };
    match inner {
        // An interface going down takes its routes with it without a route notification.
        RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link) => {
            any_main_route || link.header.index == index || link_name(link) == name
        }
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) if n.header.ifindex == index => {
            let present = matches!(inner, RouteNetlinkMessage::NewNeighbour(_));
            wanted().is_none_or(|wanted| !neighbour_agrees(n, present, &wanted))
        }
        RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
            route_table(r) == MAIN_TABLE
                && (any_main_route || our_route(r, index, network).is_some() || direct_route(r, network).is_some())
        }
        _ => false,
    }
}

/// Whether a neighbour notification on our device leaves it as `wanted` has it: a wanted entry
/// of ours added (`present`), one not wanted deleted, or a neighbour the kernel manages for an
/// address (or MAC) none of ours uses. An ARP deletion may name only the address.
fn neighbour_agrees(message: &NeighbourMessage, present: bool, wanted: &KernelState) -> bool {
    let permanent = message.header.state == NeighbourState::Permanent;
    // Sets are ordered by IP (ARP) and by MAC (FDB) first: "any entry for this key" is a range.
    let (entry_wanted, key_ours) = if message.header.family == AddressFamily::Bridge {
        let Some(entry) = fdb_entry(message) else { return false };
        let for_mac =
            FdbEntry { mac: entry.mac, dst: Ipv4Addr::UNSPECIFIED }..=FdbEntry { mac: entry.mac, dst: Ipv4Addr::BROADCAST };
        (Some(wanted.fdb.contains(&entry)), wanted.fdb.range(for_mac).next().is_some())
    } else {
        let Some(ip) = neighbour_ip(message) else { return false };
        let for_ip = ArpEntry { ip, mac: MacAddr([0; 6]) }..=ArpEntry { ip, mac: MacAddr([0xff; 6]) };
        (arp_entry(message).map(|entry| wanted.arp.contains(&entry)), wanted.arp.range(for_ip).next().is_some())
    };
    match (present, permanent, entry_wanted) {
        (true, true, entry_wanted) => entry_wanted == Some(true),
        (true, false, _) => !key_ours,
        (false, _, Some(entry_wanted)) => !entry_wanted,
        (false, _, None) => !key_ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags};

    fn neighbour(family: AddressFamily, state: NeighbourState, ip: [u8; 4], mac: Option<u8>) -> NeighbourMessage {
        let mut message = NeighbourMessage::default();
        (message.header.family, message.header.state) = (family, state);
        if family == AddressFamily::Bridge {
            message.header.flags = NeighbourFlags::Own;
        }
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::from(ip))));
        message.attributes.extend(mac.map(|last| NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, last])));
        message
    }

    #[test]
    fn only_neighbour_notifications_that_depart_from_the_wanted_state_wake_the_reconciler() {
        let (vtep, peer) = (Ipv4Addr::new(10, 5, 2, 0), Ipv4Addr::new(198, 18, 0, 12));
        let mac = MacAddr([2, 0, 0, 0, 0, 2]);
        let wanted = KernelState {
            arp: [ArpEntry { ip: vtep, mac }].into(),
            fdb: [FdbEntry { mac, dst: peer }].into(),
            ..Default::default()
        };
        let (arp, fdb, permanent) = (AddressFamily::Inet, AddressFamily::Bridge, NeighbourState::Permanent);
        let agrees = |m: NeighbourMessage, present| neighbour_agrees(&m, present, &wanted);
        assert!(agrees(neighbour(arp, permanent, [10, 5, 2, 0], Some(2)), true), "the echo of our ARP write");
        assert!(agrees(neighbour(fdb, permanent, [198, 18, 0, 12], Some(2)), true), "the echo of our FDB write");
        assert!(agrees(neighbour(arp, NeighbourState::Failed, [10, 5, 3, 0], None), false), "our removal, address only");
        assert!(agrees(neighbour(fdb, permanent, [198, 18, 0, 13], Some(3)), false), "our FDB removal");
        assert!(agrees(neighbour(arp, NeighbourState::Reachable, [10, 5, 9, 9], Some(9)), true), "not an address of ours");

        assert!(!agrees(neighbour(arp, permanent, [10, 5, 2, 0], Some(7)), true), "our ARP entry changed by hand");
        assert!(!agrees(neighbour(arp, NeighbourState::Failed, [10, 5, 2, 0], None), false), "our ARP entry deleted");
        assert!(!agrees(neighbour(arp, NeighbourState::Reachable, [10, 5, 2, 0], Some(2)), true), "ours made non-permanent");
        assert!(!agrees(neighbour(fdb, permanent, [198, 18, 0, 12], Some(2)), false), "our FDB entry deleted");
        assert!(!agrees(neighbour(fdb, permanent, [198, 18, 0, 99], Some(2)), true), "a second destination for our MAC");
    }
}
