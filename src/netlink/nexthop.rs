//! Nexthop objects (`ip nexthop`, Linux 5.3+), which rtnetlink does not cover: the requests
//! weftd sends, encoded with netlink-packet-core's own types, and the fields it reads back.
//!
//! Why weftd uses them: a route with a gateway of its own gets a fib_info of its own, and the
//! kernel hashes a device's fib_infos by protocol, scope, metric and device only, so every peer
//! route lands in one hash chain and adding the K-th walks the K-1 before it. Measured with
//! `ip -batch` on a VXLAN device: 5,000 such routes take 437 ms, 10,000 take 1,622 ms. Routes
//! that point at a nexthop object hash by its id: 5,000 nexthops plus routes take 131 ms.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::errno::Errno;
use rtnetlink::packet_core::{
    DefaultNla, Emitable, NetlinkBuffer, NetlinkPayload, NetlinkSerializable, NlasIterator, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE,
};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, TokioSocket};
use tokio::sync::Notify;

use super::family::KernelFamily;
use super::socket::frames;
use super::{ignore_missing, Kernel, NetlinkError};
use crate::model::Nexthop;

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const RTNH_F_ONLINK: u32 = 4;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// What `ip` stamps on what an administrator adds, and what weftd stamps on its routes.
const RTPROT_BOOT: u8 = 3;
/// `struct nhmsg`: family, scope, protocol, reserved, flags (u32).
const HEADER_LEN: usize = 8;
const RTNLGRP_NEXTHOP: u32 = 32;

impl Kernel {
    /// `ip nexthop add id <id> via <gateway> dev <device> onlink` (IPv4 or IPv6 gateway). Exclusive: if the id was
    /// taken since the state was read, this fails rather than take over another's nexthop.
    ///
    /// # Errors
    /// The kernel refused (e.g. `EEXIST`: the id is taken; `EOPNOTSUPP`: no nexthop objects,
    /// after which routes carry their own gateways).
    pub async fn add_nexthop<A: KernelFamily>(&self, index: u32, entry: Nexthop<A>) -> Result<(), NetlinkError> {
        self.write_nexthop("add nexthop", index, entry, NLM_F_CREATE | NLM_F_EXCL).await
    }

    /// `ip nexthop replace id <id> via <gateway> dev <device> onlink`, for a nexthop of ours
    /// that points elsewhere.
    ///
    /// # Errors
    /// As [`Kernel::add_nexthop`].
    pub async fn rewrite_nexthop<A: KernelFamily>(&self, index: u32, entry: Nexthop<A>) -> Result<(), NetlinkError> {
        self.write_nexthop("rewrite nexthop", index, entry, NLM_F_REPLACE).await
    }

    async fn write_nexthop<A: KernelFamily>(
        &self,
        op: &'static str,
        index: u32,
        entry: Nexthop<A>,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let write = NexthopRequest::Write { id: entry.id, gateway: entry.gateway.into(), index };
        let result = self.nexthop_request(op, write, flags).await;
        if let Err(e) = &result {
            if e.errno() == Some(Errno::EOPNOTSUPP) {
                self.without_nexthops(e);
            }
        }
        result
    }

    /// `ip nexthop del id <id>`; a nexthop already gone is success.
    ///
    /// # Errors
    /// The kernel refused the deletion.
    pub async fn delete_nexthop<A: KernelFamily>(&self, entry: Nexthop<A>) -> Result<(), NetlinkError> {
        ignore_missing(self.nexthop_request("delete nexthop", NexthopRequest::Delete { id: entry.id }, 0).await)
    }

    /// The kernel has no nexthop objects (Linux 5.3+): from now on every route carries its own
    /// gateway, as flanneld's do.
    pub(super) fn without_nexthops(&self, error: &NetlinkError) {
        if self.nexthops.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "this kernel has no nexthop objects (Linux 5.3+); every route gets its own gateway, which slows adding thousands of peers");
        }
    }

    /// Sends one nexthop request and waits for the kernel's acknowledgement.
    async fn nexthop_request(&self, op: &'static str, request: NexthopRequest, flags: u16) -> Result<(), NetlinkError> {
        self.exchange(op, NetlinkPayload::InnerMessage(request), NLM_F_ACK | flags, |_| {}).await
    }
}

