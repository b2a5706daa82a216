//! `/healthz` and `/readyz`, queried from inside the host's namespace as a local agent would.

mod common;

use std::time::Duration;

use common::{poll, Host, Lab};

const DEADLINE: Duration = Duration::from_secs(20);

/// `GET <path>` on 127.0.0.1:<port> inside the host namespace: (status line, body).
fn get(host: &Host, port: u16, path: &str) -> Option<(String, String)> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = host.exec(&["bash", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let (head, body) = text.split_once("\n\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

fn status(host: &Host, port: u16, path: &str) -> Option<u16> {
    get(host, port, path)?.0.split_whitespace().nth(1)?.parse().ok()
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
    let (line, body) = get(&host, 9301, "/readyz").expect("/readyz answers");
    assert!(line.contains("503") && body.contains("subnet.env not written"), "{line} {body}");

    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    poll("/readyz to answer 200", DEADLINE, || (status(&host, 9301, "/readyz") == Some(200)).then_some(()));
    assert!(host.subnet_env().is_some(), "ready implies subnet.env");

    // Local by default: nothing listens on the underlay address.
    let listening = String::from_utf8_lossy(&host.exec(&["ss", "-Hltn", "sport = :9301"]).stdout).to_string();
    let local: Vec<&str> = listening.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert_eq!(local, ["127.0.0.1:9301"], "{listening}");
}
