//! etcd: the network config, acquiring and renewing our lease, and following every lease.
//!
//! Peers are followed level-triggered: list the subnets prefix, then watch from the listed
//! revision + 1 so no event can fall between the two; on any watch loss or compaction, list
//! again. The published [`LeaseSet`] is always a complete picture, never a stream of deltas.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue, PutOptions,
    ResponseHeader, TlsOptions, Txn, TxnOp, WatchOptions,
};
use ipnetwork::Ipv4Network;
use thiserror::Error;
use tokio::sync::watch;

use crate::config::NetworkConfig;
use crate::lease::{self, Claim, Lease, LeaseAttrs, LeaseError, LeaseSet, UnreadableKey};
use crate::log_within;
use crate::logtext::{self, LogBudget};
use crate::metrics::Metrics;

/// How long one etcd request may take before we call etcd unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed etcd operation.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("etcd {op} failed: {}", brief(source))]
    Etcd { op: &'static str, source: etcd_client::Error },
    #[error("etcd refused {op}: {reason}; check --etcd-username and --etcd-password (FLANNELD_ETCD_USERNAME/PASSWORD)")]
    Refused { op: &'static str, reason: String },
    #[error("TLS with etcd failed during {op}: {reason}; check --etcd-cafile, --etcd-certfile and --etcd-keyfile, and that the endpoints use https://")]
    Tls { op: &'static str, reason: String },
    #[error("etcd {op} timed out after {REQUEST_TIMEOUT:?}: is etcd reachable at the --etcd-endpoints?")]
    Timeout { op: &'static str },
    #[error("etcd {op}: a response was larger than weftd reads ({reason}); a key under the prefix holds a huge value")]
    TooLarge { op: &'static str, reason: String },
    #[error("cannot list leases: the value of {key} alone is larger than weftd reads ({limit} bytes); delete the key or write a flannel lease there")]
    LeaseTooLarge { key: String, limit: usize },
    #[error("out of subnets: every subnet between SubnetMin {min} and SubnetMax {max} is leased; widen the Network or remove stale leases")]
    OutOfSubnets { min: Ipv4Addr, max: Ipv4Addr },
}

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

/// A key under the subnets prefix that is not a readable lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLease {
    pub key: String,
    /// The subnet the key names, when the key itself is one (only its value is bad).
    pub subnet: Option<Ipv4Network>,
    /// The etcd lease the key is attached to (0: none).
    pub etcd_lease: i64,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub error: String,
}

impl MalformedLease {
    /// The subnet whose key exists but holds no readable lease, if the key names one.
    fn unreadable(&self) -> Option<(Ipv4Network, UnreadableKey)> {
        self.subnet.map(|subnet| {
            (
                subnet,
                UnreadableKey {
                    mod_revision: self.mod_revision,
                    etcd_lease: self.etcd_lease,
                    create_revision: self.create_revision,
                },
            )
        })
    }
}

/// Every lease under `<prefix>/subnets/` at one revision.
#[derive(Debug, Clone, Default)]
pub struct LeaseListing {
    pub revision: i64,
    pub leases: Vec<Lease>,
    pub malformed: Vec<MalformedLease>,
    /// Subnets that have a key, readable or not.
    pub occupied: BTreeSet<Ipv4Network>,
    /// Per subnet, the key holding it (see [`LeaseListing::add`]).
    pub holders: BTreeMap<Ipv4Network, ListedKey>,
    /// Keys skipped because another key holds their subnet, with that subnet; each is also
    /// in `malformed`, naming the holder.
    pub aliases: Vec<(String, Ipv4Network)>,
}

/// A key under the subnets prefix, and when etcd created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// The whole key, `<prefix>/subnets/10.5.52.0-24`.
    pub key: String,
    pub create_revision: i64,
}

impl ListedKey {
    /// The key's last path element, `10.5.52.0-24`.
    pub fn name(&self) -> &str {
        key_name(&self.key)
    }
}

/// The last path element of a lease key.
fn key_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Why a key naming a subnet another key holds is skipped, naming both keys. flanneld reads
/// `<subnet>&<ipv6>-<len>` (dual stack) as a second key for `<subnet>`, so such keys are
/// not refused; one subnet still has one lease.
fn alias_error(subnet: Ipv4Network, holder: &str) -> String {
    format!("it names subnet {subnet}, which the key {holder} held first; skipped until that key is deleted")
}

/// `decoded`, the value of the alias key `key`, as a malformed entry naming the holder.
fn as_alias(decoded: Result<Lease, MalformedLease>, key: &str, subnet: Ipv4Network, holder: &str) -> MalformedLease {
    let (etcd_lease, mod_revision, create_revision) = match decoded {
        Ok(lease) => (lease.etcd_lease, lease.mod_revision, lease.create_revision),
        Err(bad) => (bad.etcd_lease, bad.mod_revision, bad.create_revision),
    };
    let error = alias_error(subnet, holder);
    MalformedLease { key: key.to_string(), subnet: None, etcd_lease, mod_revision, create_revision, error }
}

impl LeaseListing {
    /// Adds one decoded key. Of several keys naming one subnet, the one etcd created first
    /// (then the lower key) holds it, whatever the listing order; the others become malformed
    /// entries that name it.
    fn add(&mut self, listed: ListedKey, decoded: Result<Lease, MalformedLease>) {
        let subnet = match &decoded {
            Ok(lease) => Some(lease.subnet),
            Err(bad) => bad.subnet,
        };
        let decoded = match subnet {
            Some(subnet) => self.hold(subnet, listed, decoded),
            None => decoded,
        };
        match decoded {
            Ok(lease) => {
                self.occupied.insert(lease.subnet);
                self.leases.push(lease);
            }
            Err(malformed) => {
                self.occupied.extend(malformed.subnet);
                self.malformed.push(malformed);
            }
        }
    }

    /// Gives `subnet` to `listed` unless an earlier key holds it; returns what to add for it.
    fn hold(
        &mut self,
        subnet: Ipv4Network,
        listed: ListedKey,
        decoded: Result<Lease, MalformedLease>,
    ) -> Result<Lease, MalformedLease> {
        let rank = |k: &ListedKey| (k.create_revision, k.key.clone());
        match self.holders.get(&subnet).cloned() {
            None => {}
            Some(held) if rank(&held) < rank(&listed) => {
                self.aliases.push((listed.key.clone(), subnet));
                return Err(as_alias(decoded, &listed.key, subnet, held.name()));
            }
            Some(held) => {
                // A key created earlier can come later in key order: the one added before steps aside.
                let displaced = self.take(subnet);
                self.malformed.extend(displaced.map(|d| as_alias(d, &held.key, subnet, listed.name())));
                self.aliases.push((held.key, subnet));
            }
        }
        self.holders.insert(subnet, listed);
        decoded
    }

    /// Removes and returns what was added for `subnet`.
    fn take(&mut self, subnet: Ipv4Network) -> Option<Result<Lease, MalformedLease>> {
        if let Some(at) = self.leases.iter().position(|l| l.subnet == subnet) {
            return Some(Ok(self.leases.remove(at)));
        }
        let at = self.malformed.iter().position(|m| m.subnet == Some(subnet))?;
        Some(Err(self.malformed.remove(at)))
    }
}

/// etcd, scoped to one key prefix.
#[derive(Clone)]
pub struct Registry {
    endpoints: Arc<Endpoints>,
    prefix: String,
    /// Shared by every clone, so the follower, the keeper and acquiring all watch one store.
    store: Arc<StoreTracker>,
}

/// What this daemon has seen of etcd's store: which cluster, and how far its history got.
/// A store that was wiped or restored from an older backup shows up as a different cluster id
/// or a revision lower than one already seen; watches and leases from before it mean nothing
/// in it, so everything must be listed and our lease asserted again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreView {
    /// `None` until the first response.
    cluster_id: Option<u64>,
    /// The highest revision seen in a response or an event.
    revision: i64,
}

/// How the store changed under us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReplaced {
    /// Another cluster answers (a new cluster, or one restored with other member flags).
    Cluster { was: u64, now: u64 },
    /// The store's history is shorter than what we already saw: wiped, or restored from an
    /// older snapshot.
    Backwards { seen: i64, now: i64 },
}

