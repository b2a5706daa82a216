//! Unit tests of the lease codec, the key grammar, the lease set and subnet choice.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::*;
use crate::config::{Ipv4Config, NetworkConfig};

/// The IPv4 side of the config `json`.
fn ipv4_config(json: &str) -> Ipv4Config {
    NetworkConfig::parse(json).unwrap().ipv4.unwrap()
}

/// The VtepMAC of a value's IPv4 part.
fn mac(attrs: &LeaseAttrs) -> MacAddr {
    attrs.backend_data.as_ref().unwrap().vtep_mac
}

/// Sets the VtepMAC of a value's IPv4 part.
fn set_mac(attrs: &mut LeaseAttrs, mac: MacAddr) {
    attrs.backend_data.as_mut().unwrap().vtep_mac = mac;
}

/// A lease value as flanneld v0.26 writes it.
const FLANNEL_SAMPLE: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

#[test]
fn a_lease_set_keeps_when_a_mac_was_first_advertised_until_it_changes_or_goes() {
    let subnet: Ipv4Network = "10.5.2.0/24".parse().unwrap();
    let at = |mod_revision: i64, mac_last: u8| Lease {
        ipv6_subnet: None,
        subnet: Some(subnet),
        attrs: LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, 12), 1, MacAddr([2, 0, 0, 0, 0, mac_last])),
        etcd_lease: Some(EtcdLeaseId(1)),
        mod_revision,
        create_revision: 1,
    };
    let mut set = LeaseSet::default();
    assert_eq!(set.mac_since(&at(4, 2)), 4, "unknown: the lease's last write");
    set.put("10.5.2.0-24".into(), at(5, 2));
    set.put("10.5.2.0-24".into(), at(8, 2));
    assert_eq!(set.mac_since(&set.leases[&LeaseId::Ipv4(subnet)]), 5, "rewritten with the same MAC");
    set.put("10.5.2.0-24".into(), at(9, 3));
    assert_eq!(set.mac_since(&set.leases[&LeaseId::Ipv4(subnet)]), 9, "a new MAC counts from its write");
    set.remove(LeaseId::Ipv4(subnet));
    assert!(set.mac_since.is_empty() && set.keys.is_empty() && set.leases.is_empty());
}

#[test]
fn encodes_exactly_like_flanneld() {
    let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 64, 3), 1, "c6:d2:32:6f:8f:44".parse().unwrap());
    assert_eq!(attrs.to_json(), FLANNEL_SAMPLE);
}

#[test]
fn decodes_flanneld_values_leniently() {
    let attrs = LeaseAttrs::from_json(FLANNEL_SAMPLE).unwrap();
    assert_eq!(attrs.public_ip, Ipv4Addr::new(192, 168, 64, 3));
    assert_eq!(mac(&attrs).to_string(), "c6:d2:32:6f:8f:44");
    let older = r#"{"publicip":"10.0.0.9","backendtype":"vxlan","backenddata":{"vtepMAC":"C6:D2:32:6F:8F:44"},"x":1}"#;
    let attrs = LeaseAttrs::from_json(older).unwrap();
    assert_eq!(attrs.backend_data.as_ref().unwrap().vni, 0);
    assert_eq!(mac(&attrs), "c6:d2:32:6f:8f:44".parse().unwrap());
}

#[test]
fn rejects_malformed_values() {
    for bad in [
        "nope",
        "{}",
        r#"{"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        r#"{"PublicIP":"300.1.1.1","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        r#"{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"c6:d2:32:6f:8f"}}"#,
        r#"{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"zz:d2:32:6f:8f:44"}}"#,
    ] {
        assert!(ipv4_lease_value(bad).is_err(), "accepted {bad}");
    }
}

