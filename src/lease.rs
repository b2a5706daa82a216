//! Subnet leases: flannel's etcd key and value formats, and picking a free subnet (pure).
//!
//! A lease lives at `<prefix>/subnets/10.5.52.0-24` with a JSON value such as
//! `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`.
//! The encoder writes exactly that shape so flanneld peers can read it; the decoder is as
//! lenient as Go's (case-insensitive keys, extra keys ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnetwork::Ipv4Network;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::config::NetworkConfig;

/// The only backend weft speaks.
pub const BACKEND_VXLAN: &str = "vxlan";

/// Why a lease key or value could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LeaseError {
    #[error("lease key {0:?} is not of the form <ip>-<prefix length>, e.g. 10.5.52.0-24")]
    BadKey(String),
    #[error("lease value is not flannel lease JSON: {0}")]
    BadValue(String),
    #[error("\"{0}\" is not a MAC address like c6:d2:32:6f:8f:44")]
    BadMac(String),
}

/// An Ethernet address, written the way Go's `net.HardwareAddr` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = LeaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LeaseError::BadMac(s.to_string());
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(bytes))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a lease says about its host: flannel's `LeaseAttrs` for the vxlan backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename(serialize = "PublicIP", deserialize = "publicip"))]
    pub public_ip: Ipv4Addr,
    /// Dual stack comes later; flanneld writes `null` here, and so do we.
    #[serde(rename(serialize = "PublicIPv6", deserialize = "publicipv6"), default)]
    pub public_ipv6: Option<String>,
    #[serde(rename(serialize = "BackendType", deserialize = "backendtype"), default)]
    pub backend_type: String,
    #[serde(rename(serialize = "BackendData", deserialize = "backenddata"))]
    pub backend_data: VxlanData,
}

/// The vxlan backend's part of a lease: where to send frames for this host's VTEP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    #[serde(rename(serialize = "VNI", deserialize = "vni"), default)]
    pub vni: u32,
    #[serde(rename(serialize = "VtepMAC", deserialize = "vtepmac"))]
    pub vtep_mac: MacAddr,
}

impl LeaseAttrs {
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: MacAddr) -> Self {
        Self { public_ip, public_ipv6: None, backend_type: BACKEND_VXLAN.to_string(), backend_data: VxlanData { vni, vtep_mac } }
    }

    /// The JSON value stored in etcd, byte-compatible with flanneld's.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("lease attributes always serialize")
    }

    /// Reads a lease value written by weftd or flanneld.
    pub fn from_json(text: &str) -> Result<Self, LeaseError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| LeaseError::BadValue(e.to_string()))?;
        serde_json::from_value(crate::config::lowercase_keys(value)).map_err(|e| LeaseError::BadValue(e.to_string()))
    }
}

/// The last path element of a lease key: `10.5.52.0-24`.
pub fn subnet_key(subnet: Ipv4Network) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix())
}

/// Parses the last path element of a lease key. A dual-stack key (`10.5.52.0-24&fd00::-64`)
/// yields its IPv4 part.
pub fn parse_subnet_key(name: &str) -> Result<Ipv4Network, LeaseError> {
    let bad = || LeaseError::BadKey(name.to_string());
    let v4 = name.split('&').next().unwrap_or_default();
    let (ip, len) = v4.split_once('-').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let subnet = Ipv4Network::new(ip, len).map_err(|_| bad())?;
    if subnet.network() != ip {
        return Err(bad());
    }
    Ok(subnet)
}

/// A subnet lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Network,
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to; 0 means a reservation that never expires.
    pub etcd_lease: i64,
    /// The key's etcd mod revision, used for compare-and-swap updates.
    pub mod_revision: i64,
    /// The etcd revision that created the key: unlike the mod revision it survives flanneld's
    /// renewals (a put), so it tells the established of two conflicting leases.
    pub create_revision: i64,
}

impl Lease {
    pub fn is_reservation(&self) -> bool {
        self.etcd_lease == 0
    }
}

/// All leases known at one etcd revision, keyed by subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseSet {
    pub revision: i64,
    pub leases: BTreeMap<Ipv4Network, Lease>,
    /// When the last change arrived from etcd (for the event-to-kernel latency metric).
    pub changed_at: Option<std::time::Instant>,
}

