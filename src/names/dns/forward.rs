//! Forwarding every name outside the domain to the host's resolvers, the `nameserver` lines
//! of `/etc/resolv.conf`, read afresh for each query (a DHCP client may rewrite the file).
//!
//! Loopback resolvers are left out: a stub such as systemd-resolved's 127.0.0.53 listens in
//! the host's namespace only, and one on this server's own address would loop. The whole
//! forward has one time budget; with no resolver left the answer is SERVFAIL at once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, Query};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

/// The most a forwarded query may take, every resolver tried: the stub resolvers in
/// containers (glibc, musl, busybox) retry after 5 s or less, so a later answer helps nobody.
pub const FORWARD_BUDGET: Duration = Duration::from_secs(2);
/// The most forwarded queries in flight at once: each holds a socket (a file descriptor) for up
/// to [`FORWARD_BUDGET`], so a flood of outside names must not take every descriptor weftd
/// has (etcd, netlink and docker need theirs). Past it, a query gets SERVFAIL at once.
pub const MAX_FORWARDS: usize = 128;
/// The largest UDP answer asked of a resolver (EDNS), the size DNS flag day 2020 settled on.
const UDP_PAYLOAD: u16 = 1232;

/// Why a name could not be forwarded.
#[derive(Debug, Error)]
pub enum ForwardError {
    #[error("no resolver to forward to: {path} has no nameserver other than loopback ones")]
    NoResolvers { path: PathBuf },
    #[error("no resolver answered within {FORWARD_BUDGET:?} (tried {tried})")]
    NoAnswer { tried: String },
    #[error("cannot encode the forwarded query: {0}")]
    Encode(String),
    #[error("{MAX_FORWARDS} forwarded queries are already waiting for the resolvers")]
    Busy,
}

/// The nameservers of a resolv.conf text, loopback ones left out, port 53.
pub fn resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Forwards questions to the resolvers `resolv.conf` names, at most [`MAX_FORWARDS`] at once.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// `/etc/resolv.conf`; under `ip netns exec` that is `/etc/netns/<ns>/resolv.conf`.
    pub resolv_conf: PathBuf,
    in_flight: Arc<Semaphore>,
}

impl Forwarder {
    /// A forwarder to the resolvers `resolv_conf` names (read afresh for every query).
    pub fn new(resolv_conf: PathBuf) -> Self {
        Self { resolv_conf, in_flight: Arc::new(Semaphore::new(MAX_FORWARDS)) }
    }

    /// Asks each resolver in turn, within [`FORWARD_BUDGET`] in all, for `query` (recursion
    /// desired), over UDP, then over TCP when the UDP answer was truncated.
    ///
    /// # Errors
    /// No resolver listed ([`ForwardError::NoResolvers`], at once), [`MAX_FORWARDS`] already
    /// in flight ([`ForwardError::Busy`], at once), or none answered in time.
    pub async fn forward(&self, query: &Query) -> Result<Message, ForwardError> {
        let _slot = self.in_flight.try_acquire().map_err(|_| ForwardError::Busy)?;
        let deadline = Instant::now() + FORWARD_BUDGET;
        let text = tokio::fs::read_to_string(&self.resolv_conf).await.unwrap_or_default();
        let servers = resolvers(&text);
        if servers.is_empty() {
            return Err(ForwardError::NoResolvers { path: self.resolv_conf.clone() });
        }
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(query.clone());
        message.set_edns(Edns::new().set_max_payload(UDP_PAYLOAD).clone());
        let bytes = message.to_vec().map_err(|e| ForwardError::Encode(e.to_string()))?;
        for (at, server) in servers.iter().enumerate() {
            // Each resolver left gets an equal share of the time left.
            let share = deadline.saturating_duration_since(Instant::now()) / (servers.len() - at) as u32;
            match timeout_at(Instant::now() + share, ask(*server, &bytes, message.metadata.id)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => tracing::debug!(%server, %error, "resolver failed"),
                Err(_) => tracing::debug!(%server, ?share, "resolver did not answer in time"),
            }
        }
        let tried = servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        Err(ForwardError::NoAnswer { tried })
    }
}

/// One resolver's answer to `query` (encoded, with id `id`).
async fn ask(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0; usize::from(UDP_PAYLOAD).max(512) + 512];
    loop {
        let read = socket.recv(&mut buffer).await?;
        // Anything else arriving on the port (a late answer, a spoof) is not ours.
        let Ok(answer) = Message::from_vec(&buffer[..read]) else { continue };
        if answer.metadata.id != id {
            continue;
        }
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        return ask_tcp(server, query).await;
    }
}

/// The answer over TCP: each message preceded by its length, two bytes.
async fn ask_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let length = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    stream.write_all(&[&length.to_be_bytes()[..], query].concat()).await?;
    let length = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(length)];
    stream.read_exact(&mut answer).await?;
    Message::from_vec(&answer).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_left_out() {
        let text = "# generated\nsearch weft.local\nnameserver 127.0.0.53\nnameserver 198.18.0.9\n\
                    nameserver ::1\nnameserver fd18::9\nnameserver fe80::1%eth0\noptions edns0\nnameserver\n";
        let expected: Vec<SocketAddr> = vec!["198.18.0.9:53".parse().unwrap(), "[fd18::9]:53".parse().unwrap()];
        assert_eq!(resolvers(text), expected);
        assert!(resolvers("nameserver 127.0.0.1\n").is_empty());
    }
}
