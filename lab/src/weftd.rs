//! weftd processes in lab hosts: started against the lab's etcd with their log in the lab dir,
//! stopped, killed and measured by tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::netns::netns_exec;
use crate::process::{clock_ticks_per_second, kill_and_reap, lock, poll, signal, wait_child, SharedChild};
use crate::{Lab, TERMINATE_TIMEOUT};

impl Lab {
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
}

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

/// The weftd binary: `$WEFTD_BIN` at run time, else `target/<host tuple>/<profile>/weftd`
/// (`.cargo/config.toml`), the grandparent of the running test (`…/<profile>/deps/<test>`) or
/// example (`…/<profile>/examples/<example>`). `CARGO_BIN_EXE_weftd` is not read: it is only set
/// when cargo compiles an integration test, and this crate is compiled once for all of them.
pub fn weftd_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WEFTD_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("exe has a grandparent dir");
    profile_dir.join("weftd")
}
