//! Real Docker on a dual-stack overlay (design.md §3, §4): two hosts run `weftd` against etcd
//! with IPv4 and IPv6 enabled, each host then runs Debian's `dockerd` with the options
//! `weftd docker-opts --ipv6` generated from its subnet.env, and containers on different hosts
//! reach each other by IPv4 and by IPv6 address — checked as a user would, with `ip`, `ping`,
//! and a 1 MiB file fetched over HTTP in each family and compared by SHA-256; with `--names`,
//! each host's weftd publishes its containers and A's DNS server answers B's container's name
//! with its IPv4 (A) and IPv6 (AAAA) addresses.
//!
//! Needs root and the Debian packages `docker.io busybox-static` (`make deps`). The figures
//! (ping RTT, transfer size, time and checksum) are printed; see them with
//! `cargo test --test docker -- --nocapture`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::docker::{docker_opts_words, mounts_under, parse_ping_summary, weftd_docker_opts, BusyboxImage, Dockerd};
use lab::{nth_address, parse_cidr, poll, Host, Lab, Weftd};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const NETWORK: &str = "10.5.0.0/16";
const CONVERGE: Duration = Duration::from_secs(30);
const IMAGE: &str = "weft-busybox:latest";
/// httpd's port for IPv4 clients; IPv6 clients use the next one (a socket of its own, so the
/// address a request comes from is never an IPv4-mapped one).
const HTTP_PORT: u16 = 8080;
const BLOB_SIZE: usize = 1 << 20;

#[test]
fn docker_containers_on_two_hosts_talk_over_the_overlay() {
    let started = Instant::now();
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let hosts = [lab.add_host(), lab.add_host()];
    // flannel's recipe for docker: flanneld --ip-masq, so that mk-docker-opts gives docker
    // --ip-masq=false and containers talk to each other with their own addresses.
    // With names on (issue 16): each weftd follows its host's dockerd, given as DOCKER_HOST.
    let _weftd: Vec<Weftd> = hosts
        .iter()
        .map(|&n| lab.start_weftd_env(n, &["--ip-masq", "--names"], &[("DOCKER_HOST", Dockerd::socket_uri(&lab, n).as_str())]))
        .collect();
    let envs: Vec<BTreeMap<String, String>> = hosts.iter().map(|&n| lab.wait_subnet_env(n, CONVERGE)).collect();

    // Declared after the lab so they are dropped (and torn down) before it.
    let image = BusyboxImage::build(lab.dir());
    let mut dockers: Vec<Dockerd> = hosts.iter().zip(&envs).map(|(&n, env)| start_dockerd(&lab, n, env)).collect();
    for (i, &n) in hosts.iter().enumerate() {
        check_docker0_address(lab.host(n), &envs[i]["FLANNEL_SUBNET"]);
        check_forward_rules(lab.host(n));
    }
    let ips: Vec<(Ipv4Addr, Ipv6Addr)> =
        dockers.iter().zip(&envs).map(|(dockerd, env)| run_container(&lab, dockerd, &image, env)).collect();

    let (a, b) = (&dockers[0], &dockers[1]);
    check_ping(a, b, ips[0].0.into(), ips[1].0.into());
    check_ping(a, b, ips[0].1.into(), ips[1].1.into());
    let expected_sum = serve_blob_and_address(&lab, a);
    check_transfers(a, b, (ips[0].0.into(), ips[1].0.into()), HTTP_PORT, &expected_sum);
    check_transfers(a, b, (ips[0].1.into(), ips[1].1.into()), HTTP_PORT + 1, &expected_sum);
    check_names(a, &envs[0], b, ips[1]);

    // Teardown is part of the test: nothing of docker may be left.
    let mut problems = Vec::new();
    for dockerd in dockers.iter_mut().rev() {
        problems.extend(dockerd.stop());
    }
    assert!(problems.is_empty(), "docker teardown left things behind: {problems:#?}");
    let mounts = mounts_under(lab.dir());
    assert!(mounts.is_empty(), "mounts left under the lab dir: {mounts:?}");
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}

/// Starts host N's dockerd with the options `weftd docker-opts` gives, after checking them.
fn start_dockerd(lab: &Lab, n: usize, env: &BTreeMap<String, String>) -> Dockerd {
    // As on a fresh host: docker then enables forwarding itself and, doing so, sets the
    // FORWARD policy to DROP — what flannel's FORWARD rules are for.
    lab.host(n).exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let opts = weftd_docker_opts(lab, n, &["--ipv6"]);
    let words = docker_opts_words(&opts);
    check_docker_opts(n, env, &opts, &words);
    let dockerd = Dockerd::start(lab, n, &words);
    println!("host {n}: {}", dockerd.command_line(&words));
    dockerd
}

