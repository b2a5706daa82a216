//! What a question about the domain is answered with, from the cache alone (no I/O):
//! `<name>.<domain>` A/AAAA from the records' hosts and SRV from every record with a port,
//! `_<port>._<proto>.<name>.<domain>` SRV from the records of that port, and
//! `<container id>.<name>.<domain>` A/AAAA, the target each SRV answer names.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use super::cache::NameCache;
use crate::names::skydns::{Proto, RecordId, SkyRecord};

/// SRV priority and weight of every answer: the records of one name are equals.
const SRV_PRIORITY: u16 = 10;
const SRV_WEIGHT: u16 = 10;

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// NOERROR with these records (the addresses of SRV targets among `additionals`).
    Found { answers: Vec<Record>, additionals: Vec<Record> },
    /// NOERROR without records: the name exists, with nothing of the type asked.
    NoData,
    /// NXDOMAIN: a name in the domain nobody published.
    NxDomain,
    /// Not a name of the domain: for the host's resolvers.
    Elsewhere,
}

/// Answers `qname` (any case, with or without the final dot) of type `qtype` from `cache`.
pub fn lookup(cache: &NameCache, qname: &str, qtype: RecordType) -> Lookup {
    let qname = qname.trim_end_matches('.').to_ascii_lowercase();
    let domain = cache.domain().to_string();
    if qname == domain {
        return Lookup::NoData;
    }
    let Some(rest) = qname.strip_suffix(&domain).and_then(|r| r.strip_suffix('.')) else { return Lookup::Elsewhere };
    let labels: Vec<&str> = rest.split('.').collect();
    let (name, selected): (&str, Vec<(&RecordId, &SkyRecord)>) = match labels[..] {
        [name] => (name, all(cache, name)),
        [container, name] => (name, all(cache, name).into_iter().filter(|(id, _)| id.container == container).collect()),
        [service, proto, name] => match service_port(service, proto) {
            Some(port) => (name, all(cache, name).into_iter().filter(|(id, _)| id.port == Some(port)).collect()),
            None => return Lookup::NxDomain,
        },
        _ => return Lookup::NxDomain,
    };
    if selected.is_empty() {
        return Lookup::NxDomain;
    }
    let owner = Name::from_ascii(format!("{qname}.")).expect("a name of the domain is a DNS name");
    let (answers, additionals) = match (qtype, labels.len()) {
        (RecordType::A | RecordType::AAAA, 1 | 2) => (addresses(&owner, &selected, qtype), Vec::new()),
        (RecordType::SRV, 1 | 3) => services(&owner, name, &domain, &selected),
        _ => (Vec::new(), Vec::new()),
    };
    if answers.is_empty() {
        return Lookup::NoData;
    }
    Lookup::Found { answers, additionals }
}

fn all<'c>(cache: &'c NameCache, name: &str) -> Vec<(&'c RecordId, &'c SkyRecord)> {
    cache.records(name).map(|records| records.iter().collect()).unwrap_or_default()
}

/// `_6379`, `_tcp` → (6379, tcp).
fn service_port(service: &str, proto: &str) -> Option<(u16, Proto)> {
    let port = service.strip_prefix('_')?.parse().ok()?;
    Some((port, proto.strip_prefix('_')?.parse().ok()?))
}

/// One A (or AAAA) record per distinct host of the family asked, with the lowest TTL any of
/// its records gives (a name's records all carry their container's address).
fn addresses(owner: &Name, selected: &[(&RecordId, &SkyRecord)], qtype: RecordType) -> Vec<Record> {
    let mut hosts: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for (_, record) in selected {
        let ttl = hosts.entry(record.host).or_insert(record.ttl);
        *ttl = (*ttl).min(record.ttl);
    }
    hosts.into_iter().filter_map(|(host, ttl)| address_record(owner, host, ttl, qtype)).collect()
}

fn address_record(owner: &Name, host: IpAddr, ttl: u32, qtype: RecordType) -> Option<Record> {
    let rdata = match (host, qtype) {
        (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
        _ => return None,
    };
    Some(Record::from_rdata(owner.clone(), ttl, rdata))
}

/// One SRV record per record with a port, its target `<container id>.<name>.<domain>.`,
/// whose address goes with it as an additional record.
fn services(owner: &Name, name: &str, domain: &str, selected: &[(&RecordId, &SkyRecord)]) -> (Vec<Record>, Vec<Record>) {
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    for (id, record) in selected {
        let Some((port, _)) = id.port else { continue };
        let target = Name::from_ascii(format!("{}.{name}.{domain}.", id.container)).expect("a record id is a DNS label");
        let srv = SRV::new(SRV_PRIORITY, SRV_WEIGHT, port, target.clone());
        answers.push(Record::from_rdata(owner.clone(), record.ttl, RData::SRV(srv)));
        let glue =
            [RecordType::A, RecordType::AAAA].into_iter().find_map(|t| address_record(&target, record.host, record.ttl, t));
        additionals.extend(glue.filter(|g| !additionals.contains(g)));
    }
    (answers, additionals)
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
