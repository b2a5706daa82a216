//! The network config stored at `<prefix>/config`: flannel's JSON schema, defaults and validation.
//!
//! Parsing is pure so every rule can be unit tested. Field names are matched case-insensitively
//! and unknown keys are ignored, as Go's `encoding/json` does for flanneld.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde_json::{Map, Value};
use thiserror::Error;

/// The UDP port the Linux kernel (and flannel) uses for VXLAN when none is configured.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// Why a network config was rejected. Each message names the field and the rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("network config is not valid JSON: {0}")]
    NotJson(String),
    #[error("network config must be a JSON object")]
    NotObject,
    #[error("network config: field \"{field}\" is required")]
    Missing { field: &'static str },
    #[error("network config: field \"{field}\" {rule} (got {got})")]
    Invalid { field: &'static str, rule: String, got: String },
    #[error("network config: Backend.Type \"{0}\" is not supported: weft implements the \"vxlan\" backend")]
    UnsupportedBackend(String),
    #[error("network config: \"EnableIPv4\" and \"EnableIPv6\" are both false, so hosts would get no subnet; set EnableIPv6 to true with an IPv6Network, or remove EnableIPv4")]
    NoFamily,
}

/// The validated network config, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `Network` with its fields; `None` when `EnableIPv4` is false (an IPv6-only overlay).
    pub ipv4: Option<Ipv4Config>,
    pub backend: VxlanConfig,
    /// `EnableIPv6` with its fields: a dual-stack (or IPv6-only) overlay; `None` for IPv4 only.
    pub ipv6: Option<Ipv6Config>,
}

/// The IPv4 half of a config: flannel's `Network`, `SubnetLen`, `SubnetMin` and `SubnetMax`,
/// defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Config {
    /// `Network`, e.g. `10.5.0.0/16`, with its host bits cleared.
    pub network: Ipv4Network,
    /// `SubnetLen`: the prefix length of each host's subnet, bits (24 by default).
    pub subnet_len: u8,
    /// `SubnetMin`: the first subnet a host may lease (the Network's second by default).
    pub subnet_min: Ipv4Addr,
    /// `SubnetMax`: the last subnet a host may lease (the Network's last by default).
    pub subnet_max: Ipv4Addr,
}

/// The IPv6 half of a dual-stack config: flannel's `IPv6Network`, `IPv6SubnetLen`,
/// `IPv6SubnetMin` and `IPv6SubnetMax`, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Config {
    /// `IPv6Network`, e.g. `fd00:5::/48`, with its host bits cleared.
    pub network: Ipv6Network,
    /// `IPv6SubnetLen`: the prefix length of each host's IPv6 subnet, bits (64 by default).
    pub subnet_len: u8,
    /// `IPv6SubnetMin`: the first subnet a host may lease (the Network's second by default).
    pub subnet_min: Ipv6Addr,
    /// `IPv6SubnetMax`: the last subnet a host may lease (the Network's last by default).
    pub subnet_max: Ipv6Addr,
}

/// The `Backend` object for `"Type": "vxlan"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub port: u16,
    /// Device MTU; `None` means underlay MTU − 50.
    pub mtu: Option<u32>,
    pub gbp: bool,
    pub learning: bool,
    pub direct_routing: bool,
}

impl NetworkConfig {
    /// Parses and validates the JSON text stored in etcd.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::NotJson(e.to_string()))?;
        let Value::Object(fields) = lowercase_keys(value) else {
            return Err(ConfigError::NotObject);
        };
        // flannel's defaults: IPv4 on, IPv6 off. With IPv4 off the IPv4 fields are not read.
        let ipv4 = match optional_bool(&fields, "enableipv4", "EnableIPv4")?.unwrap_or(true) {
            true => Some(parse_ipv4(&fields)?),
            false => None,
        };
        let backend = parse_backend(fields.get("backend"))?;
        let ipv6 = match optional_bool(&fields, "enableipv6", "EnableIPv6")?.unwrap_or(false) {
            true => Some(parse_ipv6(&fields)?),
            false => None,
        };
        if ipv4.is_none() && ipv6.is_none() {
            return Err(ConfigError::NoFamily);
        }
        Ok(Self { ipv4, backend, ipv6 })
    }

    /// Whether hosts get only an IPv6 subnet (`"EnableIPv4": false`).
    pub fn is_ipv6_only(&self) -> bool {
        self.ipv4.is_none()
    }
}

impl Ipv4Config {
    /// The number of addresses in one host subnet.
    pub fn subnet_size(&self) -> u32 {
        1u32 << (32 - self.subnet_len)
    }
}

/// `Network` with its fields, flannel's defaults and rules.
fn parse_ipv4(fields: &Map<String, Value>) -> Result<Ipv4Config, ConfigError> {
    let network = parse_network(fields)?;
    let subnet_len = subnet_len(fields, network.prefix(), &IPV4_SUBNET_LEN)?;
    let (subnet_min, subnet_max) = subnet_range(fields, network, subnet_len)?;
    Ok(Ipv4Config { network, subnet_len, subnet_min, subnet_max })
}

