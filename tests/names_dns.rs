//! `--names`: weftd answers DNS on docker0's address (the FLANNEL_SUBNET gateway) from the
//! SkyDNS records in etcd (written here with etcdctl exactly as the publisher writes them),
//! follows their changes within a second, forwards other names to the host's resolvers (dnsmasq
//! on the underlay standing in for the internet), answers SERVFAIL at once without one, and is
//! closed to the underlay. A "container" is a namespace behind the host's bridge; queries are
//! busybox `nslookup`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::dns::{have_dnsmasq, nslookup, Answer, NetnsResolvConf};
use lab::Lab;

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DEADLINE: Duration = Duration::from_secs(20);
const METRICS_PORT: u16 = 9731;
const DB: &str = "/skydns/local/weft/db";
const ID_A: &str = "0123456789ab";
const ID_B: &str = "ba9876543210";
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// "db" on another host: a container address in another host's subnet.
const OTHER_HOST_DB: &str = "10.5.200.2";

/// Polls `query` until `done` holds for its answer; returns that answer.
fn until(what: &str, timeout: Duration, query: impl Fn() -> Answer, done: impl Fn(&Answer) -> bool) -> Answer {
    let mut last = None;
    lab::poll_for(timeout, Duration::from_millis(20), || {
        let answer = query();
        let found = done(&answer).then(|| answer.clone());
        last = Some(answer);
        found
    })
    .unwrap_or_else(|| panic!("{what}: not within {timeout:?}; last answer: {last:?}"))
}

