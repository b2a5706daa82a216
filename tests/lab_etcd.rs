//! Tests of the lab's etcd modes, background pings and weftd CPU time (the `lab` crate). Only
//! `weftd_cpu_time_is_read_from_proc` and `tls_files_are_accepted_by_weftd` run weftd. Needs
//! root.

use std::fs;
use std::net::Ipv4Addr;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use lab::{netns_list, pids_mentioning, poll, EtcdMode, Lab, PingStats};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;

fn ok(out: &Output) -> bool {
    out.status.success()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Put, get and delete through the lab's helpers.
fn check_round_trip(lab: &Lab) {
    lab.etcd_put("/weft-lab-etcd/a", "-dashed\nvalue");
    lab.put_network_config(CONFIG);
    assert_eq!(lab.etcd_get("/weft-lab-etcd/a").as_deref(), Some("-dashed\nvalue"));
    assert_eq!(lab.etcd_get_prefix("/coreos.com/network/").len(), 1);
    lab.etcd_del("/weft-lab-etcd/a");
    assert_eq!(lab.etcd_get("/weft-lab-etcd/a"), None);
}

/// Drops the lab and checks that its namespaces, processes and dir are gone.
fn drop_and_check_clean(lab: Lab) {
    let (id, dir) = (lab.id().to_string(), lab.dir().to_path_buf());
    drop(lab);
    let left: Vec<String> = netns_list().into_iter().filter(|ns| ns.starts_with(&id)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let procs = pids_mentioning(&dir.to_string_lossy());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    assert!(!dir.exists(), "lab dir {} left behind", dir.display());
}

#[test]
fn single_member_survives_a_restart() {
    let lab = Lab::new();
    assert_eq!(lab.etcd_mode(), EtcdMode::Single);
    assert_eq!(lab.etcd_endpoints(), "http://198.18.0.2:2379");
    assert_eq!(lab.etcd_endpoint(), lab.etcd_endpoints());
    assert_eq!(lab.etcd_ips(), [Ipv4Addr::new(198, 18, 0, 2)]);
    check_round_trip(&lab);
    assert_eq!(lab.etcd_leader(), 0);

    lab.etcd_put("/weft-lab-etcd/kept", "yes");
    let pid = lab.etcd_pid();
    lab.stop_etcd(0);
    assert!(!lab.etcd_running(0));
    assert!(!ok(&lab.etcdctl(&["get", "/weft-lab-etcd/kept"])), "etcd is stopped");
    lab.start_etcd(0);
    assert_ne!(lab.etcd_pid(), pid, "a new process");
    assert_eq!(lab.etcd_get("/weft-lab-etcd/kept").as_deref(), Some("yes"));
    drop_and_check_clean(lab);
}

#[test]
fn cluster_elects_a_new_leader_and_takes_the_old_one_back() {
    let lab = Lab::with_etcd(EtcdMode::Cluster3);
    assert_eq!(lab.etcd_endpoints(), "http://198.18.0.2:2379,http://198.18.0.3:2379,http://198.18.0.4:2379");
    assert_eq!(lab.etcd_endpoint(), "http://198.18.0.2:2379");
    let ips: Vec<String> = lab.etcd_ips().iter().map(|ip| ip.to_string()).collect();
    assert_eq!(ips, ["198.18.0.2", "198.18.0.3", "198.18.0.4"]);
    let members = lab.etcdctl(&["member", "list", "-w", "json"]);
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3), "{members}");
    check_round_trip(&lab);

    let old = lab.etcd_leader();
    lab.stop_etcd(old);
    let new = lab.etcd_leader();
    assert_ne!(new, old);
    lab.etcd_put("/weft-lab-etcd/during", "two members");
    assert_eq!(lab.etcd_get("/weft-lab-etcd/during").as_deref(), Some("two members"));

    lab.start_etcd(old);
    let health = lab.etcdctl(&["endpoint", "health", "--cluster"]);
    assert!(ok(&health), "{}", text(&health));
    // The restarted member caught up: a serializable read answers from its own store.
    poll("the restarted member to catch up", Duration::from_secs(10), || {
        let out = lab.etcdctl_member(old, &["get", "--consistency=s", "--print-value-only", "/weft-lab-etcd/during"]);
        text(&out).contains("two members").then_some(())
    });
    drop_and_check_clean(lab);
}

