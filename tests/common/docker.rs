//! Real Docker in lab hosts (design.md §3): a Debian `dockerd` per host namespace, started with
//! the options `weftd docker-opts` made from that host's subnet.env, a busybox image built
//! without a registry, and cleanup of everything dockerd leaves behind — on Drop, and for runs
//! that were killed, at the next start.
//!
//! Declared by `tests/docker.rs` with `#[path]` (not from `common/mod.rs`, so the other test
//! binaries do not compile it); it reaches the lab through `crate::common`.
//!
//! Isolation, beyond the lab's namespaces:
//! - dockerd runs in the host's network namespace (`nsenter --net`, not `ip netns exec`, which
//!   remounts /sys and breaks dockerd's cgroup setup);
//! - in a mount namespace of its own (`unshare --mount --propagation slave`), so the bind mounts
//!   it makes (its data root, the containers' netns files) never appear in the machine's mount
//!   table and vanish with its last process; there, tmpfs over `/run/docker` and
//!   `/run/containerd` (shim sockets), and the trust key in the daemon's own dir (daemon.json),
//!   so nothing is written outside the lab dir;
//! - in a PID namespace of its own (`unshare --pid --fork --kill-child`) whose init is
//!   docker.io's `docker-init` (tini): the shims dockerd's containerd daemonises are reaped
//!   there instead of lingering as zombies of the machine's init, and killing `unshare` (our
//!   child; the lab's sweep of a killed run does it too, as `unshare` is in the host namespace)
//!   takes down dockerd, containerd, the shims and every container at once;
//! - containers get a cgroup parent named after the lab and host, so stray processes can be
//!   found and killed, and the cgroup dirs removed;
//! - every container's main process is `sleep CONTAINER_LIFETIME_SECS`, as a last resort.
#![allow(dead_code)] // the docker test uses most, not all, of this module

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{pids_mentioning, poll, weftd_bin, Lab};

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
const BUSYBOX: &str = "/bin/busybox";
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// `unshare` blocks SIGTERM while it waits for its child, so dockerd is stopped through
/// docker-init, which forwards SIGTERM; `--kill-child` makes a SIGKILL of `unshare` end it all.
const UNSHARE: [&str; 9] =
    ["unshare", "--mount", "--propagation", "slave", "--mount-proc", "--pid", "--fork", "--kill-child", "--"];
/// Runs under docker-init, in the fresh namespaces, then execs dockerd. The mount points are
/// docker's standard dirs; creating them (empty) is the only trace left outside the lab dir.
const NS_SETUP: &str = "set -e; for d in /run/docker /run/containerd; do mkdir -p $d; \
     mount -t tmpfs -o mode=0711,size=16m weft-dockerd $d; done; exec \"$@\"";

// ---------------------------------------------------------------------------------------------
// docker options from weftd
// ---------------------------------------------------------------------------------------------

/// Set in `weftd docker-opts`'s environment; docker must be started with `--log-level=warn`.
pub const EXTRA_DOCKER_OPT: &str = "DOCKER_OPT_LOG_LEVEL=--log-level=warn";

