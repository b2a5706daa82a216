//! Bounded by design (issue 13 §6): what anyone writing under the prefix can make weftd hold in
//! memory, fail to list, or write to its log.

use std::time::Duration;

use lab::bounded::vm_rss_kib;
use lab::{poll, Lab, Weftd};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNETS: &str = "/coreos.com/network/subnets/";
const DEADLINE: Duration = Duration::from_secs(30);
/// weftd at its default log level, as an operator runs it.
const INFO_LOG: &[(&str, &str)] = &[("RUST_LOG", "info")];

/// A lab whose etcd holds `config`, with `hosts` hosts running weftd (`env`), each ready.
fn running(config: &str, hosts: usize, env: &[(&str, &str)]) -> (Lab, Vec<Weftd>) {
    let mut lab = Lab::new();
    lab.put_network_config(config);
    let numbers: Vec<usize> = (0..hosts).map(|_| lab.add_host()).collect();
    let daemons = numbers.iter().map(|&n| lab.start_weftd_env(n, &[], env)).collect();
    for &n in &numbers {
        wait_subnet(&lab, n);
    }
    (lab, daemons)
}

fn wait_subnet(lab: &Lab, n: usize) -> String {
    lab.wait_subnet_env(n, DEADLINE)["FLANNEL_SUBNET"].clone()
}

