//! Lab helpers for leases that move between keys as a family is turned on or off: a host's
//! key found by its PublicIP or PublicIPv6 (an IPv6-only lease's PublicIP is 0.0.0.0), whether
//! the old key went in the transaction that created the new one (etcd's history), the
//! subnet.env an IPv6-only host must have, and `weftd status` run as an operator runs it.

use std::net::Ipv6Addr;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::dualstack::SUBNETS;
use crate::{poll, weftd_bin, Lab};

impl Lab {
    /// Waits until some lease key's value contains `needle` and `ok` accepts the key's name; the
    /// name (`10.5.3.0-24&fd00:5:0:9::-64`).
    pub fn wait_lease_key_with(&self, needle: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        poll(&format!("a lease key with {needle} as wanted"), timeout, || {
            self.lease_keys().into_iter().find(|(key, value)| value.contains(needle) && ok(key)).map(|(key, _)| key)
        })
    }

    /// Waits until some lease key names host `n`'s PublicIPv6 and `ok` accepts its name; the name.
    pub fn wait_lease_key_of_ipv6(&self, n: usize, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        self.wait_lease_key_with(&format!(r#""PublicIPv6":"{}""#, self.host(n).underlay_ipv6), timeout, ok)
    }

    /// The revision etcd created `key` (a full key) at.
    pub fn create_revision(&self, key: &str) -> i64 {
        let out = self.etcdctl(&["get", "-w", "json", "--", key]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["kvs"][0]["create_revision"].as_i64().unwrap_or_else(|| panic!("{key}: {doc}"))
    }

    /// Whether `key` (a full key) existed at `revision` (`etcdctl get --rev`).
    pub fn existed_at(&self, key: &str, revision: i64) -> bool {
        let out = self.etcdctl(&["get", "-w", "json", &format!("--rev={revision}"), "--", key]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["kvs"].as_array().is_some_and(|kvs| !kvs.is_empty())
    }

    /// Panics unless the lease key `old` (its last element) was deleted in the very transaction
    /// that created `new`: it existed one revision before `new` was created, and not after.
    pub fn assert_moved_in_one_transaction(&self, old: &str, new: &str) {
        let revision = self.create_revision(&format!("{SUBNETS}{new}"));
        let old = format!("{SUBNETS}{old}");
        assert!(
            self.existed_at(&old, revision - 1) && !self.existed_at(&old, revision),
            "{old} deleted in the transaction that created {new} (revision {revision})"
        );
    }

    /// `weftd status --iface eth0 <extra>` in host N's namespace against the lab's etcd, the
    /// flags weftd runs with.
    pub fn weftd_status(&self, n: usize, extra: &[&str]) -> Output {
        self.weftd_status_via(n, &self.etcd_endpoint(), extra)
    }

    /// [`Lab::weftd_status`] against `endpoint`.
    pub fn weftd_status_via(&self, n: usize, endpoint: &str, extra: &[&str]) -> Output {
        let bin = weftd_bin();
        let mut args = vec![bin.to_str().unwrap(), "status", "--etcd-endpoints", endpoint, "--iface", "eth0"];
        args.extend_from_slice(extra);
        self.host(n).exec(&args)
    }

    /// `weftd status --json` in host N: its exit code and report.
    pub fn weftd_status_json(&self, n: usize) -> (i32, Value) {
        let out = self.weftd_status(n, &["--json"]);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {out:?}"));
        (out.status.code().unwrap(), json)
    }
}

/// What subnet.env must hold on an IPv6-only host of the lab's network (`fd00:5::/48`) whose
/// lease is `subnet` (`fd00:5:0:9::/64`) at `mtu`: flanneld's lines for the IPv6 family alone,
/// in its order.
pub fn ipv6_only_subnet_env(subnet: &str, mtu: u64) -> String {
    let (network, len) = subnet.split_once('/').unwrap();
    let bridge = Ipv6Addr::from(u128::from(network.parse::<Ipv6Addr>().unwrap()) + 1);
    format!("FLANNEL_IPV6_NETWORK=fd00:5::/48\nFLANNEL_IPV6_SUBNET={bridge}/{len}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\n")
}
