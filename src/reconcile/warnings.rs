//! The operator-facing warnings a pass can raise about peers: a lease skipped, a route that
//! cannot use its nexthop, a kernel entry refused or recovered. Each is logged once per peer and
//! reason, and each kind within a [`LogBudget`], so hostile or broken leases cannot flood the log.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::Instant;

use ipnetwork::Ipv6Network;

use crate::lease::{LeaseId, LeaseSet};
use crate::log_within;
use crate::logtext::{self, LogBudget};
use crate::model::{Family, KernelContext, KernelState, NexthopSupport};
use crate::reconcile::apply::Transitions;
use crate::reconcile::desired::SkippedPeer;

/// What a peer was warned about; each kind is remembered apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerWarning {
    Skipped,
    /// Skipped on the IPv6 device (its reason may differ from the IPv4 one's).
    SkippedIpv6,
    NexthopTaken,
    NexthopTakenIpv6,
}

/// The warnings a peer's lease can cause: each once per peer and reason, and each kind within
/// a [`LogBudget`], so neither the number of values peers write, nor their size, nor how
/// often they flip between them grows the log or this state.
#[derive(Debug)]
pub struct PeerWarnings {
    /// One fingerprint of the last warning per peer and kind, dropped when the lease goes.
    last: HashMap<(LeaseId, PeerWarning), u64>,
    skipped: LogBudget,
    nexthop_taken: LogBudget,
    /// Kernel refusals starting and ending: a peer flipping between a value the kernel
    /// refuses and one it takes would otherwise cost two lines a flip.
    refused: LogBudget,
}

impl Default for PeerWarnings {
    fn default() -> Self {
        PeerWarnings {
            last: HashMap::new(),
            skipped: LogBudget::new("peer leases skipped", "`weftd status` lists them"),
            nexthop_taken: LogBudget::new(
                "peers' routes took flanneld's form (their nexthop id is taken)",
                "`ip route` shows their routes",
            ),
            refused: LogBudget::new(
                "peers' kernel entries refused or recovered",
                "the weft_peers_failing metric counts the peers failing now",
            ),
        }
    }
}

impl PeerWarnings {
    /// Warns once per peer about a lease we skip (again when its reason changes), and about a
    /// route that cannot point at its nexthop because another program's nexthop has the id;
    /// within each kind's budget, so a peer rewriting its value cannot flood the log.
    pub fn warn_once(&mut self, leases: &LeaseSet, skipped: Vec<SkippedPeer>, desired: &KernelState, context: &KernelContext) {
        self.warn_skipped(leases, skipped, PeerWarning::Skipped);
        self.warn_nexthops_taken(desired, context, PeerWarning::NexthopTaken, |subnet| Some(LeaseId::Ipv4(*subnet)));
    }

    /// [`PeerWarnings::warn_once`] for the IPv6 device's pass: the leases it skips (their IPv6
    /// part, or the whole lease) and its routes in flanneld's form, remembered apart from the
    /// IPv4 pass's, under the lease they belong to.
    pub fn warn_once_ipv6(
        &mut self,
        leases: &LeaseSet,
        skipped: Vec<SkippedPeer>,
        desired: &KernelState<Ipv6Addr>,
        context: &KernelContext<Ipv6Addr>,
    ) {
        self.warn_skipped(leases, skipped, PeerWarning::SkippedIpv6);
        // A route in flanneld's form is rare (another program holds its id): a scan is enough.
        let lease_of = |subnet: &Ipv6Network| leases.leases.values().find(|l| l.ipv6_subnet == Some(*subnet)).map(|l| l.id());
        self.warn_nexthops_taken(desired, context, PeerWarning::NexthopTakenIpv6, lease_of);
    }

    /// Warns once per peer (named by its lease, `lease_of` the route's) about a
    /// route without its nexthop: where the kernel has nexthops, desired_state gives a route
    /// none only for a taken id.
    fn warn_nexthops_taken<A: Family>(
        &mut self,
        desired: &KernelState<A>,
        context: &KernelContext<A>,
        kind: PeerWarning,
        lease_of: impl Fn(&A::Network) -> Option<LeaseId>,
    ) {
        if context.nexthops == NexthopSupport::Unavailable {
            return;
        }
        for route in desired.routes.iter().filter(|r| r.nexthop.is_none()) {
            if lease_of(&route.subnet).is_some_and(|lease| self.first(lease, kind, "")) {
                log_within!(self.nexthop_taken, warn, subnet = %route.subnet, gateway = %route.gateway, "another program's nexthop has this peer's id; its route takes flanneld's form instead");
            }
        }
    }

    fn warn_skipped(&mut self, leases: &LeaseSet, skipped: Vec<SkippedPeer>, kind: PeerWarning) {
        self.flush(Instant::now());
        self.last.retain(|(subnet, _), _| leases.leases.contains_key(subnet));
        for peer in skipped {
            if self.first(peer.subnet, kind, &peer.reason) {
                log_within!(self.skipped, warn, key = %peer.key_in(leases), subnet = %peer.subnet, reason = %logtext::clip(&peer.reason), "skipping peer lease");
            }
        }
    }

    /// Logs each kernel refusal once when it starts and once when it ends, so a refusal that
    /// lasts costs two log lines, not one per pass.
    pub fn log_refusals<A: Family>(&mut self, transitions: &Transitions<A>) {
        for f in &transitions.started {
            let (errno, peer) = (f.errno.map(|e| format!("{e:?}")), f.peer.map(|p| p.to_string()));
            let peer = peer.as_deref().unwrap_or("none (leftover entry)");
            log_within!(self.refused, error, peer, action = f.change.action(), entry = %f.change, errno, error = %f.error, "the kernel refused a peer's entry; that peer stays unreachable from here, the others are unaffected; retrying every pass");
        }
        for (peer, action) in &transitions.ended {
            let peer = peer.map_or_else(|| "none (leftover entry)".to_string(), |p| p.to_string());
            log_within!(self.refused, info, peer, action, "a peer's kernel entry no longer fails");
        }
    }

    /// Records a warning about `subnet`; whether it differs from the last one of its kind.
    fn first(&mut self, subnet: LeaseId, kind: PeerWarning, reason: &str) -> bool {
        let fingerprint = logtext::fingerprint(reason);
        self.last.insert((subnet, kind), fingerprint) != Some(fingerprint)
    }

    /// When the next summary of warnings held back is due.
    pub fn summary_at(&self) -> Option<Instant> {
        [&self.skipped, &self.nexthop_taken, &self.refused].into_iter().filter_map(LogBudget::summary_at).min()
    }

    /// Logs the summaries due at `now`.
    pub fn flush(&mut self, now: Instant) {
        [&mut self.skipped, &mut self.nexthop_taken, &mut self.refused].into_iter().for_each(|budget| budget.flush(now));
    }
}
