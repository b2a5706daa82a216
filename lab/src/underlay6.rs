//! The IPv6 side of a lab host's underlay: extra IPv6 addresses with the flags the underlay
//! choice ranks by, and the host's own dual-stack lease as `etcdctl get` shows it; and running
//! one underlay case per host at once.

use std::fmt::Debug;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

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

/// One way of naming the underlay (flags and `FLANNELD_*` variables) and what the test must then
/// observe on the host that runs it.
pub struct UnderlayCase<T> {
    pub what: &'static str,
    pub flags: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    pub expected: T,
}

impl Lab {
    /// Runs case i on host i+1 (a weftd that picks the underlay itself), then polls every 200 ms
    /// until `observe` gives something on every host or `timeout` has passed (a weftd that failed
    /// never gives anything), so one run reports every case. Returns the cases whose
    /// observation differs from what they expect, each with its host's log tail.
    pub fn run_underlay_cases<T: PartialEq + Debug>(
        &self,
        cases: &[UnderlayCase<T>],
        timeout: Duration,
        mut observe: impl FnMut(usize) -> Option<T>,
    ) -> Vec<String> {
        let _daemons: Vec<_> = (cases.iter().enumerate())
            .map(|(i, c)| {
                let flags: Vec<&str> = c.flags.iter().map(String::as_str).collect();
                let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.start_weftd_picking_iface(i + 1, &flags, &env)
            })
            .collect();
        let deadline = Instant::now() + timeout;
        let seen = loop {
            let seen: Vec<_> = (1..=cases.len()).map(&mut observe).collect();
            if seen.iter().all(Option::is_some) || Instant::now() > deadline {
                break seen;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        (cases.iter().zip(&seen).enumerate())
            .filter(|(_, (c, seen))| seen.as_ref() != Some(&c.expected))
            .map(|(i, (c, seen))| {
                let log = self.log_tail(&format!("weftd-h{}.log", i + 1), 3);
                format!("host {}: {}: want {:?}, saw {seen:?}\n{log}", i + 1, c.what, c.expected)
            })
            .collect()
    }
}
