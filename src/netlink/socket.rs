//! The raw request and dump plumbing on the second netlink socket: what rtnetlink's handle
//! cannot do, that is, dumps streamed into entries as they arrive and requests of message types
//! it does not know (nexthop objects).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use rtnetlink::sys::{AsyncSocketExt, TokioSocket};

use super::{request_error, Kernel, NetlinkError};
use crate::model::set_of;

/// Receive buffer for the raw socket: the kernel fills up to 32 KiB per read of a dump.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// The raw socket and its receive buffer, reused by every request (one per nexthop write).
pub(super) struct RawSocket {
    socket: TokioSocket,
    received: Vec<u8>,
}

impl RawSocket {
    pub(super) fn new(socket: TokioSocket) -> Self {
        Self { socket, received: Vec::with_capacity(RECEIVE_BUFFER) }
    }
}

impl Kernel {
    /// Sends a dump request and turns each message into an entry as it is received. rtnetlink
    /// would first queue the whole dump as parsed messages, several hundred bytes each:
    /// megabytes for thousands of peers, at every pass.
    pub(super) async fn dump<E: Ord>(
        &self,
        op: &'static str,
        request: RouteNetlinkMessage,
        entry: impl Fn(RouteNetlinkMessage) -> Option<E>,
    ) -> Result<BTreeSet<E>, NetlinkError> {
        // Gathered, then built into a set at once (`set_of`): inserting in the kernel's order
        // left tree nodes partly empty (peak RSS at thousands of peers).
        let mut entries = Vec::new();
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
        Ok(set_of(entries))
    }

    /// Sends a request on the raw socket and hands each reply, as the bytes of one netlink
    /// message, to `on_reply` until the kernel's closing message: `NLMSG_DONE` after a dump, the
    /// acknowledgement otherwise. Replies to an earlier request that was abandoned halfway carry
    /// another sequence number and are skipped.
    pub(super) async fn exchange<T: NetlinkSerializable>(
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

/// The netlink messages in one datagram: each header, with the message's bytes.
pub(super) fn frames(datagram: &[u8]) -> impl Iterator<Item = (NetlinkBuffer<&[u8]>, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let frame = NetlinkBuffer::new_checked(datagram.get(at..)?).ok()?;
        let length = frame.length() as usize;
        let bytes = &datagram[at..(at + length).min(datagram.len())];
        at += length.max(1).next_multiple_of(4);
        Some((frame, bytes))
    })
}
