//! Hosts and containers: a host is a namespace on the underlay where weftd runs; a container is
//! a namespace behind bridge `cbr0` in its host, addressed from the host's subnet.env.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crate::netns::{ip, netns_exec, tool_json, wait_wire_ready};
use crate::ping::ping_from;
use crate::process::{output, poll, run};
use crate::{Lab, UNDERLAY_NET};

/// Underlay address of host N: .(HOST_IP_BASE + N).
const HOST_IP_BASE: u8 = 10;
const MAX_HOSTS: usize = 200;

impl Lab {
    // ----- hosts -----

    /// Adds host N (returned, 1-based): namespace `<id>hN`, `eth0` at 198.18.0.(10+N)/24 and
    /// fd18::(10+N)/64 on the underlay, IPv4 and IPv6 forwarding on, and a directory for its
    /// subnet file.
    pub fn add_host(&mut self) -> usize {
        let n = self.hosts.len() + 1;
        assert!(n <= MAX_HOSTS, "a lab holds at most {MAX_HOSTS} hosts");
        let ns = format!("{}h{n}", self.id);
        let [a, b, c] = UNDERLAY_NET;
        let underlay_ip = Ipv4Addr::new(a, b, c, HOST_IP_BASE + n as u8);
        self.add_netns(&ns);
        self.wire_to_underlay(&ns, &format!("h{n}"), underlay_ip);
        let underlay_ipv6 = Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, u16::from(HOST_IP_BASE) + n as u16);
        // nodad: usable at once, as a static address on a real NIC is after boot.
        ip(&ns, &["-6", "addr", "add", &format!("{underlay_ipv6}/64"), "dev", "eth0", "nodad"]);
        run(&mut netns_exec(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        run(&mut netns_exec(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]));

        let host_dir = self.dir.join(format!("h{n}"));
        fs::create_dir(&host_dir).expect("create host dir");
        let subnet_file = host_dir.join("subnet.env");
        self.hosts.push(Host { n, ns, underlay_ip, underlay_ipv6, subnet_file });
        n
    }

    /// Host N (1-based); panics if it was not added.
    pub fn host(&self, n: usize) -> &Host {
        n.checked_sub(1)
            .and_then(|i| self.hosts.get(i))
            .unwrap_or_else(|| panic!("lab has no host {n} ({} hosts)", self.hosts.len()))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host N's subnet.env once weftd has written it (it writes the file whole, through a
    /// rename); panics after `timeout`.
    pub fn wait_subnet_env(&self, n: usize, timeout: Duration) -> BTreeMap<String, String> {
        self.wait_subnet_env_with(n, "FLANNEL_SUBNET", timeout)
    }

    /// Host N's subnet.env once it has `subnet_key` (FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET)
    /// and FLANNEL_MTU; panics after `timeout`.
    pub(crate) fn wait_subnet_env_with(&self, n: usize, subnet_key: &str, timeout: Duration) -> BTreeMap<String, String> {
        poll(&format!("host {n}'s subnet.env with {subnet_key}"), timeout, || {
            self.host(n).subnet_env().filter(|env| env.contains_key(subnet_key) && env.contains_key("FLANNEL_MTU"))
        })
    }

    // ----- containers -----

    /// Gives host N a "container": namespace `<id>cN` whose `eth0` is on bridge `cbr0` in the
    /// host, configured from the host's subnet.env (bridge gets FLANNEL_SUBNET, both ends get
    /// FLANNEL_MTU, the container the .2 address and a default route via the bridge).
    /// With FLANNEL_IPV6_SUBNET (dual-stack), the same for IPv6: the bridge gets that address, the
    /// container its ::2 and a default route via the bridge. Returns the container's IPv4
    /// address. Panics if subnet.env is missing or incomplete.
    pub fn attach_container(&mut self, n: usize) -> Ipv4Addr {
        let (host, env) = self.container_host_env(n);
        let field = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("subnet.env lacks {k}: {env:?}"));
        let subnet = field("FLANNEL_SUBNET");
        let (gateway, prefix) = parse_cidr(&subnet);
        let addr = nth_address(gateway, prefix, 2);

        let ns = self.wire_container(&host, &field("FLANNEL_MTU"));
        ip(&host.ns, &["addr", "add", &subnet, "dev", "cbr0"]);
        ip(&ns, &["addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0"]);
        ip(&ns, &["route", "add", "default", "via", &gateway.to_string()]);
        let ipv6 = env.get("FLANNEL_IPV6_SUBNET").map(|subnet| attach_ipv6(&host.ns, &ns, subnet));

        self.containers.insert(n, Container { n, ns, ip: addr, gateway, ipv6 });
        addr
    }

    /// Host N (which has no container yet) and its subnet.env; panics if there is none.
    pub(crate) fn container_host_env(&self, n: usize) -> (Host, BTreeMap<String, String>) {
        assert!(!self.containers.contains_key(&n), "host {n} already has a container");
        let host = self.host(n).clone();
        let env = host.subnet_env().unwrap_or_else(|| panic!("host {n} has no subnet file at {}", host.subnet_file.display()));
        (host, env)
    }

