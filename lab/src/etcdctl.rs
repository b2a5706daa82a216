//! etcdctl from the lab, in every etcd mode: raw calls for tests that bring their own
//! credentials, and put/get/del helpers that let the lab itself in.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

use crate::etcd::{EtcdMode, ETCD_ROOT_PASSWORD, ETCD_ROOT_USER};
use crate::netns::netns_exec;
use crate::process::{output, stderr_of, stdout_of};
use crate::Lab;

/// flannel's default key prefix, which weftd also uses.
pub const NETWORK_CONFIG_KEY: &str = "/coreos.com/network/config";

impl Lab {
    /// Runs `etcdctl <args>` (API v3) against the running members, with whatever the mode
    /// needs (TLS files, root user); the raw output.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.live_urls(), true, args)
    }

    /// `etcdctl` against member `member` alone (e.g. `get --consistency=s` reads its own
    /// store).
    pub fn etcdctl_member(&self, member: usize, args: &[&str]) -> Output {
        self.etcdctl_at(&[self.client_url(member)], true, args)
    }

    /// `etcdctl` against the running members with no TLS files and no user: tests add their
    /// own, right or wrong.
    pub fn etcdctl_bare(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.live_urls(), false, args)
    }

    /// Client URLs of the running members, or of all when none runs (etcdctl then fails the
    /// way a client would).
    pub(crate) fn live_urls(&self) -> Vec<String> {
        let live = self.live_members();
        let members = if live.is_empty() { (0..self.etcd.len()).collect() } else { live };
        members.iter().map(|&k| self.client_url(k)).collect()
    }

    /// Runs etcdctl in member 0's namespace, which stays on the underlay even while member 0
    /// is stopped.
    pub(crate) fn etcdctl_at(&self, urls: &[String], credentials: bool, args: &[&str]) -> Output {
        output(&mut self.etcdctl_command(urls, credentials, args))
    }

    /// The `etcdctl <args>` command (API v3) against `urls`, run from the etcd namespace.
    pub(crate) fn etcdctl_command(&self, urls: &[String], credentials: bool, args: &[&str]) -> Command {
        let mut cmd = netns_exec(&self.member(0).ns, &["etcdctl"]);
        cmd.arg(format!("--endpoints={}", urls.join(",")));
        if credentials {
            cmd.args(self.credentials());
        }
        cmd.args(args).env("ETCDCTL_API", "3");
        cmd
    }

    /// The etcdctl flags that let the lab itself in.
    fn credentials(&self) -> Vec<OsString> {
        match self.mode {
            EtcdMode::Tls => {
                let tls = self.tls_files();
                let flag = |name: &str, path: &Path| {
                    let mut arg = OsString::from(format!("--{name}="));
                    arg.push(path);
                    arg
                };
                vec![flag("cacert", &tls.ca), flag("cert", &tls.cert), flag("key", &tls.key)]
            }
            EtcdMode::Auth if self.auth_enabled => {
                vec![format!("--user={ETCD_ROOT_USER}:{ETCD_ROOT_PASSWORD}").into()]
            }
            _ => Vec::new(),
        }
    }

    fn etcdctl_ok(&self, args: &[&str]) -> Output {
        let out = self.etcdctl(args);
        assert!(out.status.success(), "etcdctl {args:?} failed: {}", stderr_of(&out));
        out
    }

    pub fn etcd_put(&self, key: &str, value: &str) {
        // `--` so values starting with '-' are not taken for flags.
        self.etcdctl_ok(&["put", "--", key, value]);
    }

    /// Puts many keys at once: `etcdctl txn` from stdin, 100 puts per transaction (etcd allows
    /// 128 operations per transaction by default).
    pub fn etcd_put_all(&self, pairs: &[(String, String)]) {
        for chunk in pairs.chunks(100) {
            // An empty compare section, the puts, an empty failure section. etcdctl reads each
            // argument as a Go-quoted string, so quotes and backslashes are escaped.
            let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
            let puts: String = chunk.iter().map(|(k, v)| format!("put {} {}\n", quote(k), quote(v))).collect();
            let script = format!("\n{puts}\n\n");
            let mut cmd = self.etcdctl_command(&self.live_urls(), true, &["txn"]);
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run etcdctl txn ({e}); try `make deps`"));
            std::io::Write::write_all(&mut child.stdin.take().expect("piped stdin"), script.as_bytes()).expect("write the txn");
            let out = child.wait_with_output().expect("wait for etcdctl txn");
            assert!(
                out.status.success() && stdout_of(&out).starts_with("SUCCESS"),
                "etcdctl txn failed: {} {}",
                stdout_of(&out),
                stderr_of(&out)
            );
        }
    }

    /// The value of `key`, or None if it does not exist.
    pub fn etcd_get(&self, key: &str) -> Option<String> {
        self.etcd_get_prefix_or_key(key, false).into_iter().next().map(|(_, v)| v)
    }

    /// All `(key, value)` pairs under `prefix`, sorted by key.
    pub fn etcd_get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.etcd_get_prefix_or_key(prefix, true)
    }

    /// JSON output (base64 keys/values) so values containing newlines survive.
    fn etcd_get_prefix_or_key(&self, key: &str, prefix: bool) -> Vec<(String, String)> {
        let mut args = vec!["get", "-w", "json"];
        if prefix {
            args.push("--prefix");
        }
        args.extend(["--", key]);
        let out = self.etcdctl_ok(&args);
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("etcdctl get: bad JSON ({e}): {}", stdout_of(&out)));
        let Some(kvs) = doc["kvs"].as_array() else {
            return Vec::new();
        };
        kvs.iter().map(|kv| (base64_field(kv, "key"), base64_field(kv, "value"))).collect()
    }

    pub fn etcd_del(&self, key: &str) {
        self.etcdctl_ok(&["del", "--", key]);
    }

    /// Writes the flannel network config (`/coreos.com/network/config`).
    pub fn put_network_config(&self, json: &str) {
        self.etcd_put(NETWORK_CONFIG_KEY, json);
    }
}

/// A base64 field of an etcdctl JSON record (standard alphabet), decoded as UTF-8 (lossy).
fn base64_field(kv: &serde_json::Value, field: &str) -> String {
    let text = kv[field].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_else(|e| panic!("bad base64 ({e}): {text:?}"));
    String::from_utf8_lossy(&bytes).into_owned()
}
