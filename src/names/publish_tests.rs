//! Unit tests of what the publisher wants in etcd and how it gets there.

use super::*;
use crate::names::skydns::Proto;

fn domain() -> Domain {
    "weft.local".parse().unwrap()
}

fn subnet() -> Ipv4Network {
    "10.5.72.0/24".parse().unwrap()
}

fn container(id: &str, name: &str, ip: &str, ports: &[(u16, Proto)]) -> Container {
    Container {
        id: id.repeat(64 / id.len()),
        name: name.into(),
        ipv4: ip.parse().ok(),
        ipv6: None,
        ports: ports.iter().copied().collect(),
    }
}

fn key(key: &str, value: &str, lease: i64) -> NameKey {
    NameKey { key: key.into(), value: value.into(), etcd_lease: EtcdLeaseId::attached(lease) }
}

#[test]
fn a_container_gets_one_record_per_exposed_port_and_one_without() {
    let db = container("ab", "db", "10.5.72.2", &[(6379, Proto::Tcp), (53, Proto::Udp)]);
    let wanted = wanted(&domain(), subnet(), &[db]);
    let records: Vec<(&str, &str)> = wanted.records.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        records,
        [
            ("/skydns/local/weft/db/abababababab", r#"{"host":"10.5.72.2","ttl":30}"#),
            ("/skydns/local/weft/db/abababababab-53-udp", r#"{"host":"10.5.72.2","port":53,"ttl":30}"#),
            ("/skydns/local/weft/db/abababababab-6379-tcp", r#"{"host":"10.5.72.2","port":6379,"ttl":30}"#),
        ]
    );
    assert_eq!(wanted.names, BTreeMap::from([("db".to_string(), "10.5.72.2".parse().unwrap())]));
}

#[test]
fn a_dual_stack_container_also_gets_its_ipv6_address_record() {
    let db = Container { ipv6: Some("fd00:5:0:7:0:242:a05:4802".parse().unwrap()), ..container("ab", "db", "10.5.72.2", &[]) };
    let wanted = wanted(&domain(), subnet(), &[db]);
    let records: Vec<(&str, &str)> = wanted.records.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        records,
        [
            ("/skydns/local/weft/db/abababababab", r#"{"host":"10.5.72.2","ttl":30}"#),
            ("/skydns/local/weft/db/abababababab-6", r#"{"host":"fd00:5:0:7:0:242:a05:4802","ttl":30}"#),
        ]
    );
}

#[test]
fn only_containers_on_the_overlay_with_a_label_name_are_published() {
    let containers = [
        container("01", "Web_1", "10.5.72.3", &[]),
        container("02", "elsewhere", "172.17.0.2", &[]),
        container("03", "no-ip", "", &[]),
        container("04", "-bad", "10.5.72.4", &[]),
    ];
    let wanted = wanted(&domain(), subnet(), &containers);
    assert_eq!(wanted.names.keys().collect::<Vec<_>>(), ["web-1"]);
    assert_eq!(wanted.skipped, [SkyDnsError::NotALabel("-bad".into())]);
}

#[test]
fn ours_are_weft_records_on_our_lease_and_a_previous_runs_are_found_by_subnet() {
    let d = domain();
    let mine = key("/skydns/local/weft/db/abababababab", r#"{"host":"10.5.72.2","ttl":30}"#, 7);
    let peer = key("/skydns/local/weft/db/cdcdcdcdcdcd", r#"{"host":"10.5.9.2","ttl":30}"#, 8);
    let foreign = key("/skydns/local/weft/db/x1", r#"{"host":"10.5.72.9"}"#, 0);
    let printer = key("/skydns/local/weft/printer/0123456789ab", r#"{"host":"10.5.72.50"}"#, 0);
    let moved = key("/skydns/local/weft/old/efefefefefef", r#"{"host":"10.5.1.2","ttl":30}"#, 7);
    let lease = Some(EtcdLeaseId(7));
    assert!(is_ours(&d, lease, &mine));
    assert!(!is_ours(&d, None, &mine), "no lease yet: nothing is ours to delete");
    assert!(!is_ours(&d, lease, &peer), "another host's");
    assert!(!is_ours(&d, lease, &foreign), "not a weft record id");
    assert!(is_ours(&d, lease, &moved), "on our lease, from a subnet we held before");
    assert!(!is_ours(&d, Some(EtcdLeaseId(9)), &moved));
    assert!(!is_ours(&d, lease, &printer), "a hand-written record in our subnet, on no lease");
    assert!(in_our_subnet(&d, subnet(), &mine) && !in_our_subnet(&d, subnet(), &printer) && !in_our_subnet(&d, subnet(), &peer));
}

#[test]
fn changes_are_the_difference_on_our_lease() {
    let lease = Some(EtcdLeaseId(7));
    let same = key("/skydns/local/weft/db/abababababab", r#"{"host":"10.5.72.2","ttl":30}"#, 7);
    let other_lease = key("/skydns/local/weft/web/cdcdcdcdcdcd", r#"{"host":"10.5.72.3","ttl":30}"#, 5);
    let gone = key("/skydns/local/weft/old/efefefefefef", r#"{"host":"10.5.72.4","ttl":30}"#, 7);
    let wanted: BTreeMap<String, String> = [&same, &other_lease].iter().map(|k| (k.key.clone(), k.value.clone())).collect();
    let changes = changes(&wanted, &[&same, &other_lease, &gone], lease);
    assert_eq!(changes.put, [(other_lease.key.clone(), other_lease.value.clone())]);
    assert_eq!(changes.delete, std::slice::from_ref(&gone.key));
    // Nothing held: everything is written; everything held and wanted: nothing is.
    assert_eq!(super::changes(&wanted, &[], lease).put.len(), 2);
    let settled = key(&other_lease.key, &other_lease.value, 7);
    assert_eq!(super::changes(&wanted, &[&same, &settled], lease), Changes::default());
}

#[test]
fn status_lists_this_hosts_names_with_their_ports() {
    let listed = [
        key("/skydns/local/weft/db/abababababab", r#"{"host":"10.5.72.2","ttl":30}"#, 7),
        key("/skydns/local/weft/db/abababababab-6379-tcp", r#"{"host":"10.5.72.2","port":6379,"ttl":30}"#, 7),
        key("/skydns/local/weft/db/abababababab-53-udp", r#"{"host":"10.5.72.2","port":53,"ttl":30}"#, 7),
        key("/skydns/local/weft/web/cdcdcdcdcdcd", r#"{"host":"10.5.9.2","ttl":30}"#, 8),
    ];
    let names = published_names(&domain(), subnet(), &listed);
    assert_eq!(
        names,
        [PublishedName {
            name: "db".into(),
            host: "10.5.72.2".parse().unwrap(),
            ports: vec!["53/udp".into(), "6379/tcp".into()]
        }]
    );
}