/// Runs the host's container and checks its network; its IPv4 and IPv6 addresses.
fn run_container(lab: &Lab, dockerd: &Dockerd, image: &BusyboxImage, env: &BTreeMap<String, String>) -> (Ipv4Addr, Ipv6Addr) {
    dockerd.import(image, IMAGE);
    let name = container_name(dockerd.n);
    let ip = dockerd.run_container(&name, IMAGE);
    check_container_network(lab.host(dockerd.n), dockerd, &name, ip, env);
    let ipv6 = dockerd.container_ipv6(&name);
    let subnet6: ipnetwork::Ipv6Network = env["FLANNEL_IPV6_SUBNET"].parse().unwrap();
    assert!(subnet6.contains(ipv6), "host {}: container {name} got {ipv6}, outside {subnet6}", dockerd.n);
    println!("host {}: container {name} has {ip} and {ipv6}", dockerd.n);
    (ip, ipv6)
}

/// Pings both ways (the first replies may wait for ARP and the lease watch), then five
/// pings from A to B must all be answered.
fn check_ping(a: &Dockerd, b: &Dockerd, ip_a: IpAddr, ip_b: IpAddr) {
    let (name_a, name_b) = (container_name(a.n), container_name(b.n));
    wait_container_ping(a, &name_a, ip_b);
    wait_container_ping(b, &name_b, ip_a);
    let ping = a.exec(&name_a, &["ping", "-n", "-c", "5", "-i", "0.2", "-W", "1", &ip_b.to_string()]);
    let summary = String::from_utf8_lossy(&ping.stdout).into_owned();
    let (tx, rx, rtt) = parse_ping_summary(&summary);
    assert_eq!((tx, rx), (5, 5), "ping {name_a} -> {ip_b} lost packets:\n{summary}");
    let (min, avg, max) = rtt.expect("ping printed no RTT");
    println!("ping {name_a} ({ip_a}) -> {name_b} ({ip_b}): 5/5 replies, rtt min/avg/max = {min}/{avg}/{max} ms");
}

/// Container A serves a random 1 MiB file and a CGI that echoes the client's address; the
/// file's SHA-256.
fn serve_blob_and_address(lab: &Lab, a: &Dockerd) -> String {
    let name_a = container_name(a.n);
    let www = lab.dir().join("www");
    fs::create_dir_all(www.join("cgi-bin")).unwrap();
    fs::write(www.join("blob"), random_bytes(BLOB_SIZE)).unwrap();
    let cgi = www.join("cgi-bin/addr");
    fs::write(&cgi, "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$REMOTE_ADDR\"\n").unwrap();
    fs::set_permissions(&cgi, fs::Permissions::from_mode(0o755)).unwrap();
    a.copy_into(&www, &name_a, "/");
    a.exec_ok(&name_a, &["httpd", "-p", &format!("0.0.0.0:{HTTP_PORT}"), "-h", "/www"]);
    a.exec_ok(&name_a, &["httpd", "-p", &format!("[::]:{}", HTTP_PORT + 1), "-h", "/www"]);
    let expected_sum = sha256_of_file(&www.join("blob"));
    assert_eq!(a.exec_ok(&name_a, &["sha256sum", "/www/blob"]).split_whitespace().next(), Some(expected_sum.as_str()));
    expected_sum
}

