//! Lab helpers for dual-stack lease tests: the lease keys under the subnets prefix as an
//! operator reads them with `etcdctl get --prefix --keys-only`, and lease values in flanneld's
//! shape for keys a test writes by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{poll, Host, Lab};

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
        let ip = format!(r#""PublicIP":"{}""#, self.host(n).underlay_ip);
        poll(&format!("a lease key of host {n} as wanted"), timeout, || {
            self.lease_keys().into_iter().find(|(key, value)| value.contains(&ip) && ok(key)).map(|(key, _)| key)
        })
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
