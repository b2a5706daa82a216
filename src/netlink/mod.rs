//! Kernel objects through rtnetlink, one file per object as rtnetlink arranges them: links
//! (`link`), addresses (`address`), ARP/NDP and FDB entries (`neighbour`), routes (`route`),
//! nexthop objects (`nexthop`), notifications (`monitor`), the raw request and dump plumbing
//! (`socket`), and the reading of our whole state (`snapshot`). Each function's doc line names
//! the `ip`/`bridge` command it mirrors. Entries of both address families take one code path
//! each; `family` says how the two are spelled.
//!
//! This module knows the kernel and `model`, never the policy: which entries are ours is
//! decided by `model`'s rules, and what it reads comes back as plain data. Every write is
//! idempotent (`replace`, create-or-adopt), and only objects on our own device are read or
//! changed.

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;

use nix::errno::Errno;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, TokioSocket};
use rtnetlink::Handle;
use thiserror::Error;

mod address;
mod family;
mod link;
mod monitor;
mod neighbour;
mod nexthop;
mod route;
mod snapshot;
mod socket;

pub use address::{Ipv4Link, Ipv6Address, Ipv6AddressFlags};
pub use family::KernelFamily;
pub use link::{DeviceState, VxlanDevice, VxlanSpec};
pub use monitor::{monitor, DeviceChanges, DeviceWatch};
pub use route::RouteHop;

use socket::RawSocket;

/// VXLAN adds 50 bytes of headers (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;

/// VXLAN over an IPv6 underlay adds 70 (the outer IPv6 header is 40 bytes): the kernel refuses
/// an IPv6 VXLAN device an MTU above its underlay's less this.
pub const VXLAN6_OVERHEAD: u32 = 70;

/// A failed netlink operation, with the kernel's errno when it sent one.
#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("netlink {op} failed: {source}")]
    Request { op: &'static str, errno: Option<Errno>, source: rtnetlink::Error },
    #[error("netlink {op} failed: {source}")]
    Raw { op: &'static str, source: std::io::Error },
    #[error("the VXLAN device {0} disappeared while it was being configured")]
    DeviceVanished(String),
}

/// Wraps rtnetlink's error for `op`, keeping the kernel's errno (sent negated) when there is one.
fn request_error(op: &'static str) -> impl Fn(rtnetlink::Error) -> NetlinkError + Copy {
    move |source| {
        let errno = match &source {
            rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| Errno::from_raw(-c.get())),
            _ => None,
        };
        NetlinkError::Request { op, errno, source }
    }
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub(crate) fn errno(&self) -> Option<Errno> {
        match self {
            Self::Request { errno, .. } => *errno,
            _ => None,
        }
    }
}

/// A handle on the kernel's routing netlink socket.
#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
    /// A second socket for what rtnetlink's handle cannot do: streaming dumps (see
    /// `socket.rs`) and nexthop objects.
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
    /// The task that drives the rtnetlink socket, aborted when the last clone goes.
    _connection: Arc<OwnedTask>,
}

/// A task that belongs to a netlink handle rather than to the daemon's task set: it is aborted
/// when its owner drops, so a daemon that stops (or a `weftd status` that is done) leaves no
/// socket task behind.
#[derive(Debug)]
pub(crate) struct OwnedTask(tokio::task::JoinHandle<()>);

impl OwnedTask {
    /// Spawns `task` on the current runtime, owned by the returned handle.
    pub(crate) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        OwnedTask(tokio::spawn(task))
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Kernel {
    /// Opens a netlink socket and spawns the task that drives it, owned by the handle (and its
    /// clones): aborted when the last one drops.
    ///
    /// # Errors
    /// A socket could not be opened, bound or connected.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (mut connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        // Bound now rather than on first send, so the port id is known before any write.
        let address = connection.socket_mut().socket_mut().bind_auto().map_err(NetlinkError::Socket)?;
        let connection = Arc::new(OwnedTask::spawn(connection));
        let mut raw = TokioSocket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        let raw_address = raw.socket_mut().bind_auto().map_err(NetlinkError::Socket)?;
        raw.socket_mut().connect(&rtnetlink::sys::SocketAddr::new(0, 0)).map_err(NetlinkError::Socket)?;
        Ok(Self {
            handle,
            raw: Arc::new(tokio::sync::Mutex::new(RawSocket::new(raw))),
            nexthops: Arc::new(AtomicBool::new(true)),
            port: address.port_number(),
            raw_port: raw_address.port_number(),
            sequence: Arc::new(AtomicU32::new(1)),
            _connection: connection,
        })
    }
}

/// Deleting something already gone is success: the goal state is reached.
fn ignore_missing(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    found(result).map(|_| ())
}

/// Whether a deletion found something to delete; "no such entry" is not an error.
fn found(result: Result<(), NetlinkError>) -> Result<bool, NetlinkError> {
    match result {
        Err(e) if matches!(e.errno(), Some(Errno::ENOENT | Errno::ESRCH)) => Ok(false),
        other => other.map(|()| true),
    }
}
