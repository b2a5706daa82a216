//! DNS on docker0 (`--names`): weftd answers UDP and TCP port 53 on the host's docker0 address
//! (the `FLANNEL_SUBNET` gateway), the names of `--names-domain` from a cache that an etcd
//! watch of the domain's SkyDNS prefix keeps current, every other name through the host's
//! resolvers.
//!
//! Parts: `cache` (the records, by name), `answer` (a question → records, NXDOMAIN or
//! "elsewhere"), `forward` (the host's resolvers), `server` (sockets and handler). Only
//! containers and the host reach it: the socket is bound to the docker0 address alone, and the
//! firewall (`ipmasq`, chain WEFT-DNS) drops queries to it from anywhere else.

mod answer;
mod cache;
mod forward;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use nix::errno::Errno;
use thiserror::Error;
use tokio::sync::watch;

pub use answer::{lookup, Lookup};
pub use cache::NameCache;
pub use forward::{resolvers, ForwardError, Forwarder, FORWARD_BUDGET};
pub use server::{Outcome, DNS_PORT};

use crate::etcd::{Outage, Registry, RegistryError};
use crate::lease::Lease;
use crate::names::skydns::Domain;
use crate::observe::metrics::Metrics;

/// Why the DNS server cannot run.
#[derive(Debug, Error)]
pub enum DnsError {
    #[error("cannot serve DNS on {address}: {source} (is another DNS server bound to port 53 there?)")]
    Bind { address: SocketAddr, source: Errno },
}

/// What the DNS server serves.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// `--names-domain`.
    pub domain: Domain,
    /// The resolvers' file, `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// docker0's address for our subnet: its first host address, as `FLANNEL_SUBNET` writes it
/// (`10.5.72.1` for `10.5.72.0/24`), which docker's `--bip` gives the bridge.
pub fn bridge_address(subnet: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Serves DNS on docker0's address for our lease (`own`), moving when the lease's subnet
/// changes, while a follower keeps the cache equal to etcd's records. Runs until it fails.
///
/// # Errors
/// [`DnsError::Bind`]: the address's port 53 is taken.
pub async fn serve(
    registry: Registry,
    options: DnsOptions,
    mut own: watch::Receiver<Lease>,
    metrics: Arc<Metrics>,
) -> Result<(), DnsError> {
    let (cache_tx, cache_rx) = watch::channel(Arc::new(NameCache::new(options.domain.clone())));
    let follower = follow_names(registry, options.domain.clone(), cache_tx);
    let server = async move {
        loop {
            let address = bridge_address(ipv4_subnet(&own.borrow_and_update()));
            let forwarder = Forwarder::new(options.resolv_conf.clone());
            let handler = server::Handler { cache: cache_rx.clone(), forwarder, metrics: Arc::clone(&metrics) };
            let _server = server::listen(address, handler)?;
            tracing::info!(%address, port = DNS_PORT, domain = %options.domain, "serving DNS for container names on docker0's address");
            // Until our subnet changes (a new lease): the server goes with its sockets.
            while bridge_address(ipv4_subnet(&own.borrow_and_update())) == address {
                if own.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::select! {
        () = follower => unreachable!("the names follower never returns"),
        result = server => result,
    }
}

/// Our lease's IPv4 subnet, which names work in: the daemon refuses `--names` under an
/// IPv6-only config (`DaemonError::NamesNeedIpv4`), and every other config's lease has one.
pub fn ipv4_subnet(own: &Lease) -> Ipv4Network {
    own.subnet.expect("--names runs only where our lease has an IPv4 subnet")
}

/// Keeps `cache` equal to the records under the domain's prefix: list, then watch from the
/// listing's revision; after any failure, compaction or reconnection, back off and list again.
async fn follow_names(registry: Registry, domain: Domain, cache: watch::Sender<Arc<NameCache>>) {
    let mut outage = Outage::default();
    loop {
        if let Err(e) = follow_once(&registry, &domain, &cache, &mut outage).await {
            outage.failed(&e);
        }
        // A server that keeps closing watches cannot make this a busy loop.
        tokio::time::sleep(outage.backoff().max(Duration::from_millis(100))).await;
    }
}

/// One list-then-watch cycle; `Ok` when the watch needs a fresh listing.
async fn follow_once(
    registry: &Registry,
    domain: &Domain,
    cache: &watch::Sender<Arc<NameCache>>,
    outage: &mut Outage,
) -> Result<(), RegistryError> {
    let prefix = domain.prefix();
    let listing = registry.list_prefix(&prefix).await?;
    outage.recovered();
    let (listed, skipped) = NameCache::listed(domain.clone(), &listing.keys);
    tracing::debug!(names = listed.len(), skipped, revision = listing.revision, %prefix, "names listed; watching");
    cache.send_replace(Arc::new(listed));
    let mut watch = registry.watch_prefix(&prefix, listing.revision).await?;
    while let Some(changes) = watch.next().await? {
        cache.send_modify(|cache| {
            let cache = Arc::make_mut(cache);
            changes.iter().for_each(|change| {
                cache.apply(change);
            });
        });
    }
    Ok(())
}
