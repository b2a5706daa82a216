//! Logging which peers came, went or changed, bounded: a few peers get a line each, a burst
//! (thousands of lease events a second) gets one summary line a second. The lease follower
//! reports each change as it applies it (it knows them already), so no copy of the lease set
//! is kept only to diff it again.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use std::net::IpAddr;

use tokio::sync::watch;

use crate::lease::{Lease, LeaseId, LeaseSet, MacAddr};

/// Up to this many changes since the last line are logged one line each; more are summarised.
pub const LISTED_CHANGES: usize = 8;
/// At most one burst of lines (or one summary) per this interval; changes seen sooner wait for
/// the next pass after it.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How a peer changed between two lease sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    Added,
    Changed,
    Removed,
}

/// Peer changes not yet logged at info level.
#[derive(Debug, Default)]
pub struct PeerChangeLog {
    /// The first [`LISTED_CHANGES`] + 1 changes since the last info line (one more tells a
    /// short list from a long one); the rest are only counted.
    listed: Vec<(PeerChange, Lease)>,
    counts: [u64; 3],
    last_line: Option<Instant>,
}

impl PeerChangeLog {
    /// Records the peers that differ between `before` and `after` (our lease `own` excluded)
    /// and logs each at debug level; [`flush`](Self::flush) logs them at info level.
    pub fn record(&mut self, before: &LeaseSet, after: &LeaseSet, own_subnet: LeaseId) {
        for (change, lease) in peer_changes(before, after, own_subnet) {
            self.record_one(change, lease);
        }
    }

    /// Records one peer's change and logs it at debug level.
    pub fn record_one(&mut self, change: PeerChange, lease: &Lease) {
        let (subnet, public_ip, vtep_mac) = identity(lease);
        tracing::debug!(%subnet, %public_ip, vtep_mac = vtep_mac.map(tracing::field::display), ?change, "peer change");
        self.counts[change as usize] += 1;
        if self.listed.len() <= LISTED_CHANGES {
            self.listed.push((change, lease.clone()));
        }
    }

    /// When the changes recorded so far may be logged; `None` when there are none.
    pub fn flush_at(&self) -> Option<Instant> {
        let pending = self.counts.iter().any(|count| *count > 0);
        pending.then(|| self.last_line.map_or_else(Instant::now, |at| at + LOG_INTERVAL))
    }

    /// Logs the recorded changes at info level, one line per peer when there are a few and
    /// one summary when there are many, unless a line was logged less than
    /// [`LOG_INTERVAL`] before `now`.
    pub fn flush(&mut self, now: Instant) {
        let pending = self.counts.iter().any(|count| *count > 0);
        if !pending || self.last_line.is_some_and(|at| now < at + LOG_INTERVAL) {
            return;
        }
        if self.counts.iter().sum::<u64>() as usize <= LISTED_CHANGES {
            self.listed.iter().for_each(|(change, lease)| log_one(*change, lease));
        } else {
            let [added, changed, removed] = self.counts;
            let subnets = self.listed.iter().take(LISTED_CHANGES).fold(String::new(), |mut list, (_, lease)| {
                let _ = write!(list, "{}{}", if list.is_empty() { "" } else { "," }, lease.id());
                list
            });
            tracing::info!(added, changed, removed, first = %subnets, "peers changed");
        }
        *self = Self { last_line: Some(now), ..Self::default() };
    }
}

/// The peer changes the lease follower sees, with our own lease left out, logged through a
/// [`PeerChangeLog`].
#[derive(Debug)]
pub struct PeerLog {
    changes: PeerChangeLog,
    own: watch::Receiver<Lease>,
}

impl PeerLog {
    /// `own` tells which lease is ours (not a peer).
    pub fn new(own: watch::Receiver<Lease>) -> Self {
        PeerLog { changes: PeerChangeLog::default(), own }
    }

    /// One lease appeared, changed or left.
    pub fn record(&mut self, change: PeerChange, lease: &Lease) {
        if lease.id() != self.own.borrow().id() {
            self.changes.record_one(change, lease);
        }
    }

    /// A fresh listing replaced `before` with `after`.
    pub fn relisted(&mut self, before: &LeaseSet, after: &LeaseSet) {
        let own = self.own.borrow().id();
        self.changes.record(before, after, own);
    }

    /// When the changes recorded so far are due to be logged; `None` when there are none.
    pub fn due_at(&self) -> Option<Instant> {
        self.changes.flush_at()
    }

    /// Logs what is due (see [`PeerChangeLog::flush`]).
    pub fn flush(&mut self) {
        self.changes.flush(Instant::now());
    }
}