    /// Namespace `<id>cN` with its `eth0` on bridge `cbr0` in `host` (created here), both ends
    /// and the bridge at `mtu` and up, and neither end addressed yet; the namespace's name.
    pub(crate) fn wire_container(&mut self, host: &Host, mtu: &str) -> String {
        let n = host.n;
        let ns = format!("{}c{n}", self.id);
        self.add_netns(&ns);
        let port = format!("vethc{n}");
        ip(&host.ns, &["link", "add", "cbr0", "type", "bridge"]);
        ip(&host.ns, &["link", "set", "cbr0", "mtu", mtu, "up"]);
        ip(&host.ns, &["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&host.ns, &["link", "set", &port, "mtu", mtu, "master", "cbr0", "up"]);
        ip(&ns, &["link", "set", "eth0", "mtu", mtu, "up"]);
        wait_wire_ready(&host.ns, &port, &ns, "eth0");
        ns
    }

    /// The container attached to host N; panics if there is none.
    pub fn container(&self, n: usize) -> &Container {
        self.containers.get(&n).unwrap_or_else(|| panic!("host {n} has no container"))
    }

    /// One ping (1 s timeout) from host N's container to `dst`.
    pub fn container_ping(&self, n: usize, dst: impl Into<std::net::IpAddr>) -> bool {
        self.container(n).ping(dst)
    }
}

/// A host: a network namespace on the underlay.
#[derive(Clone, Debug)]
pub struct Host {
    pub n: usize,
    pub ns: String,
    pub underlay_ip: Ipv4Addr,
    /// The host's IPv6 underlay address, `fd18::(10+N)`.
    pub underlay_ipv6: Ipv6Addr,
    /// Where weftd is told to write subnet.env (the file may not exist yet).
    pub subnet_file: PathBuf,
}

impl Host {
    /// Runs `args` inside the host namespace (`ip netns exec`); output is not checked.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(&mut netns_exec(&self.ns, args))
    }

    /// `ip -j <args>` inside the host, parsed; panics if the command fails.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        self.try_ip_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `ip_json` but returns the error (e.g. "Device does not exist") for polling.
    pub fn try_ip_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        tool_json("ip", &self.ns, args)
    }

    /// `bridge -j <args>` inside the host, parsed; panics if the command fails.
    pub fn bridge_json(&self, args: &[&str]) -> serde_json::Value {
        tool_json("bridge", &self.ns, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The subnet file's KEY=VALUE lines, or None while it does not exist.
    pub fn subnet_env(&self) -> Option<BTreeMap<String, String>> {
        let text = fs::read_to_string(&self.subnet_file).ok()?;
        Some(weft::subnet_env::parse_env(&text))
    }

    /// Runs `args` inside the host namespace and panics with its output if it fails.
    pub fn exec_ok(&self, args: &[&str]) {
        let out = self.exec(args);
        assert!(out.status.success(), "{args:?} in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
    }

    /// One ping (1 s timeout) from the host namespace.
    pub fn ping(&self, dst: impl Into<std::net::IpAddr>) -> bool {
        ping_from(&self.ns, dst)
    }
}

/// A "container": a namespace behind bridge `cbr0` in its host.
#[derive(Clone, Debug)]
pub struct Container {
    pub n: usize,
    pub ns: String,
    /// The container's IPv4 address; `0.0.0.0` on an IPv6-only host (see `ipv6_only`).
    pub ip: Ipv4Addr,
    /// The bridge address (the first address of the host's subnet); `0.0.0.0` on an IPv6-only host.
    pub gateway: Ipv4Addr,
    /// The container's IPv6 address (`::2` of the host's IPv6 subnet) when the host is dual-stack
    /// or IPv6-only.
    pub ipv6: Option<Ipv6Addr>,
}

impl Container {
    /// Runs `args` inside the container namespace; output is not checked.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(&mut netns_exec(&self.ns, args))
    }

    pub fn ping(&self, dst: impl Into<std::net::IpAddr>) -> bool {
        ping_from(&self.ns, dst)
    }
}

/// "10.5.7.1/24" -> (10.5.7.1, 24).
pub fn parse_cidr(cidr: &str) -> (Ipv4Addr, u8) {
    let parse = || {
        let (addr, prefix) = cidr.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some((addr.parse().ok()?, prefix))
    };
    parse().unwrap_or_else(|| panic!("not an IPv4 CIDR: {cidr:?}"))
}

/// The `k`-th address of the network `addr/prefix` belongs to.
pub fn nth_address(addr: Ipv4Addr, prefix: u8, k: u32) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from((u32::from(addr) & mask) + k)
}

/// Gives container namespace `ns` the address `::2` of the host's IPv6 subnet (`subnet` as
/// FLANNEL_IPV6_SUBNET writes it, the bridge's own `::1/64`), the bridge `cbr0` in `host_ns`
/// that address, and a default route via it. Returns the container's IPv6 address.
pub(crate) fn attach_ipv6(host_ns: &str, ns: &str, subnet: &str) -> Ipv6Addr {
    let (gateway, prefix) = subnet.split_once('/').unwrap_or_else(|| panic!("FLANNEL_IPV6_SUBNET {subnet:?} has no prefix"));
    let gateway: Ipv6Addr = gateway.parse().unwrap_or_else(|_| panic!("FLANNEL_IPV6_SUBNET {subnet:?} is not IPv6"));
    let addr = Ipv6Addr::from(u128::from(gateway) + 1);
    ip(host_ns, &["-6", "addr", "add", subnet, "dev", "cbr0", "nodad"]);
    ip(ns, &["-6", "addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0", "nodad"]);
    ip(ns, &["-6", "route", "add", "default", "via", &gateway.to_string()]);
    addr
}
