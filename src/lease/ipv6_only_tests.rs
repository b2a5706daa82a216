//! Unit tests of IPv6-only leases: weft's key and flanneld's, flanneld's IPv6-only value, the
//! check that a lease's naming part is usable, and choosing an IPv6-only subnet.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv6Network;

use super::*;
use crate::config::NetworkConfig;

/// A lease with an IPv4 subnet, as `tests.rs` builds them, to take fields from.
fn base() -> Lease {
    let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(10, 0, 0, 1), 1, MacAddr([2, 0, 0, 0, 0, 1]));
    Lease {
        subnet: Some("10.5.3.0/24".parse().unwrap()),
        ipv6_subnet: None,
        attrs,
        etcd_lease: None,
        mod_revision: 3,
        create_revision: 3,
    }
}

/// flanneld v0.20.2's value with `"EnableIPv4": false` (backend/vxlan newSubnetAttrs): a zero
/// `ip.IP4` PublicIP, no BackendData (`omitempty`), the IPv6 part.
const FLANNEL_IPV6_ONLY: &str = r#"{"PublicIP":"0.0.0.0","PublicIPv6":"fd18::b","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:46"}}"#;

#[test]
fn an_ipv6_only_value_is_flanneld_s_byte_for_byte() {
    let attrs = LeaseAttrs::vxlan_ipv6_only("fd18::b".parse().unwrap(), 1, "c6:d2:32:6f:8f:46".parse().unwrap());
    assert_eq!(attrs.to_json(), FLANNEL_IPV6_ONLY);
    assert_eq!(LeaseAttrs::from_json(FLANNEL_IPV6_ONLY).unwrap(), attrs);
    // Re-advertising a new PublicIPv6 keeps the VNI (there is no IPv4 part to take it from).
    let moved = attrs.clone().with_ipv6("fd18::c".parse().unwrap(), "c6:d2:32:6f:8f:46".parse().unwrap());
    assert_eq!(moved.to_json(), FLANNEL_IPV6_ONLY.replace("fd18::b", "fd18::c"));
    // `"BackendData":null` is no BackendData either.
    let null = FLANNEL_IPV6_ONLY.replace(r#""BackendType":"vxlan","#, r#""BackendType":"vxlan","BackendData":null,"#);
    assert_eq!(LeaseAttrs::from_json(&null).unwrap(), attrs);
}

#[test]
fn ipv6_only_keys_are_the_ipv6_part_alone_or_flanneld_s_zero_ipv4_part() {
    let subnet: Ipv6Network = "fd00:5:0:34::/64".parse().unwrap();
    assert_eq!(lease_key(LeaseId::Ipv6(subnet), Some(subnet)), "fd00:5:0:34::-64");
    for key in ["fd00:5:0:34::-64", "0.0.0.0-0&fd00:5:0:34::-64"] {
        assert_eq!(parse_lease_key(key), Ok((None, Some(subnet))), "{key}");
        assert_eq!(parse_lease_id(key), Ok(LeaseId::Ipv6(subnet)), "{key}");
    }
    // Host bits are kept, to be refused by name later, as for a dual-stack key's IPv6 part.
    assert_eq!(parse_lease_key("fd00:5:0:34::9-64"), Ok((None, Some("fd00:5:0:34::9/64".parse().unwrap()))));
    // Only as weft writes it: compressed, lower case, no leading zeros, a valid length.
    for bad in ["FD00:5:0:34::-64", "fd00:5:0:34:0:0:0:0-64", "fd00:5:0:34::-064", "fd00:5:0:34::-129", "fd00::5::-64", "::-"] {
        assert!(matches!(parse_lease_key(bad), Err(LeaseError::BadKey(_))), "accepted {bad}");
    }
    // 0.0.0.0/0 alone is no IPv6-only key: it stays an IPv4 key no config hands out.
    assert_eq!(parse_lease_key("0.0.0.0-0"), Ok((Some("0.0.0.0/0".parse().unwrap()), None)));
}

#[test]
fn a_lease_s_naming_part_must_be_usable() {
    let ipv6_only =
        |attrs: LeaseAttrs| Lease { subnet: None, ipv6_subnet: Some("fd00:5:0:34::/64".parse().unwrap()), attrs, ..base() };
    let attrs = LeaseAttrs::from_json(FLANNEL_IPV6_ONLY).unwrap();
    assert_eq!(ipv6_only(attrs.clone()).check_main_part(), Ok(()));
    let cases = [
        (LeaseAttrs { backend_v6_data: None, ..attrs.clone() }, "no BackendV6Data"),
        (LeaseAttrs { public_ipv6: None, ..attrs.clone() }, "no PublicIPv6"),
        (LeaseAttrs { ipv6_error: Some("PublicIPv6 \"x\" is not an IP address".into()), ..attrs.clone() }, "not an IP address"),
    ];
    for (attrs, rule) in cases {
        let error = ipv6_only(attrs).check_main_part().unwrap_err().to_string();
        assert!(error.contains(rule), "{error}");
    }
    // An IPv4 key needs BackendData: an IPv6-only value under it is no IPv4 lease.
    let under_ipv4_key = Lease { attrs, ..base() };
    assert!(under_ipv4_key.check_main_part().unwrap_err().to_string().contains("no BackendData"));
}

fn ipv6_only_lease(subnet: &str, public_ipv6: &str, mac_last: u8) -> Lease {
    let attrs = LeaseAttrs::vxlan_ipv6_only(public_ipv6.parse().unwrap(), 1, MacAddr([2, 0, 0, 0, 6, mac_last]));
    Lease { subnet: None, ipv6_subnet: Some(subnet.parse().unwrap()), attrs, ..base() }
}

#[test]
fn an_ipv6_only_claim_prefers_our_lease_then_previous_subnet_then_random() {
    let config = NetworkConfig::parse(
        r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","IPv6SubnetMin":"fd00:5:0:1::","IPv6SubnetMax":"fd00:5:0:4::"}"#,
    )
    .unwrap();
    let v6 = config.ipv6.unwrap();
    let me = ipv6_only_lease("fd00:5:0:9::/64", "fd18::b", 0x11).attrs;
    let mine = ipv6_only_lease("fd00:5:0:2::/64", "fd18::b", 0x11);
    let other = ipv6_only_lease("fd00:5:0:3::/64", "fd18::c", 0x12);
    let taken: BTreeSet<Ipv6Network> = [mine.ipv6_subnet.unwrap(), other.ipv6_subnet.unwrap()].into();
    let previous: Ipv6Network = "fd00:5:0:4::/64".parse().unwrap();
    let leases = [&other, &mine];
    assert_eq!(choose_ipv6_only_claim(&v6, &me, &leases, &taken, Some(previous)), Some(Claim::Existing(mine.clone())));
    // Another key carrying our PublicIPv6 (stale, or copied) never takes us off our own subnet.
    let copy = ipv6_only_lease("fd00:5:0:1::/64", "fd18::b", 0x13);
    let with_copy = [&copy, &other, &mine];
    assert_eq!(choose_ipv6_only_claim(&v6, &me, &with_copy, &taken, mine.ipv6_subnet), Some(Claim::Existing(mine.clone())));
    // Our dual-stack lease from before IPv4 was turned off is ours too (it loses its IPv4 part).
    let dual = Lease { subnet: Some("10.5.7.0/24".parse().unwrap()), ..mine.clone() };
    assert_eq!(choose_ipv6_only_claim(&v6, &me, &[&dual], &taken, None), Some(Claim::Existing(dual)));
    let leases = [&other];
    let free = |claim| matches!(claim, Some(Claim::Free(LeaseId::Ipv6(s))) if !taken.contains(&s) && ipv6_subnet_fits(&v6, s));
    assert_eq!(choose_ipv6_only_claim(&v6, &me, &leases, &taken, Some(previous)), Some(Claim::Free(LeaseId::Ipv6(previous))));
    for _ in 0..20 {
        assert!(free(choose_ipv6_only_claim(&v6, &me, &leases, &taken, other.ipv6_subnet)));
    }
    let all: BTreeSet<Ipv6Network> = (1..=4).map(|n| format!("fd00:5:0:{n}::/64").parse().unwrap()).collect();
    assert_eq!(choose_ipv6_only_claim(&v6, &me, &leases, &all, None), None, "every IPv6 subnet is taken");
}

/// Turning IPv4 back on: a free IPv4 claim extends our IPv6-only lease (found by PublicIPv6)
/// rather than leaving it to name our IPv6 subnet while we lease another; no other lease is
/// extended, and a claim that is not free is left as it is.
#[test]
fn turning_ipv4_on_extends_our_ipv6_only_lease() {
    let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48"}"#).unwrap();
    let v6 = config.ipv6.unwrap();
    let mine = ipv6_only_lease("fd00:5:0:2::/64", "fd18::b", 0x11);
    let other = ipv6_only_lease("fd00:5:0:3::/64", "fd18::c", 0x12);
    let me = LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, 11), 1, MacAddr([2, 0, 0, 0, 0, 0x11]))
        .with_ipv6("fd18::b".parse().unwrap(), MacAddr([2, 0, 0, 0, 6, 0x11]));
    let free = Claim::Free("10.5.9.0/24".parse().unwrap());
    let subnet = "10.5.9.0/24".parse().unwrap();
    let leases = [other.clone(), mine.clone()];
    assert_eq!(extending_ipv6_only(free.clone(), &v6, &me, &leases), Claim::Extend { lease: mine.clone(), subnet });
    assert_eq!(extending_ipv6_only(free.clone(), &v6, &me, std::slice::from_ref(&other)), free, "not ours: a fresh lease");
    let existing = Claim::Existing(base());
    assert_eq!(extending_ipv6_only(existing.clone(), &v6, &me, &leases), existing);
    let no_ipv6 = LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, 11), 1, MacAddr([2, 0, 0, 0, 0, 0x11]));
    assert_eq!(extending_ipv6_only(free.clone(), &v6, &no_ipv6, &leases), free);
}
