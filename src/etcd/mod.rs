//! etcd: the network config, acquiring and renewing our lease, and following every lease.
//!
//! Peers are followed level-triggered: list the subnets prefix, then watch from the listed
//! revision + 1 so no event can fall between the two; on any watch loss or compaction, list
//! again. The published [`LeaseSet`](crate::lease::LeaseSet) is always a complete picture, never
//! a stream of deltas.
//!
//! [`Registry`] is the handle every task shares; its parts live apart: [`endpoints`] (connect,
//! fail over, classify errors), [`keys`] (the key layout), `acquire` (create, take over,
//! rewrite, renew), `listing` (one consistent read of every lease), `follow` (list, then watch),
//! `names` (the SkyDNS records of `--names`, as plain keys on an etcd lease of their own),
//! [`store`] (a store that was replaced under us) and [`outage`] (logging and backoff).

mod acquire;
pub mod endpoints;
mod follow;
mod ipv6_notes;
pub mod keys;
mod listing;
mod names;
pub mod outage;
mod prefix;
pub mod store;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use etcd_client::{Client, GetOptions};
use thiserror::Error;
use tokio::sync::watch;

pub use acquire::Previous;
pub use endpoints::{EtcdOptions, REQUEST_TIMEOUT};
pub use ipv6_notes::ipv6_problem;
pub use keys::Keys;
pub use listing::{Ipv6Claim, LeaseListing, ListedKey, MalformedLease, MAX_RESPONSE_BYTES};
pub use names::NameKey;
pub use outage::Outage;
pub use prefix::{PrefixChange, PrefixListing, PrefixWatch};
pub use store::{StoreReplaced, StoreView};

use crate::lease::EtcdLeaseId;
use endpoints::Endpoints;
use store::StoreTracker;

/// A failed etcd operation.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("etcd {op} failed: {}", endpoints::brief(source))]
    Etcd { op: &'static str, source: etcd_client::Error },
    #[error("etcd refused {op}: {}; check --etcd-username and --etcd-password (FLANNELD_ETCD_USERNAME/PASSWORD)", status.message())]
    Refused { op: &'static str, status: tonic::Status },
    /// The TLS error is data, not the error's source, so the one line printed names it once.
    #[error("TLS with etcd failed during {op}: {tls}; check --etcd-cafile, --etcd-certfile and --etcd-keyfile, and that the endpoints use https://")]
    Tls { op: &'static str, tls: rustls::Error },
    #[error("etcd {op} timed out after {REQUEST_TIMEOUT:?}: is etcd reachable at the --etcd-endpoints?")]
    Timeout { op: &'static str },
    #[error("etcd {op}: a response was larger than weftd reads ({}); a key under the prefix holds a huge value", status.message())]
    TooLarge { op: &'static str, status: tonic::Status },
    #[error("cannot list leases: the value of {key} alone is larger than weftd reads ({limit} bytes); delete the key or write a flannel lease there")]
    LeaseTooLarge { key: String, limit: usize },
    #[error("out of subnets: every subnet between SubnetMin {min} and SubnetMax {max} is leased; widen the Network or remove stale leases")]
    OutOfSubnets { min: Ipv4Addr, max: Ipv4Addr },
    #[error("out of IPv6 subnets: every subnet between IPv6SubnetMin {min} and IPv6SubnetMax {max} is leased; widen the IPv6Network or remove stale leases")]
    OutOfIpv6Subnets { min: std::net::Ipv6Addr, max: std::net::Ipv6Addr },
}

/// etcd, scoped to one key prefix. Clones share the connections and the store view.
#[derive(Clone)]
pub struct Registry {
    endpoints: Arc<Endpoints>,
    keys: Keys,
    /// Shared by every clone, so the follower, the keeper and acquiring all watch one store.
    store: Arc<StoreTracker>,
}

impl Registry {
    /// Connects to the first endpoint that answers; the others are connected when needed.
    ///
    /// # Errors
    /// An unreadable TLS file, or no endpoint answering (see [`RegistryError::needs_operator`]).
    pub async fn connect(options: &EtcdOptions) -> Result<Self, RegistryError> {
        let registry = Self {
            endpoints: Arc::new(Endpoints::new(options)?),
            keys: Keys::new(&options.prefix),
            store: Arc::new(StoreTracker::new()),
        };
        registry.call("connect", |_| async { Ok(()) }).await?;
        Ok(registry)
    }

    /// The keys this registry reads and writes.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs one request on the members in turn; see [`Endpoints::call`].
    async fn call<T, F, Fut>(&self, op: &'static str, request: F) -> Result<T, RegistryError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.endpoints.call(op, request).await
    }

    /// Counts the times etcd's store was found replaced (wiped, restored from an older backup,
    /// another cluster): each time, leases granted before mean nothing and ours must be
    /// written again.
    pub fn store_replacements(&self) -> watch::Receiver<u64> {
        self.store.subscribe()
    }

    /// The raw network config text at `<prefix>/config`, or `None` if it is not there yet.
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn network_config(&self) -> Result<Option<String>, RegistryError> {
        let key = self.keys.config();
        let response = self
            .call("get config", |c| {
                let key = key.clone();
                async move { c.kv_client().get(key, None).await }
            })
            .await?;
        Ok(response.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// A cheap request that succeeds only if etcd answers (`etcdctl get <prefix>/config --count-only`).
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let key = self.keys.config();
        let options = GetOptions::new().with_count_only();
        self.call("ping", |c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.kv_client().get(key, Some(options)).await }
        })
        .await
        .map(|_| ())
    }

    /// Seconds left on an etcd lease (`etcdctl lease timetolive`); `None` if it has expired.
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn time_to_live(&self, etcd_lease: EtcdLeaseId) -> Result<Option<i64>, RegistryError> {
        let response =
            self.call("lease time to live", |c| async move { c.lease_client().time_to_live(etcd_lease.0, None).await }).await?;
        Ok(Some(response.ttl()).filter(|ttl| *ttl >= 0))
    }

    /// Drops every connection, so the next request connects afresh: after this host's address
    /// changed, connections from the old address hang until keep-alive gives up on them.
    pub async fn reconnect(&self) {
        self.endpoints.reconnect().await;
    }
}
