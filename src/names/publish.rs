//! Publishing this host's containers in etcd (`--names`), in the SkyDNS layout: per running
//! container on the overlay, one record for its address and one per exposed port.
//!
//! Level-triggered, as the kernel reconciler: each pass computes the records wanted from the
//! whole container listing and writes only the difference with what etcd holds of this
//! host's. This host's records are the weft records whose address lies in our subnet (no
//! other host can hand out those addresses) or that hang on our names lease. A restart of
//! weftd thus deletes the names of containers gone meanwhile and leaves the others untouched.
//!
//! Lifetimes: every record carries an explicit DNS `ttl` of [`RECORD_TTL`] seconds, and hangs
//! on an etcd lease of the names' own (`--names-lease-ttl`, 30 s by default, renewed every
//! third of it), not on the subnet lease: that lasts 24 h, far too long for the names of a
//! dead host. A restarted weftd adopts that etcd lease while it is still alive.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::Serialize;
use tokio::sync::watch;

use super::docker::{Container, Containers};
use super::skydns::{dns_label, Domain, RecordId, SkyDnsError, SkyRecord};
use crate::etcd::{NameKey, Outage, Registry, RegistryError};
use crate::lease::{EtcdLeaseId, Lease};
use crate::observe::metrics::Metrics;

/// The DNS TTL of every record, in seconds: as long as the names lease, so a resolver's cache
/// holds a dead host's names no longer than etcd does.
pub const RECORD_TTL: u32 = 30;
/// At most this many container names that are no DNS label are warned about (one warning
/// each); later ones are counted in debug logs only.
const WARNED_NAMES_MAX: usize = 256;

/// The records wanted for the containers listed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Key → JSON value.
    pub records: BTreeMap<String, String>,
    /// DNS label → address, for logs and the gauge.
    pub names: BTreeMap<String, IpAddr>,
    /// Running containers on the overlay whose name has no DNS label form.
    pub skipped: Vec<SkyDnsError>,
}

/// The records for `containers`: those with an address in our `subnet` on the default bridge
/// (others are not on the overlay) and a name that is a DNS label. Environment variables are
/// never read, so never published.
pub fn wanted(domain: &Domain, subnet: Ipv4Network, containers: &[Container]) -> Wanted {
    let mut wanted = Wanted::default();
    for container in containers {
        let Some(ip) = container.ipv4.filter(|ip| subnet.contains(*ip)) else { continue };
        let label = match dns_label(&container.name) {
            Ok(label) => label,
            Err(error) => {
                wanted.skipped.push(error);
                continue;
            }
        };
        let short: String = container.id.chars().take(12).collect::<String>().to_ascii_lowercase();
        let ports = container.ports.iter().map(|&port| Some(port));
        for port in std::iter::once(None).chain(ports) {
            let id = RecordId::ipv4(&short, port);
            let record = SkyRecord { host: IpAddr::V4(ip), port: port.map(|(p, _)| p), ttl: RECORD_TTL };
            wanted.records.insert(domain.record_key(&label, &id), record.to_json());
        }
        // On a dual-stack docker0 (`docker-opts --ipv6`): the AAAA record.
        if let Some(ipv6) = container.ipv6 {
            let id = RecordId { ipv6: true, ..RecordId::ipv4(&short, None) };
            let record = SkyRecord { host: IpAddr::V6(ipv6), port: None, ttl: RECORD_TTL };
            wanted.records.insert(domain.record_key(&label, &id), record.to_json());
        }
        wanted.names.insert(label, IpAddr::V4(ip));
    }
    wanted
}

/// Whether `key` is one of this host's records: a weft record (its key parses) hanging on our
/// names lease. A record on no lease, or on another, is someone else's, even with an address
/// in our subnet (a hand-written record for a printer there), and is never deleted.
pub fn is_ours(domain: &Domain, names_lease: Option<EtcdLeaseId>, key: &NameKey) -> bool {
    domain.parse_record_key(&key.key).is_some() && names_lease.is_some() && key.etcd_lease == names_lease
}

