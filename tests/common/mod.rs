//! Test lab (design.md §3): hosts as network namespaces on a shared underlay bridge, etcd in
//! namespaces of its own, `weftd` processes, "container" namespaces and background pings, all
//! removed on Drop.
//!
//! Shared by the integration tests (`mod common;`) and `examples/demo.rs` (via `#[path]`), so it
//! uses only std and serde_json and drives the system through `ip`, `bridge`, `etcd`, `etcdctl`,
//! `openssl` and `ping`. Every name is derived from a per-lab id (`w` + 5 hex digits) so labs can
//! run in parallel threads and processes. Needs root.
//!
//! etcd runs in one of four modes (`EtcdMode`): a single plain member, a three-member cluster,
//! client TLS with client certificates, or auth with users. The lab's own etcdctl helpers work in
//! every mode; weftd is only given the endpoints, so tests pass credentials (right or wrong).
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod drift;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod bounded;
pub mod etcd_wipe;
pub mod hostile;

/// Underlay addresses: etcd member K is .(2+K), host N is .(10+N).
const UNDERLAY_NET: [u8; 3] = [198, 18, 0];
const ETCD_IP_BASE: u8 = 2;
const HOST_IP_BASE: u8 = 10;
const MAX_HOSTS: usize = 200;
/// flannel's default key prefix, which weftd also uses.
pub const NETWORK_CONFIG_KEY: &str = "/coreos.com/network/config";
/// Users made in `EtcdMode::Auth`: root (role root) and weft (readwrite on `AUTH_PREFIX`).
pub const ETCD_ROOT_USER: &str = "root";
pub const ETCD_ROOT_PASSWORD: &str = "rootpw";
pub const ETCD_WEFT_USER: &str = "weft";
pub const ETCD_WEFT_PASSWORD: &str = "weftpw";
const AUTH_PREFIX: &str = "/coreos.com/network/";
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Every lab's dir (logs, etcd data, subnet files, owner record) lives under this.
const LABS_ROOT: &str = "/tmp/weft-lab";
/// A lab dir without a valid owner file is only treated as abandoned after this long, so a lab
/// that is still being created in another process is never swept.
const OWNERLESS_GRACE: Duration = Duration::from_secs(60);

type SharedChild = Arc<Mutex<Child>>;

// ---------------------------------------------------------------------------------------------
// etcd modes
// ---------------------------------------------------------------------------------------------

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

/// PEM files made for `EtcdMode::Tls` (EC P-256, keys PKCS#8). etcd's own server certificate
/// (IP SANs 198.18.0.2 and 127.0.0.1) is signed by `ca` too.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificate and the client certificate.
    pub ca: PathBuf,
    /// A client certificate (CN `weft`, clientAuth) signed by `ca`.
    pub cert: PathBuf,
    /// The client certificate's key.
    pub key: PathBuf,
    /// An unrelated CA, which etcd's server certificate does not chain to.
    pub wrong_ca: PathBuf,
}

/// One etcd member: its namespace stays for the whole lab, its process may be stopped and
/// restarted.
struct EtcdMember {
    /// etcd's `--name`.
    name: String,
    ns: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    log_name: String,
    /// The latest process; None before the first start.
    child: Mutex<Option<SharedChild>>,
}

// ---------------------------------------------------------------------------------------------
// Lab
// ---------------------------------------------------------------------------------------------

/// A set of namespaces forming an underlay network with etcd on it. Drop removes everything.
pub struct Lab {
    id: String,
    dir: PathBuf,
    /// Created namespaces in creation order; deleted in reverse.
    namespaces: Vec<String>,
    /// etcd members, weftds and pings in start order; killed (in reverse) and reaped on Drop,
    /// even when a `Weftd` or `PingRun` handle outlives the lab.
    children: Mutex<Vec<SharedChild>>,
    mode: EtcdMode,
    etcd: Vec<EtcdMember>,
    /// Set once `EtcdMode::Auth` has enabled auth; before that etcdctl must not send a user.
    auth_enabled: bool,
    /// Numbers the output files of pings.
    pings: AtomicU32,
    hosts: Vec<Host>,
    containers: BTreeMap<usize, Container>,
}

impl Lab {
    /// A lab with a single plain etcd (`EtcdMode::Single`).
    pub fn new() -> Lab {
        Lab::with_etcd(EtcdMode::Single)
    }

