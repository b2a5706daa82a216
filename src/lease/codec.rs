//! Lease values: flanneld's JSON as Go's `encoding/json` reads it, and as flanneld writes it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{LeaseError, MacAddr, BACKEND_VXLAN};
use crate::go_json;

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

impl MacAddr {
    /// Reads a MAC the way Go's `net.ParseMAC` does (`c6:d2:32:6f:8f:44`, `c6-d2-…`,
    /// `c6d2.326f.8f44`, either case), keeping only 6-byte Ethernet addresses.
    ///
    /// # Errors
    /// Go would refuse the text, or it is an 8- or 20-byte address no VTEP has.
    pub fn parse_go(text: &str) -> Result<Self, LeaseError> {
        let bad = || LeaseError::BadMac(text.to_string());
        let bytes = go_parse_mac(text.as_bytes()).ok_or_else(bad)?;
        Ok(MacAddr(bytes.try_into().map_err(|_| bad())?))
    }
}

/// Go's `net.ParseMAC`: groups of two hex digits split by `:` or `-` (the first separator
/// sets the rest), or groups of four split by `.`; 6, 8 or 20 bytes.
pub(super) fn go_parse_mac(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() < 14 {
        return None;
    }
    // Hex digits per group, and the separator between groups.
    let (width, separator) = match (s[2], s[4]) {
        (b':' | b'-', _) => (2, s[2]),
        (_, b'.') => (4, b'.'),
        _ => return None,
    };
    let stride = width + 1;
    let bytes = (s.len() + 1) / stride * width / 2;
    if !(s.len() + 1).is_multiple_of(stride) || ![6, 8, 20].contains(&bytes) {
        return None;
    }
    let hex = |pair: &[u8]| {
        let digit = |b: u8| (b as char).to_digit(16);
        Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
    };
    let mut out = Vec::with_capacity(bytes);
    // Every group but the last ends with the separator.
    for group in s.chunks(stride) {
        let (digits, end) = group.split_at(width);
        if !end.is_empty() && end != [separator] {
            return None;
        }
        for pair in digits.chunks(2) {
            out.push(hex(pair)?);
        }
    }
    Some(out)
}

/// Go's `net.ParseIP` (Go 1.19, which built flanneld v0.20.2): the first `.` or `:` decides
/// between IPv4 (no leading zeros) and IPv6 (whose groups may carry extra leading zeros).
pub(super) fn go_parse_ip(text: &str) -> Option<IpAddr> {
    match text.bytes().find(|b| *b == b'.' || *b == b':')? {
        b'.' => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        _ => go_parse_ipv6(text).map(IpAddr::V6),
    }
}

pub(super) fn go_parse_ipv6(text: &str) -> Option<Ipv6Addr> {
    let groups: Vec<&str> = text
        .split(':')
        .map(|g| if g.len() > 4 && !g.contains('.') { &g[g.len() - g.trim_start_matches('0').len().max(1)..] } else { g })
        .collect();
    groups.join(":").parse().ok()
}

/// Go's `strconv.ParseUint(text, 10, bits)` for `text` made of ASCII digits: at most `max`.
pub(super) fn go_parse_prefix(text: &str, max: u8) -> Option<u8> {
    let significant = text.trim_start_matches('0');
    let value = if significant.is_empty() { 0 } else { significant.parse::<u64>().ok()? };
    u8::try_from(value).ok().filter(|v| *v <= max)
}

/// What a lease says about its host: flannel's `LeaseAttrs` for the vxlan backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// The underlay IPv6 address peers send this host's IPv6 VXLAN packets to; `null` in the
    /// JSON when the host is not dual-stack, as flanneld writes it.
    #[serde(rename = "PublicIPv6")]
    pub public_ipv6: Option<Ipv6Addr>,
    #[serde(rename = "BackendType")]
    pub backend_type: BackendType,
    /// The IPv4 VXLAN device's VNI and MAC (`flannel.<VNI>`); left out of the JSON for an
    /// IPv6-only lease, as flanneld leaves it out (its `omitempty`).
    #[serde(rename = "BackendData", skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<VxlanData>,
    /// The IPv6 VXLAN device's VNI and MAC (`flannel-v6.<VNI>`, a device of its own); left out
    /// of the JSON when absent, as flanneld leaves it out.
    #[serde(rename = "BackendV6Data", skip_serializing_if = "Option::is_none")]
    pub backend_v6_data: Option<VxlanData>,
    /// Why a peer's IPv6 part (`PublicIPv6`, `BackendV6Data`) could not be read: it is then
    /// left out and its IPv4 part still programmed. Never written to etcd.
    #[serde(skip)]
    pub ipv6_error: Option<Box<str>>,
}

