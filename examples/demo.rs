//! Demo (`make demo`, needs root): three hosts as network namespaces sharing one etcd, a weftd
//! on each started at the same moment, a container per host, and pings between all of them.
//! Exits non-zero if any ping fails. Set DEMO_KEEP=1 to keep the lab until Enter is pressed.

use lab::{weftd_bin, Lab, Weftd};
use std::net::Ipv4Addr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const HOSTS: usize = 3;
const NETWORK_CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNET_TIMEOUT: Duration = Duration::from_secs(30);
/// Each daemon learns its peers' leases asynchronously, so a pair gets this long to converge.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let bin = weftd_bin();
    if !bin.exists() {
        eprintln!("demo: {} not found; build it first (`make build`)", bin.display());
        std::process::exit(2);
    }
    let failures = run_demo();
    std::process::exit(if failures == 0 { 0 } else { 1 });
}

/// Runs the demo; returns the number of failed pings. The lab is dropped (cleaned) on return.
fn run_demo() -> usize {
    let mut lab = Lab::new();
    for _ in 0..HOSTS {
        lab.add_host();
    }
    println!("lab {} in {}: etcd at {}", lab.id(), lab.dir().display(), lab.etcd_endpoint());
    lab.put_network_config(NETWORK_CONFIG);

    let _daemons = start_all_at_once(&lab);
    for n in 1..=HOSTS {
        lab.wait_subnet_env(n, SUBNET_TIMEOUT);
        print_subnet_env(&lab, n);
    }
    let ips: Vec<Ipv4Addr> = (1..=HOSTS).map(|n| lab.attach_container(n)).collect();
    let failures = ping_all_pairs(&lab, &ips);
    print_flannel_state(&lab, 1);

    if failures > 0 {
        eprintln!("\n{failures} ping(s) failed; weftd logs follow");
        lab.dump_logs(40);
    }
    if std::env::var_os("DEMO_KEEP").is_some() {
        keep_until_enter(&lab);
    }
    failures
}

/// Starts one weftd per host, released together by a barrier so they race for leases.
fn start_all_at_once(lab: &Lab) -> Vec<Weftd> {
    let barrier = Barrier::new(HOSTS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..=HOSTS)
            .map(|n| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    lab.start_weftd(n, &[])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("start weftd")).collect()
    })
}

/// Prints the file exactly as docker's tooling reads it.
fn print_subnet_env(lab: &Lab, n: usize) {
    let path = &lab.host(n).subnet_file;
    println!("\n== host {n}: cat {}", path.display());
    print!("{}", std::fs::read_to_string(path).expect("subnet.env was just seen"));
}

/// Pings every container from every other one; prints a line per pair, returns the failures.
fn ping_all_pairs(lab: &Lab, ips: &[Ipv4Addr]) -> usize {
    println!("\n== container pings");
    let mut failures = 0;
    for from in 1..=HOSTS {
        for to in (1..=HOSTS).filter(|&to| to != from) {
            let dst = ips[to - 1];
            let started = Instant::now();
            let (ok, tries) = ping_until_ok(lab, from, dst);
            let verdict = if ok { "OK" } else { "FAIL" };
            let took = started.elapsed();
            println!("c{from} ({}) -> c{to} ({dst}): {verdict} ({tries} tries, {took:.1?})", ips[from - 1]);
            failures += usize::from(!ok);
        }
    }
    failures
}

/// Pings until one answer or PING_TIMEOUT; returns (answered, attempts).
fn ping_until_ok(lab: &Lab, from: usize, dst: Ipv4Addr) -> (bool, u32) {
    let deadline = Instant::now() + PING_TIMEOUT;
    let mut tries = 0;
    loop {
        tries += 1;
        if lab.container_ping(from, dst) {
            return (true, tries);
        }
        if Instant::now() >= deadline {
            return (false, tries);
        }
    }
}

/// What weftd programmed for the overlay on host N: routes, neighbours and FDB of flannel.1.
fn print_flannel_state(lab: &Lab, n: usize) {
    let host = lab.host(n);
    for args in [
        ["ip", "route", "show", "dev", "flannel.1"],
        ["ip", "neigh", "show", "dev", "flannel.1"],
        ["bridge", "fdb", "show", "dev", "flannel.1"],
    ] {
        println!("\n== host {n}: {}", args.join(" "));
        let out = host.exec(&args);
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Prints how to look around, then waits for Enter (or end of input) before cleaning up.
fn keep_until_enter(lab: &Lab) {
    println!("\n== DEMO_KEEP: the lab stays up until you press Enter");
    for ns in lab.namespaces() {
        println!("  {ns}");
    }
    let h1 = &lab.host(1).ns;
    println!("e.g. ip netns exec {h1} ip -d link show flannel.1");
    println!("     ip netns exec {h1} bridge fdb show dev flannel.1");
    println!("     ip netns exec {h1} bash    # a shell on host 1");
    println!("logs: {}", lab.dir().display());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