/// Picks a random subnet between SubnetMin and SubnetMax that no key in `taken` holds.
/// Probing from a random start keeps hosts that start together from all racing for the same
/// subnet, and costs at most `taken.len() + 1` probes however large the Network is.
pub fn pick_free_subnet(config: &NetworkConfig, taken: &BTreeSet<Ipv4Network>) -> Option<Ipv4Network> {
    let count = subnet_count(config);
    let start = rand::rng().random_range(0..count);
    (0..count).map(|i| nth_subnet(config, (start + i) % count)).find(|s| !taken.contains(s))
}

/// How many subnets lie between SubnetMin and SubnetMax.
fn subnet_count(config: &NetworkConfig) -> u32 {
    (u32::from(config.subnet_max) - u32::from(config.subnet_min)) / config.subnet_size() + 1
}

fn nth_subnet(config: &NetworkConfig, n: u32) -> Ipv4Network {
    let network = u32::from(config.subnet_min) + n * config.subnet_size();
    Ipv4Network::new(Ipv4Addr::from(network), config.subnet_len).expect("valid prefix")
}

/// Every subnet the config allows, from SubnetMin to SubnetMax.
pub fn candidate_subnets(config: &NetworkConfig) -> impl Iterator<Item = Ipv4Network> + '_ {
    (0..subnet_count(config)).map(|n| nth_subnet(config, n))
}

/// Whether `subnet` is one the config could hand out (right size, inside the range).
pub fn subnet_fits(config: &NetworkConfig, subnet: Ipv4Network) -> bool {
    subnet.prefix() == config.subnet_len && subnet.network() >= config.subnet_min && subnet.network() <= config.subnet_max
}

/// What to do to get a lease, in flanneld's order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A lease (or reservation) already carrying our PublicIP: take it over.
    Existing(Lease),
    /// A free subnet to create a new lease for.
    Free(Ipv4Network),
}

