//! A tiny HTTP/1.0 GET from inside a host namespace (bash's /dev/tcp), for endpoints weftd binds
//! on the host's 127.0.0.1, which the test process in the root namespace cannot reach.

use crate::Host;

/// `GET <path>` on 127.0.0.1:<port> in the host's namespace: (status code, body).
pub fn get(host: &Host, port: u16, path: &str) -> Option<(u16, String)> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = host.exec(&["bash", "-c", &script]);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let (head, body) = text.split_once("\n\n")?;
    let status = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
