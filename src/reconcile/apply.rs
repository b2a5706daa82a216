//! Writes a reconcile [`Plan`] into the kernel through a [`Dataplane`], peer by peer safe: an
//! entry the kernel refuses for one peer costs that peer only, and every failure comes back as
//! data (which peer, which entry, the errno) for the reconciler to log once and count.
//!
//! Order: FDB entries first, since a peer is only reachable through its MAC's FDB entry; then
//! ARP, nexthops and routes, so a route never appears before what it needs; removals last. A
//! peer whose FDB or ARP entry fails gets no ARP entry (after an FDB failure) and no route, and
//! loses the ones an earlier form left: a route into a MAC the device cannot send to would
//! black-hole its traffic without a word. A peer whose new route or nexthop fails keeps its old
//! form instead (see [`Plan::removals_keeping`]): that old form still works.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use nix::errno::Errno;

use crate::model::{vtep_address, ArpEntry, DirectRoute, Family, FdbEntry, KernelState, MacAddr, Nexthop, RouteEntry};
use crate::netlink::{Kernel, KernelFamily, NetlinkError};
use crate::reconcile::plan::Plan;

/// One kernel write, named as `ip`/`bridge` would do it, for a device of family `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change<A: Family = Ipv4Addr> {
    AddFdb(FdbEntry<A>),
    AddArp(ArpEntry<A>),
    AddNexthop(Nexthop<A>),
    RewriteNexthop(Nexthop<A>),
    AddRoute(RouteEntry<A>),
    AddDirectRoute(DirectRoute<A>),
    RemoveRoute(RouteEntry<A>),
    RemoveDirectRoute(DirectRoute<A>),
    RemoveNexthop(Nexthop<A>),
    RemoveFdb(FdbEntry<A>),
    RemoveArp(ArpEntry<A>),
}

impl<A: Family> Change<A> {
    /// The kind of entry, as the `kind` label of weft's metrics names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::AddFdb(_) | Change::RemoveFdb(_) => "fdb",
            Change::AddArp(_) | Change::RemoveArp(_) => "arp",
            Change::AddNexthop(_) | Change::RewriteNexthop(_) | Change::RemoveNexthop(_) => "nexthop",
            Change::AddRoute(_) | Change::RemoveRoute(_) => "route",
            Change::AddDirectRoute(_) | Change::RemoveDirectRoute(_) => "direct_route",
        }
    }

    /// What was attempted: `add fdb`, `remove route`, ...
    pub fn action(&self) -> &'static str {
        match self {
            Change::AddFdb(_) => "add fdb",
            Change::AddArp(_) => "add arp",
            Change::AddNexthop(_) => "add nexthop",
            Change::RewriteNexthop(_) => "rewrite nexthop",
            Change::AddRoute(_) => "add route",
            Change::AddDirectRoute(_) => "add direct route",
            Change::RemoveRoute(_) => "remove route",
            Change::RemoveDirectRoute(_) => "remove direct route",
            Change::RemoveNexthop(_) => "remove nexthop",
            Change::RemoveFdb(_) => "remove fdb",
            Change::RemoveArp(_) => "remove arp",
        }
    }
}

impl<A: Family> fmt::Display for Change<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddFdb(e) | Change::RemoveFdb(e) => write!(f, "{} dst {}", e.mac, e.dst),
            Change::AddArp(e) | Change::RemoveArp(e) => write!(f, "{} lladdr {}", e.ip, e.mac),
            Change::AddNexthop(e) | Change::RewriteNexthop(e) | Change::RemoveNexthop(e) => {
                write!(f, "id {} via {}", e.id, e.gateway)
            }
            Change::AddRoute(e) | Change::RemoveRoute(e) => write!(f, "{} via {}", e.subnet, e.gateway),
            Change::AddDirectRoute(e) | Change::RemoveDirectRoute(e) => write!(f, "{} via {}", e.subnet, e.gateway),
        }
    }
}