impl StoreView {
    /// The highest revision seen so far: a linearizable request sent now must answer with at
    /// least this revision, unless the store went backwards.
    pub fn floor(&self) -> i64 {
        self.revision
    }

    /// Records a linearizable response (a range read or a transaction) to a request sent when
    /// [`floor`](Self::floor) was `floor`. Comparing with the floor at send time, not with the
    /// newest revision seen, keeps a write that finished meanwhile from looking like history
    /// lost. Returns how the store was replaced, if it was; the view then follows the new store.
    pub fn observe_response(&mut self, cluster_id: u64, revision: i64, floor: i64) -> Option<StoreReplaced> {
        let replaced = self
            .cluster_changed(cluster_id)
            .or_else(|| (revision < floor).then_some(StoreReplaced::Backwards { seen: floor, now: revision }));
        self.cluster_id = Some(cluster_id);
        self.revision = if replaced.is_some() { revision } else { self.revision.max(revision) };
        replaced
    }

    /// Records a watch response: only its cluster id is checked (a watch served by a member
    /// that lags may carry an older header revision), and its newest event raises the revision.
    pub fn observe_watch(&mut self, cluster_id: u64, newest_event: Option<i64>) -> Option<StoreReplaced> {
        let replaced = self.cluster_changed(cluster_id);
        self.cluster_id = Some(cluster_id);
        let newest = newest_event.unwrap_or_default();
        self.revision = if replaced.is_some() { newest } else { self.revision.max(newest) };
        replaced
    }

    fn cluster_changed(&self, now: u64) -> Option<StoreReplaced> {
        self.cluster_id.filter(|was| *was != now).map(|was| StoreReplaced::Cluster { was, now })
    }
}

/// A [`StoreView`] shared by a registry's clones, and a count of the replacements it saw,
/// which the lease keeper watches.
struct StoreTracker {
    view: std::sync::Mutex<StoreView>,
    replacements: watch::Sender<u64>,
}

impl StoreTracker {
    fn new() -> Self {
        Self { view: Default::default(), replacements: watch::channel(0).0 }
    }

    fn floor(&self) -> i64 {
        self.lock().floor()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreView> {
        // The view is two numbers updated together: a panicked holder cannot leave it torn.
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a linearizable response's header; see [`StoreView::observe_response`].
    fn response(&self, header: Option<&ResponseHeader>, floor: i64) -> Option<StoreReplaced> {
        let header = header?;
        let replaced = self.lock().observe_response(header.cluster_id(), header.revision(), floor);
        self.announce(replaced)
    }

    /// Checks a watch response's header; see [`StoreView::observe_watch`].
    fn watch(&self, header: Option<&ResponseHeader>, newest_event: Option<i64>) -> Option<StoreReplaced> {
        let header = header?;
        let replaced = self.lock().observe_watch(header.cluster_id(), newest_event);
        self.announce(replaced)
    }

    fn announce(&self, replaced: Option<StoreReplaced>) -> Option<StoreReplaced> {
        match replaced? {
            StoreReplaced::Cluster { was, now } => tracing::warn!(
                was = format!("{was:x}"),
                now = format!("{now:x}"),
                "etcd answers with another cluster id: the store was replaced; listing again and re-asserting our lease"
            ),
            StoreReplaced::Backwards { seen, now } => tracing::warn!(
                seen,
                now,
                "etcd's revision went backwards: the store was wiped or restored from an older backup; listing again and re-asserting our lease"
            ),
        }
        self.replacements.send_modify(|count| *count += 1);
        replaced
    }
}

/// One client per endpoint, used in turn: a request that finds its member unreachable is tried
/// on the next one, so a dead member never fails an operation. (A single client balancing over
/// all endpoints sends some requests to a dead member and fails them.)
struct Endpoints {
    urls: Vec<String>,
    options: ConnectOptions,
    /// Connected lazily, so a member that is down at start-up is simply skipped.
    clients: tokio::sync::Mutex<Vec<Option<Client>>>,
    /// The member that answered last; tried first.
    current: std::sync::atomic::AtomicUsize,
    /// Bumped when every connection is dropped ([`Registry::reconnect`]), so a long-running
    /// watch on a dropped connection moves to a fresh one instead of waiting for keep-alive.
    generation: watch::Sender<u64>,
}

impl Endpoints {
    async fn client(&self, index: usize) -> Result<Client, RegistryError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = &clients[index] {
            return Ok(client.clone());
        }
        let client = deadline("connect", Client::connect([&self.urls[index]], Some(self.options.clone()))).await?;
        clients[index] = Some(client.clone());
        Ok(client)
    }
}

async fn deadline<T>(
    op: &'static str,
    future: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, future).await {
        Ok(result) => result.map_err(|source| classify(op, source)),
        Err(_) => Err(RegistryError::Timeout { op }),
    }
}

