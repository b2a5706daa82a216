//! Kernel objects through rtnetlink: the links, addresses and routes the underlay is chosen
//! from, the VXLAN device, and the ARP, FDB and route entries on it. Each function's doc line
//! names the `ip`/`bridge` command it mirrors.
//!
//! Every write is idempotent (`replace`, create-or-adopt), and only objects on our own device are
//! read or changed.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, MulticastGroup, RouteMessageBuilder};
use thiserror::Error;
use tokio::sync::Notify;

use crate::lease::MacAddr;
use crate::reconcile::{
    ArpEntry, DirectRoute, FdbEntry, KernelContext, KernelState, MainTable, Nexthop, NexthopSupport, RouteEntry,
};

mod nexthop;
use nexthop::NexthopRequest;

/// VXLAN adds 50 bytes of headers (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;

const ENOENT: i32 = 2;
const EINVAL: i32 = 22;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;
const MAIN_TABLE: u32 = 254;
/// Receive buffer for the raw socket: the kernel fills up to 32 KiB per read of a dump.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A failed netlink operation, with the kernel's errno when it sent one.
#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink {op} failed: {source}")]
    Request { op: &'static str, errno: Option<i32>, source: rtnetlink::Error },
    #[error("netlink {op} failed: {source}")]
    Raw { op: &'static str, source: std::io::Error },
    #[error("the VXLAN device {0} disappeared while it was being configured")]
    DeviceVanished(String),
}

fn request_error(op: &'static str) -> impl Fn(rtnetlink::Error) -> NetlinkError + Copy {
    move |source| {
        let errno = match &source {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
            _ => None,
        };
        NetlinkError::Request { op, errno, source }
    }
}

impl NetlinkError {
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            Self::Request { errno, .. } => *errno,
            _ => None,
        }
    }
}

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

/// Where the kernel sends packets for one destination: a route's output interface and preferred
/// source, either of which a route may lack (a multipath or unreachable route has no interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteHop {
    pub interface: Option<u32>,
    pub source: Option<Ipv4Addr>,
}

/// Everything the VXLAN device must be (the `device` module decides how a device that differs
/// is repaired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mtu: u32,
    pub learning: bool,
    pub gbp: bool,
    /// The MAC our lease advertises as VtepMAC.
    pub mac: MacAddr,
}

/// The device of a name as it is in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub index: u32,
    /// Its settings; `None` when the link is not a VXLAN device.
    pub spec: Option<VxlanSpec>,
    pub up: bool,
}

/// The VXLAN device as it is in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanDevice {
    pub index: u32,
    pub mac: MacAddr,
}

/// A handle on the kernel's routing netlink socket.
#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
    /// A second socket for what rtnetlink's handle cannot do: streaming dumps (see
    /// [`Kernel::dump`]) and nexthop objects.
    raw: Arc<tokio::sync::Mutex<RawSocket>>,
    /// Whether routes point at nexthop objects (see `nexthop.rs`); false once the kernel
    /// turned them down, and then every route carries its own gateway as flanneld's do.
    nexthops: Arc<AtomicBool>,
    /// Our sockets' netlink port ids: the kernel stamps them on the notifications our own
    /// writes cause, which is how [`monitor`] tells them from changes made by someone else.
    port: u32,
    raw_port: u32,
    /// Sequence numbers for requests on the raw socket.
    sequence: Arc<AtomicU32>,
}

impl Kernel {
    /// Opens a netlink socket and spawns the task that drives it.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (mut connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        // Bound now rather than on first send, so the port id is known before any write.
        let address = connection.socket_mut().socket_mut().bind_auto().map_err(NetlinkError::Socket)?;
        tokio::spawn(connection);
        let mut raw = TokioSocket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        let raw_address = raw.socket_mut().bind_auto().map_err(NetlinkError::Socket)?;
        raw.socket_mut().connect(&rtnetlink::sys::SocketAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        Ok(Self {
            handle,
            raw: Arc::new(tokio::sync::Mutex::new(RawSocket { socket: raw, received: Vec::with_capacity(RECEIVE_BUFFER) })),
            nexthops: Arc::new(AtomicBool::new(true)),
            port: address.port_number(),
            raw_port: raw_address.port_number(),
            sequence: Arc::new(AtomicU32::new(1)),
        })
    }

