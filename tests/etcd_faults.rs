//! etcd outages, failover, crashes and etcd security, with containers pinging through them.
//! Each test prints the figures it measured.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::{poll, EtcdMode, Lab, Weftd};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DEADLINE: Duration = Duration::from_secs(30);

/// A lab with `hosts` hosts, each with weftd (`extra` flags) and a container, all pinging.
fn running_cluster(mode: EtcdMode, hosts: usize, extra: &[&str]) -> (Lab, Vec<Weftd>) {
    let lab = Lab::with_etcd(mode);
    lab.put_network_config(CONFIG);
    start_cluster(lab, hosts, extra)
}

/// `running_cluster` on a lab whose etcd is already set up.
fn start_cluster(mut lab: Lab, hosts: usize, extra: &[&str]) -> (Lab, Vec<Weftd>) {
    let numbers: Vec<usize> = (0..hosts).map(|_| lab.add_host()).collect();
    let daemons: Vec<Weftd> = numbers.iter().map(|&n| lab.start_weftd(n, extra)).collect();
    for &n in &numbers {
        wait_subnet(&lab, n);
        lab.attach_container(n);
    }
    for &from in &numbers {
        for &to in numbers.iter().filter(|&&to| to != from) {
            wait_ping(&lab, from, lab.container(to).ip);
        }
    }
    (lab, daemons)
}

fn wait_subnet(lab: &Lab, n: usize) -> String {
    lab.wait_subnet_env(n, DEADLINE)["FLANNEL_SUBNET"].clone()
}

fn wait_ping(lab: &Lab, from: usize, to: Ipv4Addr) {
    poll(&format!("container {from} to ping {to}"), DEADLINE, || lab.container_ping(from, to).then_some(()));
}

/// A late host joins: it gets a lease, and containers 1 and the new one reach each other.
fn join_and_ping(lab: &mut Lab, extra: &[&str]) -> Weftd {
    let n = lab.add_host();
    let daemon = lab.start_weftd(n, extra);
    wait_subnet(lab, n);
    lab.attach_container(n);
    wait_ping(lab, 1, lab.container(n).ip);
    wait_ping(lab, n, lab.container(1).ip);
    daemon
}

