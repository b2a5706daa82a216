//! Docker 28's drop rules (moby #49792) against the overlay. Debian here ships Docker 20.10, so
//! the rules dockerd v28 makes for its default bridge with one running container are written by
//! hand (read from moby v28.5.2: libnetwork/drivers/bridge/internal/iptabler and
//! integration/network/bridge/iptablesdoc), with the lab's container bridge `cbr0` as the
//! bridge. They drop traffic that enters from another interface and is addressed to a
//! container twice: a DROP at the end of Docker's filter chains, and a per-container DROP in raw
//! PREROUTING. Containers on two hosts must still reach each other, as docker starts after
//! weftd, restarts, or a firewall reload wipes every table.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::{poll, Host, Lab, Weftd};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DEADLINE: Duration = Duration::from_secs(20);
/// weftd checks its rules every second here (`-iptables-resync=1`): a repair takes a period
/// and a few iptables runs.
const REPAIR: Duration = Duration::from_secs(4);
const BRIDGE: &str = "cbr0";
const FORWARD_JUMP: &str = "-m comment --comment \"flanneld forward\" -j FLANNEL-FWD";
const RAW_JUMP: &str = "-m comment --comment \"flanneld forward\" -j FLANNEL-PRERTG";

/// Docker 28's chains in the filter table, in the order dockerd creates them.
const DOCKER_CHAINS: [&str; 6] =
    ["DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2"];

/// What dockerd v28 does to a host's tables as it starts with bridge `b` and then runs one
/// container at `ip`: its own chains emptied and filled by appending, its FORWARD jumps (re-)inserted at the top
/// (DOCKER-FORWARD, then DOCKER-USER above it; DOCKER-USER is created only if absent and never
/// flushed), and the container's direct-access DROP appended to raw PREROUTING.
fn start_docker28(host: &Host, b: &str, ip: Ipv4Addr) {
    let dst = format!("{ip}/32");
    let filter_rules: [&[&str]; 9] = [
        &["DOCKER", "!", "-i", b, "-o", b, "-j", "DROP"],
        &["DOCKER-BRIDGE", "-o", b, "-j", "DOCKER"],
        &["DOCKER-CT", "-o", b, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        &["DOCKER-FORWARD", "-j", "DOCKER-CT"],
        &["DOCKER-FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"],
        &["DOCKER-FORWARD", "-j", "DOCKER-BRIDGE"],
        &["DOCKER-FORWARD", "-i", b, "-j", "ACCEPT"],
        &["DOCKER-ISOLATION-STAGE-1", "-i", b, "!", "-o", b, "-j", "DOCKER-ISOLATION-STAGE-2"],
        &["DOCKER-ISOLATION-STAGE-2", "-o", b, "-j", "DROP"],
    ];
    for chain in DOCKER_CHAINS.iter().chain(&["DOCKER-USER"]) {
        if !host.exec(&["iptables", "-w", "-n", "-L", chain]).status.success() {
            iptables(host, "filter", &["-N", chain]);
        }
    }
    for chain in DOCKER_CHAINS {
        iptables(host, "filter", &["-F", chain]);
    }
    for rule in filter_rules {
        iptables(host, "filter", &[&["-A"][..], rule].concat());
    }
    for chain in ["DOCKER-FORWARD", "DOCKER-USER"] {
        let _ = host.exec(&["iptables", "-w", "-D", "FORWARD", "-j", chain]);
        iptables(host, "filter", &["-I", "FORWARD", "-j", chain]);
    }
    let drop = ["PREROUTING", "-d", &dst, "!", "-i", b, "-j", "DROP"];
    let _ = host.exec(&[&["iptables", "-w", "-t", "raw", "-D"], &drop[..]].concat());
    iptables(host, "raw", &[&["-A"][..], &drop[..]].concat());
}

/// What a firewall reload or `iptables -F` leaves: every rule of filter and raw gone, Docker's
/// own chains too (weft's chains are left empty).
fn wipe_tables(host: &Host) {
    for table in ["filter", "raw"] {
        iptables(host, table, &["-F"]);
    }
    for chain in DOCKER_CHAINS {
        iptables(host, "filter", &["-X", chain]);
    }
}

fn iptables(host: &Host, table: &str, args: &[&str]) {
    host.exec_ok(&[&["iptables", "-w", "-t", table], args].concat());
}

fn rules(host: &Host, table: &str, chain: &str) -> Vec<String> {
    let out = host.exec(&["iptables", "-w", "-t", table, "-S", chain]);
    let prefix = format!("-A {chain} ");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_string).collect()
}

fn pings_both_ways(lab: &Lab, [a, b]: [usize; 2], what: &str) {
    let (ip_a, ip_b) = (lab.container(a).ip, lab.container(b).ip);
    poll(what, REPAIR, || (lab.container_ping(a, ip_b) && lab.container_ping(b, ip_a)).then_some(()));
}

