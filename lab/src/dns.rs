//! DNS in the lab (`--names`): a host's resolv.conf as weftd sees it, an "outside" resolver
//! (dnsmasq) on the underlay standing in for the internet, and queries made with busybox's
//! `nslookup` from any namespace.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::netns::netns_exec;
use crate::process::{output, poll, stdout_of};
use crate::Lab;

/// Files of `/etc/netns/<ns>/`, which `ip netns exec <ns>` mounts over their twins in `/etc`
/// for what it runs (weftd included): `resolv.conf`, `hosts`, `nsswitch.conf`. The directory
/// is removed on Drop.
pub struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    /// Writes `text` as the resolv.conf of namespace `ns`; panics if the directory exists.
    pub fn write(ns: &str, text: &str) -> Self {
        Self::write_files(ns, &[("resolv.conf", text)])
    }

    /// Writes each (file name, text) into `/etc/netns/<ns>/`; panics if the directory exists.
    pub fn write_files(ns: &str, files: &[(&str, &str)]) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns);
        fs::create_dir_all(dir.parent().expect("has a parent")).expect("create /etc/netns");
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let guard = Self { dir };
        for (name, text) in files {
            fs::write(guard.dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
        guard
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One `nslookup` run: its output and how long it took.
#[derive(Debug, Clone)]
pub struct Answer {
    pub ok: bool,
    pub text: String,
    pub took: Duration,
}

impl Answer {
    /// busybox's words for an NXDOMAIN answer.
    pub fn nxdomain(&self) -> bool {
        self.text.contains("NXDOMAIN")
    }

    pub fn servfail(&self) -> bool {
        self.text.contains("SERVFAIL")
    }

    /// No answer at all: busybox gave up waiting.
    pub fn timed_out(&self) -> bool {
        self.text.contains("timed out") || self.text.contains("no servers could be reached")
    }
}

/// `busybox nslookup -type=<qtype> <name> <server>` in namespace `ns` (busybox asks up to
/// twice, waiting 5 s for each; `timeout` bounds it to 4 s so an unanswered query ends sooner).
pub fn nslookup(ns: &str, qtype: &str, name: &str, server: Ipv4Addr) -> Answer {
    let started = Instant::now();
    let server = server.to_string();
    let qtype = format!("-type={qtype}");
    let out = output(&mut netns_exec(ns, &["timeout", "4", "busybox", "nslookup", &qtype, name, &server]));
    let mut text = format!("{}{}", stdout_of(&out), String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(124) {
        text.push_str("(timed out: no answer within 4 s)");
    }
    Answer { ok: out.status.success(), text, took: started.elapsed() }
}

impl Lab {
    /// Adds a host (see `add_host`) running dnsmasq as the "outside" resolver on its underlay
    /// address, answering each of `names` with its address and refusing to recurse further.
    /// Returns the host number and the resolver's address, once it answers.
    pub fn add_outside_resolver(&mut self, names: &[(&str, Ipv4Addr)]) -> (usize, Ipv4Addr) {
        let n = self.add_host();
        let (ns, address) = (self.host(n).ns.clone(), self.host(n).underlay_ip);
        let mut cmd = netns_exec(&ns, &["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts"]);
        cmd.args(["--conf-file=/dev/null", "--bind-interfaces", "--pid-file", "--user=root"]);
        cmd.arg(format!("--listen-address={address}"));
        cmd.args(names.iter().map(|(name, ip)| format!("--address=/{name}/{ip}")));
        self.spawn_logged(cmd, &format!("dnsmasq-h{n}.log"), false);
        let (probe, ip) = names.first().copied().expect("at least one name");
        poll("dnsmasq to answer", Duration::from_secs(10), || {
            nslookup(&ns, "a", probe, address).text.contains(&ip.to_string()).then_some(())
        });
        (n, address)
    }
}

/// Whether dnsmasq is installed (`make deps` installs dnsmasq-base).
pub fn have_dnsmasq() -> bool {
    Command::new("dnsmasq").arg("--version").output().is_ok_and(|o| o.status.success())
}