/// Where kernel entries of family `A` are written: the kernel itself, or a recording fake in
/// unit tests.
// Only the reconciler's own task awaits these futures, so they need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Dataplane<A: Family = Ipv4Addr> {
    /// Makes one change to the tables of the VXLAN device with index `index`.
    ///
    /// # Errors
    /// The kernel's refusal, with its errno.
    async fn write(&self, index: u32, change: Change<A>) -> Result<(), NetlinkError>;
}

impl<A: KernelFamily> Dataplane<A> for Kernel {
    async fn write(&self, index: u32, change: Change<A>) -> Result<(), NetlinkError> {
        match change {
            Change::AddFdb(e) => self.replace_fdb(index, e).await,
            Change::AddArp(e) => self.replace_arp(index, e).await,
            Change::AddNexthop(e) => self.add_nexthop(index, e).await,
            Change::RewriteNexthop(e) => self.rewrite_nexthop(index, e).await,
            Change::AddRoute(e) => self.replace_route(index, e).await,
            Change::AddDirectRoute(e) => self.replace_direct_route(e).await,
            Change::RemoveRoute(e) => self.delete_route(index, e).await,
            Change::RemoveDirectRoute(e) => self.delete_direct_route(e).await,
            Change::RemoveNexthop(e) => self.delete_nexthop(e).await,
            Change::RemoveFdb(e) => self.delete_fdb(index, e).await,
            Change::RemoveArp(e) => self.delete_arp(index, e).await,
        }
    }
}

/// A change the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<A: Family = Ipv4Addr> {
    /// The peer lease's subnet (of the family) the entry belongs to; `None` for a leftover
    /// entry no lease explains.
    pub peer: Option<A::Network>,
    pub change: Change<A>,
    /// The kernel's errno, when it gave one.
    pub errno: Option<Errno>,
    /// The whole error, for the log.
    pub error: String,
}

/// What one [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<A: Family = Ipv4Addr> {
    /// Changes the kernel accepted.
    pub written: usize,
    /// Changes it refused, in the order they were tried.
    pub failures: Vec<Failure<A>>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for Applied<A> {
    fn default() -> Self {
        Self { written: 0, failures: Vec::new() }
    }
}

impl<A: Family> Applied<A> {
    /// Peers with at least one refused entry.
    pub fn failed_peers(&self) -> BTreeSet<A::Network> {
        self.failures.iter().filter_map(|f| f.peer).collect()
    }
}

/// Which peer each entry of the desired state belongs to, by VTEP address and by MAC.
struct Owners<A: Family> {
    by_vtep: BTreeMap<A, A::Network>,
    by_mac: BTreeMap<MacAddr, BTreeSet<A::Network>>,
}

impl<A: Family> Owners<A> {
    fn new(desired: &KernelState<A>) -> Self {
        let by_vtep: BTreeMap<A, A::Network> = desired.routes.iter().map(|r| (r.gateway, r.subnet)).collect();
        let mut by_mac: BTreeMap<MacAddr, BTreeSet<A::Network>> = BTreeMap::new();
        for arp in &desired.arp {
            if let Some(subnet) = by_vtep.get(&arp.ip) {
                by_mac.entry(arp.mac).or_default().insert(*subnet);
            }
        }
        Owners { by_vtep, by_mac }
    }

    /// The peers a change is made for (several only if two leases share a MAC).
    fn peers(&self, change: &Change<A>) -> BTreeSet<A::Network> {
        let vtep = |ip: &A| self.by_vtep.get(ip).copied().into_iter().collect();
        match change {
            Change::AddFdb(e) => self.by_mac.get(&e.mac).cloned().unwrap_or_default(),
            Change::AddArp(e) => vtep(&e.ip),
            Change::AddNexthop(e) | Change::RewriteNexthop(e) => vtep(&e.gateway),
            Change::AddRoute(e) | Change::RemoveRoute(e) => [e.subnet].into(),
            Change::AddDirectRoute(e) | Change::RemoveDirectRoute(e) => [e.subnet].into(),
            Change::RemoveNexthop(_) | Change::RemoveFdb(_) | Change::RemoveArp(_) => BTreeSet::new(),
        }
    }
}