/// Tells errors that waiting can fix (etcd down, no leader) from those only the operator can
/// (wrong credentials, wrong certificates), so start-up fails clearly instead of retrying forever.
fn classify(op: &'static str, source: etcd_client::Error) -> RegistryError {
    use tonic::Code;
    if let etcd_client::Error::GRpcStatus(status) = &source {
        let message = status.message().to_string();
        let about_auth = ["user name", "password", "authentication", "auth token"].iter().any(|w| message.contains(w));
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => return RegistryError::Refused { op, reason: message },
            Code::InvalidArgument | Code::FailedPrecondition if about_auth => {
                return RegistryError::Refused { op, reason: message }
            }
            // tonic refuses a response over the decoding limit with OutOfRange, a code etcd
            // also uses (compacted or future revision); only the text tells them apart.
            Code::OutOfRange if message.contains("message length too large") => {
                return RegistryError::TooLarge { op, reason: message }
            }
            _ => {}
        }
    }
    let text = format!("{source:?}");
    if ["certificate", "UnknownIssuer", "handshake", "InvalidContentType", "CorruptMessage"].iter().any(|w| text.contains(w)) {
        let reason = text
            .split("invalid peer certificate")
            .nth(1)
            .map(|r| format!("invalid peer certificate{}", r.split('"').next().unwrap_or(r)));
        return RegistryError::Tls { op, reason: reason.unwrap_or_else(|| source.to_string()) };
    }
    RegistryError::Etcd { op, source }
}

/// gRPC errors carry the transport's whole error chain; one line is enough for a log.
fn brief(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => format!("{} ({:?})", status.message(), status.code()),
        other => other.to_string(),
    }
}

