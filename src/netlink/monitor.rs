//! Kernel notifications (`ip monitor link neigh route`, and `ip monitor nexthop`): what wakes
//! the reconciler when our device, its tables or the underlay changed by someone else's hand.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use netlink_packet_route::neighbour::{NeighbourMessage, NeighbourState};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::MulticastGroup;
use tokio::sync::Notify;

use super::family::KernelFamily;
use super::link::link_name;
use super::neighbour::{arp_entry, fdb_entry, neighbour_ip};
use super::nexthop;
use super::route::{route_table, MAIN_TABLE};
use super::snapshot::{direct_route, our_route};
use super::{Kernel, NetlinkError, OwnedTask};
use crate::model::{ArpEntry, FdbEntry, KernelState, MacAddr};

/// Kernel notifications, as `ip monitor link neigh route` prints them.
type NetlinkEvent = NetlinkMessage<RouteNetlinkMessage>;

/// Wakes the reconciler when one of our devices or its tables changed by someone else's hand.
pub struct DeviceChanges {
    changed: Arc<Notify>,
    /// `flannel.<VNI>`, unless the overlay is IPv6 only.
    pub ipv4: Option<DeviceWatch<Ipv4Addr>>,
    /// `flannel-v6.<VNI>`, when the overlay is dual-stack or IPv6 only.
    pub ipv6: Option<DeviceWatch<Ipv6Addr>>,
    /// Set when a link or an underlay address changed elsewhere than on our devices: the
    /// underlay may have gone, come back, been renamed or readdressed, and must be looked up again.
    underlay_changed: Arc<AtomicBool>,
    /// The notification socket's connection, the nexthop watcher and the filter: aborted when
    /// the reconciler that owns this drops. Their ending is not fatal (repairs then wait for
    /// the periodic resync), so they are not supervised by the daemon.
    _tasks: Vec<OwnedTask>,
}

/// One VXLAN device the monitor follows, of family `A`: shared by the reconciler, which says
/// what the device's tables are about to be, and the monitor's filter, which reads it.
pub struct DeviceWatch<A: KernelFamily> {
    inner: Arc<Watched<A>>,
}

struct Watched<A: KernelFamily> {
    name: String,
    index: AtomicU32,
    /// The overlay network of the family: direct routes to its subnets are ours too.
    network: A::Network,
    /// The state the reconciler is moving the device to: a neighbour notification that agrees
    /// with it (the echo of our own write) wakes nobody. `None` while it is not known: then
    /// every neighbour notification on the device wakes the reconciler.
    wanted: Mutex<Option<Arc<KernelState<A>>>>,
}

impl<A: KernelFamily> DeviceWatch<A> {
    /// The device `name`, now at `index`, carrying the overlay `network`.
    pub fn new(name: &str, index: u32, network: A::Network) -> Self {
        let watched = Watched { name: name.to_string(), index: AtomicU32::new(index), network, wanted: Mutex::new(None) };
        Self { inner: Arc::new(watched) }
    }

    /// Tells the monitor what the device's tables are about to be.
    pub fn want(&self, state: Arc<KernelState<A>>) {
        *self.inner.wanted.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
    }

