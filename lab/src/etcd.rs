//! etcd in the lab: its modes (single, three-member cluster, TLS, auth), each member in a
//! namespace of its own on the underlay, started, stopped and restarted by tests, and the leader.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use crate::netns::netns_exec;
use crate::process::{kill_and_reap, lock, poll, stderr_of, SharedChild};
use crate::{Lab, UNDERLAY_NET};

/// Underlay address of etcd member K: .(ETCD_IP_BASE + K).
pub(crate) const ETCD_IP_BASE: u8 = 2;
/// Users made in `EtcdMode::Auth`: root (role root) and weft (readwrite on `AUTH_PREFIX`).
pub const ETCD_ROOT_USER: &str = "root";
pub const ETCD_ROOT_PASSWORD: &str = "rootpw";
pub const ETCD_WEFT_USER: &str = "weft";
pub const ETCD_WEFT_PASSWORD: &str = "weftpw";
const AUTH_PREFIX: &str = "/coreos.com/network/";
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the lab runs etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdMode {
    /// One member at 198.18.0.2, plain HTTP, no auth.
    Single,
    /// Three members at 198.18.0.2, .3 and .4, each in a namespace of its own, peering over the
    /// underlay (port 2380).
    Cluster3,
    /// One member serving client TLS that requires a client certificate (`Lab::tls_files`).
    Tls,
    /// One member with auth enabled: `ETCD_ROOT_USER` (role root) and `ETCD_WEFT_USER` (readwrite
    /// on `/coreos.com/network/`).
    Auth,
}

impl EtcdMode {
    fn members(self) -> usize {
        match self {
            EtcdMode::Cluster3 => 3,
            _ => 1,
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            EtcdMode::Tls => "https",
            _ => "http",
        }
    }
}

/// One etcd member: its namespace stays for the whole lab, its process may be stopped and
/// restarted.
pub(crate) struct EtcdMember {
    /// etcd's `--name`.
    pub(crate) name: String,
    pub(crate) ns: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_name: String,
    /// The latest process; None before the first start.
    pub(crate) child: Mutex<Option<SharedChild>>,
}

impl Lab {
    pub fn etcd_mode(&self) -> EtcdMode {
        self.mode
    }

    /// The client URL of member 0.
    pub fn etcd_endpoint(&self) -> String {
        self.client_url(0)
    }

    /// The client URLs of all members, comma-separated (what `start_weftd` passes).
    pub fn etcd_endpoints(&self) -> String {
        let urls: Vec<String> = (0..self.etcd.len()).map(|k| self.client_url(k)).collect();
        urls.join(",")
    }

    /// Member 0's underlay address.
    pub fn etcd_ip(&self) -> Ipv4Addr {
        self.etcd_ips()[0]
    }

    /// Every member's underlay address, by member index.
    pub fn etcd_ips(&self) -> Vec<Ipv4Addr> {
        self.etcd.iter().map(|m| m.ip).collect()
    }

    /// The pid of member 0's latest process (which may have been stopped since).
    pub fn etcd_pid(&self) -> u32 {
        lock(&self.member(0).child).as_ref().map_or(0, |child| lock(child).id())
    }

    // ----- etcd members -----

    /// Member K: namespace `<id>eK` on the underlay at 198.18.0.(2+K), data in
    /// `<dir>/etcdK-data`, log `<dir>/etcdK.log`.
    pub(crate) fn create_etcd(&mut self) {
        for k in 0..self.mode.members() {
            let ns = format!("{}e{k}", self.id);
            let [a, b, c] = UNDERLAY_NET;
            let ip = Ipv4Addr::new(a, b, c, ETCD_IP_BASE + k as u8);
            self.add_netns(&ns);
            self.wire_to_underlay(&ns, &format!("etcd{k}"), ip);
            self.etcd.push(EtcdMember {
                name: format!("{}-{k}", self.id),
                ns,
                ip,
                data_dir: self.dir.join(format!("etcd{k}-data")),
                log_name: format!("etcd{k}.log"),
                child: Mutex::new(None),
            });
        }
        let all: Vec<usize> = (0..self.etcd.len()).collect();
        self.start_etcd_members(&all);
    }

    pub(crate) fn member(&self, k: usize) -> &EtcdMember {
        self.etcd.get(k).unwrap_or_else(|| panic!("lab has no etcd member {k} ({} members)", self.etcd.len()))
    }

    pub(crate) fn client_url(&self, k: usize) -> String {
        format!("{}://{}:2379", self.mode.scheme(), self.member(k).ip)
    }

