//! The SkyDNS layout in etcd, as CoreDNS's etcd plugin reads it: a name's labels reversed under
//! `/skydns` (`db.weft.local.` is `/skydns/local/weft/db`), one child key per record
//! (`/skydns/local/weft/db/<record id>`), each value a JSON object with `host`, `port` and `ttl`.
//!
//! weft's record ids say which container and which exposed port a record is for:
//! `<container id, 12 hex digits>` for the name's IPv4 address alone, `<container id>-6` for its
//! IPv6 address (a container on a dual-stack docker0), and `<container id>-<port>-<tcp|udp>`
//! for one exposed port (so a server can answer `_<port>._<proto>.<name>.<domain>` SRV queries
//! from the keys alone).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The root of every SkyDNS key.
const ROOT: &str = "/skydns";

/// Why a name, domain, key or value does not fit the layout.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SkyDnsError {
    #[error("{0:?} is not a DNS domain (dot-separated labels of a-z, 0-9 and '-', e.g. weft.local)")]
    BadDomain(String),
    #[error("container name {0:?} has no DNS label form (after lower-casing and turning '_' and '.' into '-', it must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'); rename the container to publish it")]
    NotALabel(String),
    #[error("{0:?} is not a weft record id (<12 hex digits>[-<port>-<tcp|udp>])")]
    BadRecordId(String),
    #[error("SkyDNS value is not JSON with a \"host\" IP address: {0}")]
    BadValue(String),
}

/// A DNS domain names are published under (`--names-domain`, `weft.local` by default), lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(String);

impl FromStr for Domain {
    type Err = SkyDnsError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let domain = text.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(is_label) {
            return Err(SkyDnsError::BadDomain(text.to_string()));
        }
        Ok(Self(domain))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Domain {
    /// `/skydns/local/weft/`: every name of the domain is a key below it.
    pub fn prefix(&self) -> String {
        let reversed: Vec<&str> = self.0.split('.').rev().collect();
        format!("{ROOT}/{}/", reversed.join("/"))
    }

    /// `/skydns/local/weft/db/`: the records of `name` (a DNS label) are the keys below it.
    pub fn name_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix())
    }

    /// `/skydns/local/weft/db/<id>`: the key of one record.
    pub fn record_key(&self, name: &str, id: &RecordId) -> String {
        format!("{}{id}", self.name_prefix(name))
    }

    /// The name and record id of a key below [`Domain::prefix`]; `None` for any other key
    /// (another domain's, a deeper one, one weft did not write).
    pub fn parse_record_key<'k>(&self, key: &'k str) -> Option<(&'k str, RecordId)> {
        let rest = key.strip_prefix(&self.prefix())?;
        let (name, id) = rest.split_once('/')?;
        Some((name, id.parse().ok()?)).filter(|_| is_label(name))
    }
}

/// A transport protocol of an exposed port, as docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(()),
        }
    }
}

/// Which container, and which of its exposed ports, a record is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    /// The container's id, its first 12 hex digits (as `docker ps` shows it).
    pub container: String,
    /// The exposed port and its protocol; `None` for the record of an address alone.
    pub port: Option<(u16, Proto)>,
    /// The record of the container's IPv6 address (`-6`); never with a port.
    pub ipv6: bool,
}

impl RecordId {
    /// The id of the record of `container`'s IPv4 address (with `port`, of that port).
    pub fn ipv4(container: &str, port: Option<(u16, Proto)>) -> Self {
        Self { container: container.to_string(), port, ipv6: false }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.ipv6) {
            (Some((port, proto)), _) => write!(f, "{}-{port}-{proto}", self.container),
            (None, true) => write!(f, "{}-6", self.container),
            (None, false) => f.write_str(&self.container),
        }
    }
}

impl FromStr for RecordId {
    type Err = SkyDnsError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SkyDnsError::BadRecordId(text.to_string());
        let mut parts = text.split('-');
        let container = parts.next().filter(|c| c.len() == 12 && c.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(bad)?;
        let (port, ipv6) = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => (None, false),
            (Some("6"), None, _) => (None, true),
            (Some(port), Some(proto), None) => {
                (Some((port.parse().map_err(|_| bad())?, proto.parse().map_err(|()| bad())?)), false)
            }
            _ => return Err(bad()),
        };
        Ok(Self { container: container.to_ascii_lowercase(), port, ipv6 })
    }
}