/// One pass of writes: the data plane, the device, the state written, and the tally so far.
struct Writer<'a, A: Family, D> {
    dataplane: &'a D,
    index: u32,
    desired: &'a KernelState<A>,
    /// Who owns what, built from `desired` at the first refusal: a pass without one (nearly
    /// all) never pays for the index, two maps as large as the state.
    owners: Option<Owners<A>>,
    applied: Applied<A>,
}

impl<A: Family, D: Dataplane<A>> Writer<'_, A, D> {
    /// Makes one change; returns whether the kernel accepted it.
    async fn write(&mut self, change: Change<A>) -> bool {
        match self.dataplane.write(self.index, change).await {
            Ok(()) => {
                self.applied.written += 1;
                true
            }
            Err(e) => {
                let errno = e.errno();
                let error = e.to_string();
                let peers = self.owners.get_or_insert_with(|| Owners::new(self.desired)).peers(&change);
                let owners = if peers.is_empty() { vec![None] } else { peers.into_iter().map(Some).collect() };
                for peer in owners {
                    self.applied.failures.push(Failure { peer, change, errno, error: error.clone() });
                }
                false
            }
        }
    }
}

/// Writes `plan` for the device with index `index`, where `desired` is the state the plan leads
/// to and `actual` the state it was computed from. Never stops at a failure: every change that
/// can be made is made, and every refusal is returned.
pub async fn apply<A: Family>(
    dataplane: &impl Dataplane<A>,
    index: u32,
    plan: &Plan<A>,
    desired: &KernelState<A>,
    actual: &KernelState<A>,
) -> Applied<A> {
    let mut w = Writer { dataplane, index, desired, owners: None, applied: Applied::default() };
    // One request at a time: pipelining them (128 in flight) measured no faster at 5,000
    // peers (make bench, scale), the kernel being the bottleneck.
    for e in &plan.add.fdb {
        w.write(Change::AddFdb(*e)).await;
    }
    let no_fdb = w.applied.failed_peers();
    for e in plan.add.arp.iter().filter(|e| !no_fdb.iter().any(|s| vtep_address(*s) == e.ip)) {
        w.write(Change::AddArp(*e)).await;
    }
    let unreachable = w.applied.failed_peers();
    let route_failed = write_routes(&mut w, plan, &unreachable).await;
    let mut remove = plan.removals_keeping(&route_failed);
    withdraw(&mut remove, actual, &unreachable);
    remove_entries(&mut w, &remove).await;
    w.applied
}

/// Writes nexthops and routes, except for `unreachable` peers; returns the subnets whose new
/// route (or the nexthop it needs) could not be written.
async fn write_routes<A: Family, D: Dataplane<A>>(
    w: &mut Writer<'_, A, D>,
    plan: &Plan<A>,
    unreachable: &BTreeSet<A::Network>,
) -> BTreeSet<A::Network> {
    let reachable_vtep = |ip: &A| !unreachable.iter().any(|s| vtep_address(*s) == *ip);
    let mut missing_nexthops = BTreeSet::new();
    for e in plan.add.nexthops.iter().filter(|e| reachable_vtep(&e.gateway)) {
        if !w.write(Change::AddNexthop(*e)).await {
            missing_nexthops.insert(e.id);
        }
    }
    for e in plan.rewrite_nexthops.iter().filter(|e| reachable_vtep(&e.gateway)) {
        if !w.write(Change::RewriteNexthop(*e)).await {
            missing_nexthops.insert(e.id);
        }
    }
    let mut failed = BTreeSet::new();
    for e in plan.add.routes.iter().filter(|e| !unreachable.contains(&e.subnet)) {
        // Without its nexthop the route is not written: that failure is already recorded.
        let written = !e.nexthop.is_some_and(|id| missing_nexthops.contains(&id)) && w.write(Change::AddRoute(*e)).await;
        if !written {
            failed.insert(e.subnet);
        }
    }
    for e in plan.add.direct_routes.iter().filter(|e| !unreachable.contains(&e.subnet)) {
        if !w.write(Change::AddDirectRoute(*e)).await {
            failed.insert(e.subnet);
        }
    }
    failed
}

