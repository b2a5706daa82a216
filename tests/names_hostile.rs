//! Names under hostile conditions a reviewer found (each test failed before its fix): a flood of
//! outside names with a silent resolver (forwards bounded), large foreign values under the
//! domain (publishing goes on), a hand-written record in this host's subnet (left alone). Real
//! weftd, real etcd, dnsmasq as the outside resolver; no dockerd is needed for these (weftd is
//! pointed at a docker socket that does not exist, so it publishes "no containers").

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::dns::{have_dnsmasq, nslookup, NetnsResolvConf};
use lab::{parse_cidr, Lab};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DEADLINE: Duration = Duration::from_secs(30);
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";
const METRICS_PORT: u16 = 9732;

fn nth(gw: Ipv4Addr, k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(gw) + k)
}

fn metric(lab: &Lab, h: usize, name: &str) -> String {
    let (_, text) = lab::http::get(lab.host(h), METRICS_PORT, "/metrics").expect("metrics answer");
    text.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("\n")
}

/// Fault: src/names/publish.rs `is_ours` takes every record of the domain whose host lies in
/// this host's subnet for its own, so a record written by an operator or another tool (here a
/// hand-written alias for a statically addressed service behind docker0) is deleted on the next
/// publishing pass, though weftd never wrote it and it is on no weft lease.
#[test]
fn a_record_written_by_someone_else_into_this_hosts_subnet_is_left_alone() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let h = lab.add_host();
    let args = ["--names", "--names-lease-ttl", "3s"];
    let weftd = lab.start_weftd_env(h, &args, &[("DOCKER_HOST", NO_DOCKER)]);
    let env = lab.wait_subnet_env(h, DEADLINE);
    let (gw, _) = parse_cidr(&env["FLANNEL_SUBNET"]);
    weftd.wait_log("serving DNS", DEADLINE);
    let key = "/skydns/local/weft/printer/0123456789ab";
    lab.etcd_put(key, &format!(r#"{{"host":"{}","ttl":300}}"#, nth(gw, 50)));
    std::thread::sleep(Duration::from_secs(6));
    let left: Vec<String> = lab.etcd_records("/skydns/local/weft/printer/").into_iter().map(|r| r.key).collect();
    assert_eq!(left, [key.to_string()], "weftd deleted a record it did not write; log:\n{}", weftd.log());
}

/// Fault: src/etcd/names.rs `list_names` reads the whole domain with gRPC's 4 MiB default
/// response limit (list_prefix and the lease listing raise it to MAX_RESPONSE_BYTES and page):
/// anyone able to write a few large values anywhere under /skydns/local/weft/ makes every
/// publishing pass fail, so this host's containers are never published (or withdrawn) again.
#[test]
fn large_foreign_values_under_the_domain_do_not_stop_publishing() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let h = lab.add_host();
    let args = ["--names", "--names-lease-ttl", "3s", "--metrics-port", &METRICS_PORT.to_string()];
    let weftd = lab.start_weftd_env(h, &args, &[("DOCKER_HOST", NO_DOCKER)]);
    lab.wait_subnet_env(h, DEADLINE);
    weftd.wait_log("serving DNS", DEADLINE);
    let filler = "x".repeat(1_400_000);
    for i in 0..4 {
        lab.etcd_put_large(
            &format!("/skydns/local/weft/junk/{i:012x}"),
            format!(r#"{{"host":"192.0.2.1","x":"{filler}"}}"#).as_bytes(),
        );
    }
    std::thread::sleep(Duration::from_secs(6));
    let errors = metric(&lab, h, "weft_names_publish_errors");
    assert!(errors.ends_with(" 0"), "publishing fails with 5.6 MB of foreign records in the domain: {errors}\n{}", weftd.log());
}

/// Fault: src/names/dns/server.rs + forward.rs: every query is its own task (hickory spawns one
/// per UDP datagram, unbounded) and a forwarded one holds a fresh UDP socket for up to
/// FORWARD_BUDGET (2 s). A flood of outside names while the resolver is silent grows weftd's
/// open files without bound (towards its fd limit, where etcd and netlink sockets fail too),
/// and local names stop being answered promptly.
#[test]
fn a_query_flood_with_a_silent_resolver_stays_bounded() {
    assert!(have_dnsmasq(), "dnsmasq is missing: run `make deps`");
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (r, resolver) = lab.add_outside_resolver(&[("outside.example", Ipv4Addr::new(203, 0, 113, 7))]);
    // The resolver goes silent (a dead upstream): queries are dropped, not refused.
    lab.host(r).exec_ok(&["iptables", "-I", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"]);
    let h = lab.add_host();
    let _conf = NetnsResolvConf::write(&lab.host(h).ns, &format!("nameserver {resolver}\n"));
    let weftd = lab.start_weftd_env(h, &["--names"], &[("DOCKER_HOST", NO_DOCKER)]);
    lab.wait_subnet_env(h, DEADLINE);
    weftd.wait_log("serving DNS", DEADLINE);
    lab.attach_container(h);
    let (cns, gw) = (lab.container(h).ns.clone(), lab.container(h).gateway);
    lab.etcd_put("/skydns/local/weft/db/0123456789ab", r#"{"host":"10.5.1.2","ttl":30}"#);
    lab::poll_for(DEADLINE, Duration::from_millis(50), || {
        nslookup(&cns, "a", "db.weft.local", gw).text.contains("10.5.1.2").then_some(())
    })
    .expect("db answered before the flood");
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", weftd.pid())).map(|d| d.count()).unwrap_or(0);
    let before = fds();
    // 20,000 distinct outside names in about a second from one container.
    let flood = r#"
import socket, struct, random
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20000):
    name = b"".join(bytes([len(l)]) + l for l in [b"q%d" % i, b"example", b"com"]) + b"\0"
    s.sendto(struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + name + b"\0\x01\0\x01", (GW, 53))
"#
    .replace("GW", &format!("'{gw}'"));
    let out =
        std::process::Command::new("ip").args(["netns", "exec", &cns, "python3", "-c", &flood]).output().expect("run the flood");
    assert!(out.status.success(), "flood: {}", String::from_utf8_lossy(&out.stderr));
    let during = fds();
    let started = Instant::now();
    let local = nslookup(&cns, "a", "db.weft.local", gw);
    let took = started.elapsed();
    assert!(
        during < before + 1000 && local.text.contains("10.5.1.2") && took < Duration::from_secs(1),
        "weftd open files {before} -> {during} during the flood; a cached name took {took:?}: {local:?}"
    );
}
