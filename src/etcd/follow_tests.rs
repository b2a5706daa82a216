//! Unit tests of following the leases.

use super::*;
use crate::etcd::listing::tests::{lease, listed};
use crate::lease::{Lease, LeaseId};

#[test]
fn relisting_keeps_the_last_good_value_of_a_key_that_became_malformed() {
    let good = lease("10.5.2.0/24", 12);
    let gone = lease("10.5.3.0/24", 13);
    let set = LeaseSet {
        revision: Some(5),
        leases: [(good.id(), good.clone()), (gone.id(), gone.clone())].into(),
        ..Default::default()
    };
    let fresh = lease("10.5.4.0/24", 14);
    let broken = |id: Option<LeaseId>| MalformedLease {
        key: "k".into(),
        id,
        ipv6_subnet: None,
        etcd_lease: None,
        mod_revision: 8,
        create_revision: 8,
        error: "not json".into(),
    };
    let never_read: LeaseId = "10.5.5.0/24".parse().unwrap();
    let listing = LeaseListing {
        revision: 9,
        leases: vec![fresh.clone()],
        malformed: vec![broken(Some(good.id())), broken(Some(never_read)), broken(None)],
        holders: [good.id(), fresh.id(), never_read].map(|s| (s, listed(&crate::lease::lease_key(s, None), 1))).into(),
        ..Default::default()
    };
    let set = replace_with_listing(&set, listing);
    assert_eq!(set.revision, Some(9));
    assert_eq!(set.leases.keys().copied().collect::<Vec<_>>(), vec![good.id(), fresh.id()]);
    // Both unreadable keys are known as such, with no last good value needed.
    assert_eq!(set.unreadable.keys().copied().collect::<Vec<_>>(), vec![good.id(), never_read]);
}

#[test]
fn relisting_keeps_when_a_lease_first_advertised_its_mac() {
    let kept = Lease { mod_revision: 30, ..lease("10.5.2.0/24", 12) };
    let changed = Lease { mod_revision: 31, ..lease("10.5.3.0/24", 13) };
    let mut previous = LeaseSet::default();
    previous.put("10.5.2.0-24".into(), Lease { mod_revision: 10, ..kept.clone() });
    previous.put("10.5.3.0-24".into(), Lease { mod_revision: 11, ..lease("10.5.3.0/24", 77) });
    let mut listing = LeaseListing { revision: 40, ..Default::default() };
    listing.add(listed("10.5.2.0-24", 1), Ok(kept.clone()));
    listing.add(listed("10.5.3.0-24", 1), Ok(changed.clone()));
    let set = replace_with_listing(&previous, listing);
    assert_eq!((set.mac_since(&kept), set.mac_since(&changed)), (10, 31), "same MAC: kept; another MAC: from its write");
    let fresh = replace_with_listing(&LeaseSet::default(), LeaseListing { leases: vec![kept.clone()], ..Default::default() });
    assert_eq!(fresh.mac_since(&kept), 30, "a first listing knows the key's last write");
}

#[test]
fn a_listed_dual_stack_key_is_its_lease_s_own_name_and_not_recorded_apart() {
    let dual = Lease { ipv6_subnet: Some("fd00:6:0:3::/64".parse().unwrap()), ..lease("10.5.3.0/24", 13) };
    let plain_holds_dual = Lease { ipv6_subnet: Some("fd00:6:0:4::/64".parse().unwrap()), ..lease("10.5.4.0/24", 14) };
    let mut listing = LeaseListing { revision: 7, ..Default::default() };
    listing.add(listed(&dual.key_name(), 1), Ok(dual.clone()));
    // A key whose name is not the one flannel writes for the lease it holds.
    listing.add(listed("10.5.4.0-24", 1), Ok(plain_holds_dual.clone()));
    let set = replace_with_listing(&LeaseSet::default(), listing);
    assert_eq!(set.keys.keys().copied().collect::<Vec<_>>(), vec![plain_holds_dual.id()], "only the name that differs");
    assert_eq!(set.key_of(dual.id()), Some("10.5.3.0-24&fd00:6:0:3::-64".to_string()));
    assert_eq!(set.key_of(plain_holds_dual.id()), Some("10.5.4.0-24".to_string()));
}