/// What names a peer in the log: its lease, its public address and VtepMAC (for an IPv6-only
/// lease, PublicIPv6 and the IPv6 VtepMAC).
fn identity(lease: &Lease) -> (LeaseId, IpAddr, Option<MacAddr>) {
    let attrs = &lease.attrs;
    match (lease.id(), attrs.public_ipv6, &attrs.backend_v6_data) {
        (id @ LeaseId::Ipv6(_), Some(public_ipv6), data) => (id, public_ipv6.into(), data.as_ref().map(|d| d.vtep_mac)),
        (id, _, _) => (id, attrs.public_ip.into(), attrs.backend_data.as_ref().map(|d| d.vtep_mac)),
    }
}

fn log_one(change: PeerChange, lease: &Lease) {
    let (subnet, public_ip, vtep_mac) = identity(lease);
    let vtep_mac = vtep_mac.map(tracing::field::display);
    match change {
        PeerChange::Added => tracing::info!(%subnet, %public_ip, vtep_mac, "peer added"),
        PeerChange::Changed => tracing::info!(%subnet, %public_ip, vtep_mac, "peer changed"),
        PeerChange::Removed => tracing::info!(%subnet, %public_ip, "peer removed"),
    }
}

/// Every peer that appeared, changed or left between two lease sets (ours excluded), with
/// its newest lease.
pub fn peer_changes<'a>(
    before: &'a LeaseSet,
    after: &'a LeaseSet,
    own_subnet: LeaseId,
) -> impl Iterator<Item = (PeerChange, &'a Lease)> {
    let peer = move |lease: &&Lease| lease.id() != own_subnet;
    let present = after.leases.values().filter(peer).filter_map(|lease| match before.leases.get(&lease.id()) {
        None => Some((PeerChange::Added, lease)),
        Some(previous) if previous.attrs != lease.attrs => Some((PeerChange::Changed, lease)),
        Some(_) => None,
    });
    let gone = before.leases.values().filter(peer).filter(|l| !after.leases.contains_key(&l.id()));
    present.chain(gone.map(|lease| (PeerChange::Removed, lease)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::lease::{LeaseAttrs, MacAddr};

    fn set(thirds: impl IntoIterator<Item = u8>) -> LeaseSet {
        let leases = thirds
            .into_iter()
            .map(|third| {
                let subnet: ipnetwork::Ipv4Network = format!("10.5.{third}.0/24").parse().unwrap();
                let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, third), 1, MacAddr([2, 0, 0, 0, 0, third]));
                (
                    LeaseId::Ipv4(subnet),
                    Lease {
                        subnet: Some(subnet),
                        ipv6_subnet: None,
                        attrs,
                        etcd_lease: Some(crate::lease::EtcdLeaseId(1)),
                        mod_revision: 1,
                        create_revision: 1,
                    },
                )
            })
            .collect();
        LeaseSet { revision: Some(1), leases, ..Default::default() }
    }

    fn own() -> LeaseId {
        "10.5.1.0/24".parse().unwrap()
    }

    #[test]
    fn changes_name_added_changed_and_removed_peers_but_never_us() {
        let before = set([1, 2, 3]);
        let mut after = set([1, 3, 4, 9]);
        after.leases.values_mut().for_each(|l| l.attrs.public_ip = Ipv4Addr::new(198, 18, 1, 1));
        after.leases.get_mut(&"10.5.9.0/24".parse().unwrap()).unwrap().attrs.public_ip = Ipv4Addr::new(198, 18, 0, 9);
        let changes: Vec<_> = peer_changes(&before, &after, own()).map(|(c, l)| (c, l.id().to_string())).collect();
        assert_eq!(
            changes,
            [
                (PeerChange::Changed, "10.5.3.0/24".into()),
                (PeerChange::Added, "10.5.4.0/24".into()),
                (PeerChange::Added, "10.5.9.0/24".into()),
                (PeerChange::Removed, "10.5.2.0/24".into()),
            ]
        );
    }

    #[test]
    fn changes_within_the_interval_wait_and_are_counted_once_logged() {
        let mut log = PeerChangeLog::default();
        let start = Instant::now();
        log.record(&set([]), &set([2]), own());
        log.flush(start);
        assert_eq!((log.counts, log.flush_at()), ([0; 3], None), "the first change is logged at once");
        log.record(&set([2]), &set(2..40), own());
        log.flush(start + Duration::from_millis(10));
        assert_eq!(log.counts, [37, 0, 0], "a burst right after waits");
        assert_eq!(log.listed.len(), LISTED_CHANGES + 1, "and only a few are kept");
        assert_eq!(log.flush_at(), Some(start + LOG_INTERVAL));
        log.flush(start + LOG_INTERVAL);
        assert_eq!((log.counts, log.flush_at()), ([0; 3], None), "then it is logged");
        assert!(log.listed.is_empty());
    }
}
