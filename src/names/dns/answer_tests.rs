use super::*;
use crate::etcd::{NameKey, PrefixChange};

const ID_A: &str = "0123456789ab";
const ID_B: &str = "ba9876543210";

fn cache(kvs: &[(&str, &str)]) -> NameCache {
    let keys: Vec<NameKey> =
        kvs.iter().map(|(k, v)| NameKey { key: k.to_string(), value: v.to_string(), etcd_lease: None }).collect();
    let (cache, skipped) = NameCache::listed("weft.local".parse().unwrap(), &keys);
    assert_eq!(skipped, 0);
    cache
}

fn db_on_two_hosts() -> NameCache {
    cache(&[
        (&format!("/skydns/local/weft/db/{ID_A}"), r#"{"host":"10.5.72.2","ttl":30}"#),
        (&format!("/skydns/local/weft/db/{ID_A}-6379-tcp"), r#"{"host":"10.5.72.2","port":6379,"ttl":30}"#),
        (&format!("/skydns/local/weft/db/{ID_A}-53-udp"), r#"{"host":"10.5.72.2","port":53,"ttl":30}"#),
        (&format!("/skydns/local/weft/db/{ID_B}"), r#"{"host":"10.5.9.3","ttl":20}"#),
        (&format!("/skydns/local/weft/web/{ID_B}"), r#"{"host":"fd00:5:0:9::3","ttl":30}"#),
    ])
}

fn rdata(lookup: &Lookup) -> Vec<String> {
    match lookup {
        Lookup::Found { answers, .. } => answers.iter().map(|r| format!("{} {} {}", r.name, r.ttl, r.data)).collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn every_host_of_a_name_is_an_address() {
    let c = db_on_two_hosts();
    assert_eq!(
        rdata(&lookup(&c, "DB.weft.local.", RecordType::A)),
        ["db.weft.local. 20 10.5.9.3", "db.weft.local. 30 10.5.72.2"]
    );
    assert_eq!(lookup(&c, "db.weft.local", RecordType::AAAA), Lookup::NoData);
    assert_eq!(rdata(&lookup(&c, "web.weft.local", RecordType::AAAA)), ["web.weft.local. 30 fd00:5:0:9::3"]);
    assert_eq!(lookup(&c, "nobody.weft.local", RecordType::A), Lookup::NxDomain);
    assert_eq!(lookup(&c, "x.db.weft.local", RecordType::A), Lookup::NxDomain);
    assert_eq!(lookup(&c, "weft.local", RecordType::A), Lookup::NoData);
    assert_eq!(lookup(&c, "example.com", RecordType::A), Lookup::Elsewhere);
    assert_eq!(lookup(&c, "notweft.local", RecordType::A), Lookup::Elsewhere);
}

#[test]
fn srv_answers_name_the_container_and_carry_its_address() {
    let c = db_on_two_hosts();
    assert_eq!(
        rdata(&lookup(&c, "_6379._tcp.db.weft.local.", RecordType::SRV)),
        [format!("_6379._tcp.db.weft.local. 30 10 10 6379 {ID_A}.db.weft.local.")]
    );
    let Lookup::Found { additionals, .. } = lookup(&c, "_6379._tcp.db.weft.local.", RecordType::SRV) else { panic!() };
    assert_eq!(additionals.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(), ["10.5.72.2"]);
    assert_eq!(lookup(&c, "_6379._udp.db.weft.local.", RecordType::SRV), Lookup::NxDomain);
    assert_eq!(lookup(&c, "_6379._tcp.db.weft.local.", RecordType::A), Lookup::NoData);
    let every_port = rdata(&lookup(&c, "db.weft.local", RecordType::SRV));
    assert_eq!(
        every_port,
        [
            format!("db.weft.local. 30 10 10 53 {ID_A}.db.weft.local."),
            format!("db.weft.local. 30 10 10 6379 {ID_A}.db.weft.local.")
        ]
    );
    assert_eq!(
        rdata(&lookup(&c, &format!("{ID_A}.db.weft.local"), RecordType::A)),
        [format!("{ID_A}.db.weft.local. 30 10.5.72.2")]
    );
    assert_eq!(lookup(&c, "web.weft.local", RecordType::SRV), Lookup::NoData);
}

#[test]
fn the_watch_keeps_the_cache_equal_to_etcd() {
    let mut c = db_on_two_hosts();
    let key = format!("/skydns/local/weft/db/{ID_B}");
    assert!(c.apply(&PrefixChange::Delete { key: key.clone() }));
    assert_eq!(rdata(&lookup(&c, "db.weft.local", RecordType::A)), ["db.weft.local. 30 10.5.72.2"]);
    assert!(!c.apply(&PrefixChange::Put { key: format!("/skydns/local/weft/db/{ID_A}"), value: "garbage".into() }));
    assert!(c.apply(&PrefixChange::Put { key: key.clone(), value: r#"{"host":"10.5.9.4","ttl":5}"#.into() }));
    assert_eq!(rdata(&lookup(&c, "db.weft.local", RecordType::A)), ["db.weft.local. 5 10.5.9.4", "db.weft.local. 30 10.5.72.2"]);
    for id in [ID_A, &format!("{ID_A}-6379-tcp"), &format!("{ID_A}-53-udp"), ID_B] {
        c.apply(&PrefixChange::Delete { key: format!("/skydns/local/weft/db/{id}") });
    }
    assert_eq!(lookup(&c, "db.weft.local", RecordType::A), Lookup::NxDomain);
    assert_eq!(c.len(), 1);
}
