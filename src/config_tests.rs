//! The network config's rules, each field's defaults and errors, against flannel's.

use super::*;

fn parse(text: &str) -> NetworkConfig {
    NetworkConfig::parse(text).unwrap()
}

/// The IPv4 side of a config that has one.
fn v4(config: &NetworkConfig) -> Ipv4Config {
    config.ipv4.expect("an IPv4 config")
}

fn error(text: &str) -> String {
    NetworkConfig::parse(text).unwrap_err().to_string()
}

#[test]
fn defaults_for_a_slash_16() {
    let cfg = parse(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    assert_eq!(v4(&cfg).network.to_string(), "10.5.0.0/16");
    assert_eq!(v4(&cfg).subnet_len, 24);
    assert_eq!(v4(&cfg).subnet_min, Ipv4Addr::new(10, 5, 1, 0));
    assert_eq!(v4(&cfg).subnet_max, Ipv4Addr::new(10, 5, 255, 0));
    assert_eq!(cfg.backend, VxlanConfig { vni: 1, port: 8472, mtu: None, gbp: false, learning: false, direct_routing: false });
}

#[test]
fn ipv6_defaults_follow_flannel() {
    assert_eq!(parse(r#"{"Network":"10.5.0.0/16"}"#).ipv6, None);
    assert_eq!(parse(r#"{"Network":"10.5.0.0/16","enableipv6":false,"IPv6Network":"fd00::/56"}"#).ipv6, None);
    let v6 = parse(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5:0:3::/48"}"#).ipv6.unwrap();
    assert_eq!(v6.network.to_string(), "fd00:5::/48");
    assert_eq!(v6.subnet_len, 64);
    assert_eq!((v6.subnet_min.to_string(), v6.subnet_max.to_string()), ("fd00:5:0:1::".into(), "fd00:5:0:ffff::".into()));
    let small = parse(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/120"}"#).ipv6.unwrap();
    assert_eq!(
        (small.subnet_len, small.subnet_min.to_string(), small.subnet_max.to_string()),
        (122, "fd00::40".into(), "fd00::c0".into())
    );
    let set = parse(
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":80,
        "IPv6SubnetMin":"fd00:0:0:0:1::","IPv6SubnetMax":"fd00:0:0:0:2::"}"#,
    )
    .ipv6
    .unwrap();
    assert_eq!(
        (set.subnet_len, set.subnet_min.to_string(), set.subnet_max.to_string()),
        (80, "fd00::1:0:0:0".into(), "fd00::2:0:0:0".into())
    );
    assert!(parse(r#"{"Network":"10.5.0.0/16","EnableIPv4":true}"#).ipv6.is_none());
}

/// flannel's IPv6-only config: no IPv4 side at all, so "Network" and its fields are not read
/// (a stale or invalid one is ignored, as flanneld ignores it).
#[test]
fn an_ipv6_only_config_has_no_ipv4_side() {
    let only = parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#);
    assert!(only.is_ipv6_only());
    assert_eq!(only.ipv4, None);
    assert_eq!(only.ipv6.map(|v6| (v6.network.to_string(), v6.subnet_len)), Some(("fd00:5::/48".into(), 64)));
    let stale = parse(r#"{"EnableIPv4":false,"Network":"bogus","SubnetLen":99,"EnableIPv6":true,"IPv6Network":"fd00::/48"}"#);
    assert_eq!(stale.ipv4, None);
    assert!(error(r#"{"EnableIPv4":false,"EnableIPv6":true}"#).contains("\"IPv6Network\" is required"));
    assert!(!parse(r#"{"Network":"10.5.0.0/16"}"#).is_ipv6_only());
}

#[test]
fn every_ipv6_error_names_its_field_and_rule() {
    let cases = [
        (r#""EnableIPv6":"yes""#, "\"EnableIPv6\" must be true or false"),
        (r#""EnableIPv6":true"#, "\"IPv6Network\" is required"),
        (r#""EnableIPv6":true,"IPv6Network":"10.6.0.0/16""#, "\"IPv6Network\" must be an IPv6 CIDR"),
        (r#""EnableIPv6":true,"IPv6Network":"fd00::""#, "\"IPv6Network\" must be an IPv6 CIDR"),
        (r#""EnableIPv6":true,"IPv6Network":"fd00::/125""#, "\"IPv6Network\" is too small"),
        (r#""EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":127"#, "\"IPv6SubnetLen\" must be at most 126"),
        (r#""EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetLen":49"#, "\"IPv6SubnetLen\" must be at least /50"),
        (
            r#""EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd01::""#,
            "\"IPv6SubnetMin\" must be inside the IPv6Network",
        ),
        (
            r#""EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMax":"fd00::1""#,
            "\"IPv6SubnetMax\" must be aligned to a /64",
        ),
        (r#""EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"x""#, "\"IPv6SubnetMin\" must be an IPv6 address"),
        (
            r#""EnableIPv6":true,"IPv6Network":"fd00::/48","IPv6SubnetMin":"fd00:0:0:9::","IPv6SubnetMax":"fd00:0:0:2::""#,
            "\"IPv6SubnetMin\" must not be above IPv6SubnetMax",
        ),
        (r#""EnableIPv4":false"#, "\"EnableIPv4\" and \"EnableIPv6\" are both false"),
        (r#""EnableIPv4":0"#, "\"EnableIPv4\" must be true or false"),
    ];
    for (fields, expected) in cases {
        let text = format!(r#"{{"Network":"10.5.0.0/16",{fields}}}"#);
        let message = error(&text);
        assert!(message.contains(expected), "{text}: got {message:?}, want {expected:?}");
    }
}

#[test]
fn small_networks_get_quarter_subnets() {
    assert_eq!(v4(&parse(r#"{"Network":"10.5.0.0/22"}"#)).subnet_len, 24);
    assert_eq!(v4(&parse(r#"{"Network":"10.5.0.0/23"}"#)).subnet_len, 25);
    let cfg = parse(r#"{"Network":"10.5.0.0/28"}"#);
    assert_eq!(
        (v4(&cfg).subnet_len, v4(&cfg).subnet_min, v4(&cfg).subnet_max),
        (30, Ipv4Addr::new(10, 5, 0, 4), Ipv4Addr::new(10, 5, 0, 12))
    );
}

#[test]
fn keys_are_case_insensitive_and_unknown_keys_ignored() {
    let cfg = parse(
        r#"{"network":"10.6.0.0/16","SUBNETLEN":26,"extra":1,
            "backend":{"type":"VXLAN","vni":7,"port":4789,"mtu":1400,"GBP":true,"directrouting":true}}"#,
    );
    assert_eq!(v4(&cfg).subnet_len, 26);
    assert_eq!(cfg.backend.vni, 7);
    assert_eq!(cfg.backend.port, 4789);
    assert_eq!(cfg.backend.mtu, Some(1400));
    assert!(cfg.backend.gbp && cfg.backend.direct_routing && !cfg.backend.learning);
}

#[test]
fn explicit_subnet_range_and_canonical_network() {
    let cfg = parse(r#"{"Network":"10.5.3.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.20.0"}"#);
    assert_eq!(v4(&cfg).network.to_string(), "10.5.0.0/16");
    assert_eq!((v4(&cfg).subnet_min, v4(&cfg).subnet_max), (Ipv4Addr::new(10, 5, 10, 0), Ipv4Addr::new(10, 5, 20, 0)));
}

#[test]
fn every_validation_error_names_its_field() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ("{}", "\"Network\" is required"),
        (r#"{"Network":"10.5.0.0"}"#, "\"Network\" must be an IPv4 CIDR"),
        (r#"{"Network":"banana/16"}"#, "\"Network\" must be an IPv4 CIDR"),
        (r#"{"Network":16}"#, "\"Network\" must be a CIDR string"),
        (r#"{"Network":"10.5.0.0/29"}"#, "\"Network\" is too small"),
        (r#"{"Network":"10.5.0.0/16","SubnetLen":31}"#, "\"SubnetLen\" must be at most 30"),
        (r#"{"Network":"10.5.0.0/16","SubnetLen":17}"#, "\"SubnetLen\" must be at least /18"),
        (r#"{"Network":"10.5.0.0/16","SubnetLen":"24"}"#, "\"SubnetLen\" must be a non-negative integer"),
        (r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#, "\"SubnetMin\" must be inside the Network"),
        (r#"{"Network":"10.5.0.0/16","SubnetMax":"x"}"#, "\"SubnetMax\" must be an IPv4 address"),
        (r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.5"}"#, "\"SubnetMin\" must be aligned to a /24"),
        (
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.2.0"}"#,
            "\"SubnetMin\" must not be above SubnetMax",
        ),
        (r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#, "Backend.Type \"host-gw\" is not supported"),
        (r#"{"Network":"10.5.0.0/16","Backend":"vxlan"}"#, "\"Backend\" must be an object"),
        (r#"{"Network":"10.5.0.0/16","Backend":{"VNI":16777216}}"#, "\"Backend.VNI\" must be below"),
        (r#"{"Network":"10.5.0.0/16","Backend":{"Port":70000}}"#, "\"Backend.Port\" must be a UDP port"),
        (r#"{"Network":"10.5.0.0/16","Backend":{"MTU":20}}"#, "\"Backend.MTU\" must be between"),
        (r#"{"Network":"10.5.0.0/16","Backend":{"GBP":"yes"}}"#, "\"Backend.GBP\" must be true or false"),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(message.contains(expected), "{text}: got {message:?}, want {expected:?}");
    }
}