    /// `ip link show <name>`; `None` when there is no such link.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let result = self.handle.link().get().match_name(name.to_string()).execute().try_next().await;
        match result.map_err(request_error("get link")) {
            Ok(link) => Ok(link),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
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

    /// `ip route get <destination>`: the route the kernel would use, or (inner `Err`) the
    /// kernel's reason for having none, e.g. `ENETUNREACH`.
    ///
    /// # Errors
    /// The request failed without an answer from the kernel.
    pub async fn route_get(&self, destination: Ipv4Addr) -> Result<Result<RouteHop, Errno>, NetlinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(destination, 32).build();
        match self.handle.route().get(query).execute().try_next().await.map_err(request_error("get route")) {
            Ok(Some(route)) => Ok(Ok(route_hop(&route))),
            Ok(None) => Ok(Err(Errno::ENETUNREACH)),
            Err(error) => match error.errno() {
                Some(errno) => Ok(Err(Errno::from_raw(errno))),
                None => Err(error),
            },
        }
    }

    /// `ip -4 route show default`: the main table's first default route (the kernel lists the
    /// lowest metric first), or `None` when there is none.
    ///
    /// # Errors
    /// The route dump failed.
    pub async fn default_route(&self) -> Result<Option<RouteHop>, NetlinkError> {
        let routes = self.dump_ipv4_routes().await?;
        Ok(routes.iter().find(|r| r.header.destination_prefix_length == 0 && route_table(r) == MAIN_TABLE).map(route_hop))
    }

    async fn dump_ipv4_routes(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        self.handle.route().get(query).execute().try_collect().await.map_err(request_error("dump routes"))
    }

    /// `ip -d link show <name>`: the device as weft describes one (`spec` is `None` for a link
    /// of that name that is not a VXLAN device); `None` when there is no such link.
    pub async fn vxlan_device(&self, name: &str) -> Result<Option<DeviceState>, NetlinkError> {
        let link = self.link_by_name(name).await?;
        Ok(link.map(|link| DeviceState {
            index: link.header.index,
            spec: vxlan_spec(&link),
            up: link.header.flags.contains(LinkFlags::Up),
        }))
    }