#[test]
fn names_come_from_etcd_other_names_are_forwarded_and_the_underlay_is_shut_out() {
    assert!(have_dnsmasq(), "dnsmasq is missing: run `make deps`");
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (_, resolver) = lab.add_outside_resolver(&[("outside.example", OUTSIDE)]);
    let h1 = lab.add_host();
    // Loopback resolvers are the host's stubs: left out, the dnsmasq one is used.
    let conf = format!("nameserver 127.0.0.53\nnameserver ::1\nnameserver {resolver}\n");
    let _resolv_conf = NetnsResolvConf::write(&lab.host(h1).ns, &conf);
    let weftd = lab.start_weftd(h1, &["--names", "--metrics-port", &METRICS_PORT.to_string()]);
    // weftd binds before docker0 has its address: the bridge comes afterwards, as with docker.
    weftd.wait_log("serving DNS", DEADLINE);
    lab.wait_subnet_env(h1, DEADLINE);
    let container_ip = lab.attach_container(h1);
    let (cns, gw) = (lab.container(h1).ns.clone(), lab.container(h1).gateway);
    let from_container = |qtype: &'static str, name: &'static str| {
        let cns = cns.clone();
        move || nslookup(&cns, qtype, name, gw)
    };

    lab.etcd_put(&format!("{DB}/{ID_A}"), &format!(r#"{{"host":"{container_ip}","ttl":30}}"#));
    lab.etcd_put(&format!("{DB}/{ID_A}-6379-tcp"), &format!(r#"{{"host":"{container_ip}","port":6379,"ttl":30}}"#));
    lab.etcd_put(&format!("{DB}/{ID_B}"), &format!(r#"{{"host":"{OTHER_HOST_DB}","ttl":30}}"#));
    lab.etcd_put(&format!("/skydns/local/weft/web/{ID_B}"), r#"{"host":"fd00:5:0:c8::2","ttl":30}"#);

    let both = until("db's two addresses", DEADLINE, from_container("a", "db.weft.local"), |a| {
        a.text.contains(&container_ip.to_string()) && a.text.contains(OTHER_HOST_DB)
    });
    assert!(both.ok, "{both:?}");
    until("web's AAAA", DEADLINE, from_container("aaaa", "web.weft.local"), |a| a.text.contains("fd00:5:0:c8::2"));
    let srv = until("db's SRV", DEADLINE, from_container("srv", "_6379._tcp.db.weft.local"), |a| a.ok);
    assert!(srv.text.contains(&format!("6379 {ID_A}.db.weft.local")), "{srv:?}");
    let host_ns = lab.host(h1).ns.clone();
    let from_host = nslookup(&host_ns, "a", "db.weft.local", gw);
    assert!(from_host.text.contains(&container_ip.to_string()), "the host itself asks: {from_host:?}");
    let outside = until("a forwarded name", DEADLINE, from_container("a", "outside.example"), |a| a.ok);
    assert!(outside.text.contains(&OUTSIDE.to_string()), "{outside:?}");

    // Changes in etcd are answered within a second.
    lab.etcd_del(&format!("{DB}/{ID_B}"));
    until("the other host's db gone", Duration::from_secs(1), from_container("a", "db.weft.local"), |a| {
        a.ok && !a.text.contains(OTHER_HOST_DB)
    });
    lab.etcd_del(&format!("{DB}/{ID_A}"));
    lab.etcd_del(&format!("{DB}/{ID_A}-6379-tcp"));
    until("db NXDOMAIN", Duration::from_secs(1), from_container("a", "db.weft.local"), Answer::nxdomain);

    assert_shut_to_the_underlay(&mut lab, h1, gw);

    let (status, metrics) = lab::http::get(lab.host(h1), METRICS_PORT, "/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    for outcome in ["answered", "forwarded"] {
        assert!(metrics.contains(&format!("weft_dns_queries_total{{outcome=\"{outcome}\"}}")), "{metrics}");
    }
}

/// Another host on the underlay routes the bridge's subnet to host `h1`: it reaches the bridge
/// address (ping), but DNS there is dropped by chain WEFT-DNS, which holds exactly weft's rules
/// and is jumped to first from INPUT.
fn assert_shut_to_the_underlay(lab: &mut Lab, h1: usize, gw: Ipv4Addr) {
    let intruder = lab.add_host();
    let intruder_ns = lab.host(intruder).ns.clone();
    let subnet = format!("{}/24", lab::nth_address(gw, 24, 0));
    lab.host(intruder).exec_ok(&["ip", "route", "add", &subnet, "via", &lab.host(h1).underlay_ip.to_string()]);
    assert!(lab.host(intruder).ping(gw), "the bridge address is reachable from the underlay (only DNS is shut)");
    let shut = nslookup(&intruder_ns, "a", "web.weft.local", gw);
    assert!(!shut.ok && shut.timed_out(), "DNS answered the underlay: {shut:?}");
    let c = r#"-m comment --comment "weft dns""#;
    let to = format!("-d {gw}/32");
    let expected: Vec<String> = [
        format!("{to} -i lo -p udp -m udp --dport 53 {c} -j ACCEPT"),
        format!("{to} -i lo -p tcp -m tcp --dport 53 {c} -j ACCEPT"),
        format!("-s {subnet} {to} -p udp -m udp --dport 53 {c} -j ACCEPT"),
        format!("-s {subnet} {to} -p tcp -m tcp --dport 53 {c} -j ACCEPT"),
        format!("{to} -p udp -m udp --dport 53 {c} -j DROP"),
        format!("{to} -p tcp -m tcp --dport 53 {c} -j DROP"),
    ]
    .map(|rule| format!("-A WEFT-DNS {rule}"))
    .to_vec();
    assert_eq!(lab.host(h1).firewall_rules("iptables", "filter", "WEFT-DNS"), expected);
    let input = lab.host(h1).firewall_rules("iptables", "filter", "INPUT");
    assert_eq!(input.first().map(String::as_str), Some(format!("-A INPUT {c} -j WEFT-DNS").as_str()));
}

#[test]
fn without_a_resolver_other_names_fail_at_once() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let h1 = lab.add_host();
    let _resolv_conf = NetnsResolvConf::write(&lab.host(h1).ns, "search example\nnameserver 127.0.0.53\n");
    let weftd = lab.start_weftd(h1, &["--names"]);
    lab.wait_subnet_env(h1, DEADLINE);
    lab.attach_container(h1);
    weftd.wait_log("serving DNS", DEADLINE);
    let (cns, gw) = (lab.container(h1).ns.clone(), lab.container(h1).gateway);
    lab.etcd_put(&format!("{DB}/{ID_A}"), r#"{"host":"10.5.1.2","ttl":30}"#);
    until("db from etcd", DEADLINE, || nslookup(&cns, "a", "db.weft.local", gw), |a| a.text.contains("10.5.1.2"));
    let started = Instant::now();
    let failed = nslookup(&cns, "a", "outside.example", gw);
    assert!(failed.servfail(), "{failed:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "SERVFAIL took {:?}", started.elapsed());
}