/// Go's JSON decoder matches keys case-insensitively; lowercasing once lets us look keys up
/// exactly. Nested objects (Backend) are lowercased too.
pub(crate) fn lowercase_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v))).collect()),
        other => other,
    }
}

fn invalid(field: &'static str, rule: impl Into<String>, got: impl ToString) -> ConfigError {
    ConfigError::Invalid { field, rule: rule.into(), got: got.to_string() }
}

fn parse_network(fields: &Map<String, Value>) -> Result<Ipv4Network, ConfigError> {
    let raw = match fields.get("network") {
        None | Some(Value::Null) => return Err(ConfigError::Missing { field: "Network" }),
        Some(Value::String(s)) => s,
        Some(other) => return Err(invalid("Network", "must be a CIDR string like \"10.5.0.0/16\"", other)),
    };
    let parsed: Ipv4Network = raw
        .parse()
        .ok()
        .filter(|_| raw.contains('/'))
        .ok_or_else(|| invalid("Network", "must be an IPv4 CIDR like \"10.5.0.0/16\"", raw))?;
    if parsed.prefix() > 28 {
        return Err(invalid("Network", "is too small: the longest usable prefix is /28", raw));
    }
    // Like Go's net.ParseCIDR, "10.5.3.0/16" means the network 10.5.0.0/16.
    Ok(Ipv4Network::new(parsed.network(), parsed.prefix()).expect("prefix already checked"))
}

/// One family's subnet length rules, flannel's: host subnets of `default` bits where the Network
/// holds four of them, else a quarter of the Network; at most `longest` (four addresses).
struct SubnetLenRule {
    /// The config's key, lower case, and its field name (`subnetlen`, `SubnetLen`).
    key: &'static str,
    field: &'static str,
    network_field: &'static str,
    default: u8,
    longest: u8,
}

const IPV4_SUBNET_LEN: SubnetLenRule =
    SubnetLenRule { key: "subnetlen", field: "SubnetLen", network_field: "Network", default: 24, longest: 30 };
const IPV6_SUBNET_LEN: SubnetLenRule =
    SubnetLenRule { key: "ipv6subnetlen", field: "IPv6SubnetLen", network_field: "IPv6Network", default: 64, longest: 126 };

/// The subnet length `rule`'s field gives (0 or absent: the default) for a Network of `prefix` bits.
fn subnet_len(fields: &Map<String, Value>, prefix: u8, rule: &SubnetLenRule) -> Result<u8, ConfigError> {
    match optional_uint(fields, rule.key, rule.field)? {
        None | Some(0) if prefix <= rule.default - 2 => Ok(rule.default),
        None | Some(0) => Ok(prefix + 2),
        Some(len) if len > u64::from(rule.longest) => {
            Err(invalid(rule.field, format!("must be at most {} (each host needs 4 addresses)", rule.longest), len))
        }
        Some(len) if len < u64::from(prefix) + 2 => {
            let holds =
                format!("must be at least /{} so the {} /{prefix} holds at least four subnets", prefix + 2, rule.network_field);
            Err(invalid(rule.field, holds, len))
        }
        Some(len) => Ok(len as u8),
    }
}

fn subnet_range(fields: &Map<String, Value>, network: Ipv4Network, subnet_len: u8) -> Result<(Ipv4Addr, Ipv4Addr), ConfigError> {
    let size = 1u32 << (32 - subnet_len);
    let first = u32::from(network.network());
    let last_subnet = u32::from(network.broadcast()) - (size - 1);
    // The first subnet is skipped by default: its .0 address would be the Network's own address.
    let min = optional_ip(fields, "subnetmin", "SubnetMin", network)?.unwrap_or(first + size);
    let max = optional_ip(fields, "subnetmax", "SubnetMax", network)?.unwrap_or(last_subnet);
    let mask = u32::MAX << (32 - subnet_len);
    for (field, value) in [("SubnetMin", min), ("SubnetMax", max)] {
        if value & mask != value {
            let rule = format!("must be aligned to a /{subnet_len} boundary");
            return Err(invalid(field, rule, Ipv4Addr::from(value)));
        }
    }
    if min > max {
        return Err(invalid("SubnetMin", "must not be above SubnetMax", Ipv4Addr::from(min)));
    }
    Ok((Ipv4Addr::from(min), Ipv4Addr::from(max)))
}

fn optional_ip(
    fields: &Map<String, Value>,
    key: &str,
    field: &'static str,
    network: Ipv4Network,
) -> Result<Option<u32>, ConfigError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| invalid(field, "must be an IPv4 address", s))?;
            if !network.contains(ip) {
                return Err(invalid(field, format!("must be inside the Network {network}"), s));
            }
            Ok(Some(u32::from(ip)))
        }
        Some(other) => Err(invalid(field, "must be an IPv4 address string", other)),
    }
}

fn optional_uint(fields: &Map<String, Value>, key: &str, field: &'static str) -> Result<Option<u64>, ConfigError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| invalid(field, "must be a non-negative integer", n)),
        Some(other) => Err(invalid(field, "must be a non-negative integer", other)),
    }
}