impl RegistryError {
    /// The member did not answer (down, unreachable, no leader): another member may.
    fn member_unreachable(&self) -> bool {
        use tonic::Code;
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

impl Registry {
    /// Connects to the first endpoint that answers; the others are connected when needed.
    pub async fn connect(options: &EtcdOptions) -> Result<Self, RegistryError> {
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
        let endpoints = Endpoints {
            clients: tokio::sync::Mutex::new(vec![None; options.endpoints.len()]),
            urls: options.endpoints.clone(),
            options: connect,
            current: Default::default(),
            generation: watch::Sender::new(0),
        };
        let registry = Self {
            endpoints: Arc::new(endpoints),
            prefix: options.prefix.trim_end_matches('/').to_string(),
            store: Arc::new(StoreTracker::new()),
        };
        registry.call("connect", |_| async { Ok(()) }).await?;
        Ok(registry)
    }

    /// Runs one request, starting with the member that answered last and moving on to the next
    /// while members are unreachable. Other errors (refused, not found, …) return at once.
    async fn call<T, F, Fut>(&self, op: &'static str, request: F) -> Result<T, RegistryError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        use std::sync::atomic::Ordering;
        let count = self.endpoints.urls.len().max(1);
        let start = self.endpoints.current.load(Ordering::Relaxed);
        let mut last = RegistryError::Timeout { op };
        for attempt in 0..count {
            let index = (start + attempt) % count;
            let result = match self.endpoints.client(index).await {
                Ok(client) => deadline(op, request(client)).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.member_unreachable() => {
                    tracing::debug!(endpoint = %self.endpoints.urls[index], error = %e, "etcd member unreachable; trying the next");
                    last = e;
                }
                Ok(value) => {
                    self.endpoints.current.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Counts the times etcd's store was found replaced (wiped, restored from an older backup,
    /// another cluster): each time, leases granted before mean nothing and ours must be
    /// written again.
    pub fn store_replacements(&self) -> watch::Receiver<u64> {
        self.store.replacements.subscribe()
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn lease_key(&self, subnet: Ipv4Network) -> String {
        format!("{}{}", self.subnets_prefix(), lease::subnet_key(subnet))
    }

    /// The raw network config text at `<prefix>/config`, or `None` if it is not there yet.
    pub async fn network_config(&self) -> Result<Option<String>, RegistryError> {
        let key = format!("{}/config", self.prefix);
        let response = self
            .call("get config", |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        Ok(response.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Follows `<prefix>/config`: calls `seen` with its text (`None` when absent) now, then
    /// after every change, until the watch ends (`Ok`: compaction or cancel) or fails.
    ///
    /// # Errors
    /// Any etcd failure; the caller retries.
    pub async fn follow_config(&self, mut seen: impl FnMut(Option<String>)) -> Result<(), RegistryError> {
        let key = format!("{}/config", self.prefix);
        let response = self
            .call("get config", |c| {
                let key = key.clone();
                async move { c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES).get(key, None).await }
            })
            .await?;
        let text = |kv: &KeyValue| String::from_utf8_lossy(kv.value()).into_owned();
        seen(response.kvs().first().map(text));
        let revision = response.header().map(|h| h.revision()).unwrap_or_default();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = self
            .call("watch config", |c| {
                let (key, options) = (key.clone(), options.clone());
                async move { c.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES).watch(key, Some(options)).await }
            })
            .await?;
        while let Some(response) = stream.message().await.map_err(|source| RegistryError::Etcd { op: "watch config", source })? {
            if response.canceled() || response.compact_revision() > 0 {
                return Ok(());
            }
            for event in response.events() {
                let put = event.event_type() == EventType::Put;
                seen(event.kv().filter(|_| put).map(text));
            }
        }
        Ok(())
    }

    /// A cheap request that succeeds only if etcd answers (`etcdctl get <prefix>/config --count-only`).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let key = format!("{}/config", self.prefix);
        let options = GetOptions::new().with_count_only();
        self.call("ping", |c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.kv_client().get(key, Some(options)).await }
        })
        .await
        .map(|_| ())
    }

    /// Seconds left on an etcd lease (`etcdctl lease timetolive`); `None` if it has expired.
    pub async fn time_to_live(&self, etcd_lease: i64) -> Result<Option<i64>, RegistryError> {
        let response =
            self.call("lease time to live", |c| async move { c.lease_client().time_to_live(etcd_lease, None).await }).await?;
        Ok(Some(response.ttl()).filter(|ttl| *ttl >= 0))
    }

    /// Lists every lease under the subnets prefix as one consistent snapshot, read in pages so
    /// thousands of leases never sit in memory twice over (raw response and decoded leases). A
    /// page over [`MAX_RESPONSE_BYTES`] is read again with half as many keys.
    ///
    /// # Errors
    /// Any etcd failure; [`RegistryError::LeaseTooLarge`] when one key alone is over the limit.
    pub async fn list_leases(&self) -> Result<LeaseListing, RegistryError> {
        let prefix = self.subnets_prefix();
        let end = prefix_end(&prefix);
        let mut listing = LeaseListing::default();
        let mut from = prefix.clone().into_bytes();
        let mut page = LIST_PAGE;
        let floor = self.store.floor();
        loop {
            // Every page after the first reads at the first page's revision: one snapshot.
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if listing.revision > 0 {
                options = options.with_revision(listing.revision);
            }
            let key = from.clone();
            let result = self
                .call("list leases", |c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES).get(key, Some(options)).await }
                })
                .await;
            let response = match result {
                Err(RegistryError::TooLarge { reason, .. }) => {
                    let key = logtext::clip(&String::from_utf8_lossy(&from)).to_string();
                    page = smaller_page(page).ok_or(RegistryError::LeaseTooLarge { key, limit: MAX_RESPONSE_BYTES })?;
                    tracing::debug!(page, %reason, "lease listing page too large; reading fewer keys at a time");
                    continue;
                }
                other => other?,
            };
            if listing.revision == 0 {
                listing.revision = response.header().map(|h| h.revision()).unwrap_or_default();
                self.store.response(response.header(), floor);
            }
            response.kvs().iter().for_each(|kv| self.add_to_listing(&mut listing, kv));
            match response.kvs().last() {
                Some(last) if response.more() => from = [last.key(), &[0]].concat(),
                _ => return Ok(listing),
            }
        }
    }

    fn add_to_listing(&self, listing: &mut LeaseListing, kv: &KeyValue) {
        if let Some(decoded) = self.decode(kv) {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            listing.add(ListedKey { key, create_revision: kv.create_revision() }, decoded);
        }
    }

    /// Decodes a key-value under the subnets prefix. `None` for keys that are not leases at all
    /// (deeper paths); a malformed lease names its subnet when the key itself was readable.
    fn decode(&self, kv: &KeyValue) -> Option<Result<Lease, MalformedLease>> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let name = key.strip_prefix(&self.subnets_prefix())?;
        if name.contains('/') {
            return None;
        }
        let (etcd_lease, mod_revision, create_revision) = (kv.lease(), kv.mod_revision(), kv.create_revision());
        let malformed = |subnet: Option<Ipv4Network>, error: LeaseError| MalformedLease {
            key: key.clone(),
            subnet,
            etcd_lease,
            mod_revision,
            create_revision,
            error: error.to_string(),
        };
        let subnet = match lease::parse_subnet_key(name) {
            Ok(subnet) => subnet,
            Err(e) => return Some(Err(malformed(None, e))),
        };
        // Inside JSON strings Go reads invalid UTF-8 as U+FFFD, as the lossy conversion does;
        // outside strings the bytes make the JSON invalid in both Go and weft.
        let text = String::from_utf8_lossy(kv.value());
        Some(match LeaseAttrs::from_json(&text) {
            Ok(attrs) => Ok(Lease { subnet, attrs, etcd_lease, mod_revision, create_revision }),
            Err(e) => Err(malformed(Some(subnet), e)),
        })
    }

    /// Acquires our lease in flanneld's order (see [`lease::choose_claim`]), retrying when
    /// another host wins a race for the same subnet.
    pub async fn acquire(
        &self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
        ttl: Duration,
        previous: Option<Ipv4Network>,
    ) -> Result<Lease, RegistryError> {
        loop {
            let listing = self.list_leases().await?;
            let claim = lease::choose_claim(config, attrs, &listing.leases, &listing.occupied, previous)
                .ok_or(RegistryError::OutOfSubnets { min: config.subnet_min, max: config.subnet_max })?;
            let won = match &claim {
                Claim::Existing(existing) => self.take_over(existing, attrs, ttl).await?,
                Claim::Free(subnet) => self.create(*subnet, attrs, ttl).await?,
            };
            match won {
                Some(lease) => return Ok(lease),
                None => {
                    tracing::debug!(?claim, "lost a race for a subnet; choosing again");
                    // A little jitter so hosts that collided do not collide again in lockstep.
                    let jitter = rand::random::<u64>() % 50;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
            }
        }
    }

    /// Creates a lease only if the key does not exist (`version(key) == 0`). `None` if it does.
    async fn create(&self, subnet: Ipv4Network, attrs: &LeaseAttrs, ttl: Duration) -> Result<Option<Lease>, RegistryError> {
        let key = self.lease_key(subnet);
        let etcd_lease = self.grant(ttl).await?;
        let condition = Compare::version(key.clone(), CompareOp::Equal, 0);
        let lease = Lease { subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, create_revision: 0 };
        self.put_if(condition, &key, lease).await
    }

    /// Rewrites an existing lease with our attributes, if nobody changed it since we read it.
    /// A reservation stays a reservation (no etcd lease, never expires).
    async fn take_over(&self, existing: &Lease, attrs: &LeaseAttrs, ttl: Duration) -> Result<Option<Lease>, RegistryError> {
        let key = self.lease_key(existing.subnet);
        let etcd_lease = if existing.is_reservation() { 0 } else { self.grant(ttl).await? };
        let condition = Compare::mod_revision(key.clone(), CompareOp::Equal, existing.mod_revision);
        let lease = Lease { subnet: existing.subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, ..existing.clone() };
        let taken = self.put_if(condition, &key, lease).await?;
        if taken.is_some() && !existing.is_reservation() {
            // The key now hangs on the new etcd lease; the old one would idle until it expires.
            let old = existing.etcd_lease;
            if let Err(error) = self.call("revoke old lease", |c| async move { c.lease_client().revoke(old).await }).await {
                tracing::debug!(%error, "could not revoke the previous etcd lease; it will expire on its own");
            }
        }
        Ok(taken)
    }

    /// Drops every connection, so the next request connects afresh: after this host's address
    /// changed, connections from the old address hang until keep-alive gives up on them.
    pub async fn reconnect(&self) {
        self.endpoints.clients.lock().await.iter_mut().for_each(|client| *client = None);
        self.endpoints.generation.send_modify(|generation| *generation += 1);
    }

    /// Rewrites our lease with new attributes (a new PublicIP once the underlay was
    /// readdressed), keeping its subnet and etcd lease, if nobody changed the key since we
    /// wrote it. `None` if someone did: the caller acquires again.
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn rewrite(&self, lease: &Lease, attrs: &LeaseAttrs) -> Result<Option<Lease>, RegistryError> {
        let key = self.lease_key(lease.subnet);
        let condition = Compare::mod_revision(key.clone(), CompareOp::Equal, lease.mod_revision);
        self.put_if(condition, &key, Lease { attrs: attrs.clone(), mod_revision: 0, ..lease.clone() }).await
    }

    async fn grant(&self, ttl: Duration) -> Result<i64, RegistryError> {
        let seconds = ttl.as_secs().max(1) as i64;
        Ok(self.call("grant lease", |c| async move { c.lease_client().grant(seconds, None).await }).await?.id())
    }

    async fn put_if(&self, condition: Compare, key: &str, mut lease: Lease) -> Result<Option<Lease>, RegistryError> {
        let options = (lease.etcd_lease != 0).then(|| PutOptions::new().with_lease(lease.etcd_lease));
        let txn = Txn::new().when([condition]).and_then([TxnOp::put(key, lease.attrs.to_json(), options)]);
        let floor = self.store.floor();
        let response = self
            .call("lease transaction", |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        self.store.response(response.header(), floor);
        if !response.succeeded() {
            return Ok(None);
        }
        lease.mod_revision = response.header().map(|h| h.revision()).unwrap_or_default();
        if lease.create_revision == 0 {
            lease.create_revision = lease.mod_revision; // this put created the key
        }
        Ok(Some(lease))
    }

    /// Renews an etcd lease once. `false` means etcd no longer knows it (it expired).
    pub async fn renew(&self, etcd_lease: i64) -> Result<bool, RegistryError> {
        let response = self
            .call("keep lease alive", |c| async move {
                let (mut keeper, mut responses) = c.lease_client().keep_alive(etcd_lease).await?;
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await?;
        Ok(response.is_some_and(|r| r.ttl() > 0))
    }

    /// Keeps `leases` equal to the leases in etcd, for as long as the task runs: list, then
    /// watch from the next revision; after any failure, back off and list again.
    pub async fn follow_leases(self, leases: watch::Sender<Arc<LeaseSet>>, metrics: Arc<Metrics>) {
        let mut outage = Outage::default();
        let mut warned = MalformedWarnings::default();
        loop {
            if let Err(e) = self.follow_once(&leases, &mut warned, &mut outage, &metrics).await {
                outage.failed(&e);
            }
            warned.flush(); // the watch that waited for it may have ended first
            metrics.watch_restarts.inc();
            // Even a clean end of the watch waits a moment, so a server that keeps closing
            // watches cannot turn this loop into a busy one.
            tokio::time::sleep(outage.backoff().max(Duration::from_millis(100))).await;
        }
    }

    /// One list-then-watch cycle. Returns `Ok` when the watch ended in a way that needs a
    /// re-list (compaction, cancel), `Err` when etcd failed.
    async fn follow_once(
        &self,
        leases: &watch::Sender<Arc<LeaseSet>>,
        warned: &mut MalformedWarnings,
        outage: &mut Outage,
        metrics: &Metrics,
    ) -> Result<(), RegistryError> {
        let listing = self.list_leases().await?;
        // A successful list ends an outage; the watch that follows may run for days.
        if outage.recovered() {
            metrics.etcd_reconnects.inc();
        }
        warned.relisted(&listing.malformed);
        let mut aliases = Aliases::listed(&listing.aliases);
        let revision = listing.revision;
        leases.send_modify(|set| *set = Arc::new(replace_with_listing(set, listing)));
        let (prefix, options) = (self.subnets_prefix(), WatchOptions::new().with_prefix().with_start_revision(revision + 1));
        let mut stream = self
            .call("watch leases", |c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES).watch(prefix, Some(options)).await }
            })
            .await?;
        tracing::debug!(revision, "watching leases");
        let mut reconnected = self.endpoints.generation.subscribe();
        loop {
            let summary_at = warned.summary_at();
            let message = tokio::select! {
                message = stream.message() => message.map_err(|source| RegistryError::Etcd { op: "watch leases", source })?,
                _ = reconnected.changed() => {
                    tracing::debug!("connections dropped; listing and watching again on a fresh one");
                    return Ok(());
                }
                // Held-back warnings are summarised when their window ends, even if no event comes.
                () = tokio::time::sleep_until(summary_at.unwrap_or_else(Instant::now).into()), if summary_at.is_some() => {
                    warned.flush();
                    continue;
                }
            };
            let Some(response) = message else { return Ok(()) };
            if response.canceled() || response.compact_revision() > 0 {
                tracing::info!(
                    compact_revision = response.compact_revision(),
                    reason = response.cancel_reason(),
                    "lease watch was cancelled or compacted; listing again"
                );
                return Ok(());
            }
            let newest = response.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max();
            if self.store.watch(response.header(), newest).is_some() {
                return Ok(()); // another store answers: its events do not apply to our set
            }
            // The revision the set now reflects is its newest event's. The header's is the
            // store's, which can be ahead of the events delivered so far (the watch's first,
            // empty response already carries it); taking it would stamp a later set with the
            // same revision as an earlier one and make a lease change look like a repair.
            let Some(revision) = newest else { continue };
            let mut relist = false;
            leases.send_modify(|set| {
                // A copy whenever the reconciler still holds this set, as it does after each
                // pass: O(leases) per watch response, a few ms at thousands of peers.
                let set = Arc::make_mut(set);
                set.revision = revision;
                set.changed_at = Some(std::time::Instant::now());
                for event in response.events() {
                    relist |= self.apply(set, event, warned, &mut aliases);
                }
            });
            if relist {
                tracing::debug!(
                    "the key holding a subnet other keys name was deleted; listing again so the first of them takes over"
                );
                return Ok(());
            }
        }
    }

    /// Applies one watch event to the set; malformed values are warned about once. Returns
    /// whether a fresh listing must replace the set instead: the key holding a subnet was
    /// deleted while other keys name it, and only a listing tells which of them came first.
    fn apply(
        &self,
        set: &mut LeaseSet,
        event: &etcd_client::Event,
        warned: &mut MalformedWarnings,
        aliases: &mut Aliases,
    ) -> bool {
        let Some(kv) = event.kv() else { return false };
        let Some(decoded) = self.decode(kv) else { return false };
        let key = String::from_utf8_lossy(kv.key());
        let subnet = match &decoded {
            Ok(lease) => Some(lease.subnet),
            Err(bad) => bad.subnet,
        };
        let holder = subnet.and_then(|s| set.keys.get(&s)).filter(|holder| holder.as_str() != key_name(&key)).cloned();
        match (event.event_type(), subnet, holder) {
            (EventType::Delete, _, Some(_)) => {
                warned.forget(kv.key());
                aliases.remove(&key);
            }
            (EventType::Delete, Some(subnet), None) if aliases.name(subnet) => return true,
            (EventType::Delete, subnet, None) => {
                warned.forget(kv.key());
                subnet.into_iter().for_each(|subnet| set.remove(subnet));
            }
            (EventType::Put, Some(subnet), Some(holder)) => {
                aliases.insert(&key, subnet);
                warned.warn(&as_alias(decoded, &key, subnet, &holder));
            }
            // A key that names no subnet has no holder.
            (EventType::Put, _, _) => match decoded {
                Ok(lease) => {
                    warned.forget(kv.key());
                    set.put(key_name(&key).to_string(), lease);
                }
                // The last good lease stays in `leases`: bad input never removes good state.
                Err(bad) => {
                    if let Some((subnet, unreadable)) = bad.unreadable() {
                        set.unreadable.insert(subnet, unreadable);
                        set.keys.insert(subnet, key_name(&key).to_string());
                    }
                    warned.warn(&bad);
                }
            },
        }
        false
    }
}

/// Keys per request when listing leases; fewer when a page comes back too large.
const LIST_PAGE: i64 = 500;

/// The largest etcd response weftd decodes, in bytes: the most one listing page or watch
/// response may hold in memory. flanneld's client takes up to 2 GiB; etcd's own limit on a
/// written value is 1.5 MiB (`--max-request-bytes`), so one key always fits, and a page of many
/// large values is read again in smaller pages.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The page size to try after a page of `page` keys was too large; `None` at one key.
fn smaller_page(page: i64) -> Option<i64> {
    (page > 1).then_some(page / 2)
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key: etcd reads a range end of "\0" as "to the end"
}

/// The set to publish after a fresh listing. A key whose value became unreadable keeps its
/// last good lease from `previous`, and is listed as unreadable (with or without one, so a
/// restarted daemon keeps that subnet's kernel entries): bad input never removes good state.
///
/// A lease whose VtepMAC is the one `previous` knew keeps the revision since which it
/// advertised it. A lease new to us counts from its key's last write: all a first listing (a
/// restart) knows. weft renews its lease by keep-alive, so for a weft peer that is when it
/// wrote its MAC; flanneld renews by a put (an hour before its 24 h lease ends), so a
/// restarted host counts a flanneld peer's MAC from its last renewal, and may give it to a key
/// that copied it before then, where hosts that kept running do not.
fn replace_with_listing(previous: &LeaseSet, listing: LeaseListing) -> LeaseSet {
    let unreadable = listing.malformed.iter().filter_map(MalformedLease::unreadable).collect();
    let keys = listing.holders.iter().map(|(subnet, held)| (*subnet, held.name().to_string())).collect();
    let mut set = LeaseSet {
        revision: listing.revision,
        unreadable,
        keys,
        changed_at: Some(std::time::Instant::now()),
        ..Default::default()
    };
    for lease in listing.leases {
        set.mac_since.insert(lease.subnet, previous.mac_since_for(&lease));
        set.leases.insert(lease.subnet, lease);
    }
    for subnet in &listing.occupied {
        if let (false, Some(last_good)) = (set.leases.contains_key(subnet), previous.leases.get(subnet)) {
            set.mac_since.insert(*subnet, previous.mac_since(last_good));
            set.leases.insert(*subnet, last_good.clone());
        }
    }
    set
}

/// Keys skipped because another key holds their subnet, by a fingerprint of the key (so
/// their number, not their size, bounds it), with that subnet: deleting one changes nothing;
/// deleting the holder of a subnet that some name needs a fresh listing.
#[derive(Debug, Default)]
struct Aliases(HashMap<u64, Ipv4Network>);

impl Aliases {
    fn listed(aliases: &[(String, Ipv4Network)]) -> Self {
        Self(aliases.iter().map(|(key, subnet)| (logtext::fingerprint(key), *subnet)).collect())
    }

    fn insert(&mut self, key: &str, subnet: Ipv4Network) {
        self.0.insert(logtext::fingerprint(key), subnet);
    }

    fn remove(&mut self, key: &str) {
        self.0.remove(&logtext::fingerprint(key));
    }

    /// Whether a skipped key names `subnet`.
    fn name(&self, subnet: Ipv4Network) -> bool {
        self.0.values().any(|s| *s == subnet)
    }
}

/// Malformed keys already warned about: a fingerprint of the key and of its problem, so a
/// re-list, a re-delivery or a rewrite with the same problem does not repeat the warning, and
/// neither the size nor the number of the values written can grow it. A key leaves the set
/// when it is deleted or becomes readable. The warnings share one [`LogBudget`], so thousands
/// of bad keys, or one rewritten again and again, cost a few lines a minute.
#[derive(Debug)]
struct MalformedWarnings {
    last: HashMap<u64, u64>,
    budget: LogBudget,
}

impl Default for MalformedWarnings {
    fn default() -> Self {
        MalformedWarnings {
            last: HashMap::new(),
            budget: LogBudget::new("malformed leases skipped", "`weftd status` lists them"),
        }
    }
}

impl MalformedWarnings {
    /// After a fresh listing: forgets every key that is no longer malformed, then warns.
    fn relisted(&mut self, malformed: &[MalformedLease]) {
        let still: HashSet<u64> = malformed.iter().map(|bad| logtext::fingerprint(&bad.key)).collect();
        self.last.retain(|key, _| still.contains(key));
        malformed.iter().for_each(|bad| self.warn(bad));
    }

    /// Warns about `bad` unless its key was last warned about for the same problem.
    fn warn(&mut self, bad: &MalformedLease) {
        let problem = logtext::fingerprint(&bad.error);
        if self.last.insert(logtext::fingerprint(&bad.key), problem) != Some(problem) {
            let (key, error) = (logtext::clip(&bad.key), logtext::clip(&bad.error));
            log_within!(self.budget, warn, %key, %error, "skipping malformed lease; fix or delete the key");
        }
    }

    /// When the summary of the warnings held back is due; the watch waits for it.
    fn summary_at(&self) -> Option<Instant> {
        self.budget.summary_at()
    }

    /// Logs the summary of the warnings held back, if it is due.
    fn flush(&mut self) {
        self.budget.flush(Instant::now());
    }

    /// The key was deleted or now holds a readable lease.
    fn forget(&mut self, key: &[u8]) {
        self.last.remove(&logtext::fingerprint(&String::from_utf8_lossy(key)));
    }
}

/// Logs an etcd outage once when it starts and once when it ends, and paces retries.
#[derive(Default)]
pub struct Outage {
    failures: u32,
}

impl Outage {
    pub fn failed(&mut self, error: &RegistryError) {
        if self.failures == 0 && error.member_unreachable() {
            tracing::warn!(%error, "etcd unavailable; keeping the current overlay and retrying");
        } else if self.failures == 0 {
            // etcd answers, but not with what we can use: say why rather than "unavailable".
            tracing::warn!(%error, "etcd request failed; keeping the current overlay and retrying");
        } else {
            tracing::debug!(%error, failures = self.failures, "etcd still unavailable");
        }
        self.failures += 1;
    }

    /// Returns whether this ends an outage.
    pub fn recovered(&mut self) -> bool {
        let was_out = self.failures > 0;
        if was_out {
            tracing::info!(failures = self.failures, "etcd reachable again");
        }
        self.failures = 0;
        was_out
    }

    /// 0 after success; then 200 ms doubling up to 3.2 s. The cap bounds how long after etcd
    /// answers again a daemon notices (a replaced store must be re-asserted within 5 s).
    pub fn backoff(&self) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_millis(200u64 << (n - 1).min(4)),
        }
    }
}

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
    use crate::lease::MacAddr;

    #[test]
    fn a_page_too_large_is_read_again_halved_down_to_one_key() {
        let mut pages = vec![LIST_PAGE];
        while let Some(next) = smaller_page(*pages.last().unwrap()) {
            pages.push(next);
        }
        assert_eq!(pages, [500, 250, 125, 62, 31, 15, 7, 3, 1]);
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end("/coreos.com/network/subnets/"), b"/coreos.com/network/subnets0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }

    fn lease(subnet: &str, last: u8) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, last), 1, MacAddr([2, 0, 0, 0, 0, last])),
            etcd_lease: 1,
            mod_revision: 1,
            create_revision: 1,
        }
    }

    #[test]
    fn relisting_keeps_the_last_good_value_of_a_key_that_became_malformed() {
        let good = lease("10.5.2.0/24", 12);
        let gone = lease("10.5.3.0/24", 13);
        let set = LeaseSet {
            revision: 5,
            leases: [(good.subnet, good.clone()), (gone.subnet, gone.clone())].into(),
            ..Default::default()
        };
        let fresh = lease("10.5.4.0/24", 14);
        let broken = |subnet: Option<Ipv4Network>| MalformedLease {
            key: "k".into(),
            subnet,
            etcd_lease: 0,
            mod_revision: 8,
            create_revision: 8,
            error: "not json".into(),
        };
        let never_read: Ipv4Network = "10.5.5.0/24".parse().unwrap();
        let listing = LeaseListing {
            revision: 9,
            leases: vec![fresh.clone()],
            malformed: vec![broken(Some(good.subnet)), broken(Some(never_read)), broken(None)],
            occupied: [good.subnet, fresh.subnet, never_read].into(),
            ..Default::default()
        };
        let set = replace_with_listing(&set, listing);
        assert_eq!(set.revision, 9);
        assert_eq!(set.leases.keys().copied().collect::<Vec<_>>(), vec![good.subnet, fresh.subnet]);
        // Both unreadable keys are known as such, with no last good value needed.
        assert_eq!(set.unreadable.keys().copied().collect::<Vec<_>>(), vec![good.subnet, never_read]);
    }

    fn listed(name: &str, create_revision: i64) -> ListedKey {
        ListedKey { key: format!("/coreos.com/network/subnets/{name}"), create_revision }
    }

    #[test]
    fn of_two_keys_naming_one_subnet_the_one_created_first_holds_it_in_any_listing_order() {
        let first = Lease { create_revision: 3, ..lease("10.5.2.0/24", 12) };
        let second = Lease { create_revision: 9, ..lease("10.5.2.0/24", 99) };
        let (canonical, dual) = ("10.5.2.0-24", "10.5.2.0-24&fd00::-64");
        for (created_first, then) in [((canonical, &first), (dual, &second)), ((dual, &first), (canonical, &second))] {
            let mut listing = LeaseListing::default();
            listing.add(listed(created_first.0, 3), Ok(created_first.1.clone()));
            listing.add(listed(then.0, 9), Ok(then.1.clone()));
            // etcd lists keys in key order: the same two, the other way round.
            let mut reversed = LeaseListing::default();
            reversed.add(listed(then.0, 9), Ok(then.1.clone()));
            reversed.add(listed(created_first.0, 3), Ok(created_first.1.clone()));
            for listing in [listing, reversed] {
                assert_eq!(listing.leases, std::slice::from_ref(&first));
                assert_eq!(listing.holders[&first.subnet].name(), created_first.0);
                assert_eq!(listing.aliases, [(format!("/coreos.com/network/subnets/{}", then.0), first.subnet)]);
                let error = &listing.malformed[0].error;
                assert_eq!(
                    *error,
                    format!(
                        "it names subnet 10.5.2.0/24, which the key {} held first; skipped until that key is deleted",
                        created_first.0
                    )
                );
                assert_eq!(
                    (listing.malformed.len(), listing.malformed[0].subnet),
                    (1, None),
                    "the skipped key marks nothing unreadable"
                );
            }
        }
    }

    #[test]
    fn relisting_keeps_when_a_lease_first_advertised_its_mac() {
        let kept = Lease { mod_revision: 30, ..lease("10.5.2.0/24", 12) };
        let changed = Lease { mod_revision: 31, ..lease("10.5.3.0/24", 13) };
        let mut previous = LeaseSet::default();
        previous.put("10.5.2.0-24".into(), Lease { mod_revision: 10, ..kept.clone() });
        previous.put("10.5.3.0-24".into(), Lease { mod_revision: 11, ..lease("10.5.3.0/24", 77) });
        let mut listing = LeaseListing { revision: 40, ..Default::default() };
        listing.add(listed("10.5.2.0-24", 1), Ok(kept.clone()));
        listing.add(listed("10.5.3.0-24", 1), Ok(changed.clone()));
        let set = replace_with_listing(&previous, listing);
        assert_eq!((set.mac_since(&kept), set.mac_since(&changed)), (10, 31), "same MAC: kept; another MAC: from its write");
        let fresh = replace_with_listing(&LeaseSet::default(), LeaseListing { leases: vec![kept.clone()], ..Default::default() });
        assert_eq!(fresh.mac_since(&kept), 30, "a first listing knows the key's last write");
    }

    #[test]
    fn a_store_that_only_moves_forward_is_the_same_store() {
        let mut view = StoreView::default();
        assert_eq!(view.observe_response(7, 10, view.floor()), None);
        assert_eq!(view.observe_watch(7, Some(12)), None);
        assert_eq!(view.observe_watch(7, None), None);
        assert_eq!(view.floor(), 12);
        assert_eq!(view.observe_response(7, 12, view.floor()), None);
    }

    #[test]
    fn a_revision_below_what_was_seen_before_the_request_means_the_store_went_backwards() {
        let mut view = StoreView::default();
        view.observe_response(7, 40, 0);
        assert_eq!(view.observe_response(7, 3, view.floor()), Some(StoreReplaced::Backwards { seen: 40, now: 3 }));
        // The view now follows the new store: its next revisions are not a second replacement.
        assert_eq!(view.floor(), 3);
        assert_eq!(view.observe_response(7, 4, view.floor()), None);
    }

    #[test]
    fn a_write_that_finished_during_a_read_is_not_history_lost() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        let floor = view.floor(); // a read is sent now...
        view.observe_response(7, 11, view.floor()); // ...a write finishes meanwhile...
        assert_eq!(view.observe_response(7, 10, floor), None); // ...and the read answers from before it
        assert_eq!(view.floor(), 11);
    }

    #[test]
    fn another_cluster_id_means_another_store_whatever_its_revision() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        assert_eq!(view.observe_response(8, 50, view.floor()), Some(StoreReplaced::Cluster { was: 7, now: 8 }));
        assert_eq!(view.observe_watch(9, Some(60)), Some(StoreReplaced::Cluster { was: 8, now: 9 }));
        assert_eq!(view.floor(), 60);
    }

    #[test]
    fn a_lagging_watch_header_is_not_a_replacement() {
        let mut view = StoreView::default();
        view.observe_response(7, 10, 0);
        // Only events count for a watch; an empty response of a member behind is harmless.
        assert_eq!(view.observe_watch(7, None), None);
        assert_eq!(view.floor(), 10);
    }

    #[test]
    fn outage_backoff_grows_then_caps() {
        let mut outage = Outage::default();
        assert_eq!(outage.backoff(), Duration::ZERO);
        let error = RegistryError::Timeout { op: "test" };
        let delays: Vec<_> = (0..8)
            .map(|_| {
                outage.failed(&error);
                outage.backoff().as_millis()
            })
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 3200, 3200, 3200]);
        outage.recovered();
        assert_eq!(outage.backoff(), Duration::ZERO);
    }
}
