//! Lab helpers for dual-stack and IPv6-only tests: the lease keys under the subnets prefix as an
//! operator reads them with `etcdctl get --prefix --keys-only`, lease values in flanneld's shape
//! for keys a test writes by hand, and flannel-v6.1's neighbours, FDB entries and routes as
//! `ip -j`/`bridge -j` show them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::{Host, Lab};

/// The lease keys' prefix in the lab's etcd.
pub const SUBNETS: &str = "/coreos.com/network/subnets/";

impl Lab {
    /// Every lease key's last path element (`10.5.3.0-24&fd00:5:0:9::-64`) with its value.
    pub fn lease_keys(&self) -> BTreeMap<String, String> {
        self.etcd_get_prefix(SUBNETS).into_iter().map(|(key, value)| (key[SUBNETS.len()..].to_string(), value)).collect()
    }

    /// Deletes every key under `prefix` (`etcdctl del --prefix`).
    pub fn etcd_del_prefix(&self, prefix: &str) {
        let out = self.etcdctl(&["del", "--prefix", "--", prefix]);
        assert!(out.status.success(), "etcdctl del --prefix {prefix}: {out:?}");
    }

    /// Waits until some lease key names host `n`'s PublicIP and `ok` accepts its name; the name.
    pub fn wait_lease_key_of(&self, n: usize, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        self.wait_lease_key_with(&format!(r#""PublicIP":"{}""#, self.host(n).underlay_ip), timeout, ok)
    }
}

/// A lease value in flanneld's field order for `host`: IPv4-only, or with `PublicIPv6` and
/// `BackendV6Data` when `mac6` is given.
pub fn lease_value(host: &Host, mac: &str, mac6: Option<&str>) -> String {
    let ip = host.underlay_ip;
    match mac6 {
        None => format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        ),
        Some(mac6) => format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":"{}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}},"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#,
            host.underlay_ipv6
        ),
    }
}

/// The IPv6 VXLAN device of VNI 1.
pub const DEVICE6: &str = "flannel-v6.1";

/// What `ip -6 neigh`, `bridge fdb` and `ip -6 route` show on flannel-v6.1.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ipv6Tables {
    /// (neighbour, lladdr) of PERMANENT entries
    pub neighbours: BTreeSet<(String, String)>,
    /// (mac, dst) of `self` entries
    pub fdb: BTreeSet<(String, String)>,
    /// (subnet, gateway, onlink) of routes with a gateway
    pub routes: BTreeSet<(String, String, bool)>,
}

impl Ipv6Tables {
    /// The entries design.md §4 gives a host for these peers, each (IPv6 subnet
    /// `fd00:5:0:9::/64`, PublicIPv6, IPv6 VtepMAC): the neighbour `<network address> → MAC`,
    /// the FDB entry `MAC → PublicIPv6`, and the route `<subnet> via <network address> onlink`.
    pub fn of_peers<'a>(peers: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Ipv6Tables {
        let mut tables = Ipv6Tables::default();
        for (subnet, public_ipv6, mac) in peers {
            let vtep = subnet.split('/').next().unwrap_or_default().to_string();
            tables.neighbours.insert((vtep.clone(), mac.to_string()));
            tables.fdb.insert((mac.to_string(), public_ipv6.to_string()));
            tables.routes.insert((subnet.to_string(), vtep, true));
        }
        tables
    }
}

impl Host {
    /// flannel-v6.1's permanent neighbours, its `self permanent` FDB entries and its routes.
    pub fn ipv6_tables(&self) -> Ipv6Tables {
        let mut tables = Ipv6Tables::default();
        for n in list(self.ip_json(&["-6", "neigh", "show", "dev", DEVICE6])).iter().filter(|n| has(n, "state", "PERMANENT")) {
            tables.neighbours.insert((text(n, "dst"), text(n, "lladdr")));
        }
        for f in list(self.bridge_json(&["fdb", "show", "dev", DEVICE6])).iter().filter(|f| has(f, "flags", "self")) {
            assert!(has(f, "state", "permanent"), "FDB entries weftd writes are permanent: {f}");
            tables.fdb.insert((text(f, "mac"), text(f, "dst")));
        }
        for r in list(self.ip_json(&["-6", "route", "show", "dev", DEVICE6])).iter().filter(|r| !text(r, "gateway").is_empty()) {
            tables.routes.insert((text(r, "dst"), text(r, "gateway"), has(r, "flags", "onlink")));
        }
        tables
    }

    /// `dev`'s global IPv6 addresses with their prefix lengths (`ip -6 addr show scope global`).
    pub fn global_ipv6_addresses(&self, dev: &str) -> Vec<(String, u64)> {
        let addresses = self.ip_json(&["-6", "addr", "show", "dev", dev, "scope", "global"]);
        list(addresses[0]["addr_info"].clone())
            .iter()
            .filter(|a| a.get("local").is_some()) // this ip prints lifetimes as entries of their own
            .map(|a| (text(a, "local"), a["prefixlen"].as_u64().unwrap_or_default()))
            .collect()
    }
}

/// A string field of an `ip -j` entry, or "".
pub fn text(entry: &Value, key: &str) -> String {
    entry[key].as_str().unwrap_or_default().to_string()
}

/// Whether an `ip -j` entry's `key` (a list of flags or one string) holds `flag`, any case.
pub fn has(entry: &Value, key: &str, flag: &str) -> bool {
    match &entry[key] {
        Value::Array(flags) => flags.iter().any(|f| f.as_str().is_some_and(|f| f.eq_ignore_ascii_case(flag))),
        Value::String(s) => s.eq_ignore_ascii_case(flag),
        _ => false,
    }
}

/// An `ip -j` listing's entries (none when it is no list).
pub fn list(value: Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}
