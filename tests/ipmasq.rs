//! `--ip-masq` and `--iptables-forward-rules` with real iptables in host namespaces: the rules are
//! flanneld's, they come back when deleted, and masquerading is what lets a container reach an
//! underlay address that has no route back to the overlay. The check never waits on DNS.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::{poll, Host, Lab};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const DEADLINE: Duration = Duration::from_secs(20);

fn iptables_rules(host: &Host, table: &str, chain: &str) -> Vec<String> {
    let out = host.exec(&["iptables", "-w", "-t", table, "-S", chain]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("-A ")).map(str::to_string).collect()
}

fn expected_masquerade(subnet: &str) -> Vec<String> {
    let c = "-m comment --comment \"flanneld masq\"";
    [
        format!("-s {subnet} -d 10.5.0.0/16 {c} -j RETURN"),
        format!("-s 10.5.0.0/16 -d {subnet} {c} -j RETURN"),
        format!("! -s 10.5.0.0/16 -d {subnet} {c} -j RETURN"),
        format!("-s 10.5.0.0/16 ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully"),
        format!("! -s 10.5.0.0/16 -d 10.5.0.0/16 {c} -j MASQUERADE --random-fully"),
    ]
    .into_iter()
    .map(|rule| format!("-A FLANNEL-POSTRTG {rule}"))
    .collect()
}

fn own_subnet(lab: &Lab, n: usize) -> String {
    let env = lab.wait_subnet_env(n, DEADLINE);
    let (gateway, prefix) = lab::parse_cidr(&env["FLANNEL_SUBNET"]);
    format!("{}/{prefix}", lab::nth_address(gateway, prefix, 0))
}

#[test]
fn masquerade_reaches_the_underlay_and_deleted_rules_come_back() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (masq, plain) = (lab.add_host(), lab.add_host());
    let masq_weftd = lab.start_weftd(masq, &["--ip-masq", "-iptables-resync=1"]);
    let _plain = lab.start_weftd(plain, &["--iptables-forward-rules=false"]);
    let subnet = own_subnet(&lab, masq);
    own_subnet(&lab, plain);
    assert_eq!(lab.host(masq).subnet_env().unwrap()["FLANNEL_IPMASQ"], "true");
    assert_eq!(lab.host(plain).subnet_env().unwrap()["FLANNEL_IPMASQ"], "false");
    lab.attach_container(masq);
    lab.attach_container(plain);

    let host = lab.host(masq).clone();
    let expected = expected_masquerade(&subnet);
    poll("flanneld's nat rules", DEADLINE, || (iptables_rules(&host, "nat", "FLANNEL-POSTRTG") == expected).then_some(()));
    let jump = "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG";
    assert_eq!(iptables_rules(&host, "nat", "POSTROUTING").first().map(String::as_str), Some(jump));
    let forward = iptables_rules(&host, "filter", "FLANNEL-FWD");
    assert_eq!(forward.len(), 2, "{forward:?}");
    assert!(iptables_rules(lab.host(plain), "filter", "FORWARD").is_empty(), "--iptables-forward-rules=false adds nothing");
    assert!(iptables_rules(lab.host(plain), "nat", "POSTROUTING").is_empty(), "no --ip-masq, no nat rules");

    // etcd's namespace has no route to the overlay: only a masqueraded ping gets an answer.
    let etcd = lab.etcd_ip();
    poll("the masquerading host's container to reach etcd", DEADLINE, || lab.container_ping(masq, etcd).then_some(()));
    assert!((0..3).all(|_| !lab.container_ping(plain, etcd)), "without --ip-masq the reply has no way back");
    // Overlay traffic keeps its source address, so containers still reach each other.
    poll("container to container across hosts", DEADLINE, || lab.container_ping(masq, lab.container(plain).ip).then_some(()));

    // A rule deleted by hand, and the jump, come back at the next check. Checked every second
    // (-iptables-resync=1): three times in a row each is back within 2 s, which a check every
    // 5 s (the default) would manage about once in sixteen tries.
    let delete = |rule: &str| {
        let words = shell_words(&rule.replacen("-A ", "-D ", 1));
        let args: Vec<&str> = ["iptables", "-w", "-t", "nat"].into_iter().chain(words.iter().map(String::as_str)).collect();
        host.exec_ok(&args);
    };
    for round in 1..=3 {
        delete(&expected[3]);
        delete(jump);
        poll(&format!("the deleted rules to be restored (round {round})"), Duration::from_secs(2), || {
            let restored = iptables_rules(&host, "nat", "FLANNEL-POSTRTG") == expected
                && iptables_rules(&host, "nat", "POSTROUTING").first().map(String::as_str) == Some(jump);
            restored.then_some(())
        });
    }
    poll("the restored masquerade to work", DEADLINE, || lab.container_ping(masq, etcd).then_some(()));
    // Without docker, weftd makes DOCKER-USER itself so its accepts come first once docker
    // starts; and no check failed along the way.
    let docker_user = iptables_rules(&host, "filter", "DOCKER-USER");
    assert_eq!(docker_user, ["-A DOCKER-USER -m comment --comment \"flanneld forward\" -j FLANNEL-FWD"]);
    assert!(!masq_weftd.log().contains("cannot install iptables rules"), "{}", masq_weftd.log());
}