/// A lease's `BackendType`: `vxlan` with nothing allocated (a lease set holds thousands of
/// them, and a `Cow` would take 8 bytes more each), any other text as read (flanneld compares
/// exactly: `VXLAN` is another backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendType {
    Vxlan,
    Other(Box<str>),
}

impl BackendType {
    /// The text as the lease writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Vxlan => BACKEND_VXLAN,
            Self::Other(text) => text,
        }
    }
}

impl From<&str> for BackendType {
    fn from(text: &str) -> Self {
        match text == BACKEND_VXLAN {
            true => Self::Vxlan,
            false => Self::Other(text.into()),
        }
    }
}

impl std::fmt::Display for BackendType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for BackendType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The vxlan backend's part of a lease: where to send frames for this host's VTEP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VxlanData {
    /// flannel's lease carries the VNI as a 16-bit number.
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: MacAddr,
}

/// flannel's `LeaseAttrs` fields, as Go matches JSON member names against them.
const ATTRS_FIELDS: [&str; 5] = ["PublicIP", "PublicIPv6", "BackendType", "BackendData", "BackendV6Data"];
/// flannel's vxlan `BackendData` fields.
const VXLAN_FIELDS: [&str; 2] = ["VNI", "VtepMAC"];

impl LeaseAttrs {
    /// Our lease's attributes. Like flanneld, the VNI is written as 16 bits (flanneld peers
    /// refuse a larger number); the device keeps the full VNI.
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: MacAddr) -> Self {
        let vni = u32::from(vni as u16);
        Self {
            public_ip,
            public_ipv6: None,
            backend_type: BackendType::Vxlan,
            backend_data: Some(VxlanData { vni, vtep_mac }),
            backend_v6_data: None,
            ipv6_error: None,
        }
    }

    /// An IPv6-only lease's attributes, as flanneld writes them with `"EnableIPv4": false`:
    /// `PublicIP` 0.0.0.0, no `BackendData`, the IPv6 part under the 16-bit VNI.
    pub fn vxlan_ipv6_only(public_ipv6: Ipv6Addr, vni: u32, vtep_mac: MacAddr) -> Self {
        let vni = u32::from(vni as u16);
        Self {
            public_ip: Ipv4Addr::UNSPECIFIED,
            public_ipv6: Some(public_ipv6),
            backend_type: BackendType::Vxlan,
            backend_data: None,
            backend_v6_data: Some(VxlanData { vni, vtep_mac }),
            ipv6_error: None,
        }
    }

    /// These attributes with an IPv6 part: the public IPv6 and the IPv6 device's MAC, under the
    /// same 16-bit VNI (the IPv4 part's, or an IPv6-only value's own).
    pub fn with_ipv6(self, public_ipv6: Ipv6Addr, vtep_mac: MacAddr) -> Self {
        let vni = self.backend_data.as_ref().or(self.backend_v6_data.as_ref()).map_or(0, |data| data.vni);
        let backend_v6_data = Some(VxlanData { vni, vtep_mac });
        Self { public_ipv6: Some(public_ipv6), backend_v6_data, ..self }
    }

    /// The JSON value stored in etcd, byte-compatible with flanneld's.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("lease attributes always serialize")
    }

    /// Reads a lease value exactly as flanneld v0.20.2 does (Go's `encoding/json`, see
    /// [`go_json`]): names match case-insensitively, the last of duplicate members wins,
    /// unknown members are ignored, a `null` string or number leaves the field as it was.
    /// Unlike flanneld, a `PublicIPv6` or `BackendV6Data` it cannot use does not cost the
    /// lease its IPv4 part: the IPv6 part is dropped and the reason kept in `ipv6_error`.
    /// A value without `BackendData` is read (an IPv6-only lease's); whether the key needs one
    /// is for the caller, who knows the key.
    ///
    /// # Errors
    /// A value flanneld refuses, or one it accepts but cannot use as a vxlan peer (no
    /// PublicIP, an IPv6 PublicIP, no VtepMAC): [`LeaseError::BadValue`]; a VtepMAC that is
    /// multicast or all zero: [`LeaseError::NotUnicastMac`].
    pub fn from_json(text: &str) -> Result<Self, LeaseError> {
        let members = go_json::object(text).map_err(LeaseError::BadValue)?.unwrap_or_default();
        let (mut public_ip, mut public_ipv6, mut backend_type, mut backend_data, mut v6_data) =
            (None, None, String::new(), None, None);
        for (name, raw) in &members {
            match go_json::field_index(name, &ATTRS_FIELDS) {
                Some(0) => public_ip = Some(go_public_ip(go_json::trimmed_quotes(raw))?),
                Some(1) if go_json::is_null(raw) => public_ipv6 = None,
                Some(1) => public_ipv6 = Some(go_public_ipv6(go_json::trimmed_quotes(raw))),
                Some(2) => backend_type = go_json::string(raw).map_err(bad_field("BackendType"))?.unwrap_or(backend_type),
                Some(3) => backend_data = (!go_json::is_null(raw)).then_some(raw),
                Some(4) => v6_data = (!go_json::is_null(raw)).then_some(raw),
                _ => {}
            }
        }
        let public_ip = public_ip.ok_or_else(|| LeaseError::BadValue("it has no PublicIP".into()))?;
        let backend_data = backend_data.map(|raw| VxlanData::from_raw(raw)).transpose()?;
        let attrs = Self::vxlan_parts(public_ip, backend_type, backend_data);
        Ok(attrs.with_ipv6_part(public_ipv6.transpose(), v6_data.map(|raw| VxlanData::from_raw(raw)).transpose()))
    }

    fn vxlan_parts(public_ip: Ipv4Addr, backend_type: String, backend_data: Option<VxlanData>) -> Self {
        let backend_type = BackendType::from(backend_type.as_str());
        Self { public_ip, public_ipv6: None, backend_type, backend_data, backend_v6_data: None, ipv6_error: None }
    }

    /// Adds the IPv6 fields read from a value, or the reason they cannot be used.
    fn with_ipv6_part(
        self,
        public_ipv6: Result<Option<Ipv6Addr>, LeaseError>,
        v6_data: Result<Option<VxlanData>, LeaseError>,
    ) -> Self {
        match (public_ipv6, v6_data) {
            (Ok(public_ipv6), Ok(backend_v6_data)) => Self { public_ipv6, backend_v6_data, ..self },
            (Err(e), _) | (_, Err(e)) => Self { ipv6_error: Some(e.to_string().into()), ..self },
        }
    }
}