/// B fetches from A's `port` at `ip_a`: A sees B's own address `ip_b` (no NAT between
/// containers), and the 1 MiB file arrives whole.
fn check_transfers(a: &Dockerd, b: &Dockerd, (ip_a, ip_b): (IpAddr, IpAddr), port: u16, expected_sum: &str) {
    let (name_a, name_b) = (container_name(a.n), container_name(b.n));
    // `http://[fd00:5:0:7::2]:8081` for IPv6, as URLs write an IPv6 host.
    let base = format!("http://{}", std::net::SocketAddr::new(ip_a, port));
    let seen = poll(&format!("{name_b} to fetch {base}/cgi-bin/addr"), CONVERGE, || {
        let out = b.exec(&name_b, &["timeout", "5", "wget", "-q", "-O", "-", &format!("{base}/cgi-bin/addr")]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    // busybox httpd writes an IPv6 REMOTE_ADDR in brackets.
    let seen = seen.trim_start_matches('[').trim_end_matches(']').to_string();
    assert_eq!(seen, ip_b.to_string(), "{name_a} saw {name_b}'s request come from {seen}, not from {ip_b}: NATed");
    println!("{name_a} sees {name_b}'s requests from {seen} (no NAT)");

    let t0 = Instant::now();
    b.exec_ok(&name_b, &["timeout", "60", "wget", "-q", "-O", "/tmp/blob", &format!("{base}/blob")]);
    let elapsed = t0.elapsed();
    let size: usize = b.exec_ok(&name_b, &["stat", "-c", "%s", "/tmp/blob"]).parse().expect("stat size");
    let got_sum = b.exec_ok(&name_b, &["sha256sum", "/tmp/blob"]);
    let got_sum = got_sum.split_whitespace().next().unwrap_or_default().to_string();
    println!(
        "transfer {name_a} -> {name_b}: {size} bytes in {:.1} ms ({:.1} MiB/s), sha256 sent {expected_sum}, received {got_sum}",
        elapsed.as_secs_f64() * 1e3,
        size as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(size, BLOB_SIZE, "received size");
    assert_eq!(got_sum, expected_sum, "received file differs from the one sent");
}

/// Host A's DNS server (on its docker0 address, the FLANNEL_SUBNET gateway) answers B's
/// container by name in both families: A from its IPv4 address, AAAA from its IPv6 one.
fn check_names(a: &Dockerd, env_a: &BTreeMap<String, String>, b: &Dockerd, (ipv4_b, ipv6_b): (Ipv4Addr, Ipv6Addr)) {
    let (name_a, fqdn_b) = (container_name(a.n), format!("{}.weft.local", container_name(b.n)));
    let (server, _) = parse_cidr(&env_a["FLANNEL_SUBNET"]);
    let server = server.to_string();
    for (qtype, want) in [("A", IpAddr::from(ipv4_b)), ("AAAA", IpAddr::from(ipv6_b))] {
        let query = format!("-type={qtype}");
        let answer = poll(&format!("{name_a}: {fqdn_b} {qtype} from {server}"), CONVERGE, || {
            let out = a.exec(&name_a, &["nslookup", &query, &fqdn_b, &server]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(&want.to_string()).then_some(text)
        });
        println!("{name_a}: nslookup {query} {fqdn_b} {server}:\n{}", answer.trim());
    }
}

fn container_name(n: usize) -> String {
    format!("weft-h{n}")
}

/// The docker options are flannel's mk-docker-opts.sh output for this subnet.env.
fn check_docker_opts(n: usize, env: &BTreeMap<String, String>, opts: &BTreeMap<String, String>, words: &[String]) {
    let bip = format!("--bip={}", env["FLANNEL_SUBNET"]);
    let mtu = format!("--mtu={}", env["FLANNEL_MTU"]);
    assert_eq!(env.get("FLANNEL_IPMASQ").map(String::as_str), Some("true"), "host {n}: {env:?}");
    assert_eq!(opts.get("DOCKER_OPT_BIP"), Some(&bip), "host {n}: {opts:?}");
    assert_eq!(opts.get("DOCKER_OPT_MTU"), Some(&mtu), "host {n}: {opts:?}");
    assert_eq!(opts.get("DOCKER_OPT_IPMASQ").map(String::as_str), Some("--ip-masq=false"), "host {n}: {opts:?}");
    assert_eq!(opts.get("DOCKER_OPT_LOG_LEVEL").map(String::as_str), Some("--log-level=warn"), "host {n}: {opts:?}");
    let fixed_cidr_v6 = format!("--fixed-cidr-v6={}", env["FLANNEL_IPV6_SUBNET"]);
    let mut sorted = words.to_vec();
    sorted.sort();
    let mut expected = [bip, fixed_cidr_v6, "--ip-masq=false".into(), "--ipv6".into(), "--log-level=warn".into(), mtu];
    expected.sort();
    assert_eq!(sorted, expected, "host {n}: DOCKER_OPTS {words:?}");
}

/// docker0 in the host carries FLANNEL_SUBNET's gateway address (e.g. 10.5.72.1/24).
fn check_docker0_address(host: &Host, subnet: &str) {
    let link = host.ip_json(&["addr", "show", "dev", "docker0"]);
    let addrs: Vec<String> = link[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or_default(), a["prefixlen"]))
        .collect();
    assert_eq!(addrs, [subnet.to_string()], "host {}: docker0 IPv4 addresses", host.n);
    println!("host {}: docker0 has {subnet}", host.n);
}

/// The container's address is in the host's subnet, and docker0 and the container's eth0 use
/// FLANNEL_MTU (docker sets the bridge's MTU only through its ports, so this is checked once a
/// container is attached).
fn check_container_network(host: &Host, dockerd: &Dockerd, name: &str, ip: Ipv4Addr, env: &BTreeMap<String, String>) {
    let (gateway, prefix) = parse_cidr(&env["FLANNEL_SUBNET"]);
    assert_eq!(
        nth_address(ip, prefix, 0),
        nth_address(gateway, prefix, 0),
        "host {}: container {name} got {ip}, outside {}",
        host.n,
        env["FLANNEL_SUBNET"]
    );
    let mtu = &env["FLANNEL_MTU"];
    let bridge_mtu = host.ip_json(&["link", "show", "dev", "docker0"])[0]["mtu"].to_string();
    assert_eq!(&bridge_mtu, mtu, "host {}: docker0 MTU", host.n);
    let eth0_mtu = dockerd.exec_ok(name, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(&eth0_mtu, mtu, "host {}: container {name} eth0 MTU", host.n);
    println!("host {}: docker0 and {name}'s eth0 have MTU {mtu}", host.n);
}

/// flannel's FORWARD rules (`--iptables-forward-rules`, on by default): `-j FLANNEL-FWD`, and
/// in it `-s Network ACCEPT` and `-d Network ACCEPT`. Without them, the DROP policy docker sets
/// drops connections from other hosts' containers to ours. If docker did not set DROP (it only
/// does when it enables forwarding itself), it is set here, so the rules are always exercised.
fn check_forward_rules(host: &Host) {
    let accepts = |rules: &str, flag: &str| {
        rules
            .lines()
            .any(|l| l.starts_with("-A FLANNEL-FWD") && l.contains(&format!("{flag} {NETWORK}")) && l.ends_with("-j ACCEPT"))
    };
    let forward = poll(&format!("host {}: weftd's FORWARD rules for {NETWORK}", host.n), CONVERGE, || {
        let forward = iptables(host, &["-S", "FORWARD"]);
        let all = iptables(host, &["-S"]);
        let ok = forward.lines().any(|l| l.ends_with("-j FLANNEL-FWD")) && accepts(&all, "-s") && accepts(&all, "-d");
        ok.then_some(forward)
    });
    // Docker 28+ drops in its own chains before FLANNEL-FWD; the jump from DOCKER-USER (which
    // dockerd jumps to first) comes ahead of the RETURN dockerd 20.10 appends there.
    let user = poll(&format!("host {}: FLANNEL-FWD first in DOCKER-USER", host.n), CONVERGE, || {
        let user: Vec<String> = iptables(host, &["-S", "DOCKER-USER"]).lines().skip(1).map(str::to_string).collect();
        user.first().is_some_and(|l| l.ends_with("-j FLANNEL-FWD")).then_some(user)
    });
    println!("host {}: {}", host.n, user.join(" | "));
    let policy = forward.lines().find_map(|l| l.strip_prefix("-P FORWARD ")).unwrap_or("?");
    if policy == "DROP" {
        println!("host {}: FORWARD policy DROP (set by docker), FLANNEL-FWD accepts {NETWORK}", host.n);
    } else {
        println!("host {}: NOTE docker left the FORWARD policy {policy}; setting DROP", host.n);
        iptables(host, &["-P", "FORWARD", "DROP"]);
    }
}

fn iptables(host: &Host, args: &[&str]) -> String {
    let mut all = vec!["iptables", "-w"];
    all.extend(args);
    let out = host.exec(&all);
    assert!(out.status.success(), "host {}: iptables {args:?}: {}", host.n, String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_container_ping(dockerd: &Dockerd, name: &str, dst: IpAddr) {
    let dst = dst.to_string();
    poll(&format!("container {name} to ping {dst}"), CONVERGE, || {
        dockerd.exec(name, &["ping", "-n", "-q", "-c", "1", "-W", "1", &dst]).status.success().then_some(())
    });
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    buf
}

/// coreutils `sha256sum` of a file on the machine (the reference the containers are held to).
fn sha256_of_file(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}