/// What Go 1.19's `encoding/json` (flanneld v0.20.2's decoder, with flannel's IP and MAC
/// types) made of each value, recorded by decoding the same inputs with a Go program.
/// `ok` rows show PublicIP, BackendType, VNI and VtepMAC; `err` rows Go refused, except
/// where noted.
const GO_DECODINGS: &[(&str, &str)] = &[
    (
        r#"{"publicip":"10.0.0.77","PublicIP":"10.0.0.66","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.66 vxlan 1 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.66","publicip":"10.0.0.77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.77 vxlan 1 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"backenddata":{"vtepmac":"02:00:00:00:00:02"}}"#,
        "ok 10.0.0.1 vxlan 0 02:00:00:00:00:02",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44","vtepmac":"02:00:00:00:00:02"}}"#,
        "ok 10.0.0.1 vxlan 0 02:00:00:00:00:02",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendType":null}"#,
        "ok 10.0.0.1 vxlan 1 c6:d2:32:6f:8f:44",
    ),
    (r#"{"PublicIP":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"bad","PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","PublicIP":"bad","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.\u0031","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (
        r#"{"Public\u0049P":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"::ffff:10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    // Go panics in flannel's IP4 decoder (every flanneld crashes).
    (r#"{"PublicIP":"fd00::1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"010.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"\"10.0.0.1\"","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","PublicIPv6":"junk","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (
        r#"{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":"1","VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":70000,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":-0,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":1.0,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":null,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":7,"VNI":null,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 vxlan 7 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6-d2-32-6f-8f-44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6d2.326f.8f44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"C6:D2:32:6F:8F:44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2-32:6f:8f:44"}}"#, "err"),
    // Go reads an 8-byte address, which no VXLAN device has: the kernel refuses it.
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44:00:01"}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":null}}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:4\u0034"}}"#, "err"),
    // Go reads an empty VtepMAC, which flanneld then fails to program.
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":null}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan"}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":[1]}"#, "err"),
    (r#"{"PublicIP":"10.0.0.1","BackendType":7,"BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#, "err"),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vx\u006can","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"VXLAN","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        "ok 10.0.0.1 VXLAN 0 c6:d2:32:6f:8f:44",
    ),
    (
        r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"},"Extra":{"x":[1,2,null]}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    (r#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}} x"#, "err"),
    (
        r#"{"\ud800":1,"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44","x":"\udc00"}}"#,
        "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
    ),
    ("null", "err"),
    ("[]", "err"),
    ("not json", "err"),
];

/// Where weft parts from Go on purpose: a PublicIPv6 flanneld cannot parse costs flanneld the
/// whole lease, and weft only its IPv6 part (the peer's IPv4 entries stay).
const IPV6_PART_DROPPED: [(&str, &str); 1] = [(
    r#"{"PublicIP":"10.0.0.1","PublicIPv6":"junk","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
    "ok 10.0.0.1 vxlan 0 c6:d2:32:6f:8f:44",
)];

/// A value as the key `10.5.3.0-24` holds it: read, and its IPv4 part usable.
fn ipv4_lease_value(input: &str) -> Result<LeaseAttrs, LeaseError> {
    let attrs = LeaseAttrs::from_json(input)?;
    let lease = Lease { subnet: Some("10.5.3.0/24".parse().unwrap()), ..lease_for("10.5.3.0/24", [10, 0, 0, 1]) };
    let lease = Lease { attrs, ..lease };
    lease.check_main_part().map(|()| lease.attrs)
}

#[test]
fn decodes_every_value_as_go_does() {
    for (input, go) in GO_DECODINGS {
        let dropped = IPV6_PART_DROPPED.iter().find(|(i, _)| i == input);
        let ours = match ipv4_lease_value(input) {
            Ok(a) => {
                assert_eq!(a.ipv6_error.is_some(), dropped.is_some(), "decoding {input}: {:?}", a.ipv6_error);
                let data = a.backend_data.as_ref().expect("an IPv4 value");
                format!("ok {} {} {} {}", a.public_ip, a.backend_type, data.vni, data.vtep_mac)
            }
            Err(_) => "err".to_string(),
        };
        assert_eq!(&ours, dropped.map_or(*go, |(_, weft)| *weft), "decoding {input}");
    }
}

