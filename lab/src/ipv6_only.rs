//! Lab helpers for IPv6-only networks (`"EnableIPv4": false`): waiting for a subnet.env that
//! has only the IPv6 lines, a container addressed from it alone, a host's own lease key
//! (`fd00:5:0:7::-64`, the IPv6 part alone), and lease values in flanneld's IPv6-only shape for
//! keys a test writes by hand.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::host::attach_ipv6;
use crate::{Container, Lab};

impl Lab {
    /// Host N's subnet.env once weftd has written its IPv6 subnet and MTU (an IPv6-only
    /// subnet.env has no FLANNEL_SUBNET); panics after `timeout`.
    pub fn wait_ipv6_subnet_env(&self, n: usize, timeout: Duration) -> BTreeMap<String, String> {
        self.wait_subnet_env_with(n, "FLANNEL_IPV6_SUBNET", timeout)
    }

    /// Gives host N a container from an IPv6-only subnet.env: bridge `cbr0` gets
    /// FLANNEL_IPV6_SUBNET (`::1/64`), both ends FLANNEL_MTU, the container `::2` and an IPv6
    /// default route via the bridge, and no IPv4 address (`Container::ip` is `0.0.0.0`).
    /// Returns the container's IPv6 address. Panics if subnet.env is missing, lacks those
    /// lines, or has FLANNEL_SUBNET (use `attach_container` for IPv4 and dual-stack hosts).
    pub fn attach_container_ipv6_only(&mut self, n: usize) -> Ipv6Addr {
        let (host, env) = self.container_host_env(n);
        assert!(!env.contains_key("FLANNEL_SUBNET"), "host {n}'s subnet.env is not IPv6-only: {env:?}");
        let field = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("subnet.env lacks {k}: {env:?}"));
        let (subnet, mtu) = (field("FLANNEL_IPV6_SUBNET"), field("FLANNEL_MTU"));
        let ns = self.wire_container(&host, &mtu);
        let addr = attach_ipv6(&host.ns, &ns, &subnet);
        let none = Ipv4Addr::UNSPECIFIED;
        self.containers.insert(n, Container { n, ns, ip: none, gateway: none, ipv6: Some(addr) });
        addr
    }

    /// Host N's own lease key's last element as its subnet.env names it: FLANNEL_IPV6_SUBNET's
    /// network and length, `fd00:5:0:7::-64`; `None` until subnet.env has that line.
    pub fn own_ipv6_only_key(&self, n: usize) -> Option<String> {
        let env = self.host(n).subnet_env()?;
        let (addr, len) = env.get("FLANNEL_IPV6_SUBNET")?.split_once('/')?;
        // subnet.env holds the network address + 1 (the bridge's); the key the network address.
        let addr: Ipv6Addr = addr.parse().ok()?;
        Some(format!("{}-{len}", Ipv6Addr::from(u128::from(addr) - 1)))
    }
}

/// A lease value in flanneld v0.20.2's IPv6-only shape and field order: `PublicIP` the zero
/// IPv4 address, `BackendData` left out (omitempty), the IPv6 parts given.
pub fn ipv6_only_lease_value(public_ipv6: Ipv6Addr, mac6: &str) -> String {
    format!(
        r#"{{"PublicIP":"0.0.0.0","PublicIPv6":"{public_ipv6}","BackendType":"vxlan","BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}"#
    )
}
