//! Following every lease: list, then watch from the listed revision + 1; list again on
//! compaction, cancel, a replaced store or dropped connections. Also following the config key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, KeyValue, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::watch;

use super::ipv6_notes::Ipv6Notes;
use super::keys::key_name;
use super::listing::{as_alias, LeaseListing, MalformedLease, MAX_RESPONSE_BYTES};
use super::{Outage, Registry, RegistryError};
use crate::config::Ipv6Config;
use crate::lease::{self, Lease, LeaseId, LeaseSet, MacAges};
use crate::log_within;
use crate::logtext::{self, LogBudget};
use crate::observe::metrics::Metrics;
use crate::peer_log::{PeerChange, PeerLog};

impl Registry {
    /// Follows `<prefix>/config`: calls `seen` with its text (`None` when absent) now, then
    /// after every change, until the watch ends (`Ok`: compaction or cancel) or fails.
    ///
    /// # Errors
    /// Any etcd failure; the caller retries.
    pub async fn follow_config(&self, mut seen: impl FnMut(Option<String>)) -> Result<(), RegistryError> {
        let key = self.keys.config();
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

    /// Keeps `leases` equal to the leases in etcd, for as long as the task runs: list, then
    /// watch from the next revision; after any failure, back off and list again.
    /// It logs which peers came, changed or left as it applies each change (`own` tells our
    /// lease from the peers'), and what it finds of peers' IPv6 parts (`ipv6`: this host's IPv6
    /// config, `None` when it runs IPv4 only).
    pub async fn follow_leases(
        self,
        leases: watch::Sender<Arc<LeaseSet>>,
        own: watch::Receiver<Lease>,
        metrics: Arc<Metrics>,
        ipv6: Option<Ipv6Config>,
    ) {
        let mut outage = Outage::default();
        let peers = PeerLog::new(own);
        let mut reports = Reports { malformed: MalformedWarnings::default(), peers, ipv6: Ipv6Notes::new(ipv6) };
        loop {
            if let Err(e) = self.follow_once(&leases, &mut reports, &mut outage, &metrics).await {
                outage.failed(&e);
            }
            reports.flush(); // the watch that waited for it may have ended first
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
        reports: &mut Reports,
        outage: &mut Outage,
        metrics: &Metrics,
    ) -> Result<(), RegistryError> {
        let listing = self.list_leases().await?;
        // A successful list ends an outage; the watch that follows may run for days.
        if outage.recovered() {
            metrics.etcd_reconnects.inc();
        }
        reports.malformed.relisted(&listing.malformed);
        let holder = |l: &Lease| listing.holders.get(&l.id()).map_or_else(|| l.key_name(), |h| h.name().to_string());
        reports.ipv6.relisted(listing.leases.iter().map(|l| (holder(l), l)));
        let mut aliases = Aliases::listed(&listing.aliases);
        let revision = listing.revision;
        leases.send_modify(|set| {
            let listed = replace_with_listing(set, listing);
            reports.peers.relisted(set, &listed);
            *set = Arc::new(listed);
        });
        reports.peers.flush();
        let (prefix, options) = (self.keys.subnets(), WatchOptions::new().with_prefix().with_start_revision(revision + 1));
        let stream = self
            .call("watch leases", |c| {
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { c.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES).watch(prefix, Some(options)).await }
            })
            .await?;
        tracing::debug!(revision, "watching leases");
        self.watch_leases(stream, leases, reports, &mut aliases).await
    }

    /// Applies the lease watch's responses until it ends; `Ok` when a re-list is needed.
    async fn watch_leases(
        &self,
        mut stream: WatchStream,
        leases: &watch::Sender<Arc<LeaseSet>>,
        reports: &mut Reports,
        aliases: &mut Aliases,
    ) -> Result<(), RegistryError> {
        let mut reconnected = self.endpoints.reconnected();
        loop {
            let due = [reports.malformed.summary_at(), reports.peers.due_at(), reports.ipv6.summary_at()];
            let summary_at = due.into_iter().flatten().min();
            let message = tokio::select! {
                message = stream.message() => message.map_err(|source| RegistryError::Etcd { op: "watch leases", source })?,
                _ = reconnected.changed() => {
                    tracing::debug!("connections dropped; listing and watching again on a fresh one");
                    return Ok(());
                }
                // Held-back warnings are summarised when their window ends, even if no event comes.
                () = tokio::time::sleep_until(summary_at.unwrap_or_else(Instant::now).into()), if summary_at.is_some() => {
                    reports.flush();
                    continue;
                }
            };
            let Some(response) = message else { return Ok(()) };
            let goes_on = self.apply_response(&response, leases, reports, aliases);
            reports.peers.flush();
            if !goes_on {
                return Ok(());
            }
        }
    }

    /// Applies one watch response to the published set. Returns whether the watch goes on;
    /// `false` when only a fresh listing can tell the set.
    fn apply_response(
        &self,
        response: &WatchResponse,
        leases: &watch::Sender<Arc<LeaseSet>>,
        reports: &mut Reports,
        aliases: &mut Aliases,
    ) -> bool {
        if response.canceled() || response.compact_revision() > 0 {
            tracing::info!(
                compact_revision = response.compact_revision(),
                reason = response.cancel_reason(),
                "lease watch was cancelled or compacted; listing again"
            );
            return false;
        }
        let newest = response.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max();
        if self.store.watch(response.header(), newest).is_some() {
            return false; // another store answers: its events do not apply to our set
        }
        // The revision the set now reflects is its newest event's. The header's is the
        // store's, which can be ahead of the events delivered so far (the watch's first,
        // empty response already carries it); taking it would stamp a later set with the
        // same revision as an earlier one and make a lease change look like a repair.
        let Some(revision) = newest else { return true };
        let mut relist = false;
        leases.send_modify(|set| {
            // A copy only if a reader still holds this set; the reconciler borrows it just
            // for the steps that read it, so this modifies the one copy in place.
            let set = Arc::make_mut(set);
            set.revision = Some(revision);
            set.changed_at = Some(std::time::Instant::now());
            let events = response.events();
            let puts = self.puts_by_lease(events);
            for (at, event) in events.iter().enumerate() {
                if !self.moved(set, at, event, &puts, reports) {
                    relist |= self.apply(set, event, reports, aliases);
                }
            }
        });
        if relist {
            tracing::debug!(
                "the key holding a subnet other keys name was deleted; listing again so the first of them takes over"
            );
        }
        !relist
    }

    /// The lease key name and lease of `event`, if it is a lease key at all.
    fn lease_of_event(&self, event: &etcd_client::Event) -> Option<(String, LeaseId)> {
        let name = self.keys.lease_name(std::str::from_utf8(event.kv()?.key()).ok()?)?;
        Some((name.to_string(), lease::parse_lease_id(name).ok()?))
    }

    /// Per lease, the puts of one watch response that name it: their place and key name, in
    /// order; empty without a delete. Read once per response, so a burst of thousands of events
    /// is not read again for each delete in it.
    fn puts_by_lease(&self, events: &[etcd_client::Event]) -> HashMap<LeaseId, Vec<(usize, String)>> {
        let mut puts: HashMap<LeaseId, Vec<(usize, String)>> = HashMap::new();
        if !events.iter().any(|e| e.event_type() == EventType::Delete) {
            return puts; // nothing can have moved: most responses
        }
        let put_leases = events.iter().enumerate().filter(|(_, e)| e.event_type() == EventType::Put);
        for (at, (name, id)) in put_leases.filter_map(|(at, e)| Some((at, self.lease_of_event(e)?))) {
            puts.entry(id).or_default().push((at, name));
        }
        puts
    }

    /// Whether `event` (the `at`th of its response) deletes the key holding a subnet that a
    /// later put of the same response (`puts`) names under another key: a key that moved in one
    /// transaction (IPv6 turned on or off: `10.5.3.0-24` became `10.5.3.0-24&fd00:5:0:3::-64`).
    /// Then the lease stays, and the put replaces it in place: the peer's entries never go, its
    /// VtepMAC keeps its seniority, and the log tells a change, not a departure and an arrival.
    fn moved(
        &self,
        set: &mut LeaseSet,
        at: usize,
        event: &etcd_client::Event,
        puts: &HashMap<LeaseId, Vec<(usize, String)>>,
        reports: &mut Reports,
    ) -> bool {
        if event.event_type() != EventType::Delete {
            return false;
        }
        let Some((from, subnet)) = self.lease_of_event(event) else { return false };
        let put_again = puts.get(&subnet).and_then(|puts| puts.iter().find(|(put_at, _)| *put_at > at));
        let Some((_, to)) = put_again.filter(|(_, to)| *to != from && set.key_of(subnet).as_deref() == Some(from.as_str()))
        else {
            return false;
        };
        reports.malformed.forget(event.kv().map_or(&[][..], |kv| kv.key()));
        reports.ipv6.forget(&from);
        set.record_key(subnet, to.clone());
        true
    }

    /// Applies one watch event to the set; malformed values are reports about once. Returns
    /// whether a fresh listing must replace the set instead: the key holding a subnet was
    /// deleted while other keys name it, and only a listing tells which of them came first.
    fn apply(&self, set: &mut LeaseSet, event: &etcd_client::Event, reports: &mut Reports, aliases: &mut Aliases) -> bool {
        let Some(kv) = event.kv() else { return false };
        let Some(decoded) = self.decode(kv) else { return false };
        let key = String::from_utf8_lossy(kv.key());
        let subnet = match &decoded {
            Ok(lease) => Some(lease.id()),
            Err(bad) => bad.id,
        };
        let holder = subnet.and_then(|s| set.key_of(s)).filter(|holder| holder.as_str() != key_name(&key));
        match (event.event_type(), subnet, holder) {
            (EventType::Delete, _, Some(_)) => {
                reports.malformed.forget(kv.key());
                aliases.remove(&key);
            }
            (EventType::Delete, Some(subnet), None) if aliases.name(subnet) => return true,
            (EventType::Delete, subnet, None) => {
                reports.malformed.forget(kv.key());
                reports.ipv6.forget(key_name(&key));
                if let Some(gone) = subnet.and_then(|subnet| set.leases.get(&subnet)) {
                    reports.peers.record(PeerChange::Removed, gone);
                }
                subnet.into_iter().for_each(|subnet| set.remove(subnet));
            }
            (EventType::Put, Some(subnet), Some(holder)) => {
                aliases.insert(&key, subnet);
                reports.malformed.warn(&as_alias(decoded, &key, subnet, &holder));
            }
            // A key that names no subnet has no holder.
            (EventType::Put, _, _) => match decoded {
                Ok(lease) => {
                    reports.malformed.forget(kv.key());
                    reports.ipv6.seen(key_name(&key), &lease);
                    match set.leases.get(&lease.id()) {
                        None => reports.peers.record(PeerChange::Added, &lease),
                        Some(known) if known.attrs != lease.attrs => reports.peers.record(PeerChange::Changed, &lease),
                        Some(_) => {}
                    }
                    set.put(key_name(&key).to_string(), lease);
                }
                // The last good lease stays in `leases`: bad input never removes good state.
                Err(bad) => {
                    if let Some((subnet, unreadable)) = bad.unreadable() {
                        set.unreadable.insert(subnet, unreadable);
                        set.record_key(subnet, key_name(&key).to_string());
                    }
                    reports.malformed.warn(&bad);
                }
            },
        }
        false
    }
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
    let mut set = LeaseSet {
        revision: Some(listing.revision),
        unreadable,
        changed_at: Some(std::time::Instant::now()),
        ..Default::default()
    };
    // Built at once from the listing (sorted by subnet first), which fills every tree node;
    // inserting lease by lease in key order left them half empty.
    let ages: Vec<(LeaseId, MacAges, i64)> =
        listing.leases.iter().map(|lease| (lease.id(), previous.mac_since_for(lease), lease.mod_revision)).collect();
    set.mac_since =
        ages.iter().filter(|(_, at, written)| at.ipv4 != *written).map(|(subnet, at, _)| (*subnet, at.ipv4)).collect();
    set.ipv6_mac_since =
        ages.iter().filter(|(_, at, written)| at.ipv6 != *written).map(|(subnet, at, _)| (*subnet, at.ipv6)).collect();
    set.leases = listing.leases.into_iter().map(|lease| (lease.id(), lease)).collect();
    for subnet in listing.holders.keys() {
        if let (false, Some(last_good)) = (set.leases.contains_key(subnet), previous.leases.get(subnet)) {
            set.record_mac_since(last_good, previous.mac_ages(last_good));
            set.leases.insert(*subnet, last_good.clone());
        }
    }
    // After the leases: a key is recorded only where it is not the one its lease's own name
    // gives (a dual-stack key is that name, and is not kept 5,000 times over).
    for (subnet, held) in &listing.holders {
        set.record_key(*subnet, held.name().to_string());
    }
    set
}

/// Keys skipped because another key holds their subnet, by a fingerprint of the key (so
/// their number, not their size, bounds it), with that subnet: deleting one changes nothing;
/// deleting the holder of a subnet that some name needs a fresh listing.
#[derive(Debug, Default)]
struct Aliases(HashMap<u64, LeaseId>);

impl Aliases {
    fn listed(aliases: &[(String, LeaseId)]) -> Self {
        Self(aliases.iter().map(|(key, subnet)| (logtext::fingerprint(key), *subnet)).collect())
    }

    fn insert(&mut self, key: &str, subnet: LeaseId) {
        self.0.insert(logtext::fingerprint(key), subnet);
    }

    fn remove(&mut self, key: &str) {
        self.0.remove(&logtext::fingerprint(key));
    }

    /// Whether a skipped key names `subnet`.
    fn name(&self, subnet: LeaseId) -> bool {
        self.0.values().any(|s| *s == subnet)
    }
}

/// Malformed keys already reports about: a fingerprint of the key and of its problem, so a
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

    /// Warns about `bad` unless its key was last reports about for the same problem.
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

/// What the follower reports besides the set: malformed keys and peers' comings and goings.
struct Reports {
    malformed: MalformedWarnings,
    peers: PeerLog,
    ipv6: Ipv6Notes,
}

impl Reports {
    /// Logs the summaries and peer lines that are due.
    fn flush(&mut self) {
        self.malformed.flush();
        self.peers.flush();
        self.ipv6.flush();
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