/// One SkyDNS record: the JSON value CoreDNS's etcd plugin reads. `host` gives an A or AAAA
/// answer, `port` an SRV answer, `ttl` the answers' TTL in seconds (written explicitly: CoreDNS
/// before 1.12.4 took an attached etcd lease's id for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkyRecord {
    pub host: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Seconds.
    pub ttl: u32,
}

impl SkyRecord {
    /// The value as stored in etcd: `{"host":"10.5.72.2","port":6379,"ttl":30}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }

    /// Reads a value any SkyDNS writer may have written (unknown fields ignored, `ttl`
    /// defaulting to 0 where absent).
    ///
    /// # Errors
    /// [`SkyDnsError::BadValue`] when it is not JSON or has no IP address in `host`.
    pub fn from_json(text: &str) -> Result<Self, SkyDnsError> {
        #[derive(Deserialize)]
        struct Loose {
            host: IpAddr,
            #[serde(default)]
            port: Option<u16>,
            #[serde(default)]
            ttl: u32,
        }
        let loose: Loose = serde_json::from_str(text).map_err(|e| SkyDnsError::BadValue(e.to_string()))?;
        Ok(Self { host: loose.host, port: loose.port.filter(|p| *p != 0), ttl: loose.ttl })
    }
}

/// The DNS label a container name is published as: lower case, with `_` and `.` (which docker
/// allows in names and DNS labels do not) turned into `-`.
///
/// # Errors
/// [`SkyDnsError::NotALabel`] when even that is no label (too long, or starting or ending
/// with `-`): such a container is not published, and the reason is logged once.
pub fn dns_label(container_name: &str) -> Result<String, SkyDnsError> {
    let label: String = container_name
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    is_label(&label).then_some(label).ok_or_else(|| SkyDnsError::NotALabel(container_name.to_string()))
}

/// RFC 1035's label (with digits allowed first, as RFC 1123 has it): 1-63 of a-z, 0-9, '-',
/// not starting or ending with '-'.
fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_skydns_layout() {
        let domain: Domain = "Weft.Local.".parse().unwrap();
        assert_eq!(domain.to_string(), "weft.local");
        assert_eq!(domain.prefix(), "/skydns/local/weft/");
        let id = RecordId::ipv4("0123456789ab", Some((6379, Proto::Tcp)));
        let key = domain.record_key("db", &id);
        assert_eq!(key, "/skydns/local/weft/db/0123456789ab-6379-tcp");
        assert_eq!(domain.parse_record_key(&key), Some(("db", id)));
        let bare = RecordId::ipv4("0123456789ab", None);
        assert_eq!(domain.parse_record_key("/skydns/local/weft/db/0123456789ab"), Some(("db", bare)));
        let ipv6 = RecordId { ipv6: true, ..RecordId::ipv4("0123456789ab", None) };
        assert_eq!(domain.record_key("db", &ipv6), "/skydns/local/weft/db/0123456789ab-6");
        assert_eq!(domain.parse_record_key("/skydns/local/weft/db/0123456789ab-6"), Some(("db", ipv6)));
        assert_eq!(domain.parse_record_key("/skydns/local/weft/db/0123456789ab-7"), None);
        for other in ["/skydns/local/other/db/0123456789ab", "/skydns/local/weft/db/x/0123456789ab", "/skydns/local/weft/db/zz"] {
            assert_eq!(domain.parse_record_key(other), None, "{other}");
        }
        assert!("bad_domain".parse::<Domain>().is_err());
    }

    #[test]
    fn values_are_what_coredns_reads() {
        let record = SkyRecord { host: "10.5.72.2".parse().unwrap(), port: Some(6379), ttl: 30 };
        assert_eq!(record.to_json(), r#"{"host":"10.5.72.2","port":6379,"ttl":30}"#);
        let bare = SkyRecord { port: None, ..record.clone() };
        assert_eq!(bare.to_json(), r#"{"host":"10.5.72.2","ttl":30}"#);
        assert_eq!(SkyRecord::from_json(r#"{"host":"10.5.72.2","port":6379,"ttl":30,"priority":10}"#), Ok(record));
        assert!(SkyRecord::from_json(r#"{"host":"db.example.com"}"#).is_err());
    }

    #[test]
    fn container_names_become_dns_labels_or_are_refused() {
        assert_eq!(dns_label("/DB_1").unwrap(), "db-1");
        assert_eq!(dns_label("web.v2").unwrap(), "web-v2");
        assert!(dns_label("_db").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
    }
}
