//! `--ip-masq` and `--iptables-forward-rules` with real iptables in host namespaces: the rules are
//! flanneld's, they come back when deleted, and masquerading is what lets a container reach an
//! underlay address that has no route back to the overlay.

mod common;

use std::time::Duration;

use common::{poll, Host, Lab};

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
    let env = poll(&format!("host {n}'s subnet.env"), DEADLINE, || {
        lab.host(n).subnet_env().filter(|e| e.contains_key("FLANNEL_SUBNET"))
    });
    let (gateway, prefix) = common::parse_cidr(&env["FLANNEL_SUBNET"]);
    format!("{}/{prefix}", common::nth_address(gateway, prefix, 0))
}

#[test]
fn masquerade_reaches_the_underlay_and_deleted_rules_come_back() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (masq, plain) = (lab.add_host(), lab.add_host());
    let _masq = lab.start_weftd(masq, &["--ip-masq", "-iptables-resync=1"]);
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
