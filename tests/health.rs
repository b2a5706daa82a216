//! `/healthz` and `/readyz`, queried from inside the host's namespace as a local agent would.

use lab::http;

use std::time::Duration;

use lab::{poll, Host, Lab};

const DEADLINE: Duration = Duration::from_secs(20);

fn status(host: &Host, port: u16, path: &str) -> Option<u16> {
    http::get(host, port, path).map(|(status, _)| status)
}

#[test]
fn readyz_waits_for_subnet_env_and_healthz_tracks_etcd() {
    let mut lab = Lab::new();
    let n = lab.add_host();
    let daemon = lab.start_weftd(n, &["--healthz-port", "9301"]);
    let host = lab.host(n).clone();

    // No network config yet: alive and talking to etcd, but not ready.
    daemon.wait_log("network config not found", DEADLINE);
    poll("/healthz to answer 200", DEADLINE, || (status(&host, 9301, "/healthz") == Some(200)).then_some(()));
    let (code, body) = http::get(&host, 9301, "/readyz").expect("/readyz answers");
    assert!(code == 503 && body.contains("subnet.env not written"), "{code} {body}");

    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    poll("/readyz to answer 200", DEADLINE, || (status(&host, 9301, "/readyz") == Some(200)).then_some(()));
    assert!(host.subnet_env().is_some(), "ready implies subnet.env");

    // Local by default: nothing listens on the underlay address.
    let listening = String::from_utf8_lossy(&host.exec(&["ss", "-Hltn", "sport = :9301"]).stdout).to_string();
    let local: Vec<&str> = listening.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert_eq!(local, ["127.0.0.1:9301"], "{listening}");
}
