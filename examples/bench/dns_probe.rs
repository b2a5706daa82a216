//! A DNS client for timing: one UDP socket, A queries with fresh ids, answers read without a
//! resolver library's retries or caching in the way (what is timed is weftd's server alone).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// What a reply said about the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// NOERROR with at least one answer record.
    Answer,
    /// NXDOMAIN, or NOERROR without answers.
    NoAnswer,
    /// Any other rcode (SERVFAIL, REFUSED, ...).
    Error(u8),
}

/// A connected UDP socket to one DNS server; create it in the namespace queries come from.
pub(crate) struct DnsProbe {
    socket: UdpSocket,
    next_id: u16,
}

impl DnsProbe {
    pub(crate) fn new(server: SocketAddr) -> DnsProbe {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
        socket.connect(server).unwrap_or_else(|e| panic!("connect to {server}: {e}"));
        DnsProbe { socket, next_id: 1 }
    }

    /// Sends an A query for `name` (fully qualified, no trailing dot); its id.
    fn send(&mut self, name: &str) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        // Header: id, flags RD, one question; then the name as labels, type A, class IN.
        let mut packet = Vec::with_capacity(32 + name.len());
        packet.extend(id.to_be_bytes());
        packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            packet.push(u8::try_from(label.len()).expect("a DNS label is at most 63 bytes"));
            packet.extend(label.as_bytes());
        }
        packet.extend([0, 0, 1, 0, 1]);
        // A refused send (nothing listening yet, ICMP seen) counts as no reply.
        let _ = self.socket.send(&packet);
        id
    }

    /// The reply to query `id` if it comes before `deadline`; replies to older queries are
    /// skipped.
    fn receive(&self, id: u16, deadline: Instant) -> Option<Reply> {
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            self.socket.set_read_timeout(Some(left)).expect("set the read timeout");
            let Ok(len) = self.socket.recv(&mut buf) else { continue };
            if len < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                continue;
            }
            let rcode = buf[3] & 0x0f;
            let answers = u16::from_be_bytes([buf[6], buf[7]]);
            return Some(match rcode {
                0 if answers > 0 => Reply::Answer,
                0 | 3 => Reply::NoAnswer,
                other => Reply::Error(other),
            });
        }
    }

    /// One query and its reply within `timeout`: (the reply, the round trip).
    pub(crate) fn query(&mut self, name: &str, timeout: Duration) -> (Option<Reply>, Duration) {
        let started = Instant::now();
        let id = self.send(name);
        let reply = self.receive(id, started + timeout);
        (reply, started.elapsed())
    }

    /// Asks for `name` every `interval` until a reply is `wanted` or `timeout` passes; the
    /// instant that reply arrived.
    pub(crate) fn poll_until(&mut self, name: &str, wanted: Reply, interval: Duration, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let sent = Instant::now();
            let id = self.send(name);
            if self.receive(id, sent + interval) == Some(wanted) {
                return Some(Instant::now());
            }
            if let Some(rest) = (sent + interval).checked_duration_since(Instant::now()) {
                std::thread::sleep(rest);
            }
        }
        None
    }
}