/// weft's accepts sit ahead of Docker's drops: first in DOCKER-USER, first in raw PREROUTING.
fn check_weft_rules_first(host: &Host) {
    assert_eq!(rules(host, "filter", "DOCKER-USER").first().map(String::as_str), Some(FORWARD_JUMP), "in {}", host.ns);
    let raw = rules(host, "raw", "PREROUTING");
    assert_eq!(raw.first().map(String::as_str), Some(RAW_JUMP), "in {}: {raw:?}", host.ns);
    assert!(raw.iter().any(|r| r.ends_with("! -i cbr0 -j DROP")), "Docker's direct-access DROP is in place: {raw:?}");
}

#[test]
fn containers_on_two_hosts_talk_through_docker_28s_drop_rules() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts = [lab.add_host(), lab.add_host()];
    let _weftd: Vec<Weftd> = hosts.iter().map(|&n| lab.start_weftd(n, &["-iptables-resync=1"])).collect();
    for &n in &hosts {
        lab.wait_subnet_env(n, DEADLINE);
        lab.attach_container(n);
    }
    poll("containers to ping across hosts before docker", DEADLINE, || {
        lab.container_ping(hosts[0], lab.container(hosts[1]).ip).then_some(())
    });

    // dockerd starts after weftd, as the documented units order it.
    for &n in &hosts {
        start_docker28(lab.host(n), BRIDGE, lab.container(n).ip);
    }
    pings_both_ways(&lab, hosts, "containers to ping across hosts with docker 28's rules");
    for &n in &hosts {
        check_weft_rules_first(lab.host(n));
    }
    let first = lab.host(hosts[0]);
    for (table, chain) in [("filter", "FORWARD"), ("filter", "DOCKER-USER"), ("raw", "PREROUTING"), ("raw", "FLANNEL-PRERTG")] {
        println!("host {} {table} {chain}: {:#?}", first.n, rules(first, table, chain));
    }

    // dockerd restarts: its FORWARD jumps go back on top, its raw DROP is appended again.
    start_docker28(lab.host(hosts[0]), BRIDGE, lab.container(hosts[0]).ip);
    pings_both_ways(&lab, hosts, "containers to ping after dockerd restarted");

    // A firewall reload wipes everything; docker re-creates its rules, then weft its own.
    for &n in &hosts {
        wipe_tables(lab.host(n));
        start_docker28(lab.host(n), BRIDGE, lab.container(n).ip);
    }
    pings_both_ways(&lab, hosts, "containers to ping after a firewall reload");
    for &n in &hosts {
        check_weft_rules_first(lab.host(n));
    }
}

/// DOCKER-USER is where an operator restricts containers, and weft is one more program there:
/// an operator's DROP inserted above weft's jump stays in force, check after check.
#[test]
fn an_operators_drop_above_the_jump_in_docker_user_stays_in_force() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts = [lab.add_host(), lab.add_host()];
    let weftd: Vec<Weftd> = hosts.iter().map(|&n| lab.start_weftd(n, &["-iptables-resync=1"])).collect();
    for &n in &hosts {
        lab.wait_subnet_env(n, DEADLINE);
        lab.attach_container(n);
    }
    let (c1, c2) = (lab.container(hosts[0]).ip, lab.container(hosts[1]).ip);
    pings_both_ways(&lab, hosts, "containers to ping");
    let host = lab.host(hosts[0]);
    poll("weftd's jump in DOCKER-USER", DEADLINE, || (rules(host, "filter", "DOCKER-USER") == [FORWARD_JUMP]).then_some(()));
    iptables(host, "filter", &["-I", "FORWARD", "1", "-j", "DOCKER-USER"]); // as dockerd does
    let (src, dst) = (format!("{c2}/32"), format!("{c1}/32"));
    let block = ["-s", src.as_str(), "-d", dst.as_str(), "-p", "icmp", "-m", "icmp", "--icmp-type", "8", "-j", "DROP"];
    iptables(host, "filter", &[&["-I", "DOCKER-USER", "1"][..], &block[..]].concat());
    // Proving an absence takes a window: four checks (-iptables-resync=1) see the DROP first.
    let window = Instant::now() + REPAIR;
    while Instant::now() < window {
        assert!(
            !lab.container_ping(hosts[1], c1),
            "the operator's DROP was bypassed: {:#?}",
            rules(host, "filter", "DOCKER-USER")
        );
    }
    assert_eq!(rules(host, "filter", "DOCKER-USER"), [block.join(" ").as_str(), FORWARD_JUMP]);
    assert!(lab.container_ping(hosts[0], c2), "the other direction is not blocked");
    assert!(!weftd[0].log().contains("iptables rules were missing or changed"), "weftd left the chain alone");
}
