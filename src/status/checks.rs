//! One address family's side of `weftd status`: each lease's part of that family against the
//! kernel's entries on that family's device, written once for IPv4 (flannel.1) and IPv6
//! (flannel-v6.1). Which parts are programmed, skipped or ours is what the reconciler decides
//! (`desired_state`), so status and daemon never disagree.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::NetworkConfig;
use crate::lease::{Lease, LeaseId, LeaseSet};
use crate::model::{self, Family, KernelContext, KernelState};
use crate::reconcile::desired::{LeaseFamily, PeerPart};
use crate::reconcile::{self, ThisHost};

/// How one kernel entry compares with what the lease asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Ok,
    Missing,
    /// Present with other values (another MAC, gateway or destination).
    Wrong,
    /// Not applicable: our own lease, or a lease weftd skips.
    #[serde(rename = "-")]
    NotApplicable,
}

/// The route, neighbour (ARP or NDP) and FDB checks of one peer part, in that order.
pub type EntryChecks = (Check, Check, Check);

/// What became of one lease's part of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartCheck {
    /// The lease has no part of this family (an IPv4-only peer of a dual-stack network).
    Absent,
    /// Our own lease's part.
    Own,
    /// weftd does not program it, for this reason.
    Skipped(String),
    /// A peer part weftd programs: `direct` when through a direct route (no neighbour or FDB
    /// entry then), and how its entries compare.
    Checked { direct: bool, entries: EntryChecks },
}

impl PartCheck {
    /// Whether every entry the part needs is right (trivially for a part with none).
    pub fn is_ok(&self) -> bool {
        match self {
            PartCheck::Checked { entries: (route, neighbour, fdb), .. } => {
                [route, neighbour, fdb].iter().all(|c| matches!(c, Check::Ok | Check::NotApplicable))
            }
            _ => true,
        }
    }

    /// Why weftd skips the part, if it does.
    pub fn skipped(&self) -> Option<String> {
        match self {
            PartCheck::Skipped(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Whether the part is reached by a direct route (`Backend.DirectRouting`).
    pub fn is_direct(&self) -> bool {
        matches!(self, PartCheck::Checked { direct: true, .. })
    }

    /// The route, neighbour and FDB checks, all not applicable for a part not checked.
    pub fn entries(&self) -> EntryChecks {
        match self {
            PartCheck::Checked { entries, .. } => *entries,
            _ => (Check::NotApplicable, Check::NotApplicable, Check::NotApplicable),
        }
    }
}

/// One family's assessment: each lease's part (by what names the lease), and the entries on
/// the device no lease explains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FamilyChecks {
    pub parts: BTreeMap<LeaseId, PartCheck>,
    /// Entries on the device (and direct routes) that no lease explains.
    pub unexplained: usize,
}

impl FamilyChecks {
    /// How the part of the lease `subnet` fared.
    pub fn part(&self, subnet: LeaseId) -> PartCheck {
        self.parts.get(&subnet).cloned().unwrap_or(PartCheck::Absent)
    }

    /// The peer parts weftd programs, and how many of them have every entry right.
    pub fn peer_counts(&self) -> (usize, usize) {
        let checked: Vec<&PartCheck> = self.parts.values().filter(|p| matches!(p, PartCheck::Checked { .. })).collect();
        (checked.len(), checked.iter().filter(|p| p.is_ok()).count())
    }

    /// Every part right and nothing unexplained.
    pub fn is_ok(&self) -> bool {
        self.unexplained == 0 && self.parts.values().all(PartCheck::is_ok)
    }
}

/// Compares every lease's part of family `A` with `actual`, the entries on that family's device
/// (empty when the device is missing), deciding as the reconciler does what each part needs.
pub fn check_family<A: LeaseFamily>(
    config: &NetworkConfig,
    us: &ThisHost<A>,
    leases: &[Lease],
    actual: &KernelState<A>,
    context: &KernelContext<A>,
) -> FamilyChecks {
    let set = LeaseSet { leases: leases.iter().map(|l| (l.id(), l.clone())).collect(), ..Default::default() };
    let (desired, skipped) = reconcile::desired_state(config, us, &set, context);
    let direct: BTreeSet<A::Network> = desired.direct_routes.iter().map(|r| r.subnet).collect();
    let mut skipped: BTreeMap<LeaseId, String> = skipped.into_iter().map(|s| (s.subnet, s.reason)).collect();
    let parts = leases
        .iter()
        .map(|lease| {
            let check = match (skipped.remove(&lease.id()), A::part(lease)) {
                (Some(reason), _) => PartCheck::Skipped(reason),
                (None, Ok(Some(part))) if Some(part.subnet) == us.subnet => PartCheck::Own,
                (None, Ok(Some(part))) => {
                    let is_direct = direct.contains(&part.subnet);
                    PartCheck::Checked { direct: is_direct, entries: check_part(&part, is_direct, actual) }
                }
                (None, _) => PartCheck::Absent,
            };
            (lease.id(), check)
        })
        .collect();
    let unexplained = reconcile::plan(&desired, actual).remove.entry_count();
    FamilyChecks { parts, unexplained }
}

/// The checks of a peer part: a direct route (and no VXLAN route) for a direct peer; otherwise
/// a route onlink via the VTEP address, a neighbour of the VTEP address with the part's MAC,
/// and one FDB entry for that MAC, to the part's public address.
fn check_part<A: Family>(part: &PeerPart<A>, direct: bool, actual: &KernelState<A>) -> EntryChecks {
    let subnet = part.subnet;
    let vxlan_route = actual.routes.iter().find(|r| r.subnet == subnet);
    if direct {
        let route = match actual.direct_routes.iter().find(|r| r.subnet == subnet) {
            Some(r) if r.gateway == part.public_ip && vxlan_route.is_none() => Check::Ok,
            Some(_) => Check::Wrong,
            None if vxlan_route.is_some() => Check::Wrong,
            None => Check::Missing,
        };
        return (route, Check::NotApplicable, Check::NotApplicable);
    }
    let vtep = model::vtep_address(subnet);
    let mac = part.vtep_mac;
    let route = match vxlan_route {
        Some(r) if r.gateway == vtep && r.onlink => Check::Ok,
        Some(_) => Check::Wrong,
        None => Check::Missing,
    };
    let neighbour = match actual.arp.iter().find(|a| a.ip == vtep) {
        Some(a) if a.mac == mac => Check::Ok,
        Some(_) => Check::Wrong,
        None => Check::Missing,
    };
    let fdb = match actual.fdb.iter().filter(|f| f.mac == mac).map(|f| f.dst).collect::<Vec<_>>().as_slice() {
        [dst] if *dst == part.public_ip => Check::Ok,
        [] => Check::Missing,
        _ => Check::Wrong,
    };
    (route, neighbour, fdb)
}
