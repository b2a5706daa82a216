//! What a pass tells the metrics: runs and errors, the entries programmed and the peers skipped
//! (per address family), the peers failing, repairs (a pass that writes with neither our lease
//! nor the leases changed) and how long a lease change took to reach the kernel.

use std::collections::HashMap;
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use crate::lease::{Lease, LeaseSet};
use crate::model::{Family, KernelState};
use crate::observe::metrics::Metrics;
use crate::reconcile::apply::{Applied, Failure, Ongoing, Transitions};
use crate::reconcile::desired::SkippedPeer;

/// The metrics and what they need remembered between passes.
pub struct PassRecord {
    metrics: Arc<Metrics>,
    /// The (own subnet, lease revision) of the last successful pass, per family name: a later
    /// pass of that family that still has to change something, with neither changed, is
    /// repairing the kernel.
    last_reconciled: HashMap<&'static str, (Ipv4Network, Option<i64>)>,
    /// Kernel entries refused in the last pass, retried every pass and logged when they start
    /// and when they end.
    failing: Ongoing,
}

impl PassRecord {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        PassRecord { metrics, last_reconciled: HashMap::new(), failing: Ongoing::default() }
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
        self.metrics.set_failing(self.failing.peer_count(), &self.failing.count_by_kind());
        transitions
    }

    /// Counts the peer leases (or their parts of family `A`) a pass of that family skipped.
    pub fn skipped<A: Family>(&self, skipped: &[SkippedPeer]) {
        self.metrics.peers_skipped.set::<A>(skipped.len() as i64);
    }

    /// Updates the metrics after a pass of family `A`. Only changes the kernel accepted count:
    /// retrying a refused entry every pass repairs nothing.
    pub fn applied<A: Family>(&mut self, own: &Lease, leases: &LeaseSet, desired: &KernelState<A>, applied: &Applied) {
        self.metrics.set_programmed(desired, applied.failed_peers().len());
        let inputs = (own.subnet, leases.revision);
        let changes = applied.written as u64;
        let last = self.last_reconciled.insert(A::NAME, inputs);
        if last == Some(inputs) && changes > 0 {
            self.metrics.entries_repaired.inc_by(changes);
            tracing::info!(entries = changes, "repaired kernel entries");
        } else if last != Some(inputs) && changes > 0 {
            if let Some(at) = leases.changed_at {
                self.metrics.lease_to_kernel.observe(at.elapsed().as_secs_f64());
            }
        }
    }
}