/// One request about nexthop objects.
#[derive(Debug, Clone)]
pub enum NexthopRequest {
    /// `ip nexthop add id <id> via <gateway> dev <index> onlink` (or `replace`, by the flags)
    Write { id: u32, gateway: IpAddr, index: u32 },
    /// `ip nexthop del id <id>`
    Delete { id: u32 },
    /// `ip nexthop show`: every nexthop, of every program
    Dump,
}

impl NexthopRequest {
    fn attributes(&self) -> Vec<DefaultNla> {
        let id = |id: &u32| DefaultNla::new(NHA_ID, id.to_ne_bytes().to_vec());
        match self {
            Self::Write { id: number, gateway, index } => vec![
                id(number),
                DefaultNla::new(NHA_OIF, index.to_ne_bytes().to_vec()),
                DefaultNla::new(NHA_GATEWAY, octets(*gateway)),
            ],
            Self::Delete { id: number } => vec![id(number)],
            Self::Dump => vec![],
        }
    }
}

impl NetlinkSerializable for NexthopRequest {
    fn message_type(&self) -> u16 {
        match self {
            Self::Write { .. } => RTM_NEWNEXTHOP,
            Self::Delete { .. } => RTM_DELNEXTHOP,
            Self::Dump => RTM_GETNEXTHOP,
        }
    }

    fn buffer_len(&self) -> usize {
        HEADER_LEN + self.attributes().as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        let (family, protocol, flags) = match self {
            Self::Write { gateway: IpAddr::V4(_), .. } => (AF_INET, RTPROT_BOOT, RTNH_F_ONLINK),
            Self::Write { gateway: IpAddr::V6(_), .. } => (AF_INET6, RTPROT_BOOT, RTNH_F_ONLINK),
            Self::Delete { .. } | Self::Dump => (AF_UNSPEC, 0, 0),
        };
        buffer[..HEADER_LEN].copy_from_slice(&[family, 0, protocol, 0, 0, 0, 0, 0]);
        buffer[4..HEADER_LEN].copy_from_slice(&flags.to_ne_bytes());
        self.attributes().as_slice().emit(&mut buffer[HEADER_LEN..]);
    }
}

/// The gateway as `NHA_GATEWAY` carries it: 4 or 16 bytes, network order.
fn octets(gateway: IpAddr) -> Vec<u8> {
    match gateway {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

/// A nexthop object as a dump describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NexthopInfo {
    pub id: u32,
    /// `None` for a nexthop without a device (a group or a blackhole).
    pub device: Option<u32>,
    /// `None` without a gateway.
    pub gateway: Option<IpAddr>,
}

/// The nexthop one netlink message (a dump reply) describes; `None` for any other message.
pub fn parse(message: &[u8]) -> Option<NexthopInfo> {
    let frame = NetlinkBuffer::new_checked(message).ok()?;
    if frame.message_type() != RTM_NEWNEXTHOP {
        return None;
    }
    let attributes = frame.payload().get(HEADER_LEN..)?;
    let (mut id, mut device, mut gateway) = (None, None, None);
    for nla in NlasIterator::new(attributes).filter_map(Result::ok) {
        let value = nla.value();
        match nla.kind() {
            NHA_ID => id = value.try_into().ok().map(u32::from_ne_bytes),
            NHA_OIF => device = value.try_into().ok().map(u32::from_ne_bytes),
            NHA_GATEWAY => {
                gateway = <Ipv4Addr as KernelFamily>::from_bytes(value)
                    .map(IpAddr::V4)
                    .or_else(|| <Ipv6Addr as KernelFamily>::from_bytes(value).map(IpAddr::V6))
            }
            _ => {}
        }
    }
    Some(NexthopInfo { id: id?, device, gateway })
}

/// A socket subscribed to nexthop notifications.
pub fn subscribe() -> std::io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    socket.socket_mut().bind_auto()?;
    socket.socket_mut().add_membership(RTNLGRP_NEXTHOP)?;
    Ok(socket)
}