/// A lease value for `public_ip` whose BackendType is `backend_type`.
fn lease_value(public_ip: &str, backend_type: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"{backend_type}","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

/// The VTEP addresses host n has ARP entries for on flannel.1 (one per programmed peer).
fn arp_entries(lab: &Lab, n: usize) -> usize {
    lab.host(n).ip_json(&["neigh", "show", "dev", "flannel.1"]).as_array().map_or(0, Vec::len)
}

fn longest_line(log: &str) -> usize {
    log.lines().map(str::len).max().unwrap_or_default()
}

#[test]
fn megabyte_values_written_again_and_again_leave_memory_and_log_lines_bounded() {
    let (lab, daemons) = running(CONFIG, 1, &[]);
    std::thread::sleep(Duration::from_secs(1)); // start-up allocations settle
    let before = vm_rss_kib(daemons[0].pid());
    let key = format!("{SUBNETS}10.5.200.0-24");
    let filler = "x".repeat(1 << 20);
    for i in 0..100 {
        lab.etcd_put_large(&key, lease_value("198.18.0.99", &format!("{i:03}{filler}"), "02:00:00:00:00:99").as_bytes());
    }
    // Each value is skipped with a warning; the last one's shows weftd has seen them all.
    daemons[0].wait_log("backend type \"099", DEADLINE);
    let after = vm_rss_kib(daemons[0].pid());
    let log = daemons[0].log();
    println!(
        "VmRSS {before} KiB -> {after} KiB after 100 distinct 1 MiB BackendTypes; longest log line {} bytes",
        longest_line(&log)
    );
    assert!(after < before + 30 * 1024, "weftd's RSS grew from {before} KiB to {after} KiB");
    assert!(longest_line(&log) < 2000, "a log line carries a peer's whole value ({} bytes)", longest_line(&log));
}

#[test]
fn a_restarting_weftd_lists_leases_larger_than_a_grpc_message() {
    let (lab, mut daemons) = running(CONFIG, 2, &[]);
    poll("host 1 to program host 2", DEADLINE, || (arp_entries(&lab, 1) == 1).then_some(()));
    // 13 values of 1.4 MB: over gRPC's 4 MiB default and over weftd's own response limit, so
    // the listing must both take large responses and page down. etcd takes up to 1.5 MiB each.
    let filler = "x".repeat(1_400_000);
    for third in 200..213 {
        let value = lease_value(&format!("198.18.1.{third}"), &filler, "02:00:00:00:01:01");
        lab.etcd_put_large(&format!("{SUBNETS}10.5.{third}.0-24"), value.as_bytes());
    }
    daemons[0].kill9();
    std::fs::remove_file(&lab.host(1).subnet_file).expect("remove host 1's subnet.env");
    lab.host(1).exec_ok(&["ip", "link", "del", "flannel.1"]);
    let restarted = lab.start_weftd(1, &[]);
    wait_subnet(&lab, 1);
    poll("restarted host 1 to program host 2", DEADLINE, || (arp_entries(&lab, 1) == 1).then_some(()));
    let log = restarted.log();
    assert!(longest_line(&log) < 2000, "a log line carries a peer's whole value ({} bytes)", longest_line(&log));
    assert!(!log.contains("etcd unavailable"), "etcd was up throughout, yet weftd said it was unavailable");
    // The lab runs weftd at debug level, which shows the listing paged down.
    assert!(log.contains("reading fewer keys at a time"), "the listing never needed smaller pages: {}", log.len());
}

#[test]
fn a_burst_of_lease_events_is_summarised_in_the_log() {
    // A /8 has room for the 2,000 leases of the burst.
    let config = r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#;
    let (lab, daemons) = running(config, 2, INFO_LOG);
    poll("host 1 to program host 2", DEADLINE, || (arp_entries(&lab, 1) == 1).then_some(()));
    let one_peer = daemons[0].log();
    assert!(one_peer.contains("peer added"), "one peer joining is logged by itself: {one_peer}");
    let lines_before = one_peer.lines().count();
    // The hosts' subnets are random: the burst's 2,000 are picked among the others.
    let held = [wait_subnet(&lab, 1), wait_subnet(&lab, 2)].map(|s| s.replace(".1/24", ".0-24"));
    let leases: Vec<(String, String)> = (0..2100u32)
        .map(|i| {
            let (hi, lo) = (i / 256, i % 256);
            let mac = format!("02:00:00:01:{hi:02x}:{lo:02x}");
            (format!("10.{}.{lo}.0-24", 100 + hi), lease_value(&format!("198.19.{hi}.{lo}"), "vxlan", &mac))
        })
        .filter(|(name, _)| !held.contains(name))
        .take(2000)
        .map(|(name, value)| (format!("{SUBNETS}{name}"), value))
        .collect();
    lab.etcd_put_all(&leases); // 20 transactions of 100 puts, as fast as etcdctl goes
    poll("host 1 to program all 2,001 peers", Duration::from_secs(90), || (arp_entries(&lab, 1) == 2001).then_some(()));
    // Every peer is accounted for at the default level, in a few lines.
    let log = poll("the log to account for all 2,000 new peers", Duration::from_secs(10), || {
        let log = daemons[0].log();
        (peers_added(log.lines().skip(lines_before)) == 2000).then_some(log)
    });
    let burst: Vec<&str> = log.lines().skip(lines_before).collect();
    println!("{} log lines at the default level for 2,000 lease events:\n{}", burst.len(), burst.join("\n"));
    assert!(burst.len() < 50, "{} log lines for one burst of lease events", burst.len());
}

/// Peers the log says were added: one per "peer added" line, plus each summary's `added=`.
fn peers_added<'a>(lines: impl Iterator<Item = &'a str>) -> u64 {
    let added = |line: &str| -> u64 {
        let count = line.split_whitespace().find_map(|word| word.strip_prefix("added=")).and_then(|n| n.parse().ok());
        count.unwrap_or(u64::from(line.contains("peer added")))
    };
    lines.map(added).sum()
}

#[test]
fn a_config_changed_while_running_is_reported_once() {
    let (lab, daemons) = running(CONFIG, 1, INFO_LOG);
    let changed = r#"{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}"#;
    lab.put_network_config(changed);
    daemons[0].wait_log("a restart applies the new one", Duration::from_secs(10));
    // The same value again says nothing; an invalid one says so once.
    lab.put_network_config(changed);
    lab.put_network_config("{not json");
    lab.put_network_config("{not json");
    lab.put_network_config(CONFIG); // back to what runs: silence
    lab.put_network_config("{\"Network\": 5}");
    daemons[0].wait_log("network config in etcd is invalid", Duration::from_secs(10));
    poll("the second invalid config to be reported", Duration::from_secs(10), || {
        (daemons[0].log().matches("network config in etcd is invalid").count() == 2).then_some(())
    });
    let log = daemons[0].log();
    assert_eq!(log.matches("a restart applies the new one").count(), 1, "{log}");
    assert_eq!(log.matches("network config in etcd is invalid").count(), 2, "{log}");
}

