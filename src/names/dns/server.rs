//! The DNS server itself: UDP and TCP sockets on port 53 of the docker0 address, bound with
//! `IP_FREEBIND` (docker0 gets its address when dockerd starts, after weftd), and the handler
//! that answers from the cache or forwards.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::op::{Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use nix::errno::Errno;
use nix::sys::socket::{self, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use tokio::sync::watch;

use super::answer::{lookup, Lookup};
use super::cache::NameCache;
use super::forward::Forwarder;
use super::DnsError;
use crate::observe::metrics::Metrics;

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// How long a TCP client may stay idle before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Bytes buffered per TCP connection for answers (hickory-server's own default).
const TCP_RESPONSE_BUFFER: usize = 32;

/// Answers questions: names of the domain from the cache, others through the forwarder.
pub struct Handler {
    pub cache: watch::Receiver<Arc<NameCache>>,
    pub forwarder: Forwarder,
    pub metrics: Arc<Metrics>,
}

/// What happened to a question, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the cache (records, no data, or NXDOMAIN).
    Answered,
    /// Answered by one of the host's resolvers.
    Forwarded,
    /// SERVFAIL (no resolver, none answered) or a question weft does not serve.
    Failed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Forwarded => "forwarded",
            Outcome::Failed => "failed",
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let (outcome, info) = self.respond(request, response).await;
        self.metrics.count_dns_query(outcome.label());
        info
    }
}

impl Handler {
    async fn respond<R: ResponseHandler>(&self, request: &Request, mut response: R) -> (Outcome, ResponseInfo) {
        let builder = MessageResponseBuilder::from_message_request(request);
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query.original().clone(),
            _ => {
                let refused = builder.error_msg(&request.metadata, ResponseCode::NotImp);
                return (Outcome::Failed, sent(response.send_response(refused).await, &request.metadata));
            }
        };
        let found = lookup(&self.cache.borrow(), &query.name().to_ascii(), query.query_type());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        metadata.authoritative = !matches!(found, Lookup::Elsewhere);
        let (outcome, result) = match found {
            Lookup::Found { answers, additionals } => {
                let message = builder.build(metadata, &answers, &[], &[], &additionals);
                (Outcome::Answered, response.send_response(message).await)
            }
            Lookup::NoData | Lookup::NxDomain => {
                metadata.response_code = if found == Lookup::NxDomain { ResponseCode::NXDomain } else { ResponseCode::NoError };
                (Outcome::Answered, response.send_response(builder.build_no_records(metadata)).await)
            }
            Lookup::Elsewhere => match self.forwarder.forward(&query).await {
                Ok(answer) => {
                    metadata.response_code = answer.metadata.response_code;
                    let none: &[Record] = &[];
                    let message = builder.build(metadata, &answer.answers, &answer.authorities, none, &answer.additionals);
                    (Outcome::Forwarded, response.send_response(message).await)
                }
                Err(error) => {
                    tracing::debug!(name = %query.name(), %error, "forwarding failed; answering SERVFAIL");
                    metadata.response_code = ResponseCode::ServFail;
                    (Outcome::Failed, response.send_response(builder.build_no_records(metadata)).await)
                }
            },
        };
        (outcome, sent(result, &request.metadata))
    }
}

/// What the server reports about a response; a failed send (the client went away) is only
/// worth a debug line.
fn sent(result: Result<ResponseInfo, hickory_server::net::NetError>, request: &Metadata) -> ResponseInfo {
    result.unwrap_or_else(|error| {
        tracing::debug!(%error, "cannot send a DNS response");
        let mut metadata = Metadata::response_from_request(request);
        metadata.response_code = ResponseCode::ServFail;
        ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
    })
}

/// A server answering on `address` port [`DNS_PORT`], UDP and TCP. The address need not exist
/// yet (`IP_FREEBIND`): the sockets receive once it is assigned.
///
/// # Errors
/// [`DnsError::Bind`] when a socket cannot be made or bound (the port is taken on that address).
pub fn listen(address: Ipv4Addr, handler: Handler) -> Result<Server<Handler>, DnsError> {
    let mut server = Server::new(handler);
    let udp = std::net::UdpSocket::from(freebind_socket(address, SockType::Datagram)?);
    server.register_socket(tokio::net::UdpSocket::from_std(udp).map_err(|e| bind_error(address, e))?);
    let tcp = std::net::TcpListener::from(freebind_socket(address, SockType::Stream)?);
    server.register_listener(
        tokio::net::TcpListener::from_std(tcp).map_err(|e| bind_error(address, e))?,
        TCP_IDLE,
        TCP_RESPONSE_BUFFER,
    );
    Ok(server)
}

/// A non-blocking socket bound to `address`:53 with `IP_FREEBIND` (and `SO_REUSEADDR`, so a
/// restarted weftd binds while the old connections linger); listening, for TCP.
fn freebind_socket(address: Ipv4Addr, kind: SockType) -> Result<OwnedFd, DnsError> {
    let fail = |source: Errno| DnsError::Bind { address: SocketAddr::V4(SocketAddrV4::new(address, DNS_PORT)), source };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(AddressFamily::Inet, kind, flags, None).map_err(fail)?;
    setsockopt(&fd, sockopt::IpFreebind, &true).map_err(fail)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(fail)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(SocketAddrV4::new(address, DNS_PORT))).map_err(fail)?;
    if kind == SockType::Stream {
        socket::listen(&fd, socket::Backlog::new(128).map_err(fail)?).map_err(fail)?;
    }
    Ok(fd)
}

fn bind_error(address: Ipv4Addr, error: std::io::Error) -> DnsError {
    let source = error.raw_os_error().map_or(Errno::EINVAL, Errno::from_raw);
    DnsError::Bind { address: SocketAddr::V4(SocketAddrV4::new(address, DNS_PORT)), source }
}
