//! Lab helpers for drift tests: things the overlay depends on vanishing or changing under weftd.

use crate::netns::ip;
use crate::{poll, Host, Lab};
use std::time::Duration;

impl Lab {
    /// Plugs host N's `eth0` back into the underlay with its address after a test deleted it
    /// (`ip link del eth0`), as a NIC that returns; waits until it forwards.
    pub fn replug_underlay(&self, n: usize) {
        let host = self.host(n);
        self.wire_to_underlay(&host.ns, &format!("h{n}"), host.underlay_ip);
    }

    /// Plugs host N's `eth0` back into the underlay with `addr`/24, not its original address.
    pub fn replug_underlay_at(&self, n: usize, addr: std::net::Ipv4Addr) {
        let host = self.host(n);
        self.wire_to_underlay(&host.ns, &format!("h{n}"), addr);
    }

    /// Runs `ip <args>` in etcd member 0's namespace (its NIC is `eth0`).
    pub fn etcd_ns_ip(&self, args: &[&str]) {
        ip(&format!("{}e0", self.id()), args);
    }
}

impl Host {
    /// `ip -d -j link show flannel.1`: the device's details, once it exists.
    pub fn wait_vxlan(&self, what: &str, timeout: Duration, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        poll(&format!("{what} on {}", self.ns), timeout, || {
            let link = self.try_ip_json(&["-d", "link", "show", "flannel.1"]).ok()?;
            let link = link.get(0)?.clone();
            ok(&link).then_some(link)
        })
    }

    /// `ip link del eth0`: the kernel also removes the VXLAN devices on it.
    pub fn unplug_underlay(&self) {
        ip(&self.ns, &["link", "del", "eth0"]);
    }
}