    /// `ip link add <name> type vxlan id <vni> local <ip> dev <underlay> dstport <port>
    /// nolearning address <mac> mtu <mtu>` and `up`.
    ///
    /// # Errors
    /// The kernel refused the device (e.g. `EEXIST`: a link of that name exists).
    pub async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<VxlanDevice, NetlinkError> {
        let mut builder = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.underlay_index)
            .local(spec.local)
            .port(spec.port)
            .learning(spec.learning)
            .mtu(spec.mtu)
            .address(spec.mac.0.to_vec())
            .up();
        if spec.gbp {
            builder = builder.gbp();
        }
        self.handle.link().add(builder.build()).execute().await.map_err(request_error("add vxlan link"))?;
        let created = self.link_by_name(&spec.name).await?.ok_or_else(|| NetlinkError::DeviceVanished(spec.name.clone()))?;
        Ok(VxlanDevice { index: created.header.index, mac: spec.mac })
    }

    /// `ip link del dev <index>`.
    ///
    /// # Errors
    /// The kernel refused (e.g. `ENODEV`: no such link).
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle.link().del(index).execute().await.map_err(request_error("delete link"))
    }

    /// `ip link set dev <index> address <mac> mtu <mtu> up`.
    ///
    /// # Errors
    /// The kernel refused one of the settings.
    pub async fn set_link(&self, index: u32, mac: MacAddr, mtu: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).address(mac.0.to_vec()).mtu(mtu).up().build();
        self.handle.link().set(message).execute().await.map_err(request_error("set link"))
    }

    /// `ip addr replace <address> dev <device>`, removing any other IPv4 address from it (a
    /// previous lease's subnet must not linger).
    pub async fn ensure_address(&self, index: u32, address: Ipv4Network) -> Result<(), NetlinkError> {
        let current: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(request_error("dump addresses"))?;
        let mut present = false;
        for message in current {
            let ip = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let Some(ip) = ip else { continue };
            if ip == address.ip() && message.header.prefix_len == address.prefix() {
                present = true;
            } else {
                tracing::info!(%ip, "removing stale address from the VXLAN device");
                self.handle.address().del(message).execute().await.map_err(request_error("delete address"))?;
            }
        }
        if !present {
            self.handle
                .address()
                .add(index, IpAddr::V4(address.ip()), address.prefix())
                .replace()
                .execute()
                .await
                .map_err(request_error("add address"))?;
        }
        Ok(())
    }

    /// `ip neigh show dev`, `bridge fdb show dev`, `ip nexthop show dev` and `ip route show dev`
    /// for our device, and the direct routes to subnets of `network`, as entries; and what
    /// decides their form: the main table's other routes and the nexthop ids others hold.
    /// Only permanent neighbours are ours; the kernel manages the rest.
    pub async fn read_state(&self, index: u32, network: Ipv4Network) -> Result<(KernelState, KernelContext), NetlinkError> {
        let ours = move |n: &NeighbourMessage| n.header.ifindex == index && n.header.state == NeighbourState::Permanent;
        let neighbour_dump = |family| {
            let mut request = NeighbourMessage::default();
            request.header.family = family;
            RouteNetlinkMessage::GetNeighbour(request)
        };
        let arp = self
            .dump("dump neighbours", neighbour_dump(AddressFamily::Unspec), |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if ours(&n) => arp_entry(&n),
                _ => None,
            })
            .await?;
        let fdb = self
            .dump("dump fdb", neighbour_dump(AddressFamily::Bridge), |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if ours(&n) => fdb_entry(&n),
                _ => None,
            })
            .await?;
        let (nexthops, nexthop_support) = self.read_nexthops(index, network).await?;
        let route_dump = RouteNetlinkMessage::GetRoute(RouteMessageBuilder::<Ipv4Addr>::new().build());
        let main_routes = self
            .dump("dump routes", route_dump, |m| match m {
                RouteNetlinkMessage::NewRoute(r) => main_route(&r, index, network),
                _ => None,
            })
            .await?;
        let mut state = KernelState { arp, fdb, nexthops, ..KernelState::default() };
        let mut others = Vec::new();
        for route in main_routes {
            match route {
                MainRoute::Vxlan(entry) => {
                    state.routes.insert(entry);
                }
                MainRoute::Direct(entry) => {
                    state.direct_routes.insert(entry);
                }
                MainRoute::Other { destination, has_gateway } => others.push((destination, has_gateway)),
            }
        }
        Ok((state, KernelContext { main_table: MainTable::new(others), nexthops: nexthop_support }))
    }

    /// `ip nexthop show`: ours (on our device, with an id weftd gives: an address of the overlay
    /// `network` as a number), and the ids that other programs' nexthops hold. Nothing, and no
    /// support, on a kernel without nexthop objects.
    async fn read_nexthops(&self, index: u32, network: Ipv4Network) -> Result<(BTreeSet<Nexthop>, NexthopSupport), NetlinkError> {
        let (mut ours, mut taken) = (BTreeSet::new(), BTreeSet::new());
        if !self.nexthops.load(Ordering::Relaxed) {
            return Ok((ours, NexthopSupport::Unavailable));
        }
        let dump = NetlinkPayload::InnerMessage(NexthopRequest::Dump);
        let result = self
            .exchange("dump nexthops", dump, NLM_F_DUMP, |reply| {
                let Some(nexthop) = nexthop::parse(reply) else { return };
                if nexthop.device == Some(index) && network.contains(Ipv4Addr::from(nexthop.id)) {
                    // A gateway other than the one the id names (or none) is rewritten.
                    ours.insert(Nexthop { id: nexthop.id, gateway: nexthop.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED) });
                } else {
                    taken.insert(nexthop.id);
                }
            })
            .await;
        match result {
            Ok(()) => Ok((ours, NexthopSupport::Available { taken })),
            Err(e) if e.errno() == Some(EOPNOTSUPP) => {
                self.without_nexthops(&e);
                Ok((BTreeSet::new(), NexthopSupport::Unavailable))
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a dump request and turns each message into an entry as it is received. rtnetlink
    /// would first queue the whole dump as parsed messages, several hundred bytes each:
    /// megabytes for thousands of peers, at every pass.
    async fn dump<E: Ord>(
        &self,
        op: &'static str,
        request: RouteNetlinkMessage,
        entry: impl Fn(RouteNetlinkMessage) -> Option<E>,
    ) -> Result<BTreeSet<E>, NetlinkError> {
        let mut entries = BTreeSet::new();
        self.exchange(op, NetlinkPayload::from(request), NLM_F_DUMP, |bytes| {
            // A message rtnetlink cannot parse (some route of another program's, say) is
            // stepped over, as rtnetlink itself does: one odd entry must not stop repairs.
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(message), .. }) => entries.extend(entry(message)),
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, op, "skipping a netlink message that does not parse"),
            }
        })
        .await?;
        Ok(entries)
    }

    /// Sends a request on the raw socket and hands each reply, as the bytes of one netlink
    /// message, to `on_reply` until the kernel's closing message: `NLMSG_DONE` after a dump, the
    /// acknowledgement otherwise. Replies to an earlier request that was abandoned halfway carry
    /// another sequence number and are skipped.
    async fn exchange<T: NetlinkSerializable>(
        &self,
        op: &'static str,
        payload: NetlinkPayload<T>,
        flags: u16,
        mut on_reply: impl FnMut(&[u8]),
    ) -> Result<(), NetlinkError> {
        let mut raw = self.raw.lock().await;
        let RawSocket { socket, received } = &mut *raw;
        let io_error = |source| NetlinkError::Raw { op, source };
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
        message.header.flags = NLM_F_REQUEST | flags;
        message.header.sequence_number = sequence;
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        socket.send(&bytes).await.map_err(io_error)?;
        loop {
            received.clear();
            socket.recv(received).await.map_err(io_error)?;
            for (frame, bytes) in frames(received) {
                if frame.sequence_number() != sequence {
                    continue;
                }
                match frame.message_type() {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return acknowledgement(op, bytes),
                    _ => on_reply(bytes),
                }
            }
        }
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <device> nud permanent`
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

    /// `ip neigh del <ip> dev <device>`
    pub async fn delete_arp(&self, index: u32, entry: ArpEntry) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = index;
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.ip)));
        ignore_missing(self.handle.neighbours().del(message).execute().await.map_err(request_error("delete neighbour")))
    }

    /// `bridge fdb replace <mac> dev <device> dst <ip> self permanent`
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

    /// `bridge fdb del <mac> dev <device> dst <ip> self`
    pub async fn delete_fdb(&self, index: u32, entry: FdbEntry) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.flags = NeighbourFlags::Own;
        message.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
        message.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)));
        ignore_missing(self.handle.neighbours().del(message).execute().await.map_err(request_error("delete fdb entry")))
    }

    /// `ip route replace <subnet> nhid <id>`, or in flanneld's form `ip route replace <subnet>
    /// via <gateway> dev <device> onlink`.
    pub async fn replace_route(&self, index: u32, entry: RouteEntry) -> Result<(), NetlinkError> {
        let route = match entry.nexthop {
            Some(id) => nexthop_route(entry.subnet, id),
            None => route_message(index, entry.subnet, entry.gateway).onlink().build(),
        };
        self.handle.route().add(route).replace().execute().await.map_err(request_error("replace route"))
    }

    /// `ip route del <subnet> nhid <id>`, or `ip route del <subnet> via <gateway> dev <device>`
    /// for a route in flanneld's form. The kernel answers an id that no longer exists with
    /// EINVAL: the route went with its nexthop, so that too is "already gone".
    pub async fn delete_route(&self, index: u32, entry: RouteEntry) -> Result<(), NetlinkError> {
        match entry.nexthop {
            Some(id) => match self.delete_route_message(nexthop_route(entry.subnet, id)).await {
                Err(e) if e.errno() == Some(EINVAL) => Ok(()),
                result => result.map(|_| ()),
            },
            None => self.delete_route_message(route_message(index, entry.subnet, entry.gateway).build()).await.map(|_| ()),
        }
    }

    /// `ip nexthop add id <id> via <gateway> dev <device> onlink`. Exclusive: if the id was
    /// taken since the state was read, this fails rather than take over another's nexthop.
    pub async fn add_nexthop(&self, index: u32, entry: Nexthop) -> Result<(), NetlinkError> {
        self.write_nexthop("add nexthop", index, entry, NLM_F_CREATE | NLM_F_EXCL).await
    }

    /// `ip nexthop replace id <id> via <gateway> dev <device> onlink`, for a nexthop of ours
    /// that points elsewhere.
    pub async fn rewrite_nexthop(&self, index: u32, entry: Nexthop) -> Result<(), NetlinkError> {
        self.write_nexthop("rewrite nexthop", index, entry, NLM_F_REPLACE).await
    }

    async fn write_nexthop(&self, op: &'static str, index: u32, entry: Nexthop, flags: u16) -> Result<(), NetlinkError> {
        let write = NexthopRequest::Write { id: entry.id, gateway: entry.gateway, index };
        let result = self.nexthop_request(op, write, flags).await;
        if let Err(e) = &result {
            if e.errno() == Some(EOPNOTSUPP) {
                self.without_nexthops(e);
            }
        }
        result
    }

    /// `ip nexthop del id <id>`
    pub async fn delete_nexthop(&self, entry: Nexthop) -> Result<(), NetlinkError> {
        ignore_missing(self.nexthop_request("delete nexthop", NexthopRequest::Delete { id: entry.id }, 0).await)
    }

    /// `ip route replace <subnet> via <peer's PublicIP>`: the kernel picks the device, as for
    /// flanneld's direct routes.
    pub async fn replace_direct_route(&self, entry: DirectRoute) -> Result<(), NetlinkError> {
        let route = direct_route_message(entry);
        self.handle.route().add(route).replace().execute().await.map_err(request_error("replace direct route"))
    }

    /// `ip route del <subnet> via <peer's PublicIP>`
    pub async fn delete_direct_route(&self, entry: DirectRoute) -> Result<(), NetlinkError> {
        self.delete_route_message(direct_route_message(entry)).await.map(|_| ())
    }

    /// `ip route del` for the route `message` describes, whoever wrote it (flanneld, `ip`, or
    /// us): any protocol and scope. Whether there was such a route.
    async fn delete_route_message(&self, mut message: RouteMessage) -> Result<bool, NetlinkError> {
        message.header.protocol = RouteProtocol::Unspec;
        message.header.scope = RouteScope::NoWhere;
        found(self.handle.route().del(message).execute().await.map_err(request_error("delete route")))
    }

    /// The kernel has no nexthop objects (Linux 5.3+): from now on every route carries its own
    /// gateway, as flanneld's do.
    fn without_nexthops(&self, error: &NetlinkError) {
        if self.nexthops.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "this kernel has no nexthop objects (Linux 5.3+); every route gets its own gateway, which slows adding thousands of peers");
        }
    }

    /// Sends one nexthop request and waits for the kernel's acknowledgement.
    async fn nexthop_request(&self, op: &'static str, request: NexthopRequest, flags: u16) -> Result<(), NetlinkError> {
        self.exchange(op, NetlinkPayload::InnerMessage(request), NLM_F_ACK | flags, |_| {}).await
    }
}