/// Whether `key` looks like one of this host's records from an earlier run: a weft record on
/// some etcd lease, its address in our `subnet` (for adopting that lease, and for status).
pub fn in_our_subnet(domain: &Domain, subnet: Ipv4Network, key: &NameKey) -> bool {
    let in_subnet = matches!(SkyRecord::from_json(&key.value), Ok(SkyRecord { host: IpAddr::V4(ip), .. }) if subnet.contains(ip));
    domain.parse_record_key(&key.key).is_some() && key.etcd_lease.is_some() && in_subnet
}

/// What to write so that etcd holds exactly `wanted` of this host's records, all on `lease`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Key and value to put, on the names lease.
    pub put: Vec<(String, String)>,
    pub delete: Vec<String>,
}

/// The difference between the records wanted and this host's records listed (`ours`): a
/// record is rewritten when its value differs or it hangs on another lease.
pub fn changes(wanted: &BTreeMap<String, String>, ours: &[&NameKey], lease: Option<EtcdLeaseId>) -> Changes {
    let held: BTreeMap<&str, &NameKey> = ours.iter().map(|k| (k.key.as_str(), *k)).collect();
    let put = wanted
        .iter()
        .filter(|(key, value)| held.get(key.as_str()).is_none_or(|k| &k.value != *value || k.etcd_lease != lease))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let delete = held.keys().filter(|key| !wanted.contains_key(**key)).map(|key| key.to_string()).collect();
    Changes { put, delete }
}

/// One published name of this host, as `weftd status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedName {
    pub name: String,
    pub host: IpAddr,
    /// `6379/tcp`, in port order.
    pub ports: Vec<String>,
}

/// This host's names among the keys listed under `domain`'s prefix (its records' addresses lie
/// in `subnet`), one entry per name and address.
pub fn published_names(domain: &Domain, subnet: Ipv4Network, listed: &[NameKey]) -> Vec<PublishedName> {
    let mut names: BTreeMap<(String, IpAddr), BTreeSet<(u16, String)>> = BTreeMap::new();
    for key in listed.iter().filter(|k| in_our_subnet(domain, subnet, k)) {
        let (Some((name, id)), Ok(record)) = (domain.parse_record_key(&key.key), SkyRecord::from_json(&key.value)) else {
            continue;
        };
        let ports = names.entry((name.to_string(), record.host)).or_default();
        ports.extend(id.port.map(|(port, proto)| (port, proto.to_string())));
    }
    let entries = names.into_iter().map(|((name, host), ports)| PublishedName {
        name,
        host,
        ports: ports.into_iter().map(|(port, proto)| format!("{port}/{proto}")).collect(),
    });
    entries.collect()
}

/// The task that keeps this host's records in etcd equal to what docker runs.
pub struct Publisher {
    pub registry: Registry,
    pub domain: Domain,
    /// The names lease's TTL (`--names-lease-ttl`); renewed every third of it.
    pub lease_ttl: Duration,
    pub containers: watch::Receiver<Containers>,
    /// Our subnet lease: which addresses are ours.
    pub own: watch::Receiver<Lease>,
    pub metrics: Arc<Metrics>,
}

/// What a publisher remembers between passes.
#[derive(Default)]
struct State {
    lease: Option<EtcdLeaseId>,
    published: BTreeMap<String, IpAddr>,
    warned: BTreeSet<String>,
}