    /// The member's command line; the same for the first start and every restart (etcd ignores
    /// the `--initial-*` flags once its data dir exists).
    fn etcd_command(&self, k: usize) -> Command {
        let m = self.member(k);
        let scheme = self.mode.scheme();
        let client = self.client_url(k);
        // A lone member peers on loopback; cluster members over the underlay.
        let peer_url = |m: &EtcdMember| match self.mode {
            EtcdMode::Cluster3 => format!("http://{}:2380", m.ip),
            _ => "http://127.0.0.1:2380".to_string(),
        };
        let cluster: Vec<String> = self.etcd.iter().map(|m| format!("{}={}", m.name, peer_url(m))).collect();
        let mut cmd = netns_exec(&m.ns, &["etcd", "--name", &m.name]);
        cmd.arg("--data-dir").arg(&m.data_dir).args([
            // Warnings and errors only: startup chatter would bury weftd's logs in dumps.
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
            &format!("--listen-client-urls={client},{scheme}://127.0.0.1:2379"),
            &format!("--advertise-client-urls={client}"),
            &format!("--listen-peer-urls={}", peer_url(m)),
            &format!("--initial-advertise-peer-urls={}", peer_url(m)),
            &format!("--initial-cluster={}", cluster.join(",")),
            &format!("--initial-cluster-token={}", self.id),
            "--initial-cluster-state=new",
        ]);
        if self.mode == EtcdMode::Tls {
            let dir = self.tls_dir();
            cmd.arg("--cert-file").arg(dir.join("server.pem"));
            cmd.arg("--key-file").arg(dir.join("server.key"));
            cmd.arg("--trusted-ca-file").arg(dir.join("ca.pem"));
            cmd.arg("--client-cert-auth");
        }
        cmd
    }

    /// Restarts member `member` (stopped by `stop_etcd`) with its data dir and flags, and waits
    /// until it is healthy. In `Cluster3` that needs a quorum: to bring back two stopped
    /// members, use `start_etcd_members`.
    pub fn start_etcd(&self, member: usize) {
        self.start_etcd_members(&[member]);
    }

    /// Starts all of `members`, then waits until each is healthy.
    pub fn start_etcd_members(&self, members: &[usize]) {
        // All are spawned before waiting: a cluster member is only healthy once a quorum runs.
        for &k in members {
            assert!(!self.etcd_running(k), "etcd member {k} is already running");
            let child = self.spawn_logged(self.etcd_command(k), &self.member(k).log_name, true);
            *lock(&self.member(k).child) = Some(child);
        }
        for &k in members {
            self.wait_etcd_healthy(k);
        }
    }

    /// SIGKILLs member `member` and reaps it; its namespace and data dir stay.
    pub fn stop_etcd(&self, member: usize) {
        if let Some(child) = lock(&self.member(member).child).as_ref() {
            kill_and_reap(&mut lock(child));
        }
    }

    /// Whether member `member`'s process runs (started and neither stopped nor exited).
    pub fn etcd_running(&self, member: usize) -> bool {
        lock(&self.member(member).child).as_ref().is_some_and(|child| matches!(lock(child).try_wait(), Ok(None)))
    }

    /// Indices of the running members.
    pub(crate) fn live_members(&self) -> Vec<usize> {
        (0..self.etcd.len()).filter(|&k| self.etcd_running(k)).collect()
    }

    fn wait_etcd_healthy(&self, k: usize) {
        poll(&format!("etcd member {k} to become healthy"), ETCD_START_TIMEOUT, || {
            if !self.etcd_running(k) {
                panic!("etcd member {k} exited during start:\n{}", self.log_tail(&self.member(k).log_name, 30));
            }
            self.etcdctl_member(k, &["endpoint", "health"]).status.success().then_some(())
        })
    }

    /// The index of the leader, once every running member reports the same leader and it is
    /// one of them (so right after stopping the leader this waits for the new election).
    pub fn etcd_leader(&self) -> usize {
        poll("the running etcd members to agree on a running leader", ETCD_START_TIMEOUT, || self.try_etcd_leader())
    }

    fn try_etcd_leader(&self) -> Option<usize> {
        let live = self.live_members();
        let urls: Vec<String> = live.iter().map(|&k| self.client_url(k)).collect();
        let out = self.etcdctl_at(&urls, true, &["endpoint", "status", "-w", "json"]);
        if !out.status.success() {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let statuses = doc.as_array().filter(|s| s.len() == live.len())?;
        let mut leader = None;
        let mut member_ids = Vec::new();
        for status in statuses {
            let k = live[urls.iter().position(|u| status["Endpoint"] == u.as_str())?];
            let reported = status["Status"]["leader"].as_u64().filter(|&l| l != 0)?;
            if leader.is_some_and(|l| l != reported) {
                return None;
            }
            leader = Some(reported);
            member_ids.push((status["Status"]["header"]["member_id"].as_u64()?, k));
        }
        member_ids.into_iter().find(|&(id, _)| Some(id) == leader).map(|(_, k)| k)
    }

    /// Adds the users of `EtcdMode::Auth` and turns auth on (etcd wants user root first).
    pub(crate) fn enable_auth(&mut self) {
        let root = format!("{ETCD_ROOT_USER}:{ETCD_ROOT_PASSWORD}");
        let weft = format!("{ETCD_WEFT_USER}:{ETCD_WEFT_PASSWORD}");
        let steps: [&[&str]; 7] = [
            &["user", "add", &root],
            &["user", "grant-role", ETCD_ROOT_USER, "root"],
            &["role", "add", ETCD_WEFT_USER],
            &["role", "grant-permission", ETCD_WEFT_USER, "--prefix=true", "readwrite", AUTH_PREFIX],
            &["user", "add", &weft],
            &["user", "grant-role", ETCD_WEFT_USER, ETCD_WEFT_USER],
            &["auth", "enable"],
        ];
        for args in steps {
            let out = self.etcdctl_bare(args);
            assert!(out.status.success(), "etcdctl {args:?} failed: {}", stderr_of(&out));
        }
        self.auth_enabled = true;
    }
}