/// Ok for an acknowledgement (`NLMSG_ERROR` with code 0), the request's error otherwise.
fn acknowledgement(op: &'static str, bytes: &[u8]) -> Result<(), NetlinkError> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
        Ok(NetlinkMessage { payload: NetlinkPayload::Error(e), .. }) if e.code.is_some() => {
            Err(request_error(op)(rtnetlink::Error::NetlinkError(e)))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(NetlinkError::Raw { op, source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) }),
    }
}

/// The raw socket and its receive buffer, reused by every request (one per nexthop write).
struct RawSocket {
    socket: TokioSocket,
    received: Vec<u8>,
}

/// The netlink messages in one datagram: each header, with the message's bytes.
fn frames(datagram: &[u8]) -> impl Iterator<Item = (NetlinkBuffer<&[u8]>, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let frame = NetlinkBuffer::new_checked(datagram.get(at..)?).ok()?;
        let length = frame.length() as usize;
        let bytes = &datagram[at..(at + length).min(datagram.len())];
        at += length.max(1).next_multiple_of(4);
        Some((frame, bytes))
    })
}

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
    /// Set when a link or an IPv4 address changed elsewhere than on our device: the underlay
    /// may have gone, come back, been renamed or readdressed, and must be looked up again.
    underlay_changed: Arc<AtomicBool>,
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

