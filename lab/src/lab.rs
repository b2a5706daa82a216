//! The `Lab` itself: one underlay bridge with etcd on it, the hosts and containers added to it,
//! and the processes it started; everything is removed on Drop. Its parts live beside it:
//! `netns` (namespaces and cleanup), `etcd`, `etcdctl`, `tls`, `host`, `ping`, `weftd`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, Once};
use std::thread;

use crate::etcd::{EtcdMember, EtcdMode};
use crate::host::{Container, Host};
use crate::netns::{claim_lab_dir, destroy_netns, sweep_abandoned_labs};
use crate::process::{describe, kill_and_reap, lock, open_log, tail, SharedChild};
use crate::tls::make_tls_files;

/// A set of namespaces forming an underlay network with etcd on it. Drop removes everything.
pub struct Lab {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    /// Created namespaces in creation order; deleted in reverse.
    pub(crate) namespaces: Vec<String>,
    /// etcd members, weftds and pings in start order; killed (in reverse) and reaped on Drop,
    /// even when a `Weftd` or `PingRun` handle outlives the lab.
    pub(crate) children: Mutex<Vec<SharedChild>>,
    pub(crate) mode: EtcdMode,
    pub(crate) etcd: Vec<EtcdMember>,
    /// Set once `EtcdMode::Auth` has enabled auth; before that etcdctl must not send a user.
    pub(crate) auth_enabled: bool,
    /// Numbers the output files of pings.
    pub(crate) pings: AtomicU32,
    pub(crate) hosts: Vec<Host>,
    pub(crate) containers: BTreeMap<usize, Container>,
}

impl Lab {
    /// A lab with a single plain etcd (`EtcdMode::Single`).
    // No `Default`: making a lab creates namespaces and starts etcd, which `default()` would hide.
    #[allow(clippy::new_without_default)]
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

    /// Spawns `cmd` with stdout+stderr written to `<dir>/<log_name>` and registers it for
    /// killing on Drop.
    pub(crate) fn spawn_logged(&self, mut cmd: Command, log_name: &str, append: bool) -> SharedChild {
        let log = open_log(&self.dir.join(log_name), append);
        let err = log.try_clone().expect("dup log file handle");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&cmd)));
        let shared = Arc::new(Mutex::new(child));
        lock(&self.children).push(shared.clone());
        shared
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
