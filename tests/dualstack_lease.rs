//! Dual-stack leases with real weftd and etcd: the key and value flanneld writes for a
//! dual-stack host, and subnet.env's IPv6 lines, checked byte for byte as an operator reads them
//! with `etcdctl get` and `cat`.

use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const CONVERGE: Duration = Duration::from_secs(20);

#[test]
fn a_dual_stack_host_writes_flannels_key_value_and_subnet_env() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let _daemon = lab.start_weftd(n, &[]);
    let env = lab.wait_subnet_env(n, CONVERGE);
    let (v4, v6) = (env["FLANNEL_SUBNET"].clone(), env["FLANNEL_IPV6_SUBNET"].clone());
    let text = std::fs::read_to_string(&lab.host(n).subnet_file).unwrap();
    let order: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        order,
        ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"],
        "{text}"
    );
    assert_eq!(env["FLANNEL_IPV6_NETWORK"], "fd00:5::/48");
    assert!(v6.starts_with("fd00:5:") && v6.ends_with("::1/64"), "{v6}");

    let leases = lab.etcd_get_prefix(SUBNETS);
    assert_eq!(leases.len(), 1, "{leases:?}");
    let (key, value) = &leases[0];
    let v4_key = v4.replace(".1/", ".0-");
    let v6_key = v6.replace("::1/", "::-");
    assert_eq!(key, &format!("{SUBNETS}{v4_key}&{v6_key}"));
    let attrs: Value = serde_json::from_str(value).unwrap();
    let (mac, mac6) = (attrs["BackendData"]["VtepMAC"].as_str().unwrap(), attrs["BackendV6Data"]["VtepMAC"].as_str().unwrap());
    assert_ne!(mac, mac6, "the IPv6 device is a device of its own");
    let host = lab.host(n);
    // flanneld's field order and spelling (design.md §4), byte for byte.
    let flannel = format!(
        r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#,
        host.underlay_ip, host.underlay_ipv6
    );
    assert_eq!(value, &flannel);
}