    /// Forgets the wanted state (and frees it) while the reconciler reads the kernel: a change
    /// made meanwhile must wake it, whatever the last pass wanted.
    pub fn forget_wanted(&self) {
        *self.inner.wanted.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Keeps of the wanted state only what the filter reads, its ARP (NDP) and FDB entries, once
    /// the reconciler has let go of it: the routes and nexthops are not held between passes
    /// (nor, dual-stack, while the other family's pass runs). Nothing changes while the
    /// reconciler still shares the state.
    pub fn keep_neighbours(&self) {
        let mut wanted = self.inner.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = wanted.take() {
            let neighbours = |state: KernelState<A>| KernelState { arp: state.arp, fdb: state.fdb, ..KernelState::default() };
            *wanted = Some(Arc::try_unwrap(state).map_or_else(|shared| shared, |state| Arc::new(neighbours(state))));
        }
    }

    /// Follows the device under a new index once it has been recreated.
    pub fn follow_index(&self, index: u32) {
        self.inner.index.store(index, Ordering::Relaxed);
    }

    fn index(&self) -> u32 {
        self.inner.index.load(Ordering::Relaxed)
    }

    fn share(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }

    /// Whether a notification concerns this device (see [`concerns_device`]).
    fn concerns(&self, event: &NetlinkEvent, any_main_route: bool) -> bool {
        let wanted = || self.inner.wanted.lock().unwrap_or_else(PoisonError::into_inner).clone();
        concerns_device(event, self.index(), &self.inner.name, self.inner.network, any_main_route, wanted)
    }
}

impl DeviceChanges {
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
/// neighbour, address and route notifications (IPv4, and IPv6 with an `ipv6` device) so a
/// hand-deleted entry or device is repaired at once instead of at the next periodic resync, and
/// an underlay that vanished, came back or was renamed or readdressed is looked up again at
/// once ([`DeviceChanges::take_underlay_changed`]). A task of its own filters them
/// as they arrive, so a burst (our own thousands of writes echoing back at start-up) never
/// queues up in memory. Echoes of our own route and nexthop writes carry our port id and wake
/// nobody. The kernel stamps VXLAN FDB notifications and ARP deletions with port 0, so a
/// neighbour notification wakes the reconciler only if it disagrees with the state it last
/// said it wants for that device ([`DeviceWatch::want`]). Nexthop notifications, which
/// rtnetlink cannot parse, are watched on a socket of their own (`nexthop::watch`). With
/// `any_main_route` (DirectRouting), every main-table route notification and every link change
/// wakes the reconciler: a route elsewhere can make a peer's PublicIP on-link or stop being
/// so, which switches that peer between direct and VXLAN, and an interface going down drops
/// its routes without a route notification.
///
/// # Errors
/// A notification socket could not be opened or subscribed.
pub fn monitor(
    kernel: &Kernel,
    ipv4: Option<DeviceWatch<Ipv4Addr>>,
    ipv6: Option<DeviceWatch<Ipv6Addr>>,
    any_main_route: bool,
) -> Result<DeviceChanges, NetlinkError> {
    let mut groups = vec![MulticastGroup::Link, MulticastGroup::Neigh];
    if ipv4.is_some() {
        groups.extend([MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv4Route]);
    }
    if ipv6.is_some() {
        groups.extend([MulticastGroup::Ipv6Ifaddr, MulticastGroup::Ipv6Route]);
    }
    let (connection, _handle, mut events) = rtnetlink::new_multicast_connection(&groups).map_err(NetlinkError::Socket)?;
    let mut tasks = vec![OwnedTask::spawn(connection)];
    let changed = Arc::new(Notify::new());
    let underlay_changed = Arc::new(AtomicBool::new(false));
    if kernel.nexthops.load(Ordering::Relaxed) {
        let socket = nexthop::subscribe().map_err(NetlinkError::Socket)?;
        tasks.push(OwnedTask::spawn(nexthop::watch(socket, kernel.raw_port, changed.clone())));
    }
    let (watch4, watch6) = (ipv4.as_ref().map(DeviceWatch::share), ipv6.as_ref().map(DeviceWatch::share));
    let (wake, underlay_flag) = (changed.clone(), underlay_changed.clone());
    let own_ports = [kernel.port, kernel.raw_port];
    tasks.push(OwnedTask::spawn(async move {
        while let Some((event, _)) = futures::StreamExt::next(&mut events).await {
            // Lost notifications (socket buffer overrun) could be about anything: look again.
            let overrun = matches!(event.payload, NetlinkPayload::Overrun(_));
            let ours = own_ports.contains(&event.header.port_number);
            let devices = [watch4.as_ref().map(DeviceWatch::index), watch6.as_ref().map(DeviceWatch::index)];
            let underlay = overrun || (!ours && may_concern_underlay(&event, &devices));
            if underlay {
                underlay_flag.store(true, Ordering::Relaxed);
            }
            let device = || {
                watch4.as_ref().is_some_and(|w| w.concerns(&event, any_main_route))
                    || watch6.as_ref().is_some_and(|w| w.concerns(&event, any_main_route))
            };
            if underlay || (!ours && device()) {
                tracing::trace!(message = ?event.payload, "a kernel notification wakes the reconciler");
                wake.notify_one();
            }
        }
        tracing::warn!("kernel notifications stopped; repairs wait for the periodic resync");
    }));
    Ok(DeviceChanges { changed, ipv4, ipv6, underlay_changed, _tasks: tasks })
}

/// Whether a notification may change which interface and address the underlay is: any link or
/// address change (IPv4 when there is an IPv4 device, IPv6 when there is an IPv6 one) other
/// than on our `devices`.
/// The underlay's index is not enough: a NIC deleted and created again, or another NIC that
/// now matches `--iface`, has a new one. Links and addresses change rarely, and a lookup is a
/// small dump.
fn may_concern_underlay(message: &NetlinkEvent, devices: &[Option<u32>; 2]) -> bool {
    let NetlinkPayload::InnerMessage(inner) = &message.payload else { return false };
    let other = |index: u32| !devices.contains(&Some(index));
    match inner {
        RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link) => other(link.header.index),
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            let family = (a.header.family == AddressFamily::Inet && devices[0].is_some())
                || (a.header.family == AddressFamily::Inet6 && devices[1].is_some());
            family && other(a.header.index)
        }
        _ => false,
    }
}

