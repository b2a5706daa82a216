//! `/run/flannel/subnet.env`: the file docker's bridge options are made from, in flanneld's
//! exact format and line order, written atomically and only when it changes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnetwork::{Ipv4Network, Ipv6Network};
use thiserror::Error;

use crate::atomic_file::{write_if_changed, AtomicWriteError};

/// The subnet file could not be written.
#[derive(Debug, Error)]
#[error("cannot write the subnet file (docker's --bip and --mtu come from it): {0}")]
pub struct SubnetEnvError(#[from] pub AtomicWriteError);

/// The values flanneld writes: four for an IPv4-only network, two more for dual-stack, and for
/// an IPv6-only network the IPv6 two and the last two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// The Network and our lease's subnet, the latter written as its first host address
    /// (`10.5.72.1/24`), docker's `--bip`; `None` for an IPv6-only network.
    pub ipv4: Option<(Ipv4Network, Ipv4Network)>,
    /// The IPv6 Network and our lease's IPv6 subnet, for a dual-stack or IPv6-only network.
    pub ipv6: Option<(Ipv6Network, Ipv6Network)>,
    pub mtu: u32,
    pub ip_masq: bool,
}

impl SubnetEnv {
    /// The file's text, in flanneld's line order (each family's lines only when it is
    /// enabled): `FLANNEL_NETWORK`, `FLANNEL_SUBNET`, `FLANNEL_IPV6_NETWORK`,
    /// `FLANNEL_IPV6_SUBNET` (`fd00:5:0:7::1/64`, the subnet's first host address), then
    /// `FLANNEL_MTU` and `FLANNEL_IPMASQ`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Some((network, subnet)) = self.ipv4 {
            let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
            text += &format!("FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={gateway}/{}\n", subnet.prefix());
        }
        if let Some((network, subnet)) = self.ipv6 {
            let gateway = Ipv6Addr::from(u128::from(subnet.network()) + 1);
            text += &format!("FLANNEL_IPV6_NETWORK={network}\nFLANNEL_IPV6_SUBNET={gateway}/{}\n", subnet.prefix());
        }
        text + &format!("FLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n", self.mtu, self.ip_masq)
    }

    /// Writes the file atomically; returns whether the content changed.
    ///
    /// # Errors
    /// The file or its directory cannot be written.
    pub fn write_if_changed(&self, path: &Path) -> Result<bool, SubnetEnvError> {
        Ok(write_if_changed(path, &self.render())?)
    }
}

/// Parses `KEY=VALUE` lines (optionally quoted values), skipping blanks and comments.
pub fn parse_env(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().trim_matches('"').to_string()))
        .collect()
}

/// The subnet named by `FLANNEL_SUBNET` in an existing file (flanneld's or ours), so a host
/// asks for the same subnet again after its lease expired.
pub fn read_previous_subnet(path: &Path) -> Option<Ipv4Network> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_subnet(&text)
}

fn parse_subnet(text: &str) -> Option<Ipv4Network> {
    let host: Ipv4Network = parse_env(text).get("FLANNEL_SUBNET")?.parse().ok()?;
    Ipv4Network::new(host.network(), host.prefix()).ok()
}

/// The IPv6 subnet named by `FLANNEL_IPV6_SUBNET` in an existing file, so a dual-stack host
/// asks for the same IPv6 subnet again after its lease expired.
pub fn read_previous_ipv6_subnet(path: &Path) -> Option<Ipv6Network> {
    let text = std::fs::read_to_string(path).ok()?;
    let host: Ipv6Network = parse_env(&text).get("FLANNEL_IPV6_SUBNET")?.parse().ok()?;
    Ipv6Network::new(host.network(), host.prefix()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SubnetEnv {
        SubnetEnv {
            ipv4: Some(("10.5.0.0/16".parse().unwrap(), "10.5.72.0/24".parse().unwrap())),
            ipv6: None,
            mtu: 1450,
            ip_masq: false,
        }
    }

    #[test]
    fn renders_flanneld_format_and_order() {
        assert_eq!(
            sample().render(),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn renders_flanneld_dual_stack_format_and_order() {
        let ipv6 = Some(("fd00:5::/48".parse().unwrap(), "fd00:5:0:7::/64".parse().unwrap()));
        let env = SubnetEnv { ipv6, mtu: 1430, ..sample() };
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_IPV6_NETWORK=fd00:5::/48\nFLANNEL_IPV6_SUBNET=fd00:5:0:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        );
        let dir = std::env::temp_dir().join(format!("weft-subnet-env-v6-{}", std::process::id()));
        let path = dir.join("subnet.env");
        env.write_if_changed(&path).unwrap();
        assert_eq!(read_previous_ipv6_subnet(&path), Some("fd00:5:0:7::/64".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// flanneld v0.20.2's WriteSubnetFile with `"EnableIPv4": false`: the IPv6 lines only.
    #[test]
    fn renders_flanneld_ipv6_only_format_and_order() {
        let ipv6 = Some(("fd00:5::/48".parse().unwrap(), "fd00:5:0:7::/64".parse().unwrap()));
        let env = SubnetEnv { ipv4: None, ipv6, mtu: 1430, ip_masq: true };
        assert_eq!(
            env.render(),
            "FLANNEL_IPV6_NETWORK=fd00:5::/48\nFLANNEL_IPV6_SUBNET=fd00:5:0:7::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(parse_subnet(&env.render()), None);
    }

    #[test]
    fn reads_back_the_subnet() {
        assert_eq!(parse_subnet(&sample().render()), Some("10.5.72.0/24".parse().unwrap()));
        assert_eq!(parse_subnet("FLANNEL_NETWORK=10.5.0.0/16\n"), None);
        assert_eq!(parse_subnet("FLANNEL_SUBNET=garbage\n"), None);
    }

    #[test]
    fn writes_atomically_only_on_change() {
        let dir = std::env::temp_dir().join(format!("weft-subnet-env-{}", std::process::id()));
        let path = dir.join("nested/subnet.env");
        let env = sample();
        assert!(env.write_if_changed(&path).unwrap());
        assert!(!env.write_if_changed(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), env.render());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let changed = SubnetEnv { mtu: 1400, ..env };
        assert!(changed.write_if_changed(&path).unwrap());
        assert_eq!(read_previous_subnet(&path), Some("10.5.72.0/24".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
