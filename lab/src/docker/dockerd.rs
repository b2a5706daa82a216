//! One dockerd per lab host, isolated in namespaces of its own (see the `docker` module), its
//! docker CLI, and a teardown that reports whatever was left behind.

use std::collections::BTreeSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use super::cgroup::{cgroup_pids, mounts_under, remove_cgroup_everywhere, sweep_abandoned_cgroups};
use super::image::BusyboxImage;
use crate::{pids_mentioning, poll, poll_for, Lab};

const DOCKERD_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `docker` CLI call may take before `timeout` kills it (a wedged daemon must fail
/// the test, not hang it).
const CLI_TIMEOUT_SECS: u32 = 120;
/// The same during teardown, where a wedged daemon is killed anyway.
const TEARDOWN_CLI_TIMEOUT_SECS: u32 = 30;
const DOCKERD_STOP_TIMEOUT: Duration = Duration::from_secs(20);
const LEFTOVER_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// A container's main process is `sleep` for this long (its other processes die with it).
pub const CONTAINER_LIFETIME_SECS: u32 = 900;
/// Debian's busybox-static installs this statically linked binary.
/// `unshare` blocks SIGTERM while it waits for its child, so dockerd is stopped through
/// docker-init, which forwards SIGTERM; `--kill-child` makes a SIGKILL of `unshare` end it all.
const UNSHARE: [&str; 9] =
    ["unshare", "--mount", "--propagation", "slave", "--mount-proc", "--pid", "--fork", "--kill-child", "--"];
/// Runs under docker-init, in the fresh namespaces, then execs dockerd. The mount points are
/// docker's standard dirs; creating them (empty) is the only trace left outside the lab dir.
const NS_SETUP: &str = "set -e; for d in /run/docker /run/containerd; do mkdir -p $d; \
     mount -t tmpfs -o mode=0711,size=16m weft-dockerd $d; done; exec \"$@\"";

// dockerd
// ---------------------------------------------------------------------------------------------

/// A dockerd (and the containerd it starts) in host N's network namespace, with its socket,
/// data root, exec root and log in `<lab dir>/docker-hN/`. Drop removes its containers, stops
/// it and kills and removes whatever it left.
///
/// The process tree: `unshare` (our child) → `docker-init` (PID 1 of the new PID namespace)
/// → `dockerd` → `containerd`; the shims and containers end up under `docker-init`.
pub struct Dockerd {
    pub n: usize,
    ns: String,
    dir: PathBuf,
    /// Cgroup parent of the containers, relative to every hierarchy's root.
    cgroup: String,
    child: Option<Child>,
    stopped: bool,
}

impl Dockerd {
    /// Starts dockerd in host N with `opts` (the `$DOCKER_OPTS` words) plus the flags that keep
    /// it inside the lab, and waits until it answers.
    pub fn start(lab: &Lab, n: usize, opts: &[String]) -> Dockerd {
        static SWEEP: Once = Once::new();
        let labs_root = lab.dir().parent().expect("lab dir has a parent").to_path_buf();
        SWEEP.call_once(|| sweep_abandoned_cgroups(&labs_root));

        let dir = lab.dir().join(format!("docker-h{n}"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Built before anything runs so a panic below still cleans up through Drop.
        let mut dockerd = Dockerd {
            n,
            ns: lab.host(n).ns.clone(),
            dir,
            cgroup: format!("weft-{}-h{n}", lab.id()),
            child: None,
            stopped: false,
        };
        dockerd.spawn(opts);
        dockerd.wait_ready();
        dockerd
    }

    fn spawn(&mut self, opts: &[String]) {
        // `deprecated-key-path` only exists as a config-file key in docker 20.10; without it
        // the daemon writes /etc/docker/key.json.
        let config = serde_json::json!({ "deprecated-key-path": self.path("key.json") });
        fs::write(self.path("daemon.json"), config.to_string()).expect("write daemon.json");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .args(UNSHARE)
            .args(["docker-init", "--", "sh", "-c", NS_SETUP, "weft-dockerd"])
            .arg("dockerd")
            .args(opts)
            .args(self.daemon_flags());
        // containerd inherits it (dockerd points its own TMPDIR at the data root only after
        // starting containerd); its stack dumps would otherwise land in /tmp.
        fs::create_dir_all(self.path("tmp")).expect("create the daemon's tmp dir");
        cmd.env("TMPDIR", self.path("tmp"));
        let log = fs::File::create(self.log_path()).expect("create dockerd.log");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("dup log")).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn dockerd (nsenter/unshare/docker-init/dockerd): {e}"));
        self.child = Some(child);
    }

    /// The flags added to `$DOCKER_OPTS`: everything dockerd writes goes to this daemon's dir.
    pub fn daemon_flags(&self) -> Vec<String> {
        let p = |name: &str| self.path(name).to_string_lossy().into_owned();
        vec![
            "-H".into(),
            self.host_uri(),
            "--data-root".into(),
            p("data"),
            "--exec-root".into(),
            p("exec"),
            "--pidfile".into(),
            p("docker.pid"),
            "--config-file".into(),
            p("daemon.json"),
            // The only storage driver that works everywhere (no overlay-on-overlay questions).
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-parent".into(),
            format!("/{}", self.cgroup),
        ]
    }

    /// The full dockerd command line, for reports.
    pub fn command_line(&self, opts: &[String]) -> String {
        let mut words = vec![
            format!("nsenter --net=/run/netns/{}", self.ns),
            UNSHARE.join(" "),
            format!("docker-init -- sh -c '{NS_SETUP}' weft-dockerd"),
            "dockerd".into(),
        ];
        words.extend(opts.iter().cloned());
        words.extend(self.daemon_flags());
        words.join(" ")
    }

    fn wait_ready(&mut self) {
        let sock = self.path("docker.sock");
        poll(&format!("dockerd in host {} to answer", self.n), DOCKERD_START_TIMEOUT, || {
            if let Some(status) = self.exit_status() {
                panic!("dockerd in host {} exited ({status}) during start (its log follows)", self.n);
            }
            let answers = sock.exists() && self.docker(&["version", "--format", "{{.Server.Version}}"]).status.success();
            answers.then_some(())
        })
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn host_uri(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// The `host_uri` host N's dockerd will have, known before it starts (a weftd started
    /// first is given it as `--docker-host`).
    pub fn socket_uri(lab: &Lab, n: usize) -> String {
        format!("unix://{}", lab.dir().join(format!("docker-h{n}")).join("docker.sock").display())
    }

    /// Restarts dockerd as a service manager would: SIGTERM (docker stops its containers),
    /// then the same daemon, dir and `opts` again; containers run with `--restart always` come
    /// back. Panics unless the new daemon answers.
    pub fn restart(&mut self, opts: &[String]) {
        if let Some(mut child) = self.child.take() {
            for pid in children_of(child.id()) {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            }
            if wait_child(&mut child, DOCKERD_STOP_TIMEOUT).is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.kill_leftovers();
        let _ = fs::remove_file(self.path("docker.sock"));
        self.spawn(opts);
        self.wait_ready();
    }

    pub fn log_path(&self) -> PathBuf {
        self.path("dockerd.log")
    }

    /// The last `lines` lines of dockerd's (and its containerd's) log, without the start-up
    /// and gRPC chatter that would bury the lines that matter.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(dockerd.log: {e})"));
        let noise = ["module=grpc", "loading plugin", "skip loading plugin"];
        let kept: Vec<&str> = text.lines().filter(|l| !noise.iter().any(|n| l.contains(n))).collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    // ----- the docker CLI -----

    /// `docker -H <this daemon> <args>` (killed after CLI_TIMEOUT_SECS); output not checked.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_within(CLI_TIMEOUT_SECS, args)
    }

    fn docker_within(&self, timeout_secs: u32, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &timeout_secs.to_string(), "docker", "-H"])
            .arg(self.host_uri())
            .args(args)
            .env("DOCKER_CONFIG", self.path("cli"))
            .stdin(Stdio::null());
        for var in ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"] {
            cmd.env_remove(var);
        }
        cmd.output().unwrap_or_else(|e| panic!("run docker {args:?}: {e}"))
    }

    /// `docker <args>`, panicking unless it succeeds (Drop then prints the daemon's log);
    /// stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "host {}: `docker {}` failed ({}): {}",
            self.n,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker import <tar> <name>`.
    pub fn import(&self, image: &BusyboxImage, name: &str) {
        self.docker_ok(&["import", image.tar.to_str().expect("UTF-8 path"), name]);
    }

    /// `docker run -d --name <name> <image> sleep CONTAINER_LIFETIME_SECS`; its IP on docker0.
    pub fn run_container(&self, name: &str, image: &str) -> Ipv4Addr {
        let lifetime = CONTAINER_LIFETIME_SECS.to_string();
        self.docker_ok(&["run", "-d", "--name", name, image, "sleep", &lifetime]);
        let ip = self.docker_ok(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", name]);
        ip.parse().unwrap_or_else(|e| panic!("container {name}: bad IP {ip:?} ({e})"))
    }

    /// The container's IPv6 address on docker0 (`docker inspect`'s GlobalIPv6Address), when
    /// dockerd runs with `--ipv6`.
    pub fn container_ipv6(&self, name: &str) -> std::net::Ipv6Addr {
        let ip = self.docker_ok(&["inspect", "--format", "{{.NetworkSettings.GlobalIPv6Address}}", name]);
        ip.parse().unwrap_or_else(|e| panic!("container {name}: bad IPv6 address {ip:?} ({e})"))
    }

    /// `docker exec <container> <args>`; output not checked.
    pub fn exec(&self, container: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", container];
        all.extend(args);
        self.docker(&all)
    }

    /// `docker exec`, panicking unless it succeeds; stdout, trimmed.
    pub fn exec_ok(&self, container: &str, args: &[&str]) -> String {
        let mut all = vec!["exec", container];
        all.extend(args);
        self.docker_ok(&all)
    }

    /// `docker cp <src> <container>:<dst>`.
    pub fn copy_into(&self, src: &Path, container: &str, dst: &str) {
        self.docker_ok(&["cp", src.to_str().expect("UTF-8 path"), &format!("{container}:{dst}")]);
    }

    // ----- teardown -----

    /// Removes the containers, stops dockerd (SIGTERM, then SIGKILL), kills whatever it left
    /// (containerd, shims, container processes), removes the containers' cgroups. Returns what
    /// was not as it should be (empty when the teardown was clean); only the first call acts.
    pub fn stop(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.stopped, true) {
            return Vec::new();
        }
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                self.remove_containers(&mut problems);
                // docker-init, unshare's only child, passes SIGTERM on to dockerd.
                for pid in children_of(child.id()) {
                    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                }
                if wait_child(&mut child, DOCKERD_STOP_TIMEOUT).is_none() {
                    problems.push(format!("host {}: dockerd ignored SIGTERM for {DOCKERD_STOP_TIMEOUT:?}", self.n));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let leftovers = self.kill_leftovers();
        if !leftovers.is_empty() {
            problems.push(format!("host {}: processes left after dockerd stopped (killed): {leftovers:?}", self.n));
        }
        problems.extend(remove_cgroup_everywhere(&self.cgroup));
        // dockerd's mounts live in its own mount namespace; one in ours would be a leak.
        for target in mounts_under(&self.dir) {
            problems.push(format!("host {}: mount left at {target}", self.n));
            let _ = Command::new("umount").args(["-l", &target]).status();
        }
        problems
    }

    fn remove_containers(&self, problems: &mut Vec<String>) {
        let ps = self.docker_within(TEARDOWN_CLI_TIMEOUT_SECS, &["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ps.stdout).split_whitespace().map(String::from).collect();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let out = self.docker_within(TEARDOWN_CLI_TIMEOUT_SECS, &args);
        if !out.status.success() {
            problems.push(format!("host {}: docker rm -f failed: {}", self.n, String::from_utf8_lossy(&out.stderr).trim()));
        }
    }

    /// SIGKILLs, until none is left, every process in the containers' cgroup or naming this
    /// daemon's dir on its command line (containerd, shims, stray CLI calls). The pids found
    /// on the first pass.
    fn kill_leftovers(&self) -> Vec<u32> {
        // With the slash, host 1's dir does not match host 10's.
        let needle = format!("{}/", self.dir.display());
        let find = || {
            let mut pids: BTreeSet<u32> = pids_mentioning(&needle).into_iter().collect();
            pids.extend(cgroup_pids(&self.cgroup));
            pids
        };
        let first: Vec<u32> = find().into_iter().collect();
        let deadline = Instant::now() + LEFTOVER_KILL_TIMEOUT;
        loop {
            let pids = find();
            if pids.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("host {}: processes survive SIGKILL: {pids:?}", self.n);
                break;
            }
            let _ = Command::new("kill").arg("-KILL").args(pids.iter().map(u32::to_string)).stderr(Stdio::null()).status();
            thread::sleep(Duration::from_millis(50));
        }
        first
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if thread::panicking() && !self.stopped {
            eprintln!(
                "----- dockerd host {} ({}), last 40 lines without chatter -----\n{}",
                self.n,
                self.log_path().display(),
                self.log_tail(40)
            );
        }
        for problem in self.stop() {
            eprintln!("docker teardown: {problem}");
        }
    }
}

/// The pids whose parent is `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // Fields after the parenthesised command name: state, ppid, ...
            stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// The exit status if `child` exits within `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    poll_for(timeout, Duration::from_millis(20), || child.try_wait().ok().flatten())
}