impl VxlanData {
    /// Reads the vxlan backend's data as flanneld does (Go's rules, as for the lease).
    fn from_raw(raw: &RawValue) -> Result<Self, LeaseError> {
        let members = go_json::object(raw.get()).map_err(|_| LeaseError::BadValue("BackendData is not an object".into()))?;
        let (mut vni, mut vtep_mac) = (0, None);
        for (name, raw) in members.iter().flatten() {
            match go_json::field_index(name, &VXLAN_FIELDS) {
                Some(0) => vni = go_json::uint16(raw).map_err(bad_field("VNI"))?.unwrap_or(vni),
                Some(1) => vtep_mac = Some(go_vtep_mac(raw.get())?),
                _ => {}
            }
        }
        let vtep_mac = vtep_mac.ok_or_else(|| LeaseError::BadValue("BackendData has no VtepMAC".into()))?;
        if !vtep_mac.is_unicast() {
            return Err(LeaseError::NotUnicastMac(vtep_mac));
        }
        Ok(Self { vni: u32::from(vni), vtep_mac })
    }
}

fn bad_field(field: &'static str) -> impl Fn(String) -> LeaseError {
    move |problem| LeaseError::BadValue(format!("{field}: {problem}"))
}

/// flannel's `ip.IP4` decoder: Go's `ParseIP` of the quote-trimmed raw text, then `To4`
/// (an IPv4-mapped IPv6 address is its IPv4 address).
fn go_public_ip(text: &str) -> Result<Ipv4Addr, LeaseError> {
    match go_parse_ip(text) {
        Some(IpAddr::V4(ip)) => Ok(ip),
        Some(IpAddr::V6(ip)) => ip
            .to_ipv4_mapped()
            .ok_or_else(|| LeaseError::BadValue(format!("PublicIP {text} is IPv6; weft and flanneld need an IPv4 PublicIP"))),
        None => Err(LeaseError::BadValue(format!("PublicIP {text:?} is not an IP address"))),
    }
}

/// flannel's `ip.IP6` decoder reads any address Go's `ParseIP` reads; a VXLAN device over IPv6
/// needs an IPv6 one.
fn go_public_ipv6(text: &str) -> Result<Ipv6Addr, LeaseError> {
    match go_parse_ip(text) {
        Some(IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_none() => Ok(ip),
        Some(_) => Err(LeaseError::BadValue(format!("PublicIPv6 {text} is an IPv4 address"))),
        None => Err(LeaseError::BadValue(format!("PublicIPv6 {text:?} is not an IP address"))),
    }
}

/// flannel's `hardwareAddr` decoder: the raw text must be a string; its inside, escapes
/// and all, is Go's `ParseMAC`.
fn go_vtep_mac(raw: &str) -> Result<MacAddr, LeaseError> {
    let inner = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).ok_or_else(|| LeaseError::BadMac(raw.to_string()))?;
    MacAddr::parse_go(inner)
}
