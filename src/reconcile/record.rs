//! What a pass tells the metrics: runs and errors, the entries programmed and the peers skipped
//! (per address family), the peers failing, repairs (a pass that writes with neither our lease
//! nor the leases changed) and how long a lease change took to reach the kernel.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Instant;

use crate::lease::{Lease, LeaseId, LeaseSet};
use crate::model::{Family, KernelState};
use crate::observe::metrics::Metrics;
use crate::reconcile::apply::{Failure, Ongoing, Transitions};
use crate::reconcile::desired::SkippedPeer;

/// The metrics and what they need remembered between passes.
pub struct PassRecord {
    metrics: Arc<Metrics>,
    /// The (own lease, lease revision) of the last successful pass: a later pass that still
    /// has to change something, with neither changed, is repairing the kernel.
    last_reconciled: Option<(LeaseId, Option<i64>)>,
    /// Kernel entries refused in the last pass, retried every pass and logged when they start
    /// and when they end.
    failing: Ongoing,
    /// The same for the IPv6 device's entries.
    failing_ipv6: Ongoing<Ipv6Addr>,
}

impl PassRecord {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        PassRecord { metrics, last_reconciled: None, failing: Ongoing::default(), failing_ipv6: Ongoing::default() }
    }

    /// A pass starts.
    pub fn started(&self) {
        self.metrics.reconcile_runs.inc();
    }

    /// A pass ended: it `ran` (reached the peers) with `failures` entries refused.
    pub fn ended(&self, ran: bool, failures: usize) {
        if !ran || failures > 0 {
            self.metrics.reconcile_errors.inc();
        }
    }

    /// Takes the failures of the pass that just ran; returns which started and which ended,
    /// and counts the peers whose entries fail.
    pub fn failures(&mut self, failures: Vec<Failure>) -> Transitions {
        let transitions = self.failing.update(failures);
        self.publish_failing();
        transitions
    }

    /// [`PassRecord::failures`] for the IPv6 device's entries.
    pub fn ipv6_failures(&mut self, failures: Vec<Failure<Ipv6Addr>>) -> Transitions<Ipv6Addr> {
        let transitions = self.failing_ipv6.update(failures);
        self.publish_failing();
        transitions
    }

    /// The failing peers and entries of both devices, as the metrics count them: a peer
    /// failing on both devices counts once per device.
    fn publish_failing(&self) {
        let mut by_kind = self.failing.count_by_kind();
        for (kind, count) in self.failing_ipv6.count_by_kind() {
            *by_kind.entry(kind).or_default() += count;
        }
        self.metrics.set_failing(self.failing.peer_count() + self.failing_ipv6.peer_count(), &by_kind);
    }

    /// Counts the peer leases (or their parts of family `A`) a pass of that family skipped.
    pub fn skipped<A: Family>(&self, skipped: &[SkippedPeer]) {
        self.metrics.peers_skipped.set::<A>(skipped.len() as i64);
    }

    /// Records the entries of family `A`'s device after its pass wrote `desired` except for
    /// `failed_peers` peers.
    pub fn programmed<A: Family>(&self, desired: &KernelState<A>, failed_peers: usize) {
        self.metrics.set_programmed(desired, failed_peers);
    }

    /// Updates the metrics after a pass that started from the lease set `stamp` describes and
    /// whose writes the kernel accepted `written` times (both devices). Only changes the
    /// kernel accepted count: retrying a refused entry every pass repairs nothing.
    pub fn applied(&mut self, own: &Lease, stamp: LeaseStamp, written: usize) {
        let inputs = (own.id(), stamp.revision);
        let changes = written as u64;
        if self.last_reconciled == Some(inputs) && changes > 0 {
            self.metrics.entries_repaired.inc_by(changes);
            tracing::info!(entries = changes, "repaired kernel entries");
        } else if self.last_reconciled != Some(inputs) && changes > 0 {
            if let Some(at) = stamp.changed_at {
                self.metrics.lease_to_kernel.observe(at.elapsed().as_secs_f64());
            }
        }
        self.last_reconciled = Some(inputs);
    }
}

/// What a pass remembers of the lease set it started from, without holding the set: its etcd
/// revision and when its last change arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStamp {
    pub revision: Option<i64>,
    pub changed_at: Option<Instant>,
}

impl LeaseStamp {
    /// The stamp of `leases`.
    pub fn of(leases: &LeaseSet) -> Self {
        Self { revision: leases.revision, changed_at: leases.changed_at }
    }
}