/// Whether a notification concerns the device of family `A` with this index or name (for its
/// neighbours: one that departs from the `wanted` state), or a direct route to a subnet of the
/// overlay `network`, or (with `any_main_route`) any main-table route.
fn concerns_device<A: KernelFamily>(
    message: &NetlinkEvent,
    index: u32,
    name: &str,
    network: A::Network,
    any_main_route: bool,
    wanted: impl Fn() -> Option<Arc<KernelState<A>>>,
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
                && (any_main_route || our_route::<A>(r, index, network).is_some() || direct_route::<A>(r, network).is_some())
        }
        _ => false,
    }
}

/// Whether a neighbour notification on our device leaves it as `wanted` has it: a wanted entry
/// of ours added (`present`), one not wanted deleted, or a neighbour the kernel manages for an
/// address (or MAC) none of ours uses. An ARP (or NDP) deletion may name only the address.
fn neighbour_agrees<A: KernelFamily>(message: &NeighbourMessage, present: bool, wanted: &KernelState<A>) -> bool {
    let permanent = message.header.state == NeighbourState::Permanent;
    // Sets are ordered by IP (ARP) and by MAC (FDB) first: "any entry for this key" is a range.
    let (entry_wanted, key_ours) = if message.header.family == AddressFamily::Bridge {
        let Some(entry) = fdb_entry::<A>(message) else { return false };
        let for_mac = FdbEntry { mac: entry.mac, dst: A::MIN }..=FdbEntry { mac: entry.mac, dst: A::MAX };
        (Some(wanted.fdb.contains(&entry)), wanted.fdb.range(for_mac).next().is_some())
    } else {
        let Some(ip) = neighbour_ip::<A>(message) else { return false };
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

    #[test]
    fn between_passes_the_monitor_keeps_only_the_neighbour_entries_it_reads() {
        let (vtep, mac) = (Ipv4Addr::new(10, 5, 2, 0), MacAddr([2, 0, 0, 0, 0, 2]));
        let nexthop = crate::model::Nexthop::for_gateway(vtep);
        let route = crate::model::RouteEntry {
            subnet: "10.5.2.0/24".parse().unwrap(),
            gateway: vtep,
            onlink: true,
            nexthop: Some(nexthop.id),
        };
        let state = KernelState {
            arp: [ArpEntry { ip: vtep, mac }].into(),
            fdb: [FdbEntry { mac, dst: Ipv4Addr::new(198, 18, 0, 12) }].into(),
            nexthops: [nexthop].into(),
            routes: [route].into(),
            ..Default::default()
        };
        let watch = DeviceWatch::<Ipv4Addr>::new("flannel.1", 7, "10.5.0.0/16".parse().unwrap());
        let pass = Arc::new(state.clone());
        watch.want(Arc::clone(&pass));
        let wanted = || watch.inner.wanted.lock().unwrap().clone().unwrap();
        watch.keep_neighbours();
        assert_eq!(*wanted(), state, "left whole while the reconciler still shares it");
        drop(pass);
        watch.keep_neighbours();
        let kept = wanted();
        assert_eq!((&kept.arp, &kept.fdb), (&state.arp, &state.fdb));
        assert!(kept.nexthops.is_empty() && kept.routes.is_empty());
        watch.forget_wanted();
        watch.keep_neighbours();
        assert!(watch.inner.wanted.lock().unwrap().is_none(), "nothing wanted stays nothing");
    }

    /// An NDP or FDB notification on the IPv6 device, as the kernel sends it (an FDB dump
    /// carries its IPv6 destination as raw bytes).
    fn ipv6_neighbour(bridge: bool, state: NeighbourState, ip: &str, mac: u8) -> NeighbourMessage {
        let ip: Ipv6Addr = ip.parse().unwrap();
        let mut message = NeighbourMessage::default();
        message.header.state = state;
        message.header.family = if bridge { AddressFamily::Bridge } else { AddressFamily::Inet6 };
        let address = if bridge { NeighbourAddress::Other(ip.octets().to_vec()) } else { NeighbourAddress::Inet6(ip) };
        if bridge {
            message.header.flags = NeighbourFlags::Own;
        }
        message.attributes.push(NeighbourAttribute::Destination(address));
        message.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, mac]));
        message
    }

    #[test]
    fn ipv6_echoes_wake_nobody_and_departures_do() {
        let (vtep, peer): (Ipv6Addr, Ipv6Addr) = ("fd00:5:2::".parse().unwrap(), "fd18::12".parse().unwrap());
        let mac = MacAddr([2, 0, 0, 0, 0, 2]);
        let wanted = KernelState {
            arp: [ArpEntry { ip: vtep, mac }].into(),
            fdb: [FdbEntry { mac, dst: peer }].into(),
            ..Default::default()
        };
        let permanent = NeighbourState::Permanent;
        let agrees = |m: NeighbourMessage, present| neighbour_agrees(&m, present, &wanted);
        assert!(agrees(ipv6_neighbour(false, permanent, "fd00:5:2::", 2), true), "the echo of our NDP write");
        assert!(agrees(ipv6_neighbour(true, permanent, "fd18::12", 2), true), "the echo of our FDB write");
        assert!(agrees(ipv6_neighbour(false, NeighbourState::Reachable, "fe80::1", 9), true), "the kernel's own");
        assert!(!agrees(ipv6_neighbour(false, permanent, "fd00:5:2::", 2), false), "our NDP entry deleted");
        assert!(!agrees(ipv6_neighbour(true, permanent, "fd18::12", 2), false), "our FDB entry deleted");
        assert!(!agrees(ipv6_neighbour(true, permanent, "fd18::99", 2), true), "a second destination for our MAC");
        let ipv4_only: KernelState<Ipv4Addr> = KernelState::default();
        assert!(!neighbour_agrees(&ipv6_neighbour(false, permanent, "fd00:5:2::", 2), true, &ipv4_only), "not of the family");
    }
}