/// An address on the lab's underlay where nothing answers: a query sent there gets no reply,
/// not even an ICMP error, so the resolver waits out its timeouts.
const SILENT_RESOLVER: &str = "198.18.0.254";

/// Gives one lab namespace a resolv.conf naming a resolver that never answers, the way
/// `ip netns exec` offers: it bind-mounts `/etc/netns/<ns>/resolv.conf` over /etc/resolv.conf
/// for what it starts (weftd, and the iptables weftd runs). Removed on Drop.
struct UnreachableResolver {
    dir: PathBuf,
}

impl UnreachableResolver {
    fn for_namespace(ns: &str) -> UnreachableResolver {
        let dir = PathBuf::from("/etc/netns").join(ns);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let text = format!("nameserver {SILENT_RESOLVER}\noptions timeout:2 attempts:2\n");
        fs::write(dir.join("resolv.conf"), text).expect("write the namespace's resolv.conf");
        UnreachableResolver { dir }
    }
}

impl Drop for UnreachableResolver {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        // Shared by parallel runs: only goes once empty.
        let _ = fs::remove_dir("/etc/netns");
    }
}

/// The issue's report: a stray rule at the top of FLANNEL-POSTRTG, with DNS down. The repair
/// must come within a few `--iptables-resync` periods, as it does with DNS up; listing the
/// chain with names took minutes.
#[test]
fn a_stray_nat_rule_is_repaired_promptly_while_dns_is_unreachable() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let host = lab.host(n).clone();
    let _resolver = UnreachableResolver::for_namespace(&host.ns);
    // The setup is what it claims: a reverse lookup in this namespace hangs.
    let lookup = host.exec(&["timeout", "3", "getent", "hosts", "10.77.0.1"]);
    assert_eq!(lookup.status.code(), Some(124), "a name lookup should hang with the resolver unreachable: {lookup:?}");

    let _weftd = lab.start_weftd(n, &["--ip-masq", "-iptables-resync=1"]);
    let expected = expected_masquerade(&own_subnet(&lab, n));
    poll("flanneld's nat rules", DEADLINE, || (iptables_rules(&host, "nat", "FLANNEL-POSTRTG") == expected).then_some(()));

    let stray = "-s 10.77.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE";
    host.exec_ok(&[
        "iptables",
        "-w",
        "-t",
        "nat",
        "-I",
        "FLANNEL-POSTRTG",
        "1",
        "-s",
        "10.77.0.0/16",
        "!",
        "-d",
        "224.0.0.0/4",
        "-j",
        "MASQUERADE",
    ]);
    assert_eq!(iptables_rules(&host, "nat", "FLANNEL-POSTRTG")[0], format!("-A FLANNEL-POSTRTG {stray}"));
    let started = Instant::now();
    // Checked every second: three periods, plus the iptables runs of one repair.
    poll("the stray rule to be removed, with DNS unreachable", Duration::from_secs(4), || {
        (iptables_rules(&host, "nat", "FLANNEL-POSTRTG") == expected).then_some(())
    });
    println!("repaired {:.1} s after the stray rule went in", started.elapsed().as_secs_f64());
}

/// Splits a rule as a shell would, keeping quoted words together.
fn shell_words(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => words.push(std::mem::take(&mut word)),
            c => word.push(c),
        }
    }
    words.push(word);
    words.into_iter().filter(|w| !w.is_empty()).collect()
}