fn optional_bool(fields: &Map<String, Value>, key: &str, field: &'static str) -> Result<Option<bool>, ConfigError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(field, "must be true or false", other)),
    }
}

fn parse_backend(backend: Option<&Value>) -> Result<VxlanConfig, ConfigError> {
    let empty = Map::new();
    let fields = match backend {
        // flanneld would default to "udp"; weft only speaks vxlan, so an absent Backend means vxlan.
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => return Err(invalid("Backend", "must be an object like {\"Type\":\"vxlan\"}", other)),
    };
    match fields.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("vxlan") => {}
        Some(Value::String(t)) => return Err(ConfigError::UnsupportedBackend(t.clone())),
        Some(other) => return Err(invalid("Backend.Type", "must be the string \"vxlan\"", other)),
    }
    let vni = match optional_uint(fields, "vni", "Backend.VNI")? {
        None | Some(0) => 1,
        Some(v) if v < 1 << 24 => v as u32,
        Some(v) => return Err(invalid("Backend.VNI", "must be below 16777216 (24 bits)", v)),
    };
    let port = match optional_uint(fields, "port", "Backend.Port")? {
        None | Some(0) => DEFAULT_VXLAN_PORT,
        Some(p) if p <= u64::from(u16::MAX) => p as u16,
        Some(p) => return Err(invalid("Backend.Port", "must be a UDP port (1-65535)", p)),
    };
    let mtu = match optional_uint(fields, "mtu", "Backend.MTU")? {
        None | Some(0) => None,
        Some(m) if (68..=65535).contains(&m) => Some(m as u32),
        Some(m) => return Err(invalid("Backend.MTU", "must be between 68 and 65535", m)),
    };
    Ok(VxlanConfig {
        vni,
        port,
        mtu,
        gbp: optional_bool(fields, "gbp", "Backend.GBP")?.unwrap_or(false),
        learning: optional_bool(fields, "learning", "Backend.Learning")?.unwrap_or(false),
        direct_routing: optional_bool(fields, "directrouting", "Backend.DirectRouting")?.unwrap_or(false),
    })
}

/// `EnableIPv6`'s fields with flannel's defaults and rules (its `CheckNetworkConfig`).
fn parse_ipv6(fields: &Map<String, Value>) -> Result<Ipv6Config, ConfigError> {
    let raw = match fields.get("ipv6network") {
        None | Some(Value::Null) => return Err(ConfigError::Missing { field: "IPv6Network" }),
        Some(Value::String(s)) => s,
        Some(other) => return Err(invalid("IPv6Network", "must be a CIDR string like \"fd00:5::/48\"", other)),
    };
    let parsed: Ipv6Network = raw
        .parse()
        .ok()
        .filter(|_| raw.contains('/'))
        .ok_or_else(|| invalid("IPv6Network", "must be an IPv6 CIDR like \"fd00:5::/48\"", raw))?;
    if parsed.prefix() > 124 {
        return Err(invalid("IPv6Network", "is too small: the longest usable prefix is /124", raw));
    }
    let network = Ipv6Network::new(parsed.network(), parsed.prefix()).expect("prefix already checked");
    let subnet_len = subnet_len(fields, network.prefix(), &IPV6_SUBNET_LEN)?;
    let (subnet_min, subnet_max) = ipv6_subnet_range(fields, network, subnet_len)?;
    Ok(Ipv6Config { network, subnet_len, subnet_min, subnet_max })
}

/// `IPv6SubnetMin` and `IPv6SubnetMax`: the Network's second and last subnets by default; inside
/// the Network and on a subnet boundary.
fn ipv6_subnet_range(
    fields: &Map<String, Value>,
    network: Ipv6Network,
    subnet_len: u8,
) -> Result<(Ipv6Addr, Ipv6Addr), ConfigError> {
    let size = 1u128 << (128 - subnet_len);
    let first = u128::from(network.network());
    let last_subnet = u128::from(network.broadcast()) - (size - 1);
    let mut bounds = [("IPv6SubnetMin", "ipv6subnetmin", first + size), ("IPv6SubnetMax", "ipv6subnetmax", last_subnet)];
    for (field, key, value) in &mut bounds {
        match fields.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                let ip: Ipv6Addr = s.parse().map_err(|_| invalid(field, "must be an IPv6 address", s))?;
                if !network.contains(ip) {
                    return Err(invalid(field, format!("must be inside the IPv6Network {network}"), s));
                }
                if u128::from(ip) % size != 0 {
                    return Err(invalid(field, format!("must be aligned to a /{subnet_len} boundary"), s));
                }
                *value = u128::from(ip);
            }
            Some(other) => return Err(invalid(field, "must be an IPv6 address string", other)),
        }
    }
    let [(_, _, min), (_, _, max)] = bounds;
    if min > max {
        return Err(invalid("IPv6SubnetMin", "must not be above IPv6SubnetMax", Ipv6Addr::from(min)));
    }
    Ok((Ipv6Addr::from(min), Ipv6Addr::from(max)))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