    /// Creates the underlay namespace with bridge `br0` and starts a healthy etcd on it in
    /// `mode` (for `Tls` first making the certificates, for `Auth` then adding the users).
    pub fn with_etcd(mode: EtcdMode) -> Lab {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_abandoned_labs);

        let (id, dir) = claim_lab_dir();
        // Built before any resource exists so a panic below still runs Drop on what was made.
        let mut lab = Lab {
            id,
            dir,
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            mode,
            etcd: Vec::new(),
            auth_enabled: false,
            pings: AtomicU32::new(0),
            hosts: Vec::new(),
            containers: BTreeMap::new(),
        };
        lab.create_underlay();
        if mode == EtcdMode::Tls {
            make_tls_files(&lab.tls_dir());
        }
        lab.create_etcd();
        if mode == EtcdMode::Auth {
            lab.enable_auth();
        }
        lab
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's temp dir (logs, etcd data, subnet files); removed on Drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every namespace the lab created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

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

    /// The certificates of `EtcdMode::Tls`; panics in any other mode.
    pub fn tls_files(&self) -> TlsFiles {
        assert_eq!(self.mode, EtcdMode::Tls, "tls_files() needs EtcdMode::Tls");
        let dir = self.tls_dir();
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
            wrong_ca: dir.join("wrong-ca.pem"),
        }
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    fn underlay_ns(&self) -> String {
        format!("{}u", self.id)
    }

    fn create_underlay(&mut self) {
        let ns = self.underlay_ns();
        self.add_netns(&ns);
        ip(&ns, &["link", "add", "br0", "type", "bridge"]);
        ip(&ns, &["link", "set", "br0", "up"]);
    }

    /// Creates a namespace, recorded for cleanup, with `lo` up.
    fn add_netns(&mut self, name: &str) {
        // Serialised: the very first `ip netns add` on a machine sets up the /run/netns mount,
        // and concurrent first calls can stack mounts so namespaces hide each other.
        static NETNS_ADD: Mutex<()> = Mutex::new(());
        let _guard = lock(&NETNS_ADD);
        run(Command::new("ip").args(["netns", "add", name]));
        self.namespaces.push(name.to_string());
        ip(name, &["link", "set", "lo", "up"]);
    }

    /// Joins namespace `ns` to the underlay bridge: `eth0` inside `ns`, `port` on `br0`.
    /// The veth is created straight inside the namespaces, never in the root namespace.
    fn wire_to_underlay(&self, ns: &str, port: &str, addr: Ipv4Addr) {
        let underlay = self.underlay_ns();
        ip(ns, &["link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", &underlay]);
        ip(&underlay, &["link", "set", port, "master", "br0", "up"]);
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(ns, &["link", "set", "eth0", "up"]);
        wait_wire_ready(&underlay, port, ns, "eth0");
    }