/// Runs `weftd docker-opts -f <subnet.env> -d <file>` (flannel's mk-docker-opts.sh) inside host
/// N's namespace and returns the file it wrote, parsed: `DOCKER_OPT_BIP`, `DOCKER_OPT_MTU`,
/// `DOCKER_OPT_IPMASQ` (only with FLANNEL_IPMASQ=true), `DOCKER_OPT_LOG_LEVEL` (from
/// [`EXTRA_DOCKER_OPT`]) and `DOCKER_OPTS`.
pub fn weftd_docker_opts(lab: &Lab, n: usize) -> BTreeMap<String, String> {
    let host = lab.host(n);
    let out_file = lab.dir().join(format!("h{n}")).join("docker_opts.env");
    let bin = weftd_bin();
    // An option of the operator's own, passed on as mk-docker-opts.sh passes every DOCKER_OPT_*.
    let args = [
        "env",
        EXTRA_DOCKER_OPT,
        bin.to_str().expect("weftd path is UTF-8"),
        "docker-opts",
        "-f",
        host.subnet_file.to_str().expect("subnet file path is UTF-8"),
        "-d",
        out_file.to_str().expect("lab dir is UTF-8"),
    ];
    let out = host.exec(&args);
    assert!(out.status.success(), "`weftd docker-opts` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    let text = fs::read_to_string(&out_file).unwrap_or_else(|e| panic!("read {}: {e}", out_file.display()));
    weft::subnet_env::parse_env(&text)
}

/// The words of `$DOCKER_OPTS` as an unquoted expansion in a unit's `ExecStart=` gives them.
pub fn docker_opts_words(opts: &BTreeMap<String, String>) -> Vec<String> {
    opts.get("DOCKER_OPTS")
        .unwrap_or_else(|| panic!("docker options file lacks DOCKER_OPTS: {opts:?}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// image
// ---------------------------------------------------------------------------------------------

/// A `docker import`-able tarball: Debian's static busybox as `/bin/busybox`, a symlink per
/// applet (sh, ping, wget, httpd, sha256sum, sleep, ...), and the usual empty top-level dirs.
pub struct BusyboxImage {
    pub tar: PathBuf,
}

impl BusyboxImage {
    /// Builds the rootfs and tarball under `dir` (e.g. the lab dir, removed with it).
    pub fn build(dir: &Path) -> BusyboxImage {
        let busybox = Path::new(BUSYBOX);
        assert!(
            is_static_elf(busybox),
            "{BUSYBOX} is missing or not statically linked: install Debian's busybox-static \
             (`make deps`)"
        );
        let rootfs = dir.join("image-rootfs");
        for sub in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
            fs::create_dir_all(rootfs.join(sub)).expect("create image rootfs dirs");
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod image /tmp");
        fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox into the image");
        let list = checked(Command::new(busybox).arg("--list"));
        for applet in String::from_utf8_lossy(&list.stdout)
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        {
            symlink("busybox", rootfs.join("bin").join(applet)).expect("applet symlink");
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("write image /etc/passwd");
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("write image /etc/group");
        let tar = dir.join("busybox-image.tar");
        checked(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
                .arg(&tar)
                .arg("."),
        );
        BusyboxImage { tar }
    }
}

/// Whether `path` is an ELF executable without a program interpreter (PT_INTERP).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    let u64_at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    // ELF64, little endian: the only kind Debian amd64/arm64 ship.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

// ---------------------------------------------------------------------------------------------
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
        fs::create_dir(self.path("tmp")).expect("create the daemon's tmp dir");
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

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn checked(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?} {:?} failed ({}): {}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

// ---------------------------------------------------------------------------------------------
// cgroups and mounts
// ---------------------------------------------------------------------------------------------

/// Every cgroup hierarchy root: `/sys/fs/cgroup` itself on a pure v2 system, its
/// subdirectories (cpu, memory, pids, unified, ...) on v1 / hybrid ones.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new(CGROUP_MOUNT);
    if base.join("cgroup.procs").exists() {
        return vec![base.to_path_buf()];
    }
    fs::read_dir(base).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.join("cgroup.procs").exists()).collect()
}

/// `dir` and all its descendants, deepest first.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(cgroup_tree(&entry.path()));
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

/// The processes in cgroup `name` (any hierarchy, any depth).
fn cgroup_pids(name: &str) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for root in cgroup_roots() {
        for dir in cgroup_tree(&root.join(name)) {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(dir.join("cgroup.procs")) {
                let _ = f.read_to_string(&mut text);
            }
            pids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    pids
}

/// Removes cgroup `name` and its children in every hierarchy (retrying while exiting tasks
/// still hold them); what could not be removed.
fn remove_cgroup_everywhere(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for root in cgroup_roots() {
        for dir in cgroup_tree(&root.join(name)) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        problems.push(format!("cannot remove cgroup {}: {e}", dir.display()));
                        break;
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
    problems
}

/// Cgroups `weft-<lab id>-hN` whose lab dir is gone belong to a test that was killed: kill
/// their processes (containers that lost their daemon) and remove them.
fn sweep_abandoned_cgroups(labs_root: &Path) {
    let mut names = BTreeSet::new();
    for root in cgroup_roots() {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(lab_id) = lab_id_of_cgroup(&name) {
                if !labs_root.join(lab_id).exists() {
                    names.insert(name);
                }
            }
        }
    }
    for name in names {
        eprintln!("weft docker: removing abandoned cgroup {name}");
        for _ in 0..50 {
            let pids = cgroup_pids(&name);
            if pids.is_empty() {
                break;
            }
            let _ = Command::new("kill").arg("-KILL").args(pids.iter().map(u32::to_string)).stderr(Stdio::null()).status();
            thread::sleep(Duration::from_millis(50));
        }
        for problem in remove_cgroup_everywhere(&name) {
            eprintln!("weft docker: {problem}");
        }
    }
}

/// `weft-w1a2b3-h2` -> `w1a2b3`.
fn lab_id_of_cgroup(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("weft-")?;
    let (id, host) = rest.split_once("-h")?;
    let id_ok = id.len() == 6 && id.starts_with('w') && id[1..].chars().all(|c| c.is_ascii_hexdigit());
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_digit());
    (id_ok && host_ok).then_some(id)
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mountinfo)
        .filter(|t| t == &prefix || t.starts_with(&format!("{prefix}/")))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = (0..3).filter_map(|_| chars.next()).collect();
            match u8::from_str_radix(&digits, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// output parsing
// ---------------------------------------------------------------------------------------------

/// Busybox ping's summary: (transmitted, received, (min, avg, max) RTT in ms if any reply).
pub fn parse_ping_summary(text: &str) -> (u32, u32, Option<(f64, f64, f64)>) {
    let mut counts = (0, 0);
    let mut rtt = None;
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
            if let [tx, rx, ..] = nums[..] {
                counts = (tx, rx);
            }
        }
        if let Some((_, values)) = line.split_once("min/avg/max = ") {
            let v: Vec<f64> = values.trim_end_matches(" ms").split('/').filter_map(|x| x.trim().parse().ok()).collect();
            if let [min, avg, max] = v[..] {
                rtt = Some((min, avg, max));
            }
        }
    }
    (counts.0, counts.1, rtt)
}