/// Subscribes to link, neighbour, IPv4 address and IPv4 route notifications so a hand-deleted
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
pub fn monitor(
    kernel: &Kernel,
    name: &str,
    index: u32,
    network: Ipv4Network,
    any_main_route: bool,
) -> Result<DeviceChanges, NetlinkError> {
    let groups = [MulticastGroup::Link, MulticastGroup::Neigh, MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv4Route];
    let (connection, _handle, mut events) = rtnetlink::new_multicast_connection(&groups).map_err(NetlinkError::Socket)?;
    tokio::spawn(connection);
    let changes = DeviceChanges {
        changed: Arc::new(Notify::new()),
        index: Arc::new(AtomicU32::new(index)),
        wanted: Arc::new(Mutex::new(None)),
        underlay_changed: Arc::new(AtomicBool::new(false)),
    };
    if kernel.nexthops.load(Ordering::Relaxed) {
        let socket = nexthop::subscribe().map_err(NetlinkError::Socket)?;
        tokio::spawn(nexthop::watch(socket, kernel.raw_port, changes.changed.clone()));
    }
    let (changed, watched, name) = (changes.changed.clone(), changes.index.clone(), name.to_string());
    let (wanted_state, underlay_changed) = (changes.wanted.clone(), changes.underlay_changed.clone());
    let own_ports = [kernel.port, kernel.raw_port];
    tokio::spawn(async move {
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
    });
    Ok(changes)
}