#[test]
fn tls_needs_the_right_ca_and_a_client_certificate() {
    let lab = Lab::with_etcd(EtcdMode::Tls);
    assert_eq!(lab.etcd_endpoints(), "https://198.18.0.2:2379");
    check_round_trip(&lab);

    let tls = lab.tls_files();
    let pem = fs::read_to_string(&tls.key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8: {pem}");
    let arg = |flag: &str, path: &std::path::Path| format!("--{flag}={}", path.display());
    let (ca, cert, key) = (arg("cacert", &tls.ca), arg("cert", &tls.cert), arg("key", &tls.key));
    let wrong_ca = arg("cacert", &tls.wrong_ca);
    // Short timeouts: a refused handshake is retried until the command timeout (5 s).
    let get = ["--dial-timeout=1s", "--command-timeout=2s", "get", "/coreos.com/network/config", "--print-value-only"];

    let right = lab.etcdctl_bare(&[&[&*ca, &cert, &key][..], &get].concat());
    assert!(ok(&right) && text(&right).contains("10.5.0.0/16"), "{}", text(&right));
    let wrong = lab.etcdctl_bare(&[&[&*wrong_ca, &cert, &key][..], &get].concat());
    assert!(!ok(&wrong), "wrong CA accepted: {}", text(&wrong));
    let anonymous = lab.etcdctl_bare(&[&[&*ca][..], &get].concat());
    assert!(!ok(&anonymous), "no client certificate accepted: {}", text(&anonymous));
    drop_and_check_clean(lab);
}

#[test]
fn auth_refuses_anonymous_and_confines_weft_to_its_prefix() {
    let lab = Lab::with_etcd(EtcdMode::Auth);
    check_round_trip(&lab);

    let anonymous = lab.etcdctl_bare(&["put", "/coreos.com/network/x", "1"]);
    assert!(!ok(&anonymous), "anonymous put accepted");
    assert!(text(&anonymous).contains("user name is empty"), "{}", text(&anonymous));
    let wrong_password = lab.etcdctl_bare(&["--user=weft:nope", "get", "/a"]);
    assert!(!ok(&wrong_password), "wrong password accepted");

    let weft = "--user=weft:weftpw";
    let inside = lab.etcdctl_bare(&[weft, "put", "/coreos.com/network/x", "1"]);
    assert!(ok(&inside), "{}", text(&inside));
    let outside = lab.etcdctl_bare(&[weft, "put", "/elsewhere", "1"]);
    assert!(text(&outside).contains("permission denied"), "{}", text(&outside));
    drop_and_check_clean(lab);
}

#[test]
fn ping_runs_count_lost_replies() {
    let mut lab = Lab::new();
    let (a, b) = (lab.add_host(), lab.add_host());
    let target = lab.host(b).underlay_ip;
    let interval = Duration::from_millis(10);

    let clean = lab.start_host_ping(a, target, interval);
    thread::sleep(Duration::from_millis(500));
    let stats = clean.finish();
    assert!(stats.sent >= 20, "{stats:?}");
    assert_eq!(stats.lost, 0, "{stats:?}");

    // Host b drops echo requests for a while: those are lost, the rest answered.
    let lossy = lab.start_host_ping(a, target, interval);
    thread::sleep(Duration::from_millis(300));
    let drop_icmp = ["iptables", "-w", "-I", "INPUT", "-p", "icmp", "-j", "DROP"];
    assert!(ok(&lab.host(b).exec(&drop_icmp)));
    thread::sleep(Duration::from_millis(500));
    let undrop = ["iptables", "-w", "-D", "INPUT", "-p", "icmp", "-j", "DROP"];
    assert!(ok(&lab.host(b).exec(&undrop)));
    thread::sleep(Duration::from_millis(300));
    let PingStats { sent, received, lost } = lossy.finish();
    assert_eq!(lost, sent - received);
    assert!((20..=60).contains(&lost), "about 50 lost: sent {sent} received {received}");

    // From a container: fake subnet.env, then ping the bridge.
    let env = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\n";
    fs::write(&lab.host(a).subnet_file, env).unwrap();
    lab.attach_container(a);
    let run = lab.start_ping(a, Ipv4Addr::new(10, 5, 7, 1), Duration::from_millis(20));
    thread::sleep(Duration::from_millis(300));
    let stats = run.finish();
    assert!(stats.received >= 5 && stats.lost == 0, "{stats:?}");

    // An unfinished run is killed with the lab.
    let _left_running = lab.start_host_ping(b, lab.host(a).underlay_ip, interval);
    drop_and_check_clean(lab);
}

#[test]
fn weftd_cpu_time_is_read_from_proc() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let started = Instant::now();
    let weftd = lab.start_weftd(n, &[]);
    lab.wait_subnet_env(n, Duration::from_secs(20));
    let first = weftd.cpu_time();
    thread::sleep(Duration::from_millis(500));
    let second = weftd.cpu_time();
    assert!(first <= second, "{first:?} then {second:?}");
    // Two cores at most.
    assert!(second <= started.elapsed() * 2, "{second:?} in {:?}", started.elapsed());
    drop(weftd);
    drop_and_check_clean(lab);
}

#[test]
fn tls_files_are_accepted_by_weftd() {
    let mut lab = Lab::with_etcd(EtcdMode::Tls);
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let tls = lab.tls_files();
    let (ca, cert, key) = (tls.ca.to_str().unwrap(), tls.cert.to_str().unwrap(), tls.key.to_str().unwrap());
    let _weftd = lab.start_weftd(n, &["--etcd-cafile", ca, "--etcd-certfile", cert, "--etcd-keyfile", key]);
    lab.wait_subnet_env(n, Duration::from_secs(20));
    assert_eq!(lab.etcd_get_prefix("/coreos.com/network/subnets/").len(), 1);
}