/// `weftd status --json` in host n's namespace: healthy means every peer's entries are exact
/// and nothing unexplained is on the device.
fn status_healthy(lab: &Lab, n: usize) -> bool {
    let bin = lab::weftd_bin();
    let endpoints = lab.etcd_endpoints();
    let out = lab.host(n).exec(&[bin.to_str().unwrap(), "status", "--etcd-endpoints", &endpoints, "--iface", "eth0"]);
    if !out.status.success() {
        eprintln!("weftd status on host {n}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[test]
fn an_etcd_outage_costs_no_packets_no_leases_and_no_cpu() {
    let (mut lab, daemons) = running_cluster(EtcdMode::Single, 2, &[]);
    let leases_before = lab.etcd_get_prefix("/coreos.com/network/subnets/");
    let pings = [
        lab.start_ping(1, lab.container(2).ip, Duration::from_millis(100)),
        lab.start_ping(2, lab.container(1).ip, Duration::from_millis(100)),
    ];
    let log_lines = daemons[0].log().lines().count();
    let cpu_before = daemons[0].cpu_time();

    lab.stop_etcd(0);
    std::thread::sleep(Duration::from_secs(30)); // the outage itself
    let cpu = daemons[0].cpu_time() - cpu_before;
    lab.start_etcd(0);
    let back = Instant::now();
    daemons[0].wait_log("etcd reachable again", DEADLINE);
    let reconnect = back.elapsed();
    let _late = join_and_ping(&mut lab, &[]);

    let stats: Vec<_> = pings.into_iter().map(|p| p.finish()).collect();
    // What an operator sees at the default level (the lab runs weftd with debug logs on).
    let outage_log: Vec<String> =
        daemons[0].log().lines().skip(log_lines).filter(|l| !l.contains(" DEBUG ")).map(str::to_string).collect();
    let warnings = outage_log.iter().filter(|l| l.contains("etcd unavailable")).count();
    println!(
        "figure: 30 s etcd outage: pings sent {}/{} lost {}/{}, weftd CPU {} ms, {} log lines ({} outage warning), reconnected {} ms after etcd returned",
        stats[0].sent, stats[1].sent, stats[0].lost, stats[1].lost, cpu.as_millis(), outage_log.len(), warnings, reconnect.as_millis()
    );
    assert!(stats.iter().all(|s| s.lost == 0 && s.sent >= 250), "{stats:?}");
    assert_eq!(warnings, 1, "the outage is logged once:\n{}", outage_log.join("\n"));
    assert!(outage_log.len() <= 10, "no log flood:\n{}", outage_log.join("\n"));
    assert!(cpu < Duration::from_millis(500), "no busy loop: {cpu:?} of CPU in 30 s");
    let leases_after = lab.etcd_get_prefix("/coreos.com/network/subnets/");
    for lease in &leases_before {
        assert!(leases_after.contains(lease), "lease {} changed during the outage", lease.0);
    }
}

#[test]
fn losing_the_etcd_leader_fails_over_renews_and_admits_new_hosts() {
    let ttl = ["--subnet-lease-ttl", "6s"];
    let (mut lab, daemons) = running_cluster(EtcdMode::Cluster3, 2, &ttl);
    let leader = lab.etcd_leader();
    let renewals = daemons[0].log().matches("lease renewed").count();
    let stopped = Instant::now();
    lab.stop_etcd(leader);
    let new_leader = lab.etcd_leader();
    assert_ne!(new_leader, leader);
    poll("two renewals after the leader died (longer than the 6 s TTL)", DEADLINE, || {
        (daemons[0].log().matches("lease renewed").count() >= renewals + 3).then_some(())
    });
    let _late = join_and_ping(&mut lab, &ttl);
    println!(
        "figure: etcd leader {leader} killed; member {new_leader} leads; leases renewed and a new host joined {} ms later",
        stopped.elapsed().as_millis()
    );
    assert_eq!(lab.etcd_get_prefix("/coreos.com/network/subnets/").len(), 3, "no lease lost");
    assert!(status_healthy(&lab, 1));
}

#[test]
fn kill_9_and_restart_keeps_the_subnet_and_every_packet() {
    let (lab, mut daemons) = running_cluster(EtcdMode::Single, 2, &[]);
    let subnet = wait_subnet(&lab, 1);
    let pings = [
        lab.start_ping(1, lab.container(2).ip, Duration::from_millis(100)),
        lab.start_ping(2, lab.container(1).ip, Duration::from_millis(100)),
    ];
    let window = Duration::from_secs(2); // pings run this long before the crash and after the restart
    std::thread::sleep(window);
    daemons[0].kill9();
    let restarted = Instant::now();
    let daemon = lab.start_weftd(1, &[]);
    daemon.wait_log("lease acquired", DEADLINE);
    poll("host 1 to report healthy again", DEADLINE, || status_healthy(&lab, 1).then_some(()));
    let healthy = restarted.elapsed();
    std::thread::sleep(window);
    let stats: Vec<_> = pings.into_iter().map(|p| p.finish()).collect();
    println!(
        "figure: kill -9 and restart: same subnet, healthy {} ms after restart, pings lost {}/{} and {}/{}",
        healthy.as_millis(),
        stats[0].lost,
        stats[0].sent,
        stats[1].lost,
        stats[1].sent
    );
    assert_eq!(wait_subnet(&lab, 1), subnet);
    assert!(stats.iter().all(|s| s.lost == 0 && s.sent >= 30), "{stats:?}");
    assert!(status_healthy(&lab, 2), "no duplicate or orphan entries on the peer either");
}

#[test]
fn tls_with_client_certificates_works_and_a_wrong_ca_is_a_clear_error() {
    let mut lab = Lab::with_etcd(EtcdMode::Tls);
    lab.put_network_config(CONFIG);
    let (good, bad) = (lab.add_host(), lab.add_host());
    let tls = lab.tls_files();
    let flags = |ca: &std::path::Path| {
        vec![
            "--etcd-cafile".to_string(),
            ca.display().to_string(),
            "--etcd-certfile".into(),
            tls.cert.display().to_string(),
            "--etcd-keyfile".into(),
            tls.key.display().to_string(),
        ]
    };
    let right = flags(&tls.ca);
    let _good = lab.start_weftd(good, &right.iter().map(String::as_str).collect::<Vec<_>>());
    wait_subnet(&lab, good);

    let wrong = flags(&tls.wrong_ca);
    let mut daemon = lab.start_weftd(bad, &wrong.iter().map(String::as_str).collect::<Vec<_>>());
    let started = Instant::now();
    let status = daemon.wait_exit(DEADLINE).expect("a wrong CA must stop weftd, not hang");
    let error = daemon.log().lines().rfind(|l| l.contains("ERROR")).unwrap_or_default().to_string();
    println!("figure: wrong CA refused in {} ms: {error}", started.elapsed().as_millis());
    assert!(!status.success());
    assert!(daemon.log().contains("TLS with etcd failed") && daemon.log().contains("--etcd-cafile"), "{}", daemon.log());
}

#[test]
fn username_and_password_work_and_a_wrong_password_is_a_clear_error() {
    let mut lab = Lab::with_etcd(EtcdMode::Auth);
    lab.put_network_config(CONFIG);
    let (good, bad) = (lab.add_host(), lab.add_host());
    let user = ["--etcd-username", lab::ETCD_WEFT_USER];
    let _good = lab.start_weftd(good, &[user[0], user[1], "--etcd-password", lab::ETCD_WEFT_PASSWORD]);
    wait_subnet(&lab, good);

    let mut daemon = lab.start_weftd(bad, &[user[0], user[1], "--etcd-password", "not-the-password"]);
    let status = daemon.wait_exit(DEADLINE).expect("a wrong password must stop weftd, not hang");
    let error = daemon.log().lines().rfind(|l| l.contains("ERROR")).unwrap_or_default().to_string();
    println!("figure: wrong password refused: {error}");
    assert!(!status.success());
    assert!(daemon.log().contains("etcd refused") && daemon.log().contains("--etcd-password"), "{}", daemon.log());
}

const SUBNETS: &str = "/coreos.com/network/subnets/";
/// How soon after etcd answers again both leases must be back and containers pinging.
const REASSERT_DEADLINE: Duration = Duration::from_secs(5);

/// Host n's lease key, from the subnet in its subnet.env.
fn lease_key(lab: &Lab, n: usize) -> String {
    let (gateway, prefix) = lab::parse_cidr(&wait_subnet(lab, n));
    format!("{SUBNETS}{}-{prefix}", lab::nth_address(gateway, prefix, 0))
}

/// Whether host n routes `subnet` (as `10.5.7.0-24`, a lease key's last part) over flannel.1.
fn routes_to(lab: &Lab, n: usize, subnet: &str) -> bool {
    let dst = subnet.replace('-', "/");
    let routes = lab.host(n).try_ip_json(&["route", "show", "dev", "flannel.1"]).unwrap_or_default();
    routes.as_array().is_some_and(|routes| routes.iter().any(|r| r["dst"] == dst.as_str()))
}

/// After etcd's store was replaced (answering again at `answered`): within 5 s, hosts 1 and 2
/// have their leases back with the same subnets and values, each routes to the other and their
/// containers ping both ways; and each lease hangs on an etcd lease that lives.
fn assert_leases_back(lab: &Lab, before: &[(String, String)], answered: Instant) {
    let keys = [lease_key(lab, 1), lease_key(lab, 2)];
    let subnet = |n: usize| keys[n - 1].trim_start_matches(SUBNETS).to_string();
    poll("both leases, routes and pings back", REASSERT_DEADLINE.saturating_sub(answered.elapsed()), || {
        let leases = lab.etcd_get_prefix(SUBNETS);
        (leases.len() == 2 && keys.iter().all(|k| leases.iter().any(|(key, _)| key == k))).then_some(())?;
        (routes_to(lab, 1, &subnet(2)) && routes_to(lab, 2, &subnet(1))).then_some(())?;
        (lab.container_ping(1, lab.container(2).ip) && lab.container_ping(2, lab.container(1).ip)).then_some(())
    });
    println!("figure: both leases back, routed and pinging {} ms after etcd answered", answered.elapsed().as_millis());
    assert_eq!(lab.etcd_get_prefix(SUBNETS), before, "the same subnets with the same values");
    for key in &keys {
        let (lease, ttl) = lab.etcd_key_lease(key).expect("the key exists");
        assert!(lease != 0 && ttl > 0, "{key} must hang on a live etcd lease, not a dead id: lease {lease:x}, TTL {ttl}");
    }
}

#[test]
fn a_wiped_etcd_gets_both_leases_back_with_the_same_subnets() {
    let lab = Lab::with_etcd(EtcdMode::Single);
    lab.put_network_config(CONFIG);
    // A store in use for a while: the leases are written at revisions an empty store takes
    // long to reach, so waiting for the revision to catch up is no way to notice the wipe.
    lab.advance_etcd_revision(50);
    let (lab, mut daemons) = start_cluster(lab, 2, &[]);
    let before = lab.etcd_get_prefix(SUBNETS);

    lab.wipe_etcd();
    let answered = Instant::now();
    lab.put_network_config(CONFIG);
    // Host 1's daemon restarts on the empty store; host 2's keeps running through it all.
    daemons[0].terminate();
    let _restarted = lab.start_weftd(1, &[]);
    assert_leases_back(&lab, &before, answered);
    let log = daemons[1].log();
    let why = log.lines().filter(|l| l.contains("revision went backwards") || l.contains("lease acquired")).collect::<Vec<_>>();
    println!("host 2 noticed the wipe:\n{}", why.join("\n"));
    assert!(log.contains("revision went backwards"), "host 2 says why it wrote its lease again");
}

#[test]
fn etcd_restored_from_an_older_snapshot_gets_the_later_lease_back() {
    let mut lab = Lab::with_etcd(EtcdMode::Single);
    lab.put_network_config(CONFIG);
    let (one, two) = (lab.add_host(), lab.add_host());
    let _first = lab.start_weftd(one, &[]);
    wait_subnet(&lab, one);
    // The backup predates host 2's lease: restoring it takes the store back to a lower revision
    // that lacks host 2's key and holds host 1's key with an etcd lease granted before.
    let snapshot = lab.save_etcd_snapshot("before-host-2");
    let second = lab.start_weftd(two, &[]);
    wait_subnet(&lab, two);
    for n in [one, two] {
        lab.attach_container(n);
    }
    wait_ping(&lab, one, lab.container(two).ip);
    wait_ping(&lab, two, lab.container(one).ip);
    let before = lab.etcd_get_prefix(SUBNETS);

    lab.restore_etcd_snapshot(&snapshot);
    let answered = Instant::now();
    assert_leases_back(&lab, &before, answered);
    assert!(second.log().contains("revision went backwards"), "host 2 says why it wrote its lease again");
}

/// The lease in etcd that advertises `public_ip`: its key and value.
fn lease_of(lab: &Lab, public_ip: Ipv4Addr) -> Option<(String, serde_json::Value)> {
    lab.etcd_get_prefix(SUBNETS).into_iter().find_map(|(key, value)| {
        let value: serde_json::Value = serde_json::from_str(&value).ok()?;
        (value["PublicIP"] == public_ip.to_string()).then_some((key, value))
    })
}

/// A backup restored where our key holds an older value of ours (the PublicIP we had before the
/// underlay was readdressed): the key exists, so it is not "missing"; it is written back with
/// today's value on the same subnet.
#[test]
fn a_restored_backup_with_our_older_public_ip_is_corrected() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts = [lab.add_host(), lab.add_host()];
    let _daemons: Vec<Weftd> = hosts.iter().map(|&n| lab.start_weftd(n, &[])).collect();
    for n in hosts {
        lab.wait_subnet_env(n, DEADLINE);
    }
    let ips = [lab.attach_container(1), lab.attach_container(2)];
    poll("pings", DEADLINE, || (lab.container_ping(1, ips[1]) && lab.container_ping(2, ips[0])).then_some(()));
    let old_ip = lab.host(1).underlay_ip;
    let (key, _) = lease_of(&lab, old_ip).expect("host 1's lease");
    let snapshot = lab.save_etcd_snapshot("old-public-ip");

    let new_ip = Ipv4Addr::new(198, 18, 0, 71);
    let host = lab.host(1);
    host.exec_ok(&["ip", "addr", "del", &format!("{old_ip}/24"), "dev", "eth0"]);
    host.exec_ok(&["ip", "addr", "add", &format!("{new_ip}/24"), "dev", "eth0"]);
    poll("host 1's lease to carry .71", DEADLINE, || lease_of(&lab, new_ip));
    poll("pings after readdress", DEADLINE, || (lab.container_ping(1, ips[1]) && lab.container_ping(2, ips[0])).then_some(()));

    lab.restore_etcd_snapshot(&snapshot);
    let (restored_key, _) =
        poll("host 1's lease to carry .71 again after the restore", REASSERT_DEADLINE, || lease_of(&lab, new_ip));
    assert_eq!(restored_key, key, "same subnet");
    assert!(lease_of(&lab, old_ip).is_none(), "the stale PublicIP is advertised nowhere");
    poll("pings after restore", Duration::from_secs(5), || {
        (lab.container_ping(1, ips[1]) && lab.container_ping(2, ips[0])).then_some(())
    });
}
