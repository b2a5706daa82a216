//! Unit tests of writing a plan: the order of changes and what one refusal costs, through a
//! recording fake of the kernel.

use std::cell::RefCell;

use std::net::Ipv6Addr;

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::*;
use crate::reconcile::plan::plan;

/// Records every change; refuses those `refuse` picks with EOPNOTSUPP, as the kernel does
/// an FDB entry for a multicast MAC.
struct Recording<A: Family = Ipv4Addr> {
    changes: RefCell<Vec<Change<A>>>,
    refuse: fn(&Change<A>) -> bool,
}

impl<A: Family> Recording<A> {
    fn new(refuse: fn(&Change<A>) -> bool) -> Self {
        Recording { changes: RefCell::default(), refuse }
    }
}

impl<A: Family> Dataplane<A> for Recording<A> {
    async fn write(&self, _index: u32, change: Change<A>) -> Result<(), NetlinkError> {
        self.changes.borrow_mut().push(change);
        if (self.refuse)(&change) {
            let errno = Some(Errno::EOPNOTSUPP);
            return Err(NetlinkError::Request { op: change.action(), errno, source: rtnetlink::Error::RequestFailed });
        }
        Ok(())
    }
}

const BAD_MAC: MacAddr = MacAddr([0xff; 6]);

fn peer(n: u8, mac: MacAddr) -> KernelState {
    let subnet: Ipv4Network = format!("10.5.{n}.0/24").parse().unwrap();
    let vtep = subnet.network();
    KernelState {
        arp: [ArpEntry { ip: vtep, mac }].into(),
        fdb: [FdbEntry { mac, dst: Ipv4Addr::new(198, 18, 0, n) }].into(),
        routes: [RouteEntry { subnet, gateway: vtep, onlink: true, nexthop: None }].into(),
        ..Default::default()
    }
}

fn union(states: &[KernelState]) -> KernelState {
    let mut all = KernelState::default();
    for s in states {
        all.arp.extend(&s.arp);
        all.fdb.extend(&s.fdb);
        all.nexthops.extend(&s.nexthops);
        all.routes.extend(&s.routes);
        all.direct_routes.extend(&s.direct_routes);
    }
    all
}

fn run(dataplane: &Recording, desired: &KernelState, actual: &KernelState) -> Applied {
    let plan = plan(desired, actual);
    futures::executor::block_on(apply(dataplane, 7, &plan, desired, actual))
}

fn refuse_bad_fdb(change: &Change) -> bool {
    matches!(change, Change::AddFdb(e) if e.mac == BAD_MAC)
}

#[test]
fn fdb_goes_first_and_a_peer_whose_fdb_is_refused_gets_no_arp_or_route() {
    let good = peer(2, MacAddr([2, 0, 0, 0, 0, 2]));
    let desired = union(&[good.clone(), peer(3, BAD_MAC)]);
    let dataplane = Recording::new(refuse_bad_fdb);
    let applied = run(&dataplane, &desired, &KernelState::default());
    let changes = dataplane.changes.borrow();
    let kinds: Vec<&str> = changes.iter().map(Change::action).collect();
    assert_eq!(kinds, ["add fdb", "add fdb", "add arp", "add route"], "{changes:?}");
    assert!(changes[2..].iter().all(|c| *c == Change::AddArp(*good.arp.first().unwrap())
        || matches!(c, Change::AddRoute(r) if r.subnet.network() == good.arp.first().unwrap().ip)));
    assert_eq!(applied.written, 3);
    let subnet: Ipv4Network = "10.5.3.0/24".parse().unwrap();
    assert_eq!(applied.failed_peers(), [subnet].into());
    assert_eq!((applied.failures[0].errno, applied.failures[0].change.kind()), (Some(Errno::EOPNOTSUPP), "fdb"));
}

#[test]
fn an_fdb_failure_withdraws_the_route_and_arp_of_the_peer_s_old_form() {
    let old = peer(3, MacAddr([2, 0, 0, 0, 0, 3]));
    let dataplane = Recording::new(refuse_bad_fdb);
    let applied = run(&dataplane, &peer(3, BAD_MAC), &old);
    let changes = dataplane.changes.borrow();
    let route = *old.routes.first().unwrap();
    let expected = [
        Change::AddFdb(*peer(3, BAD_MAC).fdb.first().unwrap()),
        Change::RemoveRoute(route),
        Change::RemoveFdb(*old.fdb.first().unwrap()),
        Change::RemoveArp(*old.arp.first().unwrap()),
    ];
    assert_eq!(*changes, expected);
    assert_eq!((applied.written, applied.failures.len()), (3, 1));
}

