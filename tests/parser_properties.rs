//! Property tests for everything weftd parses from etcd: the network config, lease keys and
//! lease values. Whatever another host or an operator writes, parsing returns Ok or a clear
//! Err — it never panics — and what weftd writes reads back unchanged.
//! Bounded: each property runs a fixed number of cases (PROPTEST_CASES raises it for a soak).

use std::net::Ipv4Addr;

use proptest::prelude::*;
use weft::config::NetworkConfig;
use weft::lease::{self, LeaseAttrs, LeaseId, MacAddr};

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// JSON values shaped like configs and leases, with the real field names mixed in so the
/// generator reaches deep into the parsers, not just "not JSON".
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let fields: Vec<&str> =
        "Network SubnetLen SubnetMin SubnetMax Backend Type VNI Port MTU GBP DirectRouting PublicIP BackendData VtepMAC"
            .split(' ')
            .collect();
    // Mostly real names, as before: one key in seven is random.
    let key = prop_oneof![6 => prop::sample::select(fields).prop_map(String::from), 1 => "[a-zA-Z]{1,8}"];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "(10|192|255|0)\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?".prop_map(serde_json::Value::from),
        "([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}".prop_map(serde_json::Value::from),
        "vxlan|udp|host-gw|.{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn config_parser_never_panics_on_any_text(text in ".{0,200}") {
        let _ = NetworkConfig::parse(&text);
    }

    #[test]
    fn config_parser_never_panics_on_config_shaped_json(value in json_value()) {
        if let Some(config) = NetworkConfig::parse(&value.to_string()).ok().and_then(|config| config.ipv4) {
            // Whatever it accepts is usable: a non-empty range of whole subnets inside the Network.
            prop_assert!(config.subnet_min <= config.subnet_max);
            prop_assert!(config.network.contains(config.subnet_min) && config.network.contains(config.subnet_max));
            prop_assert!(lease::candidate_subnets(&config).next().is_some());
            let picked = lease::pick_free_subnet(&config, &Default::default()).expect("a free subnet");
            prop_assert!(lease::subnet_fits(&config, picked));
        }
    }

    #[test]
    fn picking_is_cheap_in_huge_networks(prefix in 1u8..=8, len in 24u8..=30) {
        let config = NetworkConfig::parse(&format!(r#"{{"Network":"0.0.0.0/{prefix}","SubnetLen":{len}}}"#)).unwrap().ipv4.unwrap();
        let picked = lease::pick_free_subnet(&config, &Default::default()).unwrap();
        prop_assert!(lease::subnet_fits(&config, picked));
    }

    #[test]
    fn lease_parsers_never_panic(value in json_value(), key in ".{0,40}") {
        let _ = LeaseAttrs::from_json(&value.to_string());
        let _ = lease::parse_lease_key(&key);
    }

    #[test]
    fn what_weftd_writes_reads_back(ip in any::<u32>(), vni in 0u32..(1 << 24), mac in any::<[u8; 6]>(), len in 8u8..=30) {
        // A VTEP's MAC is unicast and not all zero; lease values carry 16-bit VNIs, as flanneld's do.
        let mac = [mac[0] & 0xfe, mac[1], mac[2], mac[3], mac[4], mac[5] | 1];
        let attrs = LeaseAttrs::vxlan(Ipv4Addr::from(ip), vni, MacAddr(mac));
        prop_assert_eq!(attrs.backend_data.as_ref().map(|data| data.vni), Some(vni & 0xffff));
        prop_assert_eq!(LeaseAttrs::from_json(&attrs.to_json()).unwrap(), attrs);
        let subnet = ipnetwork::Ipv4Network::new(Ipv4Addr::from(ip), len).unwrap();
        let subnet = ipnetwork::Ipv4Network::new(subnet.network(), len).unwrap();
        prop_assert_eq!(lease::parse_lease_id(&lease::subnet_key(subnet)).unwrap(), LeaseId::Ipv4(subnet));
    }

    #[test]
    fn what_an_ipv6_only_weftd_writes_reads_back(ip in any::<u128>(), vni in 0u32..(1 << 24), mac in any::<[u8; 6]>(), len in 8u8..=126) {
        let mac = [mac[0] & 0xfe, mac[1], mac[2], mac[3], mac[4], mac[5] | 1];
        let public_ipv6 = std::net::Ipv6Addr::from(ip | 1 << 127); // not IPv4-mapped
        let attrs = LeaseAttrs::vxlan_ipv6_only(public_ipv6, vni, MacAddr(mac));
        prop_assert_eq!(LeaseAttrs::from_json(&attrs.to_json()).unwrap(), attrs);
        let subnet = ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::from(ip), len).unwrap();
        let subnet = ipnetwork::Ipv6Network::new(subnet.network(), len).unwrap();
        let key = lease::lease_key(LeaseId::Ipv6(subnet), Some(subnet));
        prop_assert_eq!(lease::parse_lease_key(&key).unwrap(), (None, Some(subnet)));
    }
}