/// Whether a notification may change which interface and address the underlay is: any link or
/// IPv4 address change other than on our device (index `device`). The underlay's index is not
/// enough: a NIC deleted and created again, or another NIC that now matches `--iface`, has a
/// new one. Links and addresses change rarely, and a lookup is a small dump.
fn may_concern_underlay(message: &NetlinkEvent, device: u32) -> bool {
    let NetlinkPayload::InnerMessage(inner) = &message.payload else { return false };
    match inner {
        RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link) => link.header.index != device,
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            a.header.family == AddressFamily::Inet && a.header.index != device
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

/// `<subnet> nhid <id>`: a peer route that points at a nexthop object.
fn nexthop_route(subnet: Ipv4Network, id: u32) -> RouteMessage {
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(subnet.network(), subnet.prefix()).build();
    route.attributes.push(RouteAttribute::NhId(id));
    route
}

fn route_message(index: u32, subnet: Ipv4Network, gateway: Ipv4Addr) -> RouteMessageBuilder<Ipv4Addr> {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet.network(), subnet.prefix())
        .gateway(gateway)
        .output_interface(index)
}

fn direct_route_message(entry: DirectRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(entry.subnet.network(), entry.subnet.prefix())
        .gateway(entry.gateway)
        .build()
}

/// Deleting something already gone is success: the goal state is reached.
fn ignore_missing(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    found(result).map(|_| ())
}

/// Whether a deletion found something to delete; "no such entry" is not an error.
fn found(result: Result<(), NetlinkError>) -> Result<bool, NetlinkError> {
    match result {
        Err(e) if matches!(e.errno(), Some(ENOENT) | Some(ESRCH)) => Ok(false),
        other => other.map(|()| true),
    }
}

fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn link_mtu(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500)
}

fn link_mac(link: &LinkMessage) -> Option<MacAddr> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok().map(MacAddr),
        _ => None,
    })
}