#[test]
fn a_refused_route_keeps_the_old_form_and_spares_other_peers() {
    let old = peer(3, MacAddr([2, 0, 0, 0, 0, 3]));
    let mut moved = peer(3, MacAddr([2, 0, 0, 0, 0, 3]));
    moved.routes = moved.routes.iter().map(|r| RouteEntry { onlink: false, ..*r }).collect();
    let desired = union(&[moved, peer(4, MacAddr([2, 0, 0, 0, 0, 4]))]);
    let dataplane = Recording::new(|c: &Change| matches!(c, Change::AddRoute(r) if r.subnet.network().octets()[2] == 3));
    let applied = run(&dataplane, &desired, &old);
    let changes = dataplane.changes.borrow();
    assert!(
        changes.iter().all(|c| !matches!(c, Change::RemoveRoute(_) | Change::RemoveArp(_) | Change::RemoveFdb(_))),
        "{changes:?}"
    );
    assert!(changes.contains(&Change::AddRoute(*peer(4, MacAddr([2, 0, 0, 0, 0, 4])).routes.first().unwrap())));
    assert_eq!(applied.failed_peers(), ["10.5.3.0/24".parse().unwrap()].into());
}

#[test]
fn a_failure_is_reported_once_when_it_starts_and_once_when_it_ends() {
    let failure = |n: u8| Failure {
        peer: Some(format!("10.5.{n}.0/24").parse().unwrap()),
        change: Change::AddFdb(*peer(n, BAD_MAC).fdb.first().unwrap()),
        errno: Some(Errno::EOPNOTSUPP),
        error: "refused".into(),
    };
    let mut ongoing = Ongoing::default();
    assert_eq!(ongoing.update(vec![failure(3)]).started, [failure(3)]);
    assert_eq!(ongoing.update(vec![failure(3)]), Transitions::default(), "a failure that persists is not news");
    assert_eq!((ongoing.peer_count(), ongoing.count_by_kind()), (1, [("fdb", 1)].into()));
    let next = ongoing.update(vec![failure(4)]);
    assert_eq!((next.started, next.ended), (vec![failure(4)], vec![(failure(3).peer, "add fdb")]));
    assert_eq!(ongoing.update(vec![]).ended.len(), 1);
    assert_eq!(ongoing.peer_count(), 0);
}

#[test]
fn an_ipv6_peer_whose_fdb_is_refused_gets_no_neighbour_or_route_and_is_named_by_its_ipv6_subnet() {
    let ipv6_peer = |n: u16, mac: MacAddr| {
        let subnet: Ipv6Network = format!("fd00:5:{n:x}::/64").parse().unwrap();
        let vtep = subnet.network();
        let dst: Ipv6Addr = format!("fd18::{n:x}").parse().unwrap();
        KernelState {
            arp: [ArpEntry { ip: vtep, mac }].into(),
            fdb: [FdbEntry { mac, dst }].into(),
            routes: [RouteEntry { subnet, gateway: vtep, onlink: true, nexthop: None }].into(),
            ..Default::default()
        }
    };
    let (good, bad) = (ipv6_peer(2, MacAddr([2, 0, 0, 0, 0, 2])), ipv6_peer(3, BAD_MAC));
    let mut desired = good.clone();
    desired.arp.extend(&bad.arp);
    desired.fdb.extend(&bad.fdb);
    desired.routes.extend(&bad.routes);
    let dataplane = Recording::new(|c: &Change<Ipv6Addr>| matches!(c, Change::AddFdb(e) if e.mac == BAD_MAC));
    let actual = KernelState::default();
    let applied = futures::executor::block_on(apply(&dataplane, 7, &plan(&desired, &actual), &desired, &actual));
    let kinds: Vec<&str> = dataplane.changes.borrow().iter().map(Change::action).collect();
    assert_eq!(kinds, ["add fdb", "add fdb", "add arp", "add route"]);
    assert_eq!(applied.failed_peers(), [bad.routes.first().unwrap().subnet].into());
}