#[test]
fn unknown_members_nested_deeper_than_serdes_limit_are_ignored_like_go_does() {
    let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let value = format!(
        r#"{{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{{"VtepMAC":"c6:d2:32:6f:8f:44","x":{deep}}},"Extra":{deep}}}"#
    );
    assert_eq!(LeaseAttrs::from_json(&value).map(|a| a.public_ip), Ok(Ipv4Addr::new(10, 0, 0, 1)));
}

#[test]
fn refuses_vtep_macs_no_vtep_can_have() {
    for mac in ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00", "3333.0000.0001"] {
        let value = format!(r#"{{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{{"VtepMAC":"{mac}"}}}}"#);
        assert!(matches!(LeaseAttrs::from_json(&value), Err(LeaseError::NotUnicastMac(_))), "accepted {mac}");
    }
}

/// flanneld v0.20.2's `ParseSubnetKey` on each key (recorded with Go), and what weft makes of it.
#[test]
fn reads_the_keys_flanneld_reads_in_flannels_form() {
    let cases = [
        // (key, what flanneld reads, what weft reads)
        ("10.5.3.0-24", "10.5.3.0/24", "10.5.3.0/24"),
        ("10.5.3.0-24&fd00::-64", "10.5.3.0/24", "10.5.3.0/24"),
        ("10.5.3.0-24&00000fd00::-64", "10.5.3.0/24", "10.5.3.0/24"),
        ("10.5.3.0-31", "10.5.3.0/31", "10.5.3.0/31"),
        ("10.5.3.0-24&junk", "nil", "nil"),
        ("10.5.3.0-+24", "nil", "nil"),
        ("10.5.3.0-32", "nil", "nil"),
        ("010.5.3.0-24", "nil", "nil"),
        ("10.5x3y0-24", "nil", "nil"),
        ("10.5.3.0-24&fd00::-128", "nil", "nil"),
        ("10.5.3.0-24&FD00::-64", "nil", "nil"),
        ("10.5.3.0-24&fd00::", "nil", "nil"),
        ("10.5.3.0-24 ", "nil", "nil"),
        ("256.5.3.0-24", "nil", "nil"),
        ("10.5.3.0-99999999999999999999", "nil", "nil"),
        // flanneld reads these as another key's subnet; weft refuses the alias.
        ("10.5.3.0-024", "10.5.3.0/24", "alias of 10.5.3.0/24"),
        ("x10.5.3.0-24", "10.5.3.0/24", "alias of 10.5.3.0/24"),
        ("999.10.5.3.0-24", "10.5.3.0/24", "alias of 10.5.3.0/24"),
        ("10.5.3.1-24", "10.5.3.1/24", "alias of 10.5.3.0/24"),
    ];
    for (key, flanneld, weft) in cases {
        let ours = match parse_lease_id(key) {
            Ok(subnet) => subnet.to_string(),
            Err(LeaseError::AliasKey { subnet, .. }) => format!("alias of {subnet}"),
            Err(_) => "nil".to_string(),
        };
        assert_eq!(ours, weft, "key {key:?} (flanneld: {flanneld})");
    }
}