/// Adds to `remove` what `actual` holds for the `unreachable` peers' routes: their route,
/// direct route, nexthop and ARP entry, whatever form an earlier lease gave them.
fn withdraw<A: Family>(remove: &mut KernelState<A>, actual: &KernelState<A>, unreachable: &BTreeSet<A::Network>) {
    let vteps: BTreeSet<A> = unreachable.iter().map(|s| vtep_address(*s)).collect();
    let routes = actual.routes.iter().filter(|r| unreachable.contains(&r.subnet));
    let route_nexthops: BTreeSet<u32> = routes.clone().filter_map(|r| r.nexthop).collect();
    remove.routes.extend(routes);
    remove.direct_routes.extend(actual.direct_routes.iter().filter(|r| unreachable.contains(&r.subnet)));
    remove.nexthops.extend(actual.nexthops.iter().filter(|n| vteps.contains(&n.gateway) || route_nexthops.contains(&n.id)));
    remove.arp.extend(actual.arp.iter().filter(|a| vteps.contains(&a.ip)));
}

/// Removes entries, routes first: deleting a nexthop silently takes its routes with it, and a
/// route must not outlive the ARP and FDB entries it relies on.
async fn remove_entries<A: Family, D: Dataplane<A>>(w: &mut Writer<'_, A, D>, remove: &KernelState<A>) {
    for e in &remove.routes {
        w.write(Change::RemoveRoute(*e)).await;
    }
    for e in &remove.direct_routes {
        w.write(Change::RemoveDirectRoute(*e)).await;
    }
    for e in &remove.nexthops {
        w.write(Change::RemoveNexthop(*e)).await;
    }
    for e in &remove.fdb {
        w.write(Change::RemoveFdb(*e)).await;
    }
    for e in &remove.arp {
        w.write(Change::RemoveArp(*e)).await;
    }
}

/// What identifies a failure from one pass to the next: the peer and what was attempted.
pub type FailureKey<A = Ipv4Addr> = (Option<<A as Family>::Network>, &'static str);

/// The failures still going on, so each is logged once when it starts and once when it ends,
/// however many passes retry it. Bounded by the leases: one key per peer and action, plus one
/// per action for leftover entries.
#[derive(Debug)]
pub struct Ongoing<A: Family = Ipv4Addr> {
    current: BTreeMap<FailureKey<A>, Failure<A>>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for Ongoing<A> {
    fn default() -> Self {
        Self { current: BTreeMap::new() }
    }
}

/// How the failures changed with a pass.
#[derive(Debug, PartialEq, Eq)]
pub struct Transitions<A: Family = Ipv4Addr> {
    pub started: Vec<Failure<A>>,
    pub ended: Vec<FailureKey<A>>,
}

// By hand: a derived `Default` would ask `A: Default`, which no address type is.
impl<A: Family> Default for Transitions<A> {
    fn default() -> Self {
        Self { started: Vec::new(), ended: Vec::new() }
    }
}

impl<A: Family> Ongoing<A> {
    /// Replaces the ongoing failures with those of the pass that just ran.
    pub fn update(&mut self, failures: Vec<Failure<A>>) -> Transitions<A> {
        let next: BTreeMap<FailureKey<A>, Failure<A>> = failures.into_iter().map(|f| ((f.peer, f.change.action()), f)).collect();
        let ended = self.current.keys().filter(|k| !next.contains_key(k)).copied().collect();
        let started = next.iter().filter(|(k, _)| !self.current.contains_key(k)).map(|(_, f)| f.clone()).collect();
        self.current = next;
        Transitions { started, ended }
    }

    /// Peers with at least one failing entry.
    pub fn peer_count(&self) -> usize {
        self.current.keys().filter_map(|(peer, _)| *peer).collect::<BTreeSet<_>>().len()
    }

    /// Failing entries per kind (`fdb`, `arp`, `nexthop`, `route`, `direct_route`).
    pub fn count_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for failure in self.current.values() {
            *counts.entry(failure.change.kind()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