/// Individual WARN lines weftd allows itself per kind of peer-caused warning and minute
/// (`logtext::WARNINGS_PER_WINDOW`).
const WARNINGS_PER_MINUTE: usize = 8;

/// WARN lines of `log` (not debug ones, where the rest go) containing `needle`.
fn warn_lines<'a>(log: &'a str, needle: &'a str) -> impl Iterator<Item = &'a str> {
    log.lines().filter(move |line| line.contains(" WARN ") && line.contains(needle))
}

/// The count a summary line starts its message with: "… WARN weft::…: 37 more …".
fn summarised(line: &str) -> u64 {
    let before = line.split(" more ").next().unwrap_or_default();
    before.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count in {line:?}"))
}

#[test]
fn warnings_a_writer_causes_stay_few_and_are_summarised_once_a_minute() {
    let (lab, daemons) = running(CONFIG, 1, &[]);
    // One bad key is named at once, as it always was.
    lab.etcd_put(&format!("{SUBNETS}10.5.99.0-24"), "not json");
    daemons[0].wait_log("skipping malformed lease", Duration::from_secs(10));
    assert_eq!(warn_lines(&daemons[0].log(), "10.5.99.0-24").count(), 1, "{}", daemons[0].log());
    // One key flipping between two reasons to skip it (loopback, multicast PublicIP).
    let flip_key = format!("{SUBNETS}10.5.240.0-24");
    for flip in 0..60 {
        let public_ip = if flip % 2 == 0 { "127.0.0.1" } else { "224.0.0.1" };
        lab.etcd_put(&flip_key, &lease_value(public_ip, "vxlan", "02:ee:00:00:00:01"));
    }
    // 200 malformed keys written, deleted and written again: 400 more malformed leases.
    let bad: Vec<(String, String)> = (0..200).map(|i| (format!("{SUBNETS}10.5.100.{i}-32"), "x".to_string())).collect();
    lab.etcd_put_all(&bad);
    lab.etcdctl(&["del", "--prefix", &format!("{SUBNETS}10.5.100.")]);
    lab.etcd_put_all(&bad);
    // weftd logs at debug level what it holds back; all 401 are seen, a few at warn level.
    let malformed = |log: &str| log.lines().filter(|line| line.contains("skipping malformed lease")).count();
    let log =
        poll("weftd to see all 401 malformed leases", DEADLINE, || Some(daemons[0].log()).filter(|log| malformed(log) == 401));
    let (peer_warnings, malformed_warnings) =
        (warn_lines(&log, "skipping peer lease").count(), warn_lines(&log, "skipping malformed lease").count());
    println!("60 flips -> {peer_warnings} WARN lines; 401 malformed leases -> {malformed_warnings} WARN lines");
    assert!(peer_warnings <= WARNINGS_PER_MINUTE, "{peer_warnings} warnings for one key flipping");
    assert_eq!(malformed_warnings, WARNINGS_PER_MINUTE, "warnings for 401 malformed leases");
    // The rest is summarised once the minute is over, with no further write to prompt it.
    let summaries = |log: &str| -> Vec<String> {
        warn_lines(log, " more peer leases skipped in the last 60 s")
            .chain(warn_lines(log, " more malformed leases skipped in the last 60 s"))
            .map(str::to_string)
            .collect()
    };
    let lines = poll("a summary of each kind", Duration::from_secs(90), || {
        Some(summaries(&daemons[0].log())).filter(|lines| lines.len() == 2)
    });
    println!("{}", lines.join("\n"));
    assert!(summarised(&lines[0]) > 0, "{}", lines[0]);
    assert_eq!(summarised(&lines[1]) as usize, 401 - WARNINGS_PER_MINUTE, "every malformed lease is accounted for");
    assert!(lines.iter().all(|line| line.contains("`weftd status` lists them")), "{lines:?}");
}
