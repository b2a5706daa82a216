//! Unit tests of the lease listing.

use std::net::Ipv4Addr;

use super::*;
use crate::lease::MacAddr;

#[test]
fn a_page_too_large_is_read_again_halved_down_to_one_key() {
    let mut pages = vec![LIST_PAGE];
    while let Some(next) = smaller_page(*pages.last().unwrap()) {
        pages.push(next);
    }
    assert_eq!(pages, [500, 250, 125, 62, 31, 15, 7, 3, 1]);
}

/// A lease on `subnet` from host 198.18.0.`last`, with a MAC ending in `last`.
pub(in crate::etcd) fn lease(subnet: &str, last: u8) -> Lease {
    Lease {
        ipv6_subnet: None,
        subnet: Some(subnet.parse().unwrap()),
        attrs: LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, last), 1, MacAddr([2, 0, 0, 0, 0, last])),
        etcd_lease: Some(EtcdLeaseId(1)),
        mod_revision: 1,
        create_revision: 1,
    }
}

/// A lease key named `name`, created at `create_revision`.
pub(in crate::etcd) fn listed(name: &str, create_revision: i64) -> ListedKey {
    ListedKey { key: format!("/coreos.com/network/subnets/{name}"), create_revision }
}

#[test]
fn of_two_keys_naming_one_subnet_the_one_created_first_holds_it_in_any_listing_order() {
    let first = Lease { create_revision: 3, ..lease("10.5.2.0/24", 12) };
    let second = Lease { create_revision: 9, ..lease("10.5.2.0/24", 99) };
    let (canonical, dual) = ("10.5.2.0-24", "10.5.2.0-24&fd00::-64");
    for (created_first, then) in [((canonical, &first), (dual, &second)), ((dual, &first), (canonical, &second))] {
        let mut listing = LeaseListing::default();
        listing.add(listed(created_first.0, 3), Ok(created_first.1.clone()));
        listing.add(listed(then.0, 9), Ok(then.1.clone()));
        // etcd lists keys in key order: the same two, the other way round.
        let mut reversed = LeaseListing::default();
        reversed.add(listed(then.0, 9), Ok(then.1.clone()));
        reversed.add(listed(created_first.0, 3), Ok(created_first.1.clone()));
        for listing in [listing, reversed] {
            assert_eq!(listing.leases, std::slice::from_ref(&first));
            assert_eq!(listing.holders[&first.id()].name(), created_first.0);
            assert_eq!(listing.aliases, [(format!("/coreos.com/network/subnets/{}", then.0), first.id())]);
            let error = &listing.malformed[0].error;
            assert_eq!(
                *error,
                format!(
                    "it names subnet 10.5.2.0/24, which the key {} held first; skipped until that key is deleted",
                    created_first.0
                )
            );
            assert_eq!((listing.malformed.len(), listing.malformed[0].id), (1, None), "the skipped key marks nothing unreadable");
        }
    }
}

/// flanneld's IPv6-only key (`0.0.0.0-0&…`) and weft's (the IPv6 part alone) name one lease:
/// the key etcd created first holds it, the other is skipped naming it, and neither names the
/// IPv4 subnet 0.0.0.0/0.
#[test]
fn flanneld_s_and_weft_s_ipv6_only_keys_for_one_subnet_are_one_lease() {
    let attrs = LeaseAttrs::vxlan_ipv6_only("fd18::9".parse().unwrap(), 1, MacAddr([2, 0, 0, 0, 0, 9]));
    let subnet: ipnetwork::Ipv6Network = "fd00:5:0:9::/64".parse().unwrap();
    let at = |create_revision| Lease {
        subnet: None,
        ipv6_subnet: Some(subnet),
        attrs: attrs.clone(),
        create_revision,
        ..lease("10.5.9.0/24", 9)
    };
    let mut listing = LeaseListing::default();
    listing.add(listed("0.0.0.0-0&fd00:5:0:9::-64", 4), Ok(at(4)));
    listing.add(listed("fd00:5:0:9::-64", 6), Ok(at(6)));
    assert_eq!(listing.leases, [at(4)]);
    assert_eq!(listing.holders[&LeaseId::Ipv6(subnet)].name(), "0.0.0.0-0&fd00:5:0:9::-64");
    assert!(listing.occupied().is_empty(), "no IPv4 subnet is taken");
    assert!(listing.malformed[0]
        .error
        .contains("it names subnet fd00:5:0:9::/64, which the key 0.0.0.0-0&fd00:5:0:9::-64 held first"));
}

/// The claims [`Registry::list_ipv6_claims`] builds from keys alone, for `keys` (name, create
/// revision) in listing order, sorted by key.
fn claims_from_keys(keys: &[(&str, i64)]) -> Vec<Ipv6Claim> {
    let mut claims = ipv6_claims_of_keys(keys.iter().map(|&(name, created)| (name.to_string(), created)).collect());
    claims.sort_by(|a, b| a.key.cmp(&b.key));
    claims
}

#[test]
fn keys_alone_give_the_ipv6_claims_a_full_listing_gives() {
    let dual = |subnet: &str, ipv6: &str, created: i64| Lease {
        ipv6_subnet: Some(ipv6.parse().unwrap()),
        create_revision: created,
        ..lease(subnet, created as u8)
    };
    // Two keys naming 10.5.2.0/24 (the later one an alias), one dual-stack lease alone, and
    // an IPv4-only key for 10.5.4.0/24 that a later dual-stack key names too (that one an
    // alias), in key order and the other way round.
    let keys = [
        ("10.5.2.0-24&fd00::-64", 9, dual("10.5.2.0/24", "fd00::/64", 9)),
        ("10.5.2.0-24&fd00:0:0:1::-64", 3, dual("10.5.2.0/24", "fd00:0:0:1::/64", 3)),
        ("10.5.3.0-24&fd00:0:0:2::-64", 5, dual("10.5.3.0/24", "fd00:0:0:2::/64", 5)),
        ("10.5.4.0-24", 7, lease("10.5.4.0/24", 7)),
        ("10.5.4.0-24&fd00:0:0:4::-64", 11, dual("10.5.4.0/24", "fd00:0:0:4::/64", 11)),
    ];
    for reversed in [false, true] {
        let mut ordered: Vec<_> = keys.iter().collect();
        if reversed {
            ordered.reverse();
        }
        let mut listing = LeaseListing::default();
        for (name, created, lease) in &ordered {
            listing.add(listed(name, *created), Ok(lease.clone()));
        }
        let mut full = listing.ipv6_claims();
        full.sort_by(|a, b| a.key.cmp(&b.key));
        let names: Vec<(&str, i64)> = ordered.iter().map(|(name, created, _)| (*name, *created)).collect();
        assert_eq!(claims_from_keys(&names), full);
        let holders: Vec<_> = full.iter().map(|c| (c.key.as_str(), c.holds.is_some())).collect();
        assert_eq!(
            holders,
            [
                ("10.5.2.0-24&fd00:0:0:1::-64", true),
                ("10.5.2.0-24&fd00::-64", false),
                ("10.5.3.0-24&fd00:0:0:2::-64", true),
                ("10.5.4.0-24&fd00:0:0:4::-64", false)
            ]
        );
    }
}