/// Chooses our lease: an existing one with our PublicIP, else the `previous` subnet (from the
/// last subnet.env) if it is still free, else a random free subnet. `occupied` holds every
/// subnet that has a key, readable or not, so a malformed key is never handed out twice.
/// `None` means the Network has no free subnet left.
pub fn choose_claim(
    config: &NetworkConfig,
    public_ip: Ipv4Addr,
    leases: &[Lease],
    occupied: &BTreeSet<Ipv4Network>,
    previous: Option<Ipv4Network>,
) -> Option<Claim> {
    let own = leases.iter().find(|l| {
        l.attrs.public_ip == public_ip && config.network.contains(l.subnet.network()) && l.subnet.prefix() == config.subnet_len
    });
    if let Some(lease) = own {
        return Some(Claim::Existing(lease.clone()));
    }
    if let Some(subnet) = previous.filter(|s| subnet_fits(config, *s) && !occupied.contains(s)) {
        return Some(Claim::Free(subnet));
    }
    pick_free_subnet(config, occupied).map(Claim::Free)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease value as flanneld v0.26 writes it.
    const FLANNEL_SAMPLE: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    #[test]
    fn encodes_exactly_like_flanneld() {
        let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(192, 168, 64, 3), 1, "c6:d2:32:6f:8f:44".parse().unwrap());
        assert_eq!(attrs.to_json(), FLANNEL_SAMPLE);
    }

    #[test]
    fn decodes_flanneld_values_leniently() {
        let attrs = LeaseAttrs::from_json(FLANNEL_SAMPLE).unwrap();
        assert_eq!(attrs.public_ip, Ipv4Addr::new(192, 168, 64, 3));
        assert_eq!(attrs.backend_data.vtep_mac.to_string(), "c6:d2:32:6f:8f:44");
        let older = r#"{"publicip":"10.0.0.9","backendtype":"vxlan","backenddata":{"vtepMAC":"C6:D2:32:6F:8F:44"},"x":1}"#;
        let attrs = LeaseAttrs::from_json(older).unwrap();
        assert_eq!(attrs.backend_data.vni, 0);
        assert_eq!(attrs.backend_data.vtep_mac, "c6:d2:32:6f:8f:44".parse().unwrap());
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "nope",
            "{}",
            r#"{"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
            r#"{"PublicIP":"300.1.1.1","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
            r#"{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"c6:d2:32:6f:8f"}}"#,
            r#"{"PublicIP":"10.0.0.1","BackendData":{"VtepMAC":"zz:d2:32:6f:8f:44"}}"#,
        ] {
            assert!(LeaseAttrs::from_json(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn subnet_key_round_trip() {
        let subnet: Ipv4Network = "10.5.52.0/24".parse().unwrap();
        assert_eq!(subnet_key(subnet), "10.5.52.0-24");
        assert_eq!(parse_subnet_key("10.5.52.0-24").unwrap(), subnet);
        assert_eq!(parse_subnet_key("10.5.52.0-24&fd00::-64").unwrap(), subnet);
        for bad in ["10.5.52.0", "10.5.52.1-24", "10.5.52.0-33", "x-24", "10.5.52.0-"] {
            assert!(parse_subnet_key(bad).is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(MacAddr([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]).to_string(), "c6:d2:32:6f:8f:44");
        for bad in ["", "c6:d2:32:6f:8f:44:00", "c6-d2-32-6f-8f-44", "c6:d2:32:6f:8f:4"] {
            assert!(bad.parse::<MacAddr>().is_err(), "accepted {bad}");
        }
    }

    #[test]
    fn picks_only_free_subnets_in_range() {
        let config =
            NetworkConfig::parse(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0","SubnetMax":"10.5.13.0"}"#).unwrap();
        let all: Vec<_> = candidate_subnets(&config).map(|s| s.to_string()).collect();
        assert_eq!(all, ["10.5.10.0/24", "10.5.11.0/24", "10.5.12.0/24", "10.5.13.0/24"]);
        let mut taken = BTreeSet::new();
        for _ in 0..4 {
            let subnet = pick_free_subnet(&config, &taken).unwrap();
            assert!(subnet_fits(&config, subnet));
            assert!(taken.insert(subnet), "picked a taken subnet {subnet}");
        }
        assert_eq!(pick_free_subnet(&config, &taken), None);
    }

    #[test]
    fn subnet_fits_checks_size_and_range() {
        let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap();
        assert!(subnet_fits(&config, "10.5.1.0/24".parse().unwrap()));
        assert!(!subnet_fits(&config, "10.5.0.0/24".parse().unwrap()));
        assert!(!subnet_fits(&config, "10.5.1.0/25".parse().unwrap()));
        assert!(!subnet_fits(&config, "10.6.1.0/24".parse().unwrap()));
    }

    fn lease_for(subnet: &str, public_ip: [u8; 4]) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::from(public_ip), 1, MacAddr([2, 0, 0, 0, 0, 1])),
            etcd_lease: 0,
            mod_revision: 3,
            create_revision: 3,
        }
    }

    #[test]
    fn claim_prefers_own_lease_then_previous_subnet_then_random() {
        let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/16"}"#).unwrap();
        let me = Ipv4Addr::new(198, 18, 0, 11);
        let mine = lease_for("10.5.9.0/24", [198, 18, 0, 11]);
        let other = lease_for("10.5.7.0/24", [198, 18, 0, 12]);
        let occupied: BTreeSet<_> = [mine.subnet, other.subnet].into();
        let previous = Some("10.5.3.0/24".parse().unwrap());
        let leases = [other.clone(), mine.clone()];
        assert_eq!(choose_claim(&config, me, &leases, &occupied, previous), Some(Claim::Existing(mine)));
        let leases = [other.clone()];
        assert_eq!(choose_claim(&config, me, &leases, &occupied, previous), Some(Claim::Free("10.5.3.0/24".parse().unwrap())));
        let taken_previous = Some(other.subnet);
        match choose_claim(&config, me, &leases, &occupied, taken_previous) {
            Some(Claim::Free(s)) => assert!(!occupied.contains(&s) && subnet_fits(&config, s)),
            other => panic!("expected a free subnet, got {other:?}"),
        }
    }

    #[test]
    fn claim_ignores_own_lease_from_another_network_and_reports_exhaustion() {
        let config = NetworkConfig::parse(r#"{"Network":"10.5.0.0/28"}"#).unwrap();
        let me = Ipv4Addr::new(198, 18, 0, 11);
        let stale = lease_for("10.9.0.0/24", [198, 18, 0, 11]);
        let occupied: BTreeSet<_> = candidate_subnets(&config).collect();
        assert_eq!(choose_claim(&config, me, &[stale], &occupied, None), None);
    }
}