impl Publisher {
    /// Runs until weftd stops: a pass on every container or lease change, after renewing the
    /// names lease (every third of its TTL), and after a failure (backing off as for etcd).
    pub async fn run(mut self) {
        let mut state = State::default();
        let mut outage = Outage::default();
        let mut renew = tokio::time::interval((self.lease_ttl / 3).max(Duration::from_millis(200)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.pass(&mut state).await {
                Ok(()) => {
                    outage.recovered();
                }
                Err(error) => {
                    self.metrics.names_publish_errors.inc();
                    outage.failed(&error);
                }
            }
            let failing = outage.backoff() > Duration::ZERO;
            tokio::select! {
                Ok(()) = self.containers.changed() => {}
                Ok(()) = self.own.changed() => {}
                _ = renew.tick() => self.renew(&mut state).await,
                () = tokio::time::sleep(outage.backoff()), if failing => {}
            }
        }
    }

    /// Keeps the names lease alive; forgets it once etcd no longer knows it, so the next pass
    /// grants another and writes every record again.
    async fn renew(&self, state: &mut State) {
        let Some(lease) = state.lease else { return };
        match self.registry.renew(lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%lease, "the names' etcd lease expired; writing every name again on a new one");
                state.lease = None;
            }
            Err(error) => tracing::debug!(%error, "could not renew the names' etcd lease; the next pass retries"),
        }
    }

    /// One pass: list etcd, compute the difference, write it.
    async fn pass(&self, state: &mut State) -> Result<(), RegistryError> {
        let subnet = crate::names::dns::ipv4_subnet(&self.own.borrow());
        let listed = self.registry.list_names(&self.domain.prefix()).await?;
        if state.lease.is_none() {
            state.lease = self.adopt(subnet, &listed).await;
        }
        // Before the first look at docker, nothing is known to have stopped: leave etcd alone.
        let Some(containers) = self.containers.borrow().clone() else { return Ok(()) };
        let wanted = wanted(&self.domain, subnet, &containers);
        self.warn_skipped(state, &wanted.skipped);
        let ours: Vec<&NameKey> = listed.iter().filter(|k| is_ours(&self.domain, state.lease, k)).collect();
        let changes = changes(&wanted.records, &ours, state.lease);
        if !changes.put.is_empty() && state.lease.is_none() {
            state.lease = Some(self.registry.grant(self.lease_ttl).await?);
        }
        let lease = state.lease.unwrap_or(EtcdLeaseId(0));
        for key in &changes.delete {
            self.registry.delete_name(key).await?;
        }
        for (key, value) in &changes.put {
            self.registry.put_name(key, value, lease).await?;
        }
        self.metrics.names_published.set(wanted.names.len() as i64);
        self.metrics.names_records.set(wanted.records.len() as i64);
        log_changes(&state.published, &wanted.names);
        state.published = wanted.names;
        Ok(())
    }

    /// The etcd lease this host's records listed hang on, if etcd still keeps it and it has
    /// our TTL: a restarted weftd keeps renewing it, so the records of containers still
    /// running are not even rewritten. (Another `--names-lease-ttl` gets a lease of its own.)
    async fn adopt(&self, subnet: Ipv4Network, listed: &[NameKey]) -> Option<EtcdLeaseId> {
        let lease = listed.iter().filter(|k| in_our_subnet(&self.domain, subnet, k)).find_map(|k| k.etcd_lease)?;
        let fits = matches!(self.registry.names_lease_fits(lease, self.lease_ttl).await, Ok(true));
        fits.then(|| {
            tracing::info!(%lease, "adopting the names' etcd lease of the previous run");
            lease
        })
    }

    /// One warning per container name that is no DNS label, for a bounded set of names.
    fn warn_skipped(&self, state: &mut State, skipped: &[SkyDnsError]) {
        for error in skipped {
            let name = match error {
                SkyDnsError::NotALabel(name) => name.clone(),
                other => other.to_string(),
            };
            if state.warned.contains(&name) {
                continue;
            }
            if state.warned.len() < WARNED_NAMES_MAX {
                tracing::warn!(container = %name, %error, "container not published");
                state.warned.insert(name);
            } else {
                tracing::debug!(container = %name, "container not published: its name is no DNS label");
            }
        }
    }
}

/// Logs names that appeared, changed address or went away since the last pass.
fn log_changes(before: &BTreeMap<String, IpAddr>, now: &BTreeMap<String, IpAddr>) {
    for (name, ip) in now.iter().filter(|(name, ip)| before.get(*name) != Some(ip)) {
        tracing::info!(%name, %ip, "name published");
    }
    for name in before.keys().filter(|name| !now.contains_key(*name)) {
        tracing::info!(%name, "name withdrawn");
    }
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