    /// Spawns `cmd` with stdout+stderr written to `<dir>/<log_name>` and registers it for
    /// killing on Drop.
    fn spawn_logged(&self, mut cmd: Command, log_name: &str, append: bool) -> SharedChild {
        let log = open_log(&self.dir.join(log_name), append);
        let err = log.try_clone().expect("dup log file handle");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&cmd)));
        let shared = Arc::new(Mutex::new(child));
        lock(&self.children).push(shared.clone());
        shared
    }

    // ----- etcd members -----

    /// Member K: namespace `<id>eK` on the underlay at 198.18.0.(2+K), data in
    /// `<dir>/etcdK-data`, log `<dir>/etcdK.log`.
    fn create_etcd(&mut self) {
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

    fn member(&self, k: usize) -> &EtcdMember {
        self.etcd.get(k).unwrap_or_else(|| panic!("lab has no etcd member {k} ({} members)", self.etcd.len()))
    }

    fn client_url(&self, k: usize) -> String {
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
    fn live_members(&self) -> Vec<usize> {
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
    fn enable_auth(&mut self) {
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

    // ----- etcdctl -----

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
    fn live_urls(&self) -> Vec<String> {
        let live = self.live_members();
        let members = if live.is_empty() { (0..self.etcd.len()).collect() } else { live };
        members.iter().map(|&k| self.client_url(k)).collect()
    }

    /// Runs etcdctl in member 0's namespace, which stays on the underlay even while member 0
    /// is stopped.
    fn etcdctl_at(&self, urls: &[String], credentials: bool, args: &[&str]) -> Output {
        output(&mut self.etcdctl_command(urls, credentials, args))
    }

    /// The `etcdctl <args>` command (API v3) against `urls`, run from the etcd namespace.
    fn etcdctl_command(&self, urls: &[String], credentials: bool, args: &[&str]) -> Command {
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

    // ----- hosts -----

    /// Adds host N (returned, 1-based): namespace `<id>hN`, `eth0` at 198.18.0.(10+N)/24 on the
    /// underlay, IP forwarding on, and a directory for its subnet file.
    pub fn add_host(&mut self) -> usize {
        let n = self.hosts.len() + 1;
        assert!(n <= MAX_HOSTS, "a lab holds at most {MAX_HOSTS} hosts");
        let ns = format!("{}h{n}", self.id);
        let [a, b, c] = UNDERLAY_NET;
        let underlay_ip = Ipv4Addr::new(a, b, c, HOST_IP_BASE + n as u8);
        self.add_netns(&ns);
        self.wire_to_underlay(&ns, &format!("h{n}"), underlay_ip);
        run(&mut netns_exec(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));

        let host_dir = self.dir.join(format!("h{n}"));
        fs::create_dir(&host_dir).expect("create host dir");
        let subnet_file = host_dir.join("subnet.env");
        self.hosts.push(Host { n, ns, underlay_ip, subnet_file });
        n
    }

    /// Host N (1-based); panics if it was not added.
    pub fn host(&self, n: usize) -> &Host {
        n.checked_sub(1)
            .and_then(|i| self.hosts.get(i))
            .unwrap_or_else(|| panic!("lab has no host {n} ({} hosts)", self.hosts.len()))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    // ----- weftd -----

    /// Starts weftd in host N's namespace against the lab's etcd; output is appended to
    /// `<dir>/weftd-hN.log` (so restarts on one host share a log).
    pub fn start_weftd(&self, n: usize, extra: &[&str]) -> Weftd {
        self.start_weftd_env(n, extra, &[])
    }

    /// `start_weftd` with extra environment variables. `FLANNELD_*` variables of the calling
    /// process are not passed on (weftd reads them as flags), only those given here.
    pub fn start_weftd_env(&self, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Weftd {
        self.spawn_weftd(n, &[&["--iface", "eth0"], extra].concat(), env)
    }

    /// `start_weftd_env` without `--iface eth0`: weftd picks the underlay itself.
    pub fn start_weftd_picking_iface(&self, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Weftd {
        self.spawn_weftd(n, extra, env)
    }

    fn spawn_weftd(&self, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Weftd {
        let bin = weftd_bin();
        assert!(bin.exists(), "weftd binary not found at {} (run `cargo build --bins`)", bin.display());
        let host = self.host(n);
        // Every member, so weftd can fail over; credentials are the test's business.
        let endpoints = self.etcd_endpoints();
        let mut cmd = netns_exec(&host.ns, &[]);
        cmd.arg(&bin).args(["--etcd-endpoints", &endpoints, "--subnet-file"]);
        cmd.arg(&host.subnet_file).args(extra);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FLANNELD_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", "weft=debug,info").envs(env.iter().copied());
        let log_name = format!("weftd-h{n}.log");
        let child = self.spawn_logged(cmd, &log_name, true);
        let pid = lock(&child).id();
        Weftd { n, pid, child, log_path: self.dir.join(log_name) }
    }

    // ----- containers -----

    /// Gives host N a "container": namespace `<id>cN` whose `eth0` is on bridge `cbr0` in the
    /// host, configured from the host's subnet.env (bridge gets FLANNEL_SUBNET, both ends get
    /// FLANNEL_MTU, the container the .2 address and a default route via the bridge).
    /// Returns the container's IP. Panics if subnet.env is missing or incomplete.
    pub fn attach_container(&mut self, n: usize) -> Ipv4Addr {
        assert!(!self.containers.contains_key(&n), "host {n} already has a container");
        let host = self.host(n).clone();
        let env = host.subnet_env().unwrap_or_else(|| panic!("host {n} has no subnet file at {}", host.subnet_file.display()));
        let field = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("subnet.env lacks {k}: {env:?}"));
        let subnet = field("FLANNEL_SUBNET");
        let mtu = field("FLANNEL_MTU");
        let (gateway, prefix) = parse_cidr(&subnet);
        let addr = nth_address(gateway, prefix, 2);

        let ns = format!("{}c{n}", self.id);
        self.add_netns(&ns);
        let port = format!("vethc{n}");
        ip(&host.ns, &["link", "add", "cbr0", "type", "bridge"]);
        ip(&host.ns, &["addr", "add", &subnet, "dev", "cbr0"]);
        ip(&host.ns, &["link", "set", "cbr0", "mtu", &mtu, "up"]);
        ip(&host.ns, &["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&host.ns, &["link", "set", &port, "mtu", &mtu, "master", "cbr0", "up"]);
        ip(&ns, &["link", "set", "eth0", "mtu", &mtu, "up"]);
        ip(&ns, &["addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0"]);
        ip(&ns, &["route", "add", "default", "via", &gateway.to_string()]);
        wait_wire_ready(&host.ns, &port, &ns, "eth0");

        self.containers.insert(n, Container { n, ns, ip: addr, gateway });
        addr
    }

    /// The container attached to host N; panics if there is none.
    pub fn container(&self, n: usize) -> &Container {
        self.containers.get(&n).unwrap_or_else(|| panic!("host {n} has no container"))
    }

    /// One ping (1 s timeout) from host N's container to `dst`.
    pub fn container_ping(&self, n: usize, dst: Ipv4Addr) -> bool {
        self.container(n).ping(dst)
    }

    // ----- background pings -----

    /// Pings `dst` every `interval` from host N's container until `PingRun::finish`.
    pub fn start_ping(&self, from_container: usize, dst: Ipv4Addr, interval: Duration) -> PingRun {
        let ns = self.container(from_container).ns.clone();
        self.spawn_ping(&ns, dst, interval)
    }

    /// Pings `dst` every `interval` from host N's namespace until `PingRun::finish`.
    pub fn start_host_ping(&self, n: usize, dst: Ipv4Addr, interval: Duration) -> PingRun {
        let ns = self.host(n).ns.clone();
        self.spawn_ping(&ns, dst, interval)
    }

    /// `ping -i <interval> -W 1 <dst>` in `ns`, output to `<dir>/pingK.out` (not `.log`, so
    /// `dump_logs` leaves the reply lines out).
    fn spawn_ping(&self, ns: &str, dst: Ipv4Addr, interval: Duration) -> PingRun {
        let k = self.pings.fetch_add(1, Ordering::Relaxed);
        let out_name = format!("ping{k}.out");
        let interval = format!("{}", interval.as_secs_f64());
        let dst_text = dst.to_string();
        let cmd = netns_exec(ns, &["ping", "-n", "-i", &interval, "-W", "1", &dst_text]);
        let child = self.spawn_logged(cmd, &out_name, false);
        PingRun { what: format!("ping from {ns} to {dst}"), child, out_path: self.dir.join(out_name) }
    }

    // ----- logs -----

    /// The last `lines` lines of `<dir>/<name>`, or a note that it cannot be read.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
            Err(e) => format!("({name}: {e})"),
        }
    }

    /// Prints the tail of every log in the lab dir to stderr (for diagnosing failures).
    pub fn dump_logs(&self, lines: usize) {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".log"))
            .collect();
        names.sort();
        for name in names {
            eprintln!("----- lab {} {name} (last {lines} lines) -----", self.id);
            eprintln!("{}", self.log_tail(&name, lines));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Logs vanish with the dir, so show them while a failing test unwinds (cargo prints
        // a failed test's captured stderr).
        if thread::panicking() {
            self.dump_logs(40);
        }
        let children = std::mem::take(&mut *lock(&self.children));
        for child in children.iter().rev() {
            kill_and_reap(&mut lock(child));
        }
        for ns in self.namespaces.iter().rev() {
            destroy_netns(ns);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("lab {}: removing {}: {e}", self.id, self.dir.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host, Container
// ---------------------------------------------------------------------------------------------

/// A host: a network namespace on the underlay.
#[derive(Clone, Debug)]
pub struct Host {
    pub n: usize,
    pub ns: String,
    pub underlay_ip: Ipv4Addr,
    /// Where weftd is told to write subnet.env (the file may not exist yet).
    pub subnet_file: PathBuf,
}

impl Host {
    /// Runs `args` inside the host namespace (`ip netns exec`); output is not checked.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(&mut netns_exec(&self.ns, args))
    }

    /// `ip -j <args>` inside the host, parsed; panics if the command fails.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        self.try_ip_json(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `ip_json` but returns the error (e.g. "Device does not exist") for polling.
    pub fn try_ip_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        tool_json("ip", &self.ns, args)
    }

    /// `bridge -j <args>` inside the host, parsed; panics if the command fails.
    pub fn bridge_json(&self, args: &[&str]) -> serde_json::Value {
        tool_json("bridge", &self.ns, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The subnet file's KEY=VALUE lines, or None while it does not exist.
    pub fn subnet_env(&self) -> Option<BTreeMap<String, String>> {
        let text = fs::read_to_string(&self.subnet_file).ok()?;
        Some(parse_env(&text))
    }

    /// Runs `args` inside the host namespace and panics with its output if it fails.
    pub fn exec_ok(&self, args: &[&str]) {
        let out = self.exec(args);
        assert!(out.status.success(), "{args:?} in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
    }

    /// One ping (1 s timeout) from the host namespace.
    pub fn ping(&self, dst: Ipv4Addr) -> bool {
        ping_from(&self.ns, dst)
    }
}

/// A "container": a namespace behind bridge `cbr0` in its host.
#[derive(Clone, Debug)]
pub struct Container {
    pub n: usize,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The bridge address (the first address of the host's subnet).
    pub gateway: Ipv4Addr,
}

impl Container {
    /// Runs `args` inside the container namespace; output is not checked.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(&mut netns_exec(&self.ns, args))
    }

    pub fn ping(&self, dst: Ipv4Addr) -> bool {
        ping_from(&self.ns, dst)
    }
}

fn ping_from(ns: &str, dst: Ipv4Addr) -> bool {
    let dst = dst.to_string();
    output(&mut netns_exec(ns, &["ping", "-n", "-q", "-c1", "-W1", &dst])).status.success()
}

/// Parses KEY=VALUE lines, skipping blanks and comments.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PingRun
// ---------------------------------------------------------------------------------------------

/// A ping running in the background (`Lab::start_ping`); killed on Drop.
pub struct PingRun {
    what: String,
    child: SharedChild,
    out_path: PathBuf,
}

/// What a `PingRun` counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests that had their chance: ping's "transmitted", less the last one if it was
    /// still unanswered when ping was stopped (it may just have been in flight).
    pub sent: u64,
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
}

impl PingRun {
    /// Stops ping with SIGINT (so it prints its summary) and returns the counts; panics if
    /// ping had already died (e.g. "Network is unreachable" at start) or printed no summary.
    pub fn finish(self) -> PingStats {
        {
            let mut child = lock(&self.child);
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited early ({status}):\n{}", self.what, self.output());
            }
            signal(&mut child, "INT");
        }
        let status = wait_child(&self.child, TERMINATE_TIMEOUT).unwrap_or_else(|| panic!("{} ignored SIGINT", self.what));
        let text = self.output();
        parse_ping_output(&text).unwrap_or_else(|| panic!("{} ({status}) printed no summary:\n{}", self.what, tail(&text, 20)))
    }

    /// Everything ping printed so far.
    pub fn output(&self) -> String {
        fs::read(&self.out_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

impl Drop for PingRun {
    fn drop(&mut self) {
        kill_and_reap(&mut lock(&self.child));
    }
}

/// Reads iputils ping's "N packets transmitted, M received" and its reply lines.
fn parse_ping_output(text: &str) -> Option<PingStats> {
    let summary = text.lines().find(|l| l.contains(" packets transmitted, "))?;
    let count_before = |word: &str| -> Option<u64> {
        let head = &summary[..summary.find(word)?];
        head.rsplit([' ', ',']).find(|w| !w.is_empty())?.parse().ok()
    };
    let transmitted = count_before(" packets transmitted")?;
    let received = count_before(" received")?;
    // Sequence numbers start at 1, so the last request sent is number `transmitted`.
    let last = format!("icmp_seq={transmitted} ");
    let last_answered = text.lines().any(|l| l.contains(" bytes from ") && l.contains(&last) && !l.contains("DUP!"));
    let sent = if last_answered || transmitted == 0 { transmitted } else { transmitted - 1 };
    Some(PingStats { sent, received, lost: sent.saturating_sub(received) })
}

// ---------------------------------------------------------------------------------------------
// Weftd
// ---------------------------------------------------------------------------------------------

/// A running weftd; SIGKILLed and reaped on Drop.
pub struct Weftd {
    pub n: usize,
    pid: u32,
    child: SharedChild,
    log_path: PathBuf,
}

impl Weftd {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The log so far (shared by every weftd started on this host).
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; returns the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        poll(&format!("weftd h{} to log {needle:?}", self.n), timeout, || Some(self.log()).filter(|log| log.contains(needle)))
    }

    /// SIGTERM, then waits up to 10 s before falling back to SIGKILL.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&mut lock(&self.child), "TERM");
        if let Some(status) = self.wait_exit(TERMINATE_TIMEOUT) {
            return status;
        }
        eprintln!("weftd h{} ignored SIGTERM for {TERMINATE_TIMEOUT:?}; killing", self.n);
        kill_and_reap(&mut lock(&self.child)).expect("reap weftd")
    }

    pub fn kill9(&mut self) {
        kill_and_reap(&mut lock(&self.child));
    }

    /// The exit status if weftd exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&self.child, timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(lock(&self.child).try_wait(), Ok(None))
    }

    /// User plus system CPU time weftd (all its threads) has used so far; panics if it has
    /// exited (its pid could belong to another process by now).
    pub fn cpu_time(&self) -> Duration {
        let mut child = lock(&self.child);
        assert!(matches!(child.try_wait(), Ok(None)), "weftd h{} has exited", self.n);
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .unwrap_or_else(|e| panic!("read /proc/{}/stat: {e}", self.pid));
        drop(child);
        // Fields 14 and 15 of proc(5); the command name (field 2) may contain spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("stat has a comm") + 1..].split_whitespace().collect();
        let ticks: u64 = fields[11..13].iter().map(|f| f.parse::<u64>().expect("numeric utime/stime")).sum();
        Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks_per_second())
    }
}

impl Drop for Weftd {
    fn drop(&mut self) {
        kill_and_reap(&mut lock(&self.child));
    }
}

// ---------------------------------------------------------------------------------------------
// Free helpers
// ---------------------------------------------------------------------------------------------

/// The weftd binary: `$WEFTD_BIN` at run time, else cargo's path for integration tests, else
/// `target/<profile>/weftd` next to the examples dir the running example lives in.
pub fn weftd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WEFTD_BIN") {
        return path.into();
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_weftd") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("exe has a grandparent dir");
    profile_dir.join("weftd")
}

/// Calls `f` every 50 ms until it returns Some; panics after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Names from `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"]));
    stdout_of(&out).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// Pids of processes whose command line mentions `needle` (e.g. a lab dir).
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// Waits until bridge port `port` in `bridge_ns` forwards and its veth peer `dev` in `ns` is
/// up. Carrier changes reach the bridge through the kernel's linkwatch, which may lag up to a
/// second, so without this the first packets over a fresh link can be dropped.
fn wait_wire_ready(bridge_ns: &str, port: &str, ns: &str, dev: &str) {
    poll(&format!("{bridge_ns}/{port} to forward and {ns}/{dev} to be up"), Duration::from_secs(10), || {
        let port_state = tool_json("bridge", bridge_ns, &["link", "show", "dev", port]).ok()?;
        let dev_state = tool_json("ip", ns, &["link", "show", "dev", dev]).ok()?;
        let forwarding = port_state[0]["state"] == "forwarding";
        (forwarding && dev_state[0]["operstate"] == "UP").then_some(())
    })
}

/// `ip netns exec <ns> <args...>` (the process execs into `args[0]`, so its pid is the
/// command's own).
fn netns_exec(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// `ip -n <ns> <args>`, panicking on failure.
fn ip(ns: &str, args: &[&str]) -> Output {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// Runs `<tool> -n <ns> -j <args>` and parses its JSON (empty output means `[]`).
fn tool_json(tool: &str, ns: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(tool);
    cmd.args(["-n", ns, "-j"]).args(args);
    let out = output(&mut cmd);
    if !out.status.success() {
        return Err(format!("{} failed: {}", describe(&cmd), stderr_of(&out)));
    }
    let text = stdout_of(&out);
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).map_err(|e| format!("{}: bad JSON ({e}): {text}", describe(&cmd)))
}

/// Runs a command to completion; panics only if it cannot be started.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| panic!("cannot run {} ({e}); try `make deps`", describe(cmd)))
}

/// Runs a command, panicking with its stderr unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "{} failed ({}): {}", describe(cmd), out.status, stderr_of(&out));
    out
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", words.join(" "))
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn open_log(path: &Path, append: bool) -> File {
    let mut opts = OpenOptions::new();
    opts.create(true).write(true);
    if append {
        opts.append(true)
    } else {
        opts.truncate(true)
    };
    opts.open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Locks, ignoring poisoning: a panicking test must still be able to clean up.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends SIG`name` to a child that has not been reaped yet (so its pid cannot have been reused).
fn signal(child: &mut Child, name: &str) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
    }
}

/// The exit status if `child` exits within `timeout`.
fn wait_child(child: &SharedChild, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = lock(child).try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `getconf CLK_TCK`: the unit of the times in /proc/<pid>/stat.
fn clock_ticks_per_second() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let out = run(Command::new("getconf").arg("CLK_TCK"));
        stdout_of(&out).trim().parse().expect("numeric CLK_TCK")
    })
}

/// SIGKILL and reap; the exit status, or None if it cannot be obtained.
fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// Kills whatever still runs in `ns` (processes not spawned by us, e.g. left by a daemon),
/// then deletes it. Best effort: used from Drop.
fn destroy_netns(ns: &str) {
    let pids = output(Command::new("ip").args(["netns", "pids", ns]));
    let pids: Vec<String> = stdout_of(&pids).split_whitespace().map(String::from).collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
    }
    let out = output(Command::new("ip").args(["netns", "del", ns]));
    if !out.status.success() {
        eprintln!("ip netns del {ns}: {}", stderr_of(&out));
    }
}

// ----- certificates for EtcdMode::Tls -----

/// Makes in `dir` (with openssl): `ca.pem`, etcd's `server.pem` (IP SANs 198.18.0.2 and
/// 127.0.0.1), `client.pem`, all signed by the CA, and an unrelated `wrong-ca.pem`; each with a
/// `.key`. EC P-256 keys in PKCS#8 ("BEGIN PRIVATE KEY"), which both Go and rustls read.
fn make_tls_files(dir: &Path) {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    make_ca(dir, "ca");
    make_ca(dir, "wrong-ca");
    let [a, b, c] = UNDERLAY_NET;
    let etcd_ip = Ipv4Addr::new(a, b, c, ETCD_IP_BASE);
    // clientAuth too: etcd's own gRPC gateway dials etcd with the server certificate.
    let server = format!("extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:{etcd_ip},IP:127.0.0.1\n");
    make_leaf(dir, "server", "weft-lab-etcd", &server);
    make_leaf(dir, "client", "weft", "extendedKeyUsage=clientAuth\n");
}

/// A self-signed CA: `<name>.pem` and `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    let raw_key = dir.join(format!("{name}.raw.key"));
    let cert = dir.join(format!("{name}.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650"])
        .args(["-subj", &format!("/CN=weft lab {name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&raw_key)
        .arg("-out")
        .arg(&cert));
    to_pkcs8(&raw_key, &dir.join(format!("{name}.key")));
}

/// A certificate `<name>.pem` for `cn` with extensions `ext` (openssl config lines), signed by
/// `ca.pem`, and its key `<name>.key`.
fn make_leaf(dir: &Path, name: &str, cn: &str, ext: &str) {
    let path = |suffix: &str| dir.join(format!("{name}{suffix}"));
    run(Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(path(".raw.key"))
        .arg("-out")
        .arg(path(".csr")));
    // A v3 certificate: rustls (webpki) rejects v1 ones and ignores the CN, matching SANs only.
    let common = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                  subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    fs::write(path(".ext"), format!("{common}{ext}")).expect("write extensions file");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "3650", "-set_serial"])
        .arg(format!("0x{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()))
        .arg("-in")
        .arg(path(".csr"))
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-extfile")
        .arg(path(".ext"))
        .arg("-out")
        .arg(path(".pem")));
    to_pkcs8(&path(".raw.key"), &path(".key"));
}

/// Rewrites a key as unencrypted PKCS#8 (openssl 1.1 writes "EC PRIVATE KEY" from `req`).
fn to_pkcs8(from: &Path, to: &Path) {
    run(Command::new("openssl").args(["pkcs8", "-topk8", "-nocrypt", "-in"]).arg(from).arg("-out").arg(to));
    let _ = fs::remove_file(from);
}

// ----- lab ids, dirs and sweeping up after killed runs -----

/// Parent of all lab dirs; a lab's dir is named after its id. Fixed rather than `$TMPDIR`:
/// the sweep must see the labs of every process, whatever its environment.
fn labs_root() -> PathBuf {
    PathBuf::from(LABS_ROOT)
}

/// Picks an unused id and creates its dir (atomic, so concurrent processes never share one),
/// recording this process as the owner.
fn claim_lab_dir() -> (String, PathBuf) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = labs_root();
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    let taken: HashSet<String> = netns_list().iter().filter_map(|ns| lab_id_of(ns)).collect();
    loop {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let seed = (std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos);
        let id = format!("w{:05x}", std::collections::hash_map::RandomState::new().hash_one(seed) & 0xfffff);
        let dir = root.join(&id);
        if taken.contains(&id) || fs::create_dir(&dir).is_err() {
            continue;
        }
        let me = std::process::id();
        let owner = format!("{me} {}\n", process_start_time(me).expect("own start time"));
        fs::write(dir.join("owner"), owner).expect("write owner file");
        return (id, dir);
    }
}

/// The lab id of a namespace name made by a lab (`w` + 5 hex, then u|eK|hN|cN).
fn lab_id_of(ns: &str) -> Option<String> {
    let (id, rest) = (ns.get(..6)?, ns.get(6..)?);
    let hex = id.starts_with('w') && id[1..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    // A bare "e" is what labs made before etcd had several members called their etcd.
    let kind = matches!(rest, "u" | "e")
        || (rest.len() > 1 && matches!(&rest[..1], "h" | "c" | "e") && rest[1..].chars().all(|c| c.is_ascii_digit()));
    (hex && kind).then(|| id.to_string())
}

/// Removes labs whose owning process died without running Drop (SIGKILL, Ctrl-C): their
/// processes and namespaces, and namespaces of labs whose dir is already gone.
fn sweep_abandoned_labs() {
    let root = labs_root();
    let mut live_ids = HashSet::new();
    for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if lab_owner_alive(&entry.path()) {
            live_ids.insert(id);
        } else {
            eprintln!("weft lab: removing leftovers of abandoned lab {id}");
            remove_lab_leftovers(&id, &entry.path());
        }
    }
    for ns in netns_list() {
        if lab_id_of(&ns).is_some_and(|id| !live_ids.contains(&id) && !root.join(&id).exists()) {
            eprintln!("weft lab: removing orphaned namespace {ns}");
            destroy_netns(&ns);
        }
    }
}

fn remove_lab_leftovers(id: &str, dir: &Path) {
    for ns in netns_list().iter().filter(|ns| lab_id_of(ns).as_deref() == Some(id)) {
        destroy_netns(ns);
    }
    let _ = fs::remove_dir_all(dir);
}

/// Whether the process recorded in `<dir>/owner` still runs (same pid and start time), or the
/// dir is too new to judge.
fn lab_owner_alive(dir: &Path) -> bool {
    let owner = fs::read_to_string(dir.join("owner")).unwrap_or_default();
    let fields: Vec<u64> = owner.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    match fields[..] {
        [pid, start] => process_start_time(pid as u32) == Some(start),
        _ => {
            let age = fs::metadata(dir).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            age.is_none_or(|age| age < OWNERLESS_GRACE)
        }
    }
}

/// The start time (field 22 of /proc/<pid>/stat, which tells a reused pid apart) of a running
/// process; None if it is gone or a zombie (a SIGKILLed owner can linger unreaped).
fn process_start_time(pid: u32) -> Option<u64> {
    let mut stat = String::new();
    File::open(format!("/proc/{pid}/stat")).ok()?.read_to_string(&mut stat).ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z" | &"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

// ----- address and encoding helpers -----

/// "10.5.7.1/24" -> (10.5.7.1, 24).
pub fn parse_cidr(cidr: &str) -> (Ipv4Addr, u8) {
    let parse = || {
        let (addr, prefix) = cidr.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some((addr.parse().ok()?, prefix))
    };
    parse().unwrap_or_else(|| panic!("not an IPv4 CIDR: {cidr:?}"))
}

/// The `k`-th address of the network `addr/prefix` belongs to.
pub fn nth_address(addr: Ipv4Addr, prefix: u8, k: u32) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from((u32::from(addr) & mask) + k)
}

/// A base64 field of an etcdctl JSON record, decoded as UTF-8 (lossy).
fn base64_field(kv: &serde_json::Value, field: &str) -> String {
    let text = kv[field].as_str().unwrap_or_default();
    String::from_utf8_lossy(&base64_decode(text)).into_owned()
}

/// Standard base64 (etcdctl's JSON encodes keys and values that way).
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap_or_else(|| panic!("bad base64: {text:?}"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