/// The settings of a VXLAN link, as a [`VxlanSpec`]; `None` for a link of another kind.
fn vxlan_spec(link: &LinkMessage) -> Option<VxlanSpec> {
    let infos = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    if !infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan))) {
        return None;
    }
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    })?;
    let mut spec = VxlanSpec {
        name: link_name(link),
        vni: 0,
        port: 0,
        local: Ipv4Addr::UNSPECIFIED,
        underlay_index: 0,
        mtu: link_mtu(link),
        learning: false,
        gbp: false,
        mac: link_mac(link).unwrap_or(MacAddr([0; 6])),
    };
    for attribute in data {
        match attribute {
            InfoVxlan::Id(vni) => spec.vni = *vni,
            InfoVxlan::Port(port) => spec.port = *port,
            InfoVxlan::Local(local) => spec.local = *local,
            InfoVxlan::Link(index) => spec.underlay_index = *index,
            InfoVxlan::Learning(learning) => spec.learning = *learning,
            InfoVxlan::Gbp => spec.gbp = true,
            _ => {}
        }
    }
    Some(spec)
}

fn neighbour_ip(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn arp_entry(message: &NeighbourMessage) -> Option<ArpEntry> {
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

/// FDB dumps carry the destination as raw bytes (`NeighbourAddress::Other`) because the
/// bridge family has no IP address family of its own.
fn fdb_entry(message: &NeighbourMessage) -> Option<FdbEntry> {
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

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn route_hop(route: &RouteMessage) -> RouteHop {
    let source = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    RouteHop { interface: route_oif(route), source }
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

fn route_oif(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(index) => Some(*index),
        _ => None,
    })
}

/// A main-table route, as the reconciler sorts them.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MainRoute {
    Vxlan(RouteEntry),
    Direct(DirectRoute),
    Other { destination: Ipv4Network, has_gateway: bool },
}

fn main_route(route: &RouteMessage, index: u32, network: Ipv4Network) -> Option<MainRoute> {
    if route_table(route) != MAIN_TABLE {
        return None;
    }
    if let Some(entry) = our_route(route, index, network) {
        return Some(MainRoute::Vxlan(entry));
    }
    if let Some(entry) = direct_route(route, network) {
        return Some(MainRoute::Direct(entry));
    }
    if route.header.kind != RouteType::Unicast {
        return None; // blackhole, unreachable and the like reach nothing on-link
    }
    let has_gateway = route.attributes.iter().any(|a| {
        matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::NhId(_) | RouteAttribute::MultiPath(_) | RouteAttribute::Via(_))
    });
    let destination = route_destination(route).unwrap_or(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid"));
    Some(MainRoute::Other { destination, has_gateway })
}

/// A route to a subnet of the overlay `network` through a gateway on another device: a direct
/// route, ours or flanneld's (nothing else routes the overlay's subnets through the underlay).
fn direct_route(route: &RouteMessage, network: Ipv4Network) -> Option<DirectRoute> {
    let subnet = route_destination(route)?;
    let gateway = route_gateway(route)?;
    (in_network(subnet, network) && route_nexthop_id(route).is_none()).then_some(DirectRoute { subnet, gateway })
}

/// Whether `subnet` is a subnet of the overlay `network` (and not the network itself).
fn in_network(subnet: Ipv4Network, network: Ipv4Network) -> bool {
    subnet.prefix() > network.prefix() && network.contains(subnet.network())
}

/// The entry for a main-table route of our device's: one that leaves through it or, where
/// `nexthop_compat_mode=0` hides a nexthop route's device and gateway, one that points at the
/// nexthop weftd names after the route's own subnet.
fn our_route(route: &RouteMessage, index: u32, network: Ipv4Network) -> Option<RouteEntry> {
    if route_table(route) != MAIN_TABLE {
        return None;
    }
    match route_oif(route) {
        Some(oif) if oif == index => route_entry(route),
        Some(_) => None,
        None => hidden_nexthop_route(route, network),
    }
}

/// A route that names only a nexthop id, if the id is the one weftd gives the nexthop for the
/// route's subnet (a subnet of the overlay `network`): the gateway, which is always the subnet's
/// network address. weftd writes that nexthop `onlink` on our device (or, when another program
/// holds the id, a route in flanneld's form instead), so the route is ours.
fn hidden_nexthop_route(route: &RouteMessage, network: Ipv4Network) -> Option<RouteEntry> {
    let id = route_nexthop_id(route)?;
    let subnet = route_destination(route)?;
    let gateway = subnet.network();
    let entry = RouteEntry { subnet, gateway, onlink: true, nexthop: Some(id) };
    (in_network(subnet, network) && Nexthop::for_gateway(gateway).id == id).then_some(entry)
}

/// A route on our device, with the nexthop it points at, if any (the kernel also shows that
/// nexthop's gateway and device on it).
fn route_entry(route: &RouteMessage) -> Option<RouteEntry> {
    Some(RouteEntry {
        subnet: route_destination(route)?,
        gateway: route_gateway(route)?,
        onlink: route.header.flags.contains(RouteFlags::Onlink),
        nexthop: route_nexthop_id(route),
    })
}

fn route_nexthop_id(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::NhId(id) => Some(*id),
        _ => None,
    })
}

