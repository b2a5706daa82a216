//! The IPv6 side of a lab host's underlay: extra IPv6 addresses with the flags the underlay
//! choice ranks by, and the host's own dual-stack lease as `etcdctl get` shows it.

use std::net::Ipv6Addr;

use serde_json::Value;

use crate::{Host, Lab};

/// Where flanneld's leases live under the default prefix.
const SUBNETS: &str = "/coreos.com/network/subnets/";

impl Host {
    /// `ip -6 addr add <cidr> dev <dev> nodad <extra...>` (`extra` such as `preferred_lft 0`
    /// for a deprecated address, `valid_lft 3600 preferred_lft 3600` for a dynamic one).
    /// Without duplicate address detection, so it is usable at once, as on a real NIC after boot.
    pub fn add_ipv6(&self, dev: &str, cidr: &str, extra: &[&str]) {
        self.exec_ok(&[&["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"], extra].concat());
    }

    /// `ip -6 addr del <cidr> dev <dev>`.
    pub fn del_ipv6(&self, dev: &str, cidr: &str) {
        self.exec_ok(&["ip", "-6", "addr", "del", cidr, "dev", dev]);
    }
}

impl Lab {
    /// Host N's own lease value, parsed, found by the key its subnet.env names
    /// (`<FLANNEL_SUBNET network>-<len>&<FLANNEL_IPV6_SUBNET network>-<len>`); `None` until
    /// weftd has written a dual-stack subnet.env and the key holds a JSON value.
    pub fn own_dual_stack_lease(&self, n: usize) -> Option<Value> {
        let env = self.host(n).subnet_env()?;
        let (v4, v4_len) = env.get("FLANNEL_SUBNET")?.split_once('/')?;
        let (v6, v6_len) = env.get("FLANNEL_IPV6_SUBNET")?.split_once('/')?;
        let v4: std::net::Ipv4Addr = v4.parse().ok()?;
        let v6: Ipv6Addr = v6.parse().ok()?;
        // subnet.env holds each network's address + 1 (the bridge's); the key its network address.
        let (v4, v6) = (std::net::Ipv4Addr::from(u32::from(v4) - 1), Ipv6Addr::from(u128::from(v6) - 1));
        let key = format!("{SUBNETS}{v4}-{v4_len}&{v6}-{v6_len}");
        serde_json::from_str(&self.etcd_get(&key)?).ok()
    }
}