/// Wakes `changed` whenever a nexthop is created, changed or deleted by anyone but the socket
/// with port id `own_port`: deleting a nexthop takes its routes with it and sends no route
/// notification. rtnetlink cannot parse these messages, and their headers are all we need.
pub async fn watch(socket: TokioSocket, own_port: u32, changed: Arc<Notify>) {
    let mut received = Vec::with_capacity(16 * 1024);
    loop {
        received.clear();
        match socket.recv(&mut received).await {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                changed.notify_one(); // notifications were lost: look at everything again
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "nexthop notifications stopped; hand-deleted nexthops come back at the next resync");
                return;
            }
        }
        for (header, _) in frames(&received) {
            let kind = header.message_type();
            if matches!(kind, RTM_NEWNEXTHOP | RTM_DELNEXTHOP) && header.port_number() != own_port {
                changed.notify_one();
            }
        }
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

    fn bytes(request: NexthopRequest) -> Vec<u8> {
        let mut message = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(request));
        message.finalize();
        let mut buffer = vec![0; message.buffer_len()];
        message.serialize(&mut buffer);
        buffer[16..].to_vec() // past struct nlmsghdr
    }

    #[test]
    fn write_is_what_ip_nexthop_sends() {
        let gateway = Ipv4Addr::new(10, 5, 3, 0);
        let body = bytes(NexthopRequest::Write { id: u32::from(gateway), gateway: gateway.into(), index: 7 });
        let mut expected = vec![AF_INET, 0, RTPROT_BOOT, 0, 4, 0, 0, 0];
        expected.extend([8, 0, 1, 0, 0, 3, 5, 10]); // NHA_ID 0x0a050300, host order (x86)
        expected.extend([8, 0, 5, 0, 7, 0, 0, 0]); // NHA_OIF 7
        expected.extend([8, 0, 6, 0, 10, 5, 3, 0]); // NHA_GATEWAY 10.5.3.0
        assert_eq!(body, expected);
    }

    #[test]
    fn an_ipv6_write_is_what_ip_nexthop_sends() {
        let gateway: Ipv6Addr = "fd00:5:1::".parse().unwrap();
        let id = crate::model::nexthop_id(gateway);
        let body = bytes(NexthopRequest::Write { id, gateway: gateway.into(), index: 7 });
        let mut expected = vec![AF_INET6, 0, RTPROT_BOOT, 0, 4, 0, 0, 0];
        expected.extend([8, 0, 1, 0]);
        expected.extend(id.to_ne_bytes());
        expected.extend([8, 0, 5, 0, 7, 0, 0, 0]);
        expected.extend([20, 0, 6, 0]); // NHA_GATEWAY, 16 bytes
        expected.extend(gateway.octets());
        assert_eq!(body, expected);
        let mut message = Vec::new();
        message.extend((16 + body.len() as u32).to_ne_bytes());
        message.extend(RTM_NEWNEXTHOP.to_ne_bytes());
        message.extend([0; 10]);
        message.extend(&body);
        assert_eq!(parse(&message), Some(NexthopInfo { id, device: Some(7), gateway: Some(gateway.into()) }));
    }

    #[test]
    fn delete_names_only_the_id() {
        let body = bytes(NexthopRequest::Delete { id: u32::from(Ipv4Addr::new(10, 5, 3, 0)) });
        assert_eq!(body, vec![0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 1, 0, 0, 3, 5, 10]);
    }

    /// The whole message a dump describes `id <id> via <gateway> dev 7` with.
    fn dump_reply(message_type: u16) -> Vec<u8> {
        let gateway = Ipv4Addr::new(10, 5, 3, 0);
        let mut body = bytes(NexthopRequest::Write { id: u32::from(gateway), gateway: gateway.into(), index: 7 });
        let mut message = Vec::new();
        message.extend((16 + body.len() as u32).to_ne_bytes());
        message.extend(message_type.to_ne_bytes());
        message.extend([0; 10]); // flags, sequence number, port id
        message.append(&mut body);
        message
    }

    #[test]
    fn parse_reads_id_device_and_gateway() {
        let gateway = Ipv4Addr::new(10, 5, 3, 0);
        let expected = NexthopInfo { id: u32::from(gateway), device: Some(7), gateway: Some(gateway.into()) };
        assert_eq!(parse(&dump_reply(RTM_NEWNEXTHOP)), Some(expected));
        assert_eq!(parse(&dump_reply(RTM_DELNEXTHOP)), None, "not a nexthop description");
        assert_eq!(parse(&dump_reply(RTM_NEWNEXTHOP)[..20]), None, "truncated");
    }
}