fn route_gateway(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn route_destination(route: &RouteMessage) -> Option<Ipv4Network> {
    let destination = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    Ipv4Network::new(destination, route.header.destination_prefix_length).ok()
}

/// A stable, locally administered MAC for a new device, derived from the host's public IP and
/// the VNI, so a host that loses its device gets the same MAC back and its peers' ARP and FDB
/// entries stay valid.
pub fn derived_mac(public_ip: Ipv4Addr, vni: u32) -> MacAddr {
    // FNV-1a: tiny, stable across releases, and good enough to spread hosts over 46 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in public_ip.octets().into_iter().chain(vni.to_be_bytes()).chain(*b"weft") {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    MacAddr([(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_is_stable_unicast_and_local() {
        let a = derived_mac(Ipv4Addr::new(198, 18, 0, 11), 1);
        assert_eq!(a, derived_mac(Ipv4Addr::new(198, 18, 0, 11), 1));
        assert_ne!(a, derived_mac(Ipv4Addr::new(198, 18, 0, 12), 1));
        assert_ne!(a, derived_mac(Ipv4Addr::new(198, 18, 0, 11), 2));
        assert_eq!(a.0[0] & 0x01, 0, "unicast");
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
    }

    fn route(destination: &str, extra: RouteAttribute) -> RouteMessage {
        let network: Ipv4Network = destination.parse().unwrap();
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(network.network(), network.prefix()).build();
        route.attributes.extend([RouteAttribute::Oif(2), extra]);
        route
    }

    #[test]
    fn main_table_routes_are_sorted_by_what_they_are() {
        let network: Ipv4Network = "10.5.0.0/16".parse().unwrap();
        let gateway = |ip: [u8; 4]| RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::from(ip)));
        let direct = main_route(&route("10.5.2.0/24", gateway([198, 18, 0, 12])), 9, network);
        let subnet = "10.5.2.0/24".parse().unwrap();
        assert_eq!(direct, Some(MainRoute::Direct(DirectRoute { subnet, gateway: Ipv4Addr::new(198, 18, 0, 12) })));
        let ecmp_default = main_route(&route("0.0.0.0/0", RouteAttribute::MultiPath(vec![])), 9, network);
        let destination = "0.0.0.0/0".parse().unwrap();
        assert_eq!(ecmp_default, Some(MainRoute::Other { destination, has_gateway: true }), "multipath has gateways");
        let connected = main_route(&route("198.18.0.0/24", RouteAttribute::Priority(0)), 9, network);
        let destination = "198.18.0.0/24".parse().unwrap();
        assert_eq!(connected, Some(MainRoute::Other { destination, has_gateway: false }));
        let vxlan = main_route(&route("10.5.3.0/24", gateway([10, 5, 3, 0])), 2, network);
        assert!(matches!(vxlan, Some(MainRoute::Vxlan(_))), "on our device: {vxlan:?}");
    }

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