#[test]
fn subnet_key_round_trip() {
    let subnet: Ipv4Network = "10.5.52.0/24".parse().unwrap();
    assert_eq!(subnet_key(subnet), "10.5.52.0-24");
    assert_eq!(parse_lease_id("10.5.52.0-24").unwrap(), LeaseId::Ipv4(subnet));
    assert_eq!(parse_lease_id("10.5.52.0-24&fd00::-64").unwrap(), LeaseId::Ipv4(subnet));
    for bad in ["10.5.52.0", "10.5.52.1-24", "10.5.52.0-33", "x-24", "10.5.52.0-", "10.5.52.0-+24", "10.5.52.0-24&x"] {
        assert!(parse_lease_id(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn mac_parsing() {
    assert_eq!(MacAddr([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]).to_string(), "c6:d2:32:6f:8f:44");
    for bad in ["", "c6:d2:32:6f:8f:44:00", "c6-d2-32-6f-8f-44", "c6:d2:32:6f:8f:4"] {
        assert!(bad.parse::<MacAddr>().is_err(), "accepted {bad}");
    }
    let mac = MacAddr([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
    for go_form in ["c6:d2:32:6f:8f:44", "C6-D2-32-6F-8F-44", "c6d2.326f.8f44"] {
        assert_eq!(MacAddr::parse_go(go_form), Ok(mac), "{go_form}");
    }
    for bad in ["c6d2.326f-8f44", "c6:d2:32:6f:8f:4", "c6:d2:32:6f:8f:44:", "c6:d2:32:6f:8f:44:00:01", "+6:d2:32:6f:8f:44"] {
        assert!(MacAddr::parse_go(bad).is_err(), "accepted {bad}");
    }
}

#[test]
fn picks_only_free_subnets_in_range() {
    let config = ipv4_config(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.13.0"}"#);
    let all: Vec<_> = candidate_subnets(&config).map(|s| s.to_string()).collect();
    assert_eq!(all, ["10.5.10.0/24", "10.5.11.0/24", "10.5.12.0/24", "10.5.13.0/24"]);
    let mut taken = BTreeSet::new();
    for _ in 0..4 {
        let subnet = pick_free_subnet(&config, &taken).unwrap();
        assert!(subnet_fits(&config, subnet));
        assert!(taken.insert(subnet), "picked a taken subnet {subnet}");
    }
    assert_eq!(pick_free_subnet(&config, &taken), None);
}

#[test]
fn subnet_fits_checks_size_and_range() {
    let config = ipv4_config(r#"{"Network":"10.5.0.0/16"}"#);
    assert!(subnet_fits(&config, "10.5.1.0/24".parse().unwrap()));
    assert!(!subnet_fits(&config, "10.5.0.0/24".parse().unwrap()));
    assert!(!subnet_fits(&config, "10.5.1.0/25".parse().unwrap()));
    assert!(!subnet_fits(&config, "10.6.1.0/24".parse().unwrap()));
}

fn lease_for(subnet: &str, public_ip: [u8; 4]) -> Lease {
    Lease {
        ipv6_subnet: None,
        subnet: Some(subnet.parse().unwrap()),
        attrs: LeaseAttrs::vxlan(Ipv4Addr::from(public_ip), 1, MacAddr([2, 0, 0, 0, 0, 1])),
        etcd_lease: None,
        mod_revision: 3,
        create_revision: 3,
    }
}

#[test]
fn claim_prefers_own_lease_then_previous_subnet_then_random() {
    let config = ipv4_config(r#"{"Network":"10.5.0.0/16"}"#);
    let mut me = lease_for("10.5.1.0/24", [198, 18, 0, 11]).attrs;
    set_mac(&mut me, MacAddr([2, 0, 0, 0, 0, 0x11])); // not the other leases' MAC
    let mine = lease_for("10.5.9.0/24", [198, 18, 0, 11]);
    let other = lease_for("10.5.7.0/24", [198, 18, 0, 12]);
    let occupied: BTreeSet<_> = [mine.subnet.unwrap(), other.subnet.unwrap()].into();
    let previous = Some("10.5.3.0/24".parse().unwrap());
    let leases = [other.clone(), mine.clone()];
    assert_eq!(choose_claim(&config, &me, &leases, &occupied, previous), Some(Claim::Existing(mine.clone())));
    // Another key carrying our PublicIP (stale, or copied) never takes us off our own subnet.
    let copy = lease_for("10.5.2.0/24", [198, 18, 0, 11]);
    let with_copy = [copy.clone(), other.clone(), mine.clone()];
    assert_eq!(choose_claim(&config, &me, &with_copy, &occupied, mine.subnet), Some(Claim::Existing(mine.clone())));
    assert_eq!(choose_claim(&config, &me, &with_copy, &occupied, copy.subnet), Some(Claim::Existing(copy)));
    let leases = [other.clone()];
    assert_eq!(
        choose_claim(&config, &me, &leases, &occupied, previous),
        Some(Claim::Free(LeaseId::Ipv4("10.5.3.0/24".parse().unwrap())))
    );
    let taken_previous = other.subnet;
    match choose_claim(&config, &me, &leases, &occupied, taken_previous) {
        Some(Claim::Free(LeaseId::Ipv4(s))) => assert!(!occupied.contains(&s) && subnet_fits(&config, s)),
        other => panic!("expected a free subnet, got {other:?}"),
    }
}

#[test]
fn a_free_subnet_never_overlaps_a_lease_of_another_length() {
    // SubnetLen went from 24 to 25: the /24 a host still holds covers both /25s.
    let json = r#"{"Network":"10.5.0.0/16","SubnetLen":25,"SubnetMin":"10.5.3.0","SubnetMax":"10.5.4.0"}"#;
    let config = ipv4_config(json);
    let taken: BTreeSet<Ipv4Network> = ["10.5.3.0/24".parse().unwrap()].into();
    for _ in 0..20 {
        assert_eq!(pick_free_subnet(&config, &taken), Some("10.5.4.0/25".parse().unwrap()));
    }
    let covering: BTreeSet<Ipv4Network> = ["10.5.0.0/21".parse().unwrap(), "10.5.4.0/25".parse().unwrap()].into();
    assert_eq!(pick_free_subnet(&config, &covering), None, "a wider lease covers every candidate");
    let me = lease_for("10.5.1.0/24", [198, 18, 0, 11]).attrs;
    let previous = Some("10.5.3.128/25".parse().unwrap());
    assert_eq!(
        choose_claim(&config, &me, &[], &taken, previous),
        Some(Claim::Free(LeaseId::Ipv4("10.5.4.0/25".parse().unwrap())))
    );
}

#[test]
fn claim_takes_back_an_older_value_of_our_own_lease_on_the_previous_subnet() {
    let config = ipv4_config(r#"{"Network":"10.5.0.0/16"}"#);
    let mut older = lease_for("10.5.9.0/24", [198, 18, 0, 11]);
    set_mac(&mut older.attrs, MacAddr([2, 0, 0, 0, 0, 9]));
    let mut me = lease_for("10.5.1.0/24", [198, 18, 0, 71]).attrs;
    set_mac(&mut me, mac(&older.attrs));
    let occupied: BTreeSet<_> = [older.subnet.unwrap()].into();
    let leases = [older.clone()];
    assert_eq!(choose_claim(&config, &me, &leases, &occupied, older.subnet), Some(Claim::Existing(older.clone())));
    // Another host's lease there (another MAC) is not ours to take, previous or not.
    set_mac(&mut me, MacAddr([2, 0, 0, 0, 0, 7]));
    let claim = choose_claim(&config, &me, &leases, &occupied, older.subnet);
    assert!(matches!(claim, Some(Claim::Free(s)) if Some(s) != older.subnet.map(LeaseId::Ipv4)), "{claim:?}");
}

#[test]
fn claim_ignores_own_lease_from_another_network_and_reports_exhaustion() {
    let config = ipv4_config(r#"{"Network":"10.5.0.0/28"}"#);
    let me = lease_for("10.5.1.0/24", [198, 18, 0, 11]).attrs;
    let stale = lease_for("10.9.0.0/24", [198, 18, 0, 11]);
    let occupied: BTreeSet<_> = candidate_subnets(&config).collect();
    assert_eq!(choose_claim(&config, &me, &[stale], &occupied, None), None);
}
