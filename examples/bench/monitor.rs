//! The netlink monitor: route, neighbour (ARP and NDP) and FDB notifications of host namespaces,
//! of both address families, timestamped as they arrive.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily as NlFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket as NlSocket, SocketAddr as NlAddr};

use crate::system::enter_netns;
use lab::Lab;

/// A route, neighbour (ARP for IPv4, NDP for IPv6) or FDB notification as the kernel multicast it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Route { dst: IpAddr, len: u8 },
    Arp { ip: IpAddr, mac: Option<[u8; 6]>, permanent: bool },
    Fdb { mac: [u8; 6], dst: Option<IpAddr> },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ev {
    pub(crate) host: usize,
    /// When the monitor thread received it.
    pub(crate) at: Instant,
    pub(crate) del: bool,
    /// The device (route: output interface).
    pub(crate) ifindex: u32,
    pub(crate) kind: Kind,
}

pub(crate) enum Msg {
    Ev(Ev),
    /// The socket overflowed (ENOBUFS): notifications were lost.
    Overflow(usize),
    Failed(usize, String),
}

/// `ip monitor route neigh` in a host namespace, in-process: a thread that entered the
/// namespace listens on rtnetlink's neighbour, IPv4 route and IPv6 route groups and timestamps every
/// notification as it arrives. Stopped and joined on Drop.
pub(crate) struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Returns once the socket is subscribed, so nothing after this call is missed.
    fn start(ns: &str, host: usize, tx: Sender<Msg>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (ns_owned, stop_flag) = (ns.to_string(), stop.clone());
        let thread = thread::Builder::new()
            .name(format!("monitor-h{host}"))
            .spawn(move || {
                let sock = match open_monitor_socket(&ns_owned) {
                    Ok(sock) => {
                        let _ = ready_tx.send(Ok(()));
                        sock
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
                while !stop_flag.load(Ordering::Relaxed) {
                    buf.clear();
                    match sock.recv(&mut buf, 0) {
                        Ok(_) => parse_notifications(&buf, host, Instant::now(), &tx),
                        Err(e) => match e.raw_os_error().map(Errno::from_raw) {
                            Some(Errno::EAGAIN | Errno::EINTR) => {}
                            Some(Errno::ENOBUFS) => {
                                let _ = tx.send(Msg::Overflow(host));
                            }
                            _ => {
                                let _ = tx.send(Msg::Failed(host, e.to_string()));
                                return;
                            }
                        },
                    }
                }
            })
            .expect("spawn monitor thread");
        ready_rx.recv().expect("monitor thread reports").unwrap_or_else(|e| panic!("netlink monitor in {ns}: {e}"));
        Monitor { stop, thread: Some(thread) }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_monitor_socket(ns: &str) -> Result<NlSocket, String> {
    enter_netns(ns)?;
    let mut sock = NlSocket::new(NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))?;
    // Far above rmem_max, so a burst of 15,000 notifications is not dropped (needs CAP_NET_ADMIN).
    socket::setsockopt(&sock, sockopt::RcvBufForce, &(64 << 20)).map_err(|e| format!("SO_RCVBUFFORCE: {e}"))?;
    // Wakes the thread to check its stop flag.
    socket::setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000)).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let groups =
        rtnetlink::constants::RTMGRP_NEIGH | rtnetlink::constants::RTMGRP_IPV4_ROUTE | rtnetlink::constants::RTMGRP_IPV6_ROUTE;
    sock.bind(&NlAddr::new(0, groups)).map_err(|e| format!("bind: {e}"))?;
    Ok(sock)
}

fn parse_notifications(buf: &[u8], host: usize, at: Instant, tx: &Sender<Msg>) {
    let mut off = 0;
    while buf.len() >= off + 16 {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                let parsed = match &inner {
                    RouteNetlinkMessage::NewRoute(r) => route_kind(r).map(|k| (false, k)),
                    RouteNetlinkMessage::DelRoute(r) => route_kind(r).map(|k| (true, k)),
                    RouteNetlinkMessage::NewNeighbour(n) => neigh_kind(n).map(|k| (false, k)),
                    RouteNetlinkMessage::DelNeighbour(n) => neigh_kind(n).map(|k| (true, k)),
                    _ => None,
                };
                if let Some((del, (ifindex, kind))) = parsed {
                    let _ = tx.send(Msg::Ev(Ev { host, at, del, ifindex, kind }));
                }
            }
        }
        off += (len + 3) & !3;
    }
}

/// Routes of the main table, both families.
fn route_kind(r: &RouteMessage) -> Option<(u32, Kind)> {
    if ![NlFamily::Inet, NlFamily::Inet6].contains(&r.header.address_family) {
        return None;
    }
    let (mut table, mut dst, mut oif) = (u32::from(r.header.table), None, 0);
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = *i,
            _ => {}
        }
    }
    (table == 254).then_some(())?;
    Some((oif, Kind::Route { dst: dst?, len: r.header.destination_prefix_length }))
}

/// IPv4 and IPv6 neighbours (ARP, NDP) and bridge-family neighbours (FDB, whose destination
/// is of either family).
fn neigh_kind(n: &NeighbourMessage) -> Option<(u32, Kind)> {
    let (mut dst, mut mac) = (None, None);
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                dst = Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 16 => {
                dst = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[..]).expect("16 bytes"))))
            }
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => mac = Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            _ => {}
        }
    }
    let kind = match n.header.family {
        NlFamily::Inet | NlFamily::Inet6 => Kind::Arp { ip: dst?, mac, permanent: n.header.state == NeighbourState::Permanent },
        NlFamily::Bridge => Kind::Fdb { mac: mac?, dst },
        _ => return None,
    };
    Some((n.header.ifindex, kind))
}

/// Monitors on hosts 1..=n of the lab, feeding one channel.
pub(crate) fn monitor_hosts(lab: &Lab, hosts: &[usize]) -> (Vec<Monitor>, Receiver<Msg>) {
    let (tx, rx) = mpsc::channel();
    let monitors = hosts.iter().map(|&n| Monitor::start(&lab.host(n).ns, n, tx.clone())).collect();
    (monitors, rx)
}

/// Receives the next event before `deadline`; None at the deadline. Overflows are counted in
/// `overflows`; a dead monitor is fatal.
pub(crate) fn next_event(rx: &Receiver<Msg>, deadline: Instant, overflows: &mut usize) -> Option<Ev> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Msg::Ev(ev)) => return Some(ev),
            Ok(Msg::Overflow(host)) => {
                eprintln!("netlink monitor on host {host} overflowed: notifications lost");
                *overflows += 1;
            }
            Ok(Msg::Failed(host, e)) => panic!("netlink monitor on host {host} failed: {e}"),
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => panic!("all netlink monitors stopped"),
        }
    }
}

/// Discards whatever is queued.
pub(crate) fn drain(rx: &Receiver<Msg>) {
    while rx.try_recv().is_ok() {}
}

/// Drains events until none has arrived for `quiet` (at most `max`); returns how many came.
pub(crate) fn settle(rx: &Receiver<Msg>, quiet: Duration, max: Duration, overflows: &mut usize) -> usize {
    let end = Instant::now() + max;
    let mut count = 0;
    loop {
        let deadline = (Instant::now() + quiet).min(end);
        match next_event(rx, deadline, overflows) {
            Some(_) => count += 1,
            None => return count,
        }
        if Instant::now() >= end {
            return count;
        }
    }
}
