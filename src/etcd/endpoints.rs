//! Reaching etcd: one client per endpoint, failing over between them, and telling errors that
//! waiting fixes from those only the operator can.

use std::error::Error as StdError;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::watch;
use tonic::Code;

use super::RegistryError;

/// How long one etcd request may take before we call etcd unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd; mirrors flanneld's `--etcd-*` flags.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// One client per endpoint, used in turn: a request that finds its member unreachable is tried
/// on the next one, so a dead member never fails an operation. (A single client balancing over
/// all endpoints sends some requests to a dead member and fails them.)
pub(super) struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    /// Connected lazily, so a member that is down at start-up is simply skipped.
    clients: tokio::sync::Mutex<Vec<Option<Client>>>,
    /// The member that answered last; tried first.
    current: AtomicUsize,
    /// Bumped when every connection is dropped ([`Endpoints::reconnect`]), so a long-running
    /// watch on a dropped connection moves to a fresh one instead of waiting for keep-alive.
    generation: watch::Sender<u64>,
}

impl Endpoints {
    /// The endpoints of `options`, none connected yet.
    pub(super) fn new(options: &EtcdOptions) -> Result<Self, RegistryError> {
        let mut connect = ConnectOptions::new()
            // etcd's simple auth tokens expire after 5 idle minutes; log in again when they do.
            .with_auto_token_refresh(true)
            // A member cut off from the others answers "no leader" at once, so we move on.
            .with_require_leader(true)
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(password)) = (&options.username, &options.password) {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = tls_options(options)? {
            connect = connect.with_tls(tls);
        }
        Ok(Self {
            clients: tokio::sync::Mutex::new(vec![None; options.endpoints.len()]),
            urls: options.endpoints.clone(),
            options: connect,
            current: AtomicUsize::default(),
            generation: watch::Sender::new(0),
        })
    }

    async fn client(&self, index: usize) -> Result<Client, RegistryError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = &clients[index] {
            return Ok(client.clone());
        }
        let client = deadline("connect", Client::connect([&self.urls[index]], Some(self.options.clone()))).await?;
        clients[index] = Some(client.clone());
        Ok(client)
    }

    /// Runs one request, starting with the member that answered last and moving on to the next
    /// while members are unreachable. Other errors (refused, not found, …) return at once.
    pub(super) async fn call<T, F, Fut>(&self, op: &'static str, request: F) -> Result<T, RegistryError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let count = self.urls.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        let mut last = RegistryError::Timeout { op };
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let result = match self.client(index).await {
                Ok(client) => deadline(op, request(client)).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.member_unreachable() => {
                    tracing::debug!(endpoint = %self.urls[index], error = %e, "etcd member unreachable; trying the next");
                    last = e;
                }
                Ok(value) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Drops every connection, so the next request connects afresh.
    pub(super) async fn reconnect(&self) {
        self.clients.lock().await.iter_mut().for_each(|client| *client = None);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Changes each time every connection was dropped.
    pub(super) fn reconnected(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

async fn deadline<T>(op: &'static str, future: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, RegistryError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
        Ok(result) => result.map_err(|source| classify(op, source)),
        Err(_) => Err(RegistryError::Timeout { op }),
    }
}

/// Tells errors that waiting can fix (etcd down, no leader) from those only the operator can
/// (wrong credentials, wrong certificates), so start-up fails clearly instead of retrying
/// forever. By status code and error type: etcd answers a wrong user or password with
/// InvalidArgument (`ErrGRPCAuthFailed`), a request weft forms cannot otherwise earn; and with
/// FailedPrecondition while logging in ("authentication is not enabled", "user name not
/// found"), which later (an old auth revision) the token refresh mends, so only at connect is
/// it the operator's.
fn classify(op: &'static str, source: etcd_client::Error) -> RegistryError {
    if let Some(tls) = rustls_error(&source) {
        return RegistryError::Tls { op, tls: tls.clone() };
    }
    let etcd_client::Error::GRpcStatus(status) = &source else { return RegistryError::Etcd { op, source } };
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
            RegistryError::Refused { op, status: status.clone() }
        }
        Code::FailedPrecondition if op == "connect" => RegistryError::Refused { op, status: status.clone() },
        // tonic refuses a response over the decoding limit with OutOfRange, a code etcd also
        // uses (compacted or future revision). The one place classified by text: only tonic's
        // message tells them apart.
        Code::OutOfRange if status.message().contains("message length too large") => {
            RegistryError::TooLarge { op, status: status.clone() }
        }
        _ => RegistryError::Etcd { op, source },
    }
}

/// The TLS failure behind `source`, if one is: a certificate refused, or TLS spoken to a
/// plain-text endpoint. It sits deep in the transport's error chain.
fn rustls_error(source: &etcd_client::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn StdError + 'static)> = match source {
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::GRpcStatus(status) => status.source(),
        etcd_client::Error::IoError(e) => Some(e),
        _ => None,
    };
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's `source` skips the error it wraps (it returns that error's source).
        let wrapped = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if let Some(tls) = wrapped.and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

/// gRPC errors carry the transport's whole error chain; one line is enough for a log.
pub(super) fn brief(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => format!("{} ({:?})", status.message(), status.code()),
        other => other.to_string(),
    }
}

impl RegistryError {
    /// The member did not answer (down, unreachable, no leader): another member may.
    pub(super) fn member_unreachable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Etcd { source: etcd_client::Error::GRpcStatus(status), .. } => {
                matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled)
            }
            Self::Etcd { source: etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_), .. } => true,
            _ => false,
        }
    }

    /// Errors that retrying will not fix.
    pub fn needs_operator(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Tls { .. } | Self::TlsFile { .. } | Self::OutOfSubnets { .. })
    }
}

/// The TLS settings `options` ask for; `None` for plain text.
fn tls_options(options: &EtcdOptions) -> Result<Option<TlsOptions>, RegistryError> {
    let read = |path: &PathBuf| std::fs::read(path).map_err(|source| RegistryError::TlsFile { path: path.clone(), source });
    if options.ca_file.is_none() && options.cert_file.is_none() {
        return Ok(None);
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &options.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn errors_are_told_apart_by_their_status_code() {
        let refused = classify("connect", status(Code::InvalidArgument, "etcdserver: authentication failed"));
        assert!(matches!(refused, RegistryError::Refused { .. }) && refused.needs_operator());
        let at_login = classify("connect", status(Code::FailedPrecondition, "etcdserver: authentication is not enabled"));
        assert!(at_login.needs_operator());
        let later = classify("get config", status(Code::FailedPrecondition, "etcdserver: revision of auth store is old"));
        assert!(!later.needs_operator());
        let down = classify("get config", status(Code::Unavailable, "etcdserver: no leader"));
        assert!(down.member_unreachable() && !down.needs_operator());
        let large = classify("list leases", status(Code::OutOfRange, "decoded message length too large"));
        assert!(matches!(large, RegistryError::TooLarge { .. }));
        let compacted =
            classify("watch leases", status(Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted"));
        assert!(matches!(compacted, RegistryError::Etcd { .. }));
    }
}
