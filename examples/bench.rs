//! Benchmarks of issue 6 (`make bench`, needs root): convergence, propagation latency, scale,
//! idle cost and datapath throughput, measured on the namespace lab of `tests/common`.
//!
//! stdout gets one `name value` line per figure (the unit ends the name: `_ms`, `_kb`, `_gbps`,
//! `_pct`, `_count`) and `#` notes; stderr gets progress. Raw numbers go to `$BENCH_OUT`
//! (default `bench-results`) as CSV, with `summary.txt` and the PNGs drawn by `bench/plot.py`.
//! `BENCH=propagation,scale` runs a subset. Kernel entries are timed with a netlink multicast
//! monitor per host namespace (never by polling dumps); etcd is written with etcd-client from a
//! thread that has entered the etcd namespace. Everything runs inside namespaces the lab makes.
//! Each section runs in a process of its own; its labs are removed by Drop, and if it fails
//! (a panic, an abort under `panic = "abort"`, a signal) the parent removes what it left, so a
//! failed or interrupted (Ctrl-C) run leaves nothing behind and the next sections still run.
//!
//! Knobs (environment; defaults are what `make bench` measures): `BENCH` (sections, default
//! all), `BENCH_OUT`, `BENCH_HOSTS` (8), `BENCH_TRIALS` (20), `BENCH_PUTS` (200), `BENCH_SCALE_K`
//! (100,1000,2000,5000), `BENCH_SCALE_REPEATS` (3), `BENCH_IDLE_PEERS` (100),
//! `BENCH_IDLE_SECONDS` (60), `BENCH_IPERF_SECONDS` (10), `BENCH_IPERF_ROUNDS` (3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::AtomicI32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::OnceLock;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{nth_address, parse_cidr, poll, weftd_bin, Lab, Weftd};
use etcd_client::{Client, PutOptions, Txn, TxnOp};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};
use nix::sys::time::TimeVal;
use rand::Rng;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::{AddressFamily as NlFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket as NlSocket, SocketAddr as NlAddr};
use tokio::runtime::Runtime;

const SECTIONS: [&str; 5] = ["convergence", "propagation", "scale", "idle", "datapath"];
const SUBNETS_PREFIX: &str = "/coreos.com/network/subnets/";
/// The small network of the convergence and datapath labs (what `make demo` uses).
const SMALL_NETWORK: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// Room for thousands of /24 subnets (propagation, scale, idle).
/// SMALL_NETWORK with Backend.DirectRouting: the lab's hosts share one link, so no VXLAN.
const DIRECT_NETWORK: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;
const BIG_NETWORK: &str = r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#;
/// weftd's own default (`--v 0`); the harness would otherwise run it at debug level.
const WEFTD_ENV: [(&str, &str); 1] = [("RUST_LOG", "info")];
/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
const SUBNET_ENV_TIMEOUT: Duration = Duration::from_secs(30);
/// A (put, host) sample or a pair that has not converged by then counts as missing / broken.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(5);
const PAIR_TIMEOUT: Duration = Duration::from_secs(5);
const SCALE_TIMEOUT: Duration = Duration::from_secs(120);

// =============================================================================================
// Settings, report, statistics
// =============================================================================================

/// What to run, from the environment (`BENCH`, `BENCH_OUT` and a few knobs for quick runs).
struct Settings {
    sections: Vec<&'static str>,
    out: PathBuf,
    hosts: usize,
    trials: usize,
    puts: usize,
    scale_k: Vec<usize>,
    scale_repeats: usize,
    idle_peers: usize,
    idle_secs: u64,
    iperf_secs: u64,
    iperf_rounds: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => {
            text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value"))
        }
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let wanted = std::env::var("BENCH").unwrap_or_default();
        let mut sections = Vec::new();
        for word in wanted.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                sections = SECTIONS.to_vec();
                break;
            }
            let known = SECTIONS.iter().find(|s| **s == word).unwrap_or_else(|| {
                eprintln!("BENCH: unknown section {word:?}; known: all,{}", SECTIONS.join(","));
                std::process::exit(2);
            });
            if !sections.contains(known) {
                sections.push(known);
            }
        }
        if sections.is_empty() {
            sections = SECTIONS.to_vec();
        }
        let scale_k: String = env_or("BENCH_SCALE_K", "100,1000,2000,5000".to_string());
        Settings {
            sections,
            out: PathBuf::from(env_or("BENCH_OUT", "bench-results".to_string())),
            hosts: env_or("BENCH_HOSTS", 8),
            trials: env_or("BENCH_TRIALS", 20),
            puts: env_or("BENCH_PUTS", 200),
            scale_k: scale_k.split(',').map(|k| k.trim().parse().expect("BENCH_SCALE_K: comma-separated numbers")).collect(),
            scale_repeats: env_or("BENCH_SCALE_REPEATS", 3),
            idle_peers: env_or("BENCH_IDLE_PEERS", 100),
            idle_secs: env_or("BENCH_IDLE_SECONDS", 60),
            iperf_secs: env_or("BENCH_IPERF_SECONDS", 10),
            iperf_rounds: env_or("BENCH_IPERF_ROUNDS", 3),
        }
    }
}

/// Figures (stdout and summary.txt) and raw files in the output dir.
struct Report {
    out: PathBuf,
}

impl Report {
    /// `fresh` empties summary.txt (the parent does; each section's process appends).
    fn new(out: &Path, fresh: bool) -> Report {
        fs::create_dir_all(out).unwrap_or_else(|e| panic!("create {}: {e}", out.display()));
        if fresh {
            let _ = fs::write(out.join("summary.txt"), "");
        }
        Report { out: out.to_path_buf() }
    }

    /// One figure; NaN (nothing measured) is printed as `nan`.
    fn figure(&self, name: &str, value: f64) {
        self.line(format!("{name} {}", fmt_num(value)));
    }

    fn note(&self, text: &str) {
        for l in text.lines() {
            self.line(format!("# {l}"));
        }
    }

    /// Printed and appended to summary.txt at once, so a later failure keeps what was measured.
    fn line(&self, line: String) {
        use std::io::Write;
        println!("{line}");
        let file = fs::OpenOptions::new().create(true).append(true).open(self.out.join("summary.txt"));
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{line}");
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.path(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn csv(&self, name: &str, header: &str, rows: &[String]) {
        let mut text = String::from(header);
        text.push('\n');
        for row in rows {
            text.push_str(row);
            text.push('\n');
        }
        self.write(name, &text);
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// An optional number as a CSV cell (empty when missing).
fn cell(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_default()
}

/// Nearest-rank percentile of `values` (NaN when empty).
fn pct(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN left"));
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn max_of(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
fn ms(from: Instant, to: Instant) -> f64 {
    match to.checked_duration_since(from) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(from.duration_since(to).as_secs_f64() * 1e3),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// =============================================================================================
// main
// =============================================================================================

/// Set by the parent to the running section's pid, for the signal handler.
static CHILD_PID: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// In a section's process: where it records the labs it creates (for the parent's cleanup).
static LAB_RECORD: OnceLock<PathBuf> = OnceLock::new();
const CHILD_ENV: &str = "BENCH_CHILD_SECTION";

/// The parent runs every section in a process of its own (this binary again, with
/// `BENCH_CHILD_SECTION`): a section that fails, even by aborting (the release profile may set
/// `panic = "abort"`, which skips every Drop) or by a signal, cannot stop the next one, and the
/// parent then removes whatever lab that process left: its namespaces, the processes in them
/// and its lab dirs. SIGINT/SIGTERM stop the running section the same way.
fn main() {
    if let Ok(section) = std::env::var(CHILD_ENV) {
        return run_section(&section);
    }
    let bin = weftd_bin();
    if !bin.exists() {
        eprintln!("bench: {} not found; build it first (`make bench` does)", bin.display());
        std::process::exit(2);
    }
    let settings = Settings::from_env();
    let report = Report::new(&settings.out, true);
    report.note(&format!(
        "weft bench: sections {} | weftd {} | {} cores | results in {}",
        settings.sections.join(","),
        bin.display(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        settings.out.display()
    ));
    install_signal_handlers();
    let exe = std::env::current_exe().expect("current_exe");
    let (mut failed, mut total) = (Vec::new(), 0.0);
    for &section in &settings.sections {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        eprintln!("\n=== {section}");
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, section)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        let pid = child.id();
        CHILD_PID.store(pid as i32, Ordering::SeqCst);
        let status = child.wait().expect("wait for the section's process");
        CHILD_PID.store(0, Ordering::SeqCst);
        let secs = started.elapsed().as_secs_f64();
        total += secs;
        let removed = remove_labs_of(&settings.out, pid);
        if !status.success() {
            report.note(&format!("section {section} FAILED ({status}); removed the {removed} namespaces it left behind"));
            failed.push(section);
        }
        report.figure(&format!("bench_{section}_runtime_s"), secs.round());
    }
    plot(&settings, &report);
    report.figure("bench_total_runtime_s", total.round());
    if INTERRUPTED.load(Ordering::SeqCst) {
        report.note("interrupted; everything the bench created has been removed");
        std::process::exit(130);
    }
    if !failed.is_empty() {
        eprintln!("bench: sections failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}

/// A section's process: runs it and exits 0; a panic exits non-zero (or aborts).
fn run_section(section: &str) {
    let settings = Settings::from_env();
    let report = Report::new(&settings.out, false);
    let record = settings.out.join(format!(".bench-labs-{}", std::process::id()));
    LAB_RECORD.set(record).expect("set once");
    match section {
        "convergence" => bench_convergence(&settings, &report),
        "propagation" => bench_propagation(&settings, &report),
        "scale" => bench_scale(&settings, &report),
        "idle" => bench_idle(&settings, &report),
        "datapath" => bench_datapath(&settings, &report),
        other => panic!("unknown section {other:?}"),
    }
}

extern "C" fn on_signal(_: std::ffi::c_int) {
    // Only async-signal-safe work: two atomics and kill(2).
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pid = CHILD_PID.load(Ordering::SeqCst);
    if pid > 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// SIGINT and SIGTERM end the running section (its process dies without cleaning up; the
/// parent then does it). Handlers are reset by exec, so sections keep the default actions.
fn install_signal_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls kill(2).
        unsafe { sigaction(signal, &action) }.expect("install signal handler");
    }
}

/// Records a lab this section's process created, for `remove_labs_of`.
fn record_lab(lab: &Lab) {
    use std::io::Write;
    if let Some(path) = LAB_RECORD.get() {
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{}\t{}", lab.id(), lab.dir().display());
        }
    }
}

/// Removes what the section process `pid` left (nothing, when it ended normally: Lab's Drop
/// did it): the labs it recorded, plus any lab dir whose owner file names it (a lab whose
/// creation failed half-way), each with its namespaces and the processes in them. Returns how
/// many namespaces it deleted. Labs of other processes (say a concurrent `make test`) are
/// never touched: only ids this process owned.
fn remove_labs_of(out: &Path, pid: u32) -> usize {
    let record = out.join(format!(".bench-labs-{pid}"));
    let mut labs: Vec<(String, PathBuf)> = fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(id, dir)| (id.to_string(), PathBuf::from(dir)))
        .collect();
    let mut roots: HashSet<PathBuf> = labs.iter().filter_map(|(_, d)| d.parent().map(Path::to_path_buf)).collect();
    roots.insert(PathBuf::from("/tmp/weft-lab")); // the harness's LABS_ROOT
    for root in roots {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let owner = fs::read_to_string(entry.path().join("owner")).unwrap_or_default();
            let id = entry.file_name().to_string_lossy().into_owned();
            if owner.split_whitespace().next() == Some(&pid.to_string()) && !labs.iter().any(|(i, _)| *i == id) {
                labs.push((id, entry.path()));
            }
        }
    }
    let mut removed = 0;
    let namespaces = common::netns_list();
    for (id, dir) in &labs {
        let ours = |ns: &&String| {
            ns.strip_prefix(id.as_str()).is_some_and(|rest| {
                let (kind, num) = rest.split_at(rest.len().min(1));
                matches!(kind, "u" | "e" | "h" | "c") && num.chars().all(|c| c.is_ascii_digit())
            })
        };
        for ns in namespaces.iter().filter(ours) {
            let pids = Command::new("ip").args(["netns", "pids", ns]).output();
            let pids: Vec<String> = pids
                .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
                .unwrap_or_default();
            if !pids.is_empty() {
                let _ = Command::new("kill").arg("-KILL").args(&pids).status();
            }
            if Command::new("ip").args(["netns", "del", ns]).status().is_ok_and(|s| s.success()) {
                removed += 1;
            }
        }
        let _ = fs::remove_dir_all(dir);
    }
    let _ = fs::remove_file(&record);
    removed
}

/// Draws the PNGs with bench/plot.py (matplotlib) from the CSV files.
fn plot(settings: &Settings, report: &Report) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/plot.py");
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| Command::new(p).arg("-c").arg("import matplotlib").output().is_ok_and(|o| o.status.success()));
    let Some(python) = python else {
        report.note("no python3 with matplotlib: PNGs not drawn (apt-get install python3-matplotlib)");
        return;
    };
    let out = Command::new(python).arg(&script).arg(&settings.out).output();
    match out {
        Ok(o) if o.status.success() => {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                report.note(l);
            }
        }
        Ok(o) => report.note(&format!("plot.py failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => report.note(&format!("cannot run {}: {e}", script.display())),
    }
}

// =============================================================================================
// Namespaces, processes, /proc
// =============================================================================================

/// Moves the calling thread (only it) into network namespace `ns`.
fn enter_netns(ns: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {ns}: {e}"))
}

fn run_cmd(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    out
}

/// `ip -n <ns> -batch -` fed with `lines`, failing on the first error.
fn ip_batch(ns: &str, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all((lines.join("\n") + "\n").as_bytes()).expect("write ip batch");
    }
    let out = child.wait_with_output().expect("wait ip -batch");
    assert!(
        out.status.success(),
        "ip -n {ns} -batch failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        lines.join("\n")
    );
}

fn tool_json(tool: &str, ns: &str, args: &[&str]) -> serde_json::Value {
    let out = run_cmd(Command::new(tool).args(["-n", ns, "-j"]).args(args));
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool} -j {args:?}: bad JSON: {e}"))
}

/// Namespaces made here (not by the lab), deleted on Drop with whatever runs in them. They are
/// named like the lab's own (`<lab id>cN`) so its sweep removes them after a killed run.
#[derive(Default)]
struct LocalNetns(Vec<String>);

impl LocalNetns {
    fn add(&mut self, name: &str) {
        run_cmd(Command::new("ip").args(["netns", "add", name]));
        self.0.push(name.to_string());
        run_cmd(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
    }
}

impl Drop for LocalNetns {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                let pids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
                if !pids.is_empty() {
                    let _ = Command::new("kill").arg("-KILL").args(&pids).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A background process killed and reaped on Drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/<pid>/status in kB (VmHWM, VmRSS).
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Per-process totals over all threads: context switches (voluntary, involuntary), on-CPU ns
/// (schedstat), thread count. Threads that exited in between are not counted.
fn thread_totals(pid: u32) -> (u64, u64, u64, usize) {
    let (mut vol, mut invol, mut cpu_ns, mut threads) = (0, 0, 0, 0);
    for entry in fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let dir = entry.path();
        let Ok(status) = fs::read_to_string(dir.join("status")) else { continue };
        threads += 1;
        for line in status.lines() {
            let value = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if line.starts_with("voluntary_ctxt_switches:") {
                vol += value();
            } else if line.starts_with("nonvoluntary_ctxt_switches:") {
                invol += value();
            }
        }
        if let Ok(s) = fs::read_to_string(dir.join("schedstat")) {
            cpu_ns += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    (vol, invol, cpu_ns, threads)
}

// =============================================================================================
// Lab helpers
// =============================================================================================

fn new_lab(hosts: usize, config: &str) -> Lab {
    let mut lab = Lab::new();
    record_lab(&lab);
    for _ in 0..hosts {
        lab.add_host();
    }
    lab.put_network_config(config);
    lab
}

fn start_weftd(lab: &Lab, n: usize) -> Weftd {
    lab.start_weftd_env(n, &[], &WEFTD_ENV)
}

/// Host N's subnet.env once it names a subnet.
fn wait_env(lab: &Lab, n: usize) -> BTreeMap<String, String> {
    poll(&format!("subnet.env of host {n}"), SUBNET_ENV_TIMEOUT, || {
        lab.host(n).subnet_env().filter(|env| env.contains_key("FLANNEL_SUBNET"))
    })
}

/// The network address of a host's FLANNEL_SUBNET.
fn env_subnet(env: &BTreeMap<String, String>) -> Ipv4Addr {
    let (addr, prefix) = parse_cidr(&env["FLANNEL_SUBNET"]);
    nth_address(addr, prefix, 0)
}

fn flannel_index(lab: &Lab, n: usize) -> u32 {
    let link = lab.host(n).ip_json(&["link", "show", "dev", "flannel.1"]);
    link[0]["ifindex"].as_u64().expect("flannel.1 has an ifindex") as u32
}

/// (routes, ARP entries, FDB entries) on host N's flannel.1, from dumps.
fn dump_counts(lab: &Lab, n: usize) -> (usize, usize, usize) {
    let host = lab.host(n);
    let len = |v: serde_json::Value| v.as_array().map_or(0, Vec::len);
    let routes = len(tool_json("ip", &host.ns, &["route", "show", "dev", "flannel.1"]));
    let arp = len(tool_json("ip", &host.ns, &["neigh", "show", "dev", "flannel.1"]));
    let fdb = len(tool_json("bridge", &host.ns, &["fdb", "show", "dev", "flannel.1"]));
    (routes, arp, fdb)
}

/// Copies the lab's logs to `<out>/logs/<tag>/` (for trials that went wrong).
fn keep_logs(lab: &Lab, report: &Report, tag: &str) {
    let dest = report.path(&format!("logs/{tag}"));
    let _ = fs::create_dir_all(&dest);
    for entry in fs::read_dir(lab.dir()).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".log") {
            let _ = fs::copy(entry.path(), dest.join(&name));
        }
    }
}

/// Runs `f` in a thread that has entered the lab's etcd namespace, with a current-thread tokio
/// runtime and a connected etcd client (the endpoint is only reachable inside the lab).
fn with_etcd<R: Send>(lab: &Lab, f: impl FnOnce(&Runtime, &mut Client) -> R + Send) -> R {
    let ns = format!("{}e0", lab.id());
    assert!(lab.namespaces().contains(&ns), "the lab has no etcd namespace {ns}");
    let endpoint = lab.etcd_endpoint();
    thread::scope(|s| {
        let handle = s.spawn(move || {
            enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            let mut client = rt
                .block_on(Client::connect([endpoint.as_str()], None))
                .unwrap_or_else(|e| panic!("connect to etcd at {endpoint}: {e}"));
            f(&rt, &mut client)
        });
        handle.join().unwrap_or_else(|e| panic::resume_unwind(e))
    })
}

// =============================================================================================
// Fake peers
// =============================================================================================

/// A peer lease that no host owns: a /24, a PublicIP in 100.64.0.0/10 (nothing is ever sent
/// there: nothing in the lab routes to it) and a random locally administered VtepMAC.
#[derive(Clone, Debug)]
struct FakePeer {
    subnet: Ipv4Addr,
    public_ip: Ipv4Addr,
    mac: [u8; 6],
}

impl FakePeer {
    fn key(&self) -> String {
        format!("{SUBNETS_PREFIX}{}-24", self.subnet)
    }

    /// Byte for byte what flanneld writes.
    fn value(&self) -> String {
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            self.public_ip,
            mac_text(&self.mac)
        )
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[derive(Default)]
struct FakeMaker {
    ips: HashSet<Ipv4Addr>,
    macs: HashSet<[u8; 6]>,
}

impl FakeMaker {
    fn make(&mut self, subnet: Ipv4Addr) -> FakePeer {
        let mut rng = rand::rng();
        let public_ip = loop {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + rng.random_range(1..(1u32 << 22) - 1));
            if self.ips.insert(ip) {
                break ip;
            }
        };
        let mac = loop {
            let mut mac: [u8; 6] = rng.random();
            mac[0] = (mac[0] & 0xfc) | 0x02; // unicast, locally administered
            if self.macs.insert(mac) {
                break mac;
            }
        };
        FakePeer { subnet, public_ip, mac }
    }
}

/// `count` distinct /24s from 10.<first>.0.0 upwards, skipping `taken`.
fn fake_subnets(first: u8, count: usize, taken: &HashSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
    (0u32..)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, first, 0, 0)) + (i << 8)))
        .filter(|s| !taken.contains(s))
        .take(count)
        .collect()
}

/// Puts `peers` into etcd in transactions of at most TXN_OPS puts (no etcd lease).
fn preload(lab: &Lab, peers: &[FakePeer]) -> f64 {
    with_etcd(lab, |rt, client| {
        let started = Instant::now();
        for chunk in peers.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk.iter().map(|p| TxnOp::put(p.key(), p.value(), None)).collect();
            rt.block_on(client.txn(Txn::new().and_then(ops))).unwrap_or_else(|e| panic!("preload txn: {e}"));
        }
        ms(started, Instant::now())
    })
}

/// Which of a peer's three entries an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Route = 0,
    Arp = 1,
    Fdb = 2,
}

/// Finds the fake peer (and entry) an event adds, or, with `del`, removes.
struct PeerIndex {
    by_subnet: HashMap<Ipv4Addr, usize>,
    by_mac: HashMap<[u8; 6], usize>,
}

impl PeerIndex {
    fn new(peers: &[FakePeer]) -> PeerIndex {
        PeerIndex {
            by_subnet: peers.iter().enumerate().map(|(i, p)| (p.subnet, i)).collect(),
            by_mac: peers.iter().enumerate().map(|(i, p)| (p.mac, i)).collect(),
        }
    }

    fn added(&self, peers: &[FakePeer], ev: &Ev) -> Option<(usize, Part)> {
        if ev.del {
            return None;
        }
        match ev.kind {
            Kind::Route { dst, len: 24 } => self.by_subnet.get(&dst).map(|&i| (i, Part::Route)),
            Kind::Arp { ip, mac: Some(mac), permanent: true } => {
                let &i = self.by_subnet.get(&ip)?;
                (peers[i].mac == mac).then_some((i, Part::Arp))
            }
            Kind::Fdb { mac, dst: Some(dst) } => {
                let &i = self.by_mac.get(&mac)?;
                (peers[i].public_ip == dst).then_some((i, Part::Fdb))
            }
            _ => None,
        }
    }

    fn removed(&self, ev: &Ev) -> Option<(usize, Part)> {
        if !ev.del {
            return None;
        }
        match ev.kind {
            Kind::Route { dst, len: 24 } => self.by_subnet.get(&dst).map(|&i| (i, Part::Route)),
            Kind::Arp { ip, .. } => self.by_subnet.get(&ip).map(|&i| (i, Part::Arp)),
            Kind::Fdb { mac, .. } => self.by_mac.get(&mac).map(|&i| (i, Part::Fdb)),
            _ => None,
        }
    }
}

// =============================================================================================
// Netlink monitor
// =============================================================================================

/// A route, ARP or FDB notification as the kernel multicast it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Route { dst: Ipv4Addr, len: u8 },
    Arp { ip: Ipv4Addr, mac: Option<[u8; 6]>, permanent: bool },
    Fdb { mac: [u8; 6], dst: Option<Ipv4Addr> },
}

#[derive(Clone, Copy, Debug)]
struct Ev {
    host: usize,
    /// When the monitor thread received it.
    at: Instant,
    del: bool,
    /// The device (route: output interface).
    ifindex: u32,
    kind: Kind,
}

enum Msg {
    Ev(Ev),
    /// The socket overflowed (ENOBUFS): notifications were lost.
    Overflow(usize),
    Failed(usize, String),
}

/// `ip monitor route neigh` in a host namespace, in-process: a thread that entered the
/// namespace listens on rtnetlink's neighbour and IPv4 route groups and timestamps every
/// notification as it arrives. Stopped and joined on Drop.
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Returns once the socket is subscribed, so nothing after this call is missed.
    fn start(ns: &str, host: usize, tx: Sender<Msg>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (ns_owned, stop_flag) = (ns.to_string(), stop.clone());
        let thread = thread::Builder::new()
            .name(format!("monitor-h{host}"))
            .spawn(move || {
                let sock = match open_monitor_socket(&ns_owned) {
                    Ok(sock) => {
                        let _ = ready_tx.send(Ok(()));
                        sock
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
                while !stop_flag.load(Ordering::Relaxed) {
                    buf.clear();
                    match sock.recv(&mut buf, 0) {
                        Ok(_) => parse_notifications(&buf, host, Instant::now(), &tx),
                        Err(e) => match e.raw_os_error().map(Errno::from_raw) {
                            Some(Errno::EAGAIN | Errno::EINTR) => {}
                            Some(Errno::ENOBUFS) => {
                                let _ = tx.send(Msg::Overflow(host));
                            }
                            _ => {
                                let _ = tx.send(Msg::Failed(host, e.to_string()));
                                return;
                            }
                        },
                    }
                }
            })
            .expect("spawn monitor thread");
        ready_rx.recv().expect("monitor thread reports").unwrap_or_else(|e| panic!("netlink monitor in {ns}: {e}"));
        Monitor { stop, thread: Some(thread) }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_monitor_socket(ns: &str) -> Result<NlSocket, String> {
    enter_netns(ns)?;
    let mut sock = NlSocket::new(NETLINK_ROUTE).map_err(|e| format!("netlink socket: {e}"))?;
    // Far above rmem_max, so a burst of 15,000 notifications is not dropped (needs CAP_NET_ADMIN).
    socket::setsockopt(&sock, sockopt::RcvBufForce, &(64 << 20)).map_err(|e| format!("SO_RCVBUFFORCE: {e}"))?;
    // Wakes the thread to check its stop flag.
    socket::setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000)).map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    let groups = rtnetlink::constants::RTMGRP_NEIGH | rtnetlink::constants::RTMGRP_IPV4_ROUTE;
    sock.bind(&NlAddr::new(0, groups)).map_err(|e| format!("bind: {e}"))?;
    Ok(sock)
}

fn parse_notifications(buf: &[u8], host: usize, at: Instant, tx: &Sender<Msg>) {
    let mut off = 0;
    while buf.len() >= off + 16 {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                let parsed = match &inner {
                    RouteNetlinkMessage::NewRoute(r) => route_kind(r).map(|k| (false, k)),
                    RouteNetlinkMessage::DelRoute(r) => route_kind(r).map(|k| (true, k)),
                    RouteNetlinkMessage::NewNeighbour(n) => neigh_kind(n).map(|k| (false, k)),
                    RouteNetlinkMessage::DelNeighbour(n) => neigh_kind(n).map(|k| (true, k)),
                    _ => None,
                };
                if let Some((del, (ifindex, kind))) = parsed {
                    let _ = tx.send(Msg::Ev(Ev { host, at, del, ifindex, kind }));
                }
            }
        }
        off += (len + 3) & !3;
    }
}

/// IPv4 routes of the main table.
fn route_kind(r: &RouteMessage) -> Option<(u32, Kind)> {
    if r.header.address_family != NlFamily::Inet {
        return None;
    }
    let (mut table, mut dst, mut oif) = (u32::from(r.header.table), None, 0);
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Oif(i) => oif = *i,
            _ => {}
        }
    }
    (table == 254).then_some(())?;
    Some((oif, Kind::Route { dst: dst?, len: r.header.destination_prefix_length }))
}

/// IPv4 neighbours (ARP) and bridge-family neighbours (FDB).
fn neigh_kind(n: &NeighbourMessage) -> Option<(u32, Kind)> {
    let (mut dst, mut mac) = (None, None);
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => mac = Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            _ => {}
        }
    }
    let kind = match n.header.family {
        NlFamily::Inet => Kind::Arp { ip: dst?, mac, permanent: n.header.state == NeighbourState::Permanent },
        NlFamily::Bridge => Kind::Fdb { mac: mac?, dst },
        _ => return None,
    };
    Some((n.header.ifindex, kind))
}

/// Monitors on hosts 1..=n of the lab, feeding one channel.
fn monitor_hosts(lab: &Lab, hosts: &[usize]) -> (Vec<Monitor>, Receiver<Msg>) {
    let (tx, rx) = mpsc::channel();
    let monitors = hosts.iter().map(|&n| Monitor::start(&lab.host(n).ns, n, tx.clone())).collect();
    (monitors, rx)
}

/// Receives the next event before `deadline`; None at the deadline. Overflows are counted in
/// `overflows`; a dead monitor is fatal.
fn next_event(rx: &Receiver<Msg>, deadline: Instant, overflows: &mut usize) -> Option<Ev> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Msg::Ev(ev)) => return Some(ev),
            Ok(Msg::Overflow(host)) => {
                eprintln!("netlink monitor on host {host} overflowed: notifications lost");
                *overflows += 1;
            }
            Ok(Msg::Failed(host, e)) => panic!("netlink monitor on host {host} failed: {e}"),
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => panic!("all netlink monitors stopped"),
        }
    }
}

/// Discards whatever is queued.
fn drain(rx: &Receiver<Msg>) {
    while rx.try_recv().is_ok() {}
}

/// Drains events until none has arrived for `quiet` (at most `max`); returns how many came.
fn settle(rx: &Receiver<Msg>, quiet: Duration, max: Duration, overflows: &mut usize) -> usize {
    let end = Instant::now() + max;
    let mut count = 0;
    loop {
        let deadline = (Instant::now() + quiet).min(end);
        match next_event(rx, deadline, overflows) {
            Some(_) => count += 1,
            None => return count,
        }
        if Instant::now() >= end {
            return count;
        }
    }
}

// =============================================================================================
// 1. Convergence
// =============================================================================================

struct TrialResult {
    t_spawn: Instant,
    /// ms between the first and the last daemon spawn.
    spawn_spread_ms: f64,
    env_at: Vec<Option<Instant>>,
    cfg_at: Vec<Option<Instant>>,
    /// (from, to, answered at)
    pairs: Vec<(usize, usize, Option<Instant>)>,
}

fn bench_convergence(s: &Settings, report: &Report) {
    let n = s.hosts;
    let mut trial_rows = Vec::new();
    let mut pair_rows = Vec::new();
    let (mut all_pairs, mut after_env, mut last_env, mut cfg_lag) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut after_ready = Vec::new();
    let (mut broken_total, mut broken_max, mut broken_trials) = (0usize, 0usize, 0usize);
    for trial in 1..=s.trials {
        let started = Instant::now();
        let (r, lab_id) = convergence_trial(n, trial, report);
        assert!(
            r.env_at.iter().any(Option::is_some),
            "trial {trial}: no host wrote subnet.env within {SUBNET_ENV_TIMEOUT:?}; not repeating that {} more times",
            s.trials - trial
        );
        let t0 = r.t_spawn;
        let envs: Vec<f64> = r.env_at.iter().flatten().map(|&t| ms(t0, t)).collect();
        let last_env_at = r.env_at.iter().flatten().max().copied();
        let broken = r.pairs.iter().filter(|p| p.2.is_none()).count();
        let last_pair = r.pairs.iter().filter_map(|p| p.2).max();
        let done = (broken == 0).then_some(last_pair).flatten();
        let all_ms = done.map(|t| ms(t0, t));
        let after_ms = done.zip(last_env_at).map(|(d, e)| ms(e, d));
        let last_env_ms = if envs.len() == n { max_of(&envs) } else { f64::NAN };
        // Per pair: from the moment both of its containers had addresses to the first reply.
        let ready_lags: Vec<f64> =
            r.pairs.iter().filter_map(|&(from, to, at)| Some(ms(r.cfg_at[from - 1]?.max(r.cfg_at[to - 1]?), at?))).collect();
        let ready_ms = (broken == 0).then(|| max_of(&ready_lags));
        for (e, c) in r.env_at.iter().zip(&r.cfg_at) {
            if let (Some(e), Some(c)) = (e, c) {
                cfg_lag.push(ms(*e, *c));
            }
        }
        for (from, to, at) in &r.pairs {
            pair_rows.push(format!("{trial},{from},{to},{}", cell(at.map(|t| ms(t0, t)))));
        }
        trial_rows.push(format!(
            "{trial},{},{},{},{},{broken},{:.3},{}",
            cell(all_ms),
            cell((!last_env_ms.is_nan()).then_some(last_env_ms)),
            cell(after_ms),
            cell(ready_ms),
            r.spawn_spread_ms,
            r.env_at.iter().map(|t| cell(t.map(|t| ms(t0, t)))).collect::<Vec<_>>().join(";")
        ));
        eprintln!(
            "trial {trial:2} (lab {lab_id}): last subnet.env {} ms, all {} pairs {} ms ({} ms after the last subnet.env), {broken} broken [trial took {:.1} s]",
            fmt_num(last_env_ms),
            r.pairs.len(),
            fmt_num(all_ms.unwrap_or(f64::NAN)),
            fmt_num(after_ms.unwrap_or(f64::NAN)),
            started.elapsed().as_secs_f64()
        );
        all_pairs.extend(all_ms);
        after_env.extend(after_ms);
        after_ready.extend(ready_ms);
        last_env.push(last_env_ms);
        broken_total += broken;
        broken_max = broken_max.max(broken);
        broken_trials += usize::from(broken > 0);
    }
    report.csv(
        "convergence.csv",
        "trial,all_pairs_ms,last_subnet_env_ms,after_last_subnet_env_ms,after_containers_ready_max_ms,broken_pairs,spawn_spread_ms,subnet_env_ms_per_host",
        &trial_rows,
    );
    report.csv("convergence_pairs.csv", "trial,from_host,to_host,first_reply_ms", &pair_rows);
    report.note(&format!(
        "convergence: {n} hosts started together, {} trials, {} directed container pairs each; pairs not answering within {}s count as broken\n\
         times from the first daemon spawn; container_setup = subnet.env seen -> container addressed (ip -batch); after_containers_ready = per trial, the slowest pair's first reply after both its containers had addresses",
        s.trials,
        n * (n - 1),
        PAIR_TIMEOUT.as_secs()
    ));
    report.figure("convergence_all_pairs_p50_ms", pct(&all_pairs, 50.0));
    report.figure("convergence_all_pairs_max_ms", max_of(&all_pairs));
    report.figure("convergence_last_subnet_env_p50_ms", pct(&last_env, 50.0));
    report.figure("convergence_after_last_subnet_env_p50_ms", pct(&after_env, 50.0));
    report.figure("convergence_after_last_subnet_env_max_ms", max_of(&after_env));
    report.figure("convergence_container_setup_p50_ms", pct(&cfg_lag, 50.0));
    report.figure("convergence_after_containers_ready_p50_ms", pct(&after_ready, 50.0));
    report.figure("convergence_after_containers_ready_max_ms", max_of(&after_ready));
    report.figure("convergence_broken_pairs_total_count", broken_total as f64);
    report.figure("convergence_broken_pairs_max_per_trial_count", broken_max as f64);
    report.figure("convergence_trials_with_broken_pairs_count", broken_trials as f64);
}

/// One trial in a fresh lab: containers are wired before the daemons start (so link set-up,
/// which can take a second of the kernel's linkwatch, is not timed), the daemons are released
/// together, each container gets its address as soon as its host's subnet.env appears, and
/// every ordered pair then pings (in-process ICMP every 10 ms) until the first reply.
fn convergence_trial(n: usize, trial: usize, report: &Report) -> (TrialResult, String) {
    let lab = new_lab(n, SMALL_NETWORK);
    let mut containers = LocalNetns::default();
    for h in 1..=n {
        prewire_container(&lab, &mut containers, h);
    }
    for h in 1..=n {
        wait_prewired(&lab, h);
    }

    // Per host: None = pending, Some(Some(ip)) = configured, Some(None) = gave up.
    let ready: Mutex<Vec<Option<Option<Ipv4Addr>>>> = Mutex::new(vec![None; n + 1]);
    let ready_cv = Condvar::new();
    let barrier = Barrier::new(n);
    let spawn_at: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let env_at: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; n + 1]);
    let cfg_at: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; n + 1]);
    let lab_ref = &lab;

    let (pairs, _daemons) = thread::scope(|sc| {
        let hosts: Vec<_> = (1..=n)
            .map(|h| {
                let (ready, ready_cv, barrier, spawn_at, env_at, cfg_at) =
                    (&ready, &ready_cv, &barrier, &spawn_at, &env_at, &cfg_at);
                sc.spawn(move || {
                    barrier.wait();
                    lock(spawn_at).push(Instant::now());
                    // Caught so the pair threads waiting for this host are always released.
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                        let daemon = start_weftd(lab_ref, h);
                        let ip = wait_env_fast(lab_ref, h).map(|env| {
                            lock(env_at)[h] = Some(Instant::now());
                            let ip = configure_container(lab_ref, h, &env);
                            lock(cfg_at)[h] = Some(Instant::now());
                            ip
                        });
                        (daemon, ip)
                    }));
                    lock(ready)[h] = Some(outcome.as_ref().ok().and_then(|(_, ip)| *ip));
                    ready_cv.notify_all();
                    match outcome {
                        Ok((daemon, _)) => daemon,
                        Err(e) => panic::resume_unwind(e),
                    }
                })
            })
            .collect();
        let pair_threads: Vec<_> = (1..=n)
            .flat_map(|from| (1..=n).filter(move |&to| to != from).map(move |to| (from, to)))
            .enumerate()
            .map(|(k, (from, to))| {
                let (ready, ready_cv) = (&ready, &ready_cv);
                let ns = format!("{}c{from}", lab_ref.id());
                let id = ((trial as u16) << 7) ^ (k as u16) ^ 0x5700;
                sc.spawn(move || {
                    let dst = {
                        let mut r = lock(ready);
                        while r[from].is_none() || r[to].is_none() {
                            r = ready_cv.wait(r).unwrap_or_else(|e| e.into_inner());
                        }
                        r[from].flatten().and(r[to].flatten())
                    };
                    let at = dst.and_then(|dst| icmp_first_reply(&ns, dst, id, PAIR_TIMEOUT));
                    (from, to, at)
                })
            })
            .collect();
        let pairs: Vec<_> = pair_threads.into_iter().map(|t| t.join().unwrap_or_else(|e| panic::resume_unwind(e))).collect();
        let daemons: Vec<Weftd> = hosts.into_iter().map(|t| t.join().unwrap_or_else(|e| panic::resume_unwind(e))).collect();
        (pairs, daemons)
    });
    let spawned = lock(&spawn_at).clone();
    let first_spawn = *spawned.iter().min().expect("daemons were started");
    let result = TrialResult {
        t_spawn: first_spawn,
        spawn_spread_ms: ms(first_spawn, *spawned.iter().max().expect("daemons were started")),
        env_at: lock(&env_at)[1..].to_vec(),
        cfg_at: lock(&cfg_at)[1..].to_vec(),
        pairs,
    };
    if result.pairs.iter().any(|p| p.2.is_none()) {
        keep_logs(&lab, report, &format!("convergence-trial{trial}"));
    }
    let id = lab.id().to_string();
    drop(containers);
    (result, id)
}

/// Polls host N's subnet file every 2 ms (a file, not kernel state) until it names a subnet.
fn wait_env_fast(lab: &Lab, n: usize) -> Option<BTreeMap<String, String>> {
    let deadline = Instant::now() + SUBNET_ENV_TIMEOUT;
    loop {
        if let Some(env) = lab.host(n).subnet_env().filter(|e| e.contains_key("FLANNEL_SUBNET") && e.contains_key("FLANNEL_MTU"))
        {
            return Some(env);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Host N's container `<lab id>cN`, wired like `Lab::attach_container` does (bridge `cbr0`,
/// veth `vethcN`, `eth0` inside) but without addresses yet.
fn prewire_container(lab: &Lab, local: &mut LocalNetns, n: usize) {
    let host_ns = &lab.host(n).ns;
    let ns = format!("{}c{n}", lab.id());
    local.add(&ns);
    ip_batch(
        host_ns,
        &[
            "link add cbr0 type bridge".into(),
            "link set cbr0 up".into(),
            format!("link add vethc{n} type veth peer name eth0 netns {ns}"),
            format!("link set vethc{n} master cbr0 up"),
        ],
    );
    ip_batch(&ns, &["link set eth0 up".into()]);
}

fn wait_prewired(lab: &Lab, n: usize) {
    let (host_ns, ns) = (&lab.host(n).ns, format!("{}c{n}", lab.id()));
    poll(&format!("container {n} wiring to forward"), Duration::from_secs(10), || {
        let port = tool_json("bridge", host_ns, &["link", "show", "dev", &format!("vethc{n}")]);
        let dev = tool_json("ip", &ns, &["link", "show", "dev", "eth0"]);
        (port[0]["state"] == "forwarding" && dev[0]["operstate"] == "UP").then_some(())
    })
}

/// Gives host N's prewired container its address from subnet.env (the bridge gets
/// FLANNEL_SUBNET, every link FLANNEL_MTU, the container .2 and a default route).
fn configure_container(lab: &Lab, n: usize, env: &BTreeMap<String, String>) -> Ipv4Addr {
    let (subnet, mtu) = (&env["FLANNEL_SUBNET"], &env["FLANNEL_MTU"]);
    let (gateway, prefix) = parse_cidr(subnet);
    let addr = nth_address(gateway, prefix, 2);
    ip_batch(
        &lab.host(n).ns,
        &[format!("addr add {subnet} dev cbr0"), format!("link set cbr0 mtu {mtu}"), format!("link set vethc{n} mtu {mtu}")],
    );
    ip_batch(
        &format!("{}c{n}", lab.id()),
        &[
            format!("link set eth0 mtu {mtu}"),
            format!("addr add {addr}/{prefix} dev eth0"),
            format!("route add default via {gateway}"),
        ],
    );
    addr
}

/// From namespace `ns`, sends an ICMP echo request to `dst` every 10 ms until the first echo
/// reply; returns when it arrived, or None after `timeout`.
fn icmp_first_reply(ns: &str, dst: Ipv4Addr, id: u16, timeout: Duration) -> Option<Instant> {
    enter_netns(ns).unwrap_or_else(|e| panic!("{e}"));
    let fd =
        socket::socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp).expect("raw ICMP socket");
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 2_000)).expect("SO_RCVTIMEO");
    let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    for seq in 1u16.. {
        let _ = socket::sendto(fd.as_raw_fd(), &echo_request(id, seq), &to, socket::MsgFlags::empty());
        let next = Instant::now() + Duration::from_millis(10);
        while Instant::now() < next {
            match socket::recvfrom::<SockaddrIn>(fd.as_raw_fd(), &mut buf) {
                Ok((len, Some(from))) if from.ip() == dst && len >= 28 => {
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    let icmp = &buf[ihl..len];
                    if icmp.len() >= 8 && icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id {
                        return Some(Instant::now());
                    }
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
    None
}

fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8; // echo request
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"weftbnch");
    let mut sum: u32 = p.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

// =============================================================================================
// 2. Propagation latency
// =============================================================================================

fn bench_propagation(s: &Settings, report: &Report) {
    let n = s.hosts;
    let lab = new_lab(n, BIG_NETWORK);
    let _daemons: Vec<Weftd> = (1..=n).map(|h| start_weftd(&lab, h)).collect();
    let mut taken = HashSet::new();
    for h in 1..=n {
        taken.insert(env_subnet(&wait_env(&lab, h)));
    }
    for h in 1..=n {
        poll(&format!("host {h} to program its {} peers", n - 1), Duration::from_secs(30), || {
            (dump_counts(&lab, h) == (n - 1, n - 1, n - 1)).then_some(())
        });
    }
    let mut maker = FakeMaker::default();
    let peers: Vec<FakePeer> = fake_subnets(200, s.puts, &taken).into_iter().map(|sn| maker.make(sn)).collect();
    let hosts: Vec<usize> = (1..=n).collect();
    let (monitors, mut rx) = monitor_hosts(&lab, &hosts);
    eprintln!("{n} hosts converged; {} puts of a new peer lease follow", peers.len());

    /// Per put: (etcd put RPC ms, per host [route, arp, fdb] add ms, per host delete-all ms).
    type PutSample = (f64, Vec<[Option<f64>; 3]>, Vec<Option<f64>>);
    let mut overflows = 0;
    let samples: Vec<PutSample> = with_etcd(&lab, |rt, client| {
        let lease = rt.block_on(client.lease_grant(3600, None)).expect("lease grant").id();
        let mut out = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let one = std::slice::from_ref(peer);
            let index = PeerIndex::new(one);
            drain(&rx);
            let t_put = Instant::now();
            rt.block_on(client.put(peer.key(), peer.value(), Some(PutOptions::new().with_lease(lease))))
                .unwrap_or_else(|e| panic!("put {}: {e}", peer.key()));
            let put_ms = ms(t_put, Instant::now());
            let added = wait_parts(&mut rx, n, t_put, |ev| index.added(one, ev).map(|(_, p)| p), &mut overflows);
            let t_del = Instant::now();
            rt.block_on(client.delete(peer.key(), None)).unwrap_or_else(|e| panic!("delete {}: {e}", peer.key()));
            let removed = wait_parts(&mut rx, n, t_del, |ev| index.removed(ev).map(|(_, p)| p), &mut overflows);
            let removed_all: Vec<Option<f64>> = removed.iter().map(all_three).collect();
            if (i + 1) % 50 == 0 {
                eprintln!("  {} puts done", i + 1);
            }
            out.push((put_ms, added, removed_all));
        }
        let _ = rt.block_on(client.lease_revoke(lease));
        out
    });
    drop(monitors);

    let mut rows = Vec::new();
    let (mut all, mut route, mut del, mut puts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for (i, (put_ms, added, removed)) in samples.iter().enumerate() {
        puts.push(*put_ms);
        for (h, parts) in added.iter().enumerate() {
            let a = all_three(parts);
            match a {
                Some(v) => all.push(v),
                None => missing += 1,
            }
            route.extend(parts[Part::Route as usize]);
            del.extend(removed[h]);
            rows.push(format!(
                "{},{},{},{},{},{},{},{:.3}",
                i + 1,
                h + 1,
                cell(parts[0]),
                cell(parts[1]),
                cell(parts[2]),
                cell(a),
                cell(removed[h]),
                put_ms
            ));
        }
    }
    report.csv("propagation.csv", "put,host,route_ms,arp_ms,fdb_ms,all_ms,delete_all_ms,etcd_put_rpc_ms", &rows);
    report.note(&format!(
        "propagation: {} puts x {n} hosts = {} samples; ms from the etcd put to the last of route+ARP+FDB on flannel.1 (netlink monitor)",
        samples.len(),
        samples.len() * n
    ));
    report.figure("propagation_p50_ms", pct(&all, 50.0));
    report.figure("propagation_p99_ms", pct(&all, 99.0));
    report.figure("propagation_max_ms", max_of(&all));
    report.figure("propagation_route_p50_ms", pct(&route, 50.0));
    report.figure("propagation_route_p99_ms", pct(&route, 99.0));
    report.figure("propagation_delete_p50_ms", pct(&del, 50.0));
    report.figure("propagation_delete_p99_ms", pct(&del, 99.0));
    report.figure("propagation_etcd_put_rpc_p50_ms", pct(&puts, 50.0));
    report.figure("propagation_missing_samples_count", missing as f64);
    report.figure("propagation_monitor_overflows_count", overflows as f64);
}

/// The last of the three entries, if all three came.
fn all_three(parts: &[Option<f64>; 3]) -> Option<f64> {
    Some(parts[0]?.max(parts[1]?).max(parts[2]?))
}

/// Collects, per host, the first time each part was seen (ms after `since`), until every host
/// has all three or ENTRY_TIMEOUT passes.
fn wait_parts(
    rx: &mut Receiver<Msg>,
    hosts: usize,
    since: Instant,
    mut part_of: impl FnMut(&Ev) -> Option<Part>,
    overflows: &mut usize,
) -> Vec<[Option<f64>; 3]> {
    let mut seen = vec![[None; 3]; hosts];
    let mut missing = hosts * 3;
    let deadline = since + ENTRY_TIMEOUT;
    while missing > 0 {
        let Some(ev) = next_event(rx, deadline, overflows) else { break };
        if let Some(part) = part_of(&ev) {
            let slot = &mut seen[ev.host - 1][part as usize];
            if slot.is_none() {
                *slot = Some(ms(since, ev.at));
                missing -= 1;
            }
        }
    }
    seen
}

// =============================================================================================
// 3. Scale
// =============================================================================================

struct ScaleResult {
    k: usize,
    preload_ms: f64,
    first_ms: f64,
    all_ms: Option<f64>,
    hwm_kb: u64,
    rss_kb: u64,
    dump: (usize, usize, usize),
    one_ms: Option<f64>,
    one_put_rpc_ms: f64,
    one_others: usize,
    overflows: usize,
    /// (ms since spawn, entries so far, which entry)
    timeline: Vec<(f64, usize, Part)>,
}

fn bench_scale(s: &Settings, report: &Report) {
    let mut rows = Vec::new();
    let mut timeline = Vec::new();
    let mut by_k: Vec<(usize, Vec<ScaleResult>)> = Vec::new();
    for &k in &s.scale_k {
        let mut runs = Vec::new();
        for repeat in 1..=s.scale_repeats {
            let r = scale_run(k, report);
            eprintln!(
                "K={k} run {repeat}: all {} entries in {} ms (first after {} ms), VmHWM {} kB; one more lease: {} ms, {} other entries touched",
                3 * k,
                fmt_num(r.all_ms.unwrap_or(f64::NAN)),
                fmt_num(r.first_ms),
                r.hwm_kb,
                fmt_num(r.one_ms.unwrap_or(f64::NAN)),
                r.one_others
            );
            rows.push(format!(
                "{},{repeat},{:.1},{:.3},{},{},{},{},{},{},{},{:.3},{},{}",
                r.k,
                r.preload_ms,
                r.first_ms,
                cell(r.all_ms),
                r.hwm_kb,
                r.rss_kb,
                r.dump.0,
                r.dump.1,
                r.dump.2,
                cell(r.one_ms),
                r.one_put_rpc_ms,
                r.one_others,
                r.overflows
            ));
            timeline.extend(r.timeline.iter().map(|(t, c, part)| format!("{},{repeat},{t:.3},{c},{part:?}", r.k)));
            runs.push(r);
        }
        by_k.push((k, runs));
    }
    report.note(&format!(
        "scale: K fake peers preloaded, then one weftd spawned; ms from spawn until all 3K entries were notified on flannel.1; {} run(s) per K: median (max), peak RSS = highest VmHWM",
        s.scale_repeats
    ));
    for (k, runs) in &by_k {
        let all: Vec<f64> = runs.iter().map(|r| r.all_ms.unwrap_or(f64::NAN)).collect();
        let one: Vec<f64> = runs.iter().map(|r| r.one_ms.unwrap_or(f64::NAN)).collect();
        let first: Vec<f64> = runs.iter().map(|r| r.first_ms).collect();
        let incomplete = runs.iter().filter(|r| r.all_ms.is_none() || r.one_ms.is_none()).count();
        report.figure(&format!("scale_k{k}_program_all_ms"), pct(&all, 50.0));
        report.figure(&format!("scale_k{k}_program_all_max_ms"), max_of(&all));
        report.figure(&format!("scale_k{k}_first_entry_ms"), pct(&first, 50.0));
        report.figure(&format!("scale_k{k}_peak_rss_kb"), runs.iter().map(|r| r.hwm_kb).max().unwrap_or(0) as f64);
        report.figure(
            &format!("scale_k{k}_dump_entries_min_count"),
            runs.iter().map(|r| r.dump.0 + r.dump.1 + r.dump.2).min().unwrap_or(0) as f64,
        );
        report.figure(&format!("scale_k{k}_one_change_ms"), pct(&one, 50.0));
        report.figure(&format!("scale_k{k}_one_change_max_ms"), max_of(&one));
        report.figure(
            &format!("scale_k{k}_one_change_other_entries_touched_max_count"),
            runs.iter().map(|r| r.one_others).max().unwrap_or(0) as f64,
        );
        let overflows: usize = runs.iter().map(|r| r.overflows).sum();
        if overflows > 0 || incomplete > 0 {
            report.figure(&format!("scale_k{k}_monitor_overflows_count"), overflows as f64);
            report.figure(&format!("scale_k{k}_incomplete_runs_count"), incomplete as f64);
        }
    }
    report.csv(
        "scale.csv",
        "k,run,preload_ms,first_entry_ms,program_all_ms,vmhwm_kb,vmrss_kb,dump_routes,dump_arp,dump_fdb,one_change_ms,one_change_put_rpc_ms,one_change_other_entries_touched,monitor_overflows",
        &rows,
    );
    report.csv("scale_timeline.csv", "k,run,ms,entries,entry", &timeline);
}

fn scale_run(k: usize, report: &Report) -> ScaleResult {
    let lab = new_lab(1, BIG_NETWORK);
    let mut maker = FakeMaker::default();
    let mut peers: Vec<FakePeer> = fake_subnets(1, k, &HashSet::new()).into_iter().map(|sn| maker.make(sn)).collect();
    let preload_ms = preload(&lab, &peers);
    let (monitors, rx) = monitor_hosts(&lab, &[1]);
    let mut overflows = 0;

    let index = PeerIndex::new(&peers);
    let mut seen = vec![[false; 3]; k];
    let mut count = 0;
    let mut timeline = Vec::with_capacity(3 * k);
    let t0 = Instant::now();
    let mut weftd = start_weftd(&lab, 1);
    let deadline = t0 + SCALE_TIMEOUT;
    let mut first = None;
    while count < 3 * k {
        let Some(ev) = next_event(&rx, (Instant::now() + Duration::from_secs(1)).min(deadline), &mut overflows) else {
            if Instant::now() >= deadline || !weftd.is_running() {
                break;
            }
            continue;
        };
        if let Some((i, part)) = index.added(&peers, &ev) {
            if !seen[i][part as usize] {
                seen[i][part as usize] = true;
                count += 1;
                let t = ms(t0, ev.at);
                first.get_or_insert(t);
                timeline.push((t, count, part));
            }
        }
    }
    let all_ms = (count == 3 * k).then(|| timeline.last().map_or(f64::NAN, |x| x.0));
    if all_ms.is_none() {
        keep_logs(&lab, report, &format!("scale-k{k}"));
        eprintln!("K={k}: only {count} of {} entries seen", 3 * k);
    }
    wait_env(&lab, 1);
    let pid = weftd.pid();
    let dump = dump_counts(&lab, 1);
    let index_dev = flannel_index(&lab, 1);

    // One more lease, once weftd is quiet: how long for its entries, and what else moved.
    settle(&rx, Duration::from_secs(1), Duration::from_secs(15), &mut overflows);
    let own = env_subnet(&lab.host(1).subnet_env().expect("subnet.env"));
    let taken: HashSet<Ipv4Addr> = peers.iter().map(|p| p.subnet).chain([own]).collect();
    let extra = maker.make(fake_subnets(250, 1, &taken)[0]);
    let (t_put, put_rpc_ms) = with_etcd(&lab, |rt, client| {
        let t = Instant::now();
        rt.block_on(client.put(extra.key(), extra.value(), None)).expect("put one more lease");
        (t, ms(t, Instant::now()))
    });
    peers.push(extra);
    let one_index = PeerIndex::new(&peers[k..]);
    let mut parts = [None; 3];
    let mut others = 0;
    let mut window_end = t_put + ENTRY_TIMEOUT;
    while let Some(ev) = next_event(&rx, window_end, &mut overflows) {
        if let Some((_, part)) = one_index.added(&peers[k..], &ev) {
            parts[part as usize].get_or_insert(ms(t_put, ev.at));
            if parts.iter().all(Option::is_some) {
                // Keep watching for a second more: a full re-program would still be going on.
                window_end = ev.at + Duration::from_secs(1);
            }
        } else if ev.ifindex == index_dev {
            others += 1;
        }
    }
    let one_ms = all_three(&parts);
    let hwm_kb = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let rss_kb = proc_status_kb(pid, "VmRSS").unwrap_or(0);
    drop(monitors);
    ScaleResult {
        k,
        preload_ms,
        first_ms: first.unwrap_or(f64::NAN),
        all_ms,
        hwm_kb,
        rss_kb,
        dump,
        one_ms,
        one_put_rpc_ms: put_rpc_ms,
        one_others: others,
        overflows,
        timeline,
    }
}

// =============================================================================================
// 4. Idle cost
// =============================================================================================

fn bench_idle(s: &Settings, report: &Report) {
    let k = s.idle_peers;
    let lab = new_lab(1, BIG_NETWORK);
    let mut maker = FakeMaker::default();
    let peers: Vec<FakePeer> = fake_subnets(1, k, &HashSet::new()).into_iter().map(|sn| maker.make(sn)).collect();
    preload(&lab, &peers);
    let (monitors, rx) = monitor_hosts(&lab, &[1]);
    let mut overflows = 0;
    let mut weftd = start_weftd(&lab, 1);
    let index = PeerIndex::new(&peers);
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 * k {
        let step = (Instant::now() + Duration::from_secs(1)).min(deadline);
        let Some(ev) = next_event(&rx, step, &mut overflows) else {
            assert!(weftd.is_running(), "weftd exited before programming its peers");
            assert!(Instant::now() < deadline, "weftd did not program {k} peers in 60 s ({} of {} entries)", seen.len(), 3 * k);
            continue;
        };
        if let Some((i, part)) = index.added(&peers, &ev) {
            seen.insert((i, part as usize));
        }
    }
    wait_env(&lab, 1);
    settle(&rx, Duration::from_secs(1), Duration::from_secs(15), &mut overflows);
    let dev = flannel_index(&lab, 1);
    let pid = weftd.pid();

    let cpu0 = weftd.cpu_time();
    let (v0, n0, ns0, th0) = thread_totals(pid);
    let t0 = Instant::now();
    eprintln!("weftd converged with {k} peers; idling {} s", s.idle_secs);
    // The measurement window itself: weftd is left alone; kernel notifications are counted.
    let end = t0 + Duration::from_secs(s.idle_secs);
    let mut kernel_events = 0;
    while let Some(ev) = next_event(&rx, end, &mut overflows) {
        kernel_events += usize::from(ev.ifindex == dev);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = weftd.cpu_time();
    let (v1, n1, ns1, th1) = thread_totals(pid);
    assert!(weftd.is_running(), "weftd exited during the idle window");
    drop(monitors);

    let cpu_ms = (cpu1 - cpu0).as_secs_f64() * 1e3;
    let sched_ms = (ns1.saturating_sub(ns0)) as f64 / 1e6;
    let wakeups = (v1 + n1).saturating_sub(v0 + n0);
    report.csv(
        "idle.csv",
        "peers,seconds,cpu_utime_stime_ms,cpu_schedstat_ms,voluntary_ctxt_switches,nonvoluntary_ctxt_switches,threads_before,threads_after,kernel_events_on_flannel1,vmhwm_kb,vmrss_kb",
        &[format!(
            "{k},{secs:.3},{cpu_ms:.1},{sched_ms:.3},{},{},{th0},{th1},{kernel_events},{},{}",
            v1.saturating_sub(v0),
            n1.saturating_sub(n0),
            proc_status_kb(pid, "VmHWM").unwrap_or(0),
            proc_status_kb(pid, "VmRSS").unwrap_or(0)
        )],
    );
    report.note(&format!(
        "idle: one weftd with {k} peers, {:.0} s after convergence; cpu = utime+stime ({} ms ticks), wakeups = voluntary+involuntary context switches over its {th1} threads",
        secs,
        1000 / clk_tck()
    ));
    report.figure("idle_cpu_ms", cpu_ms);
    report.figure("idle_cpu_schedstat_ms", sched_ms);
    report.figure("idle_cpu_pct", cpu_ms / (secs * 1e3) * 100.0);
    report.figure("idle_wakeups_count", wakeups as f64);
    report.figure("idle_wakeups_per_s", wakeups as f64 / secs);
    report.figure("idle_kernel_events_count", kernel_events as f64);
    report.figure("idle_rss_kb", proc_status_kb(pid, "VmRSS").unwrap_or(0) as f64);
}

fn clk_tck() -> u64 {
    let out = run_cmd(Command::new("getconf").arg("CLK_TCK"));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100)
}

// =============================================================================================
// 5. Datapath
// =============================================================================================

fn bench_datapath(s: &Settings, report: &Report) {
    let (lab, _daemons, c2) = datapath_lab(SMALL_NETWORK);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let (cn1, cn2) = (lab.container(1).ns.clone(), lab.container(2).ns.clone());

    record_datapath_settings(&lab, report);

    let _servers = [iperf_server(&cn2), iperf_server(&h2.ns)];
    let mut rows = Vec::new();
    let paths = [("underlay", h1.ns.as_str(), h2.underlay_ip), ("overlay", cn1.as_str(), c2)];
    let (u, o) = datapath_rounds(s, "unshaped", &paths, &mut rows);
    report.note(&format!(
        "datapath: iperf3 TCP, one stream, {} s (+1 s omitted) per run, {} round(s) alternating underlay (host1 -> host2 {}) and overlay (container1 -> container2 {c2}); mean of the rounds",
        s.iperf_secs, s.iperf_rounds, h2.underlay_ip
    ));
    report.figure("datapath_underlay_gbps", u);
    report.figure("datapath_overlay_gbps", o);
    report.figure("datapath_overlay_vs_underlay_pct", o / u * 100.0);

    // The lab's underlay is a software bridge: both paths run until a CPU is full, so the
    // ratio above is the overlay's CPU cost per byte. A real NIC caps the underlay; shaping
    // both hosts' underlay egress to 10 Gbit/s shows what the overlay keeps of a link.
    for host in [&h1, &h2] {
        run_cmd(Command::new("tc").args([
            "-n", &host.ns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "10gbit", "burst", "1mb", "latency", "10ms",
        ]));
    }
    let (u, o) = datapath_rounds(s, "10gbit", &paths, &mut rows);
    report.note("datapath_10gbit: the same runs with both hosts' underlay egress shaped to 10 Gbit/s (tc tbf on eth0), as a NIC would cap it");
    report.figure("datapath_10gbit_underlay_gbps", u);
    report.figure("datapath_10gbit_overlay_gbps", o);
    report.figure("datapath_10gbit_overlay_vs_underlay_pct", o / u * 100.0);
    drop((_servers, _daemons, lab));
    datapath_direct(s, report, &mut rows);
    report.csv(
        "datapath.csv",
        "underlay_shaping,round,path,destination,gbit_per_s,retransmits,sender_cpu_pct,receiver_cpu_pct",
        &rows,
    );
}

/// `s.iperf_rounds` rounds of one iperf3 run per path; the mean Gbit/s of (underlay, overlay).
/// Two hosts running weftd with `config` and a container each, container 1 reaching container 2;
/// the lab, its daemons and container 2's address.
fn datapath_lab(config: &str) -> (Lab, Vec<Weftd>, Ipv4Addr) {
    let mut lab = new_lab(2, config);
    let daemons: Vec<Weftd> = (1..=2).map(|h| start_weftd(&lab, h)).collect();
    wait_env(&lab, 1);
    wait_env(&lab, 2);
    lab.attach_container(1);
    let c2 = lab.attach_container(2);
    poll("container 1 to reach container 2 over the overlay", Duration::from_secs(20), || {
        lab.container_ping(1, c2).then_some(())
    });
    (lab, daemons, c2)
}

/// With DirectRouting, hosts on one link route each other's subnets through the underlay with
/// no VXLAN: the container path costs two veths, a bridge and a forward on each side.
fn datapath_direct(s: &Settings, report: &Report, rows: &mut Vec<String>) {
    let (lab, _daemons, c2) = datapath_lab(DIRECT_NETWORK);
    let (h1, h2) = (lab.host(1), lab.host(2));
    let (cn1, cn2) = (lab.container(1).ns.as_str(), lab.container(2).ns.as_str());
    let _servers = [iperf_server(cn2), iperf_server(&h2.ns)];
    let paths = [("underlay", h1.ns.as_str(), h2.underlay_ip), ("overlay", cn1, c2)];
    let (u, o) = datapath_rounds(s, "direct-routing", &paths, rows);
    report.note("datapath_direct: the same unshaped runs with Backend.DirectRouting (the lab's hosts share one link, so container traffic is routed through the underlay without VXLAN)");
    report.figure("datapath_direct_underlay_gbps", u);
    report.figure("datapath_direct_overlay_gbps", o);
    report.figure("datapath_direct_overlay_vs_underlay_pct", o / u * 100.0);
}

fn datapath_rounds(s: &Settings, shaping: &str, paths: &[(&str, &str, Ipv4Addr); 2], rows: &mut Vec<String>) -> (f64, f64) {
    let (mut under, mut over) = (Vec::new(), Vec::new());
    for round in 1..=s.iperf_rounds {
        for &(path, ns, dst) in paths {
            let r = iperf_client(ns, dst, s.iperf_secs);
            eprintln!(
                "{shaping} round {round} {path:8}: {:.2} Gbit/s, {} retransmits, cpu sender {:.0}% receiver {:.0}%",
                r.gbps, r.retransmits, r.cpu_local, r.cpu_remote
            );
            rows.push(format!(
                "{shaping},{round},{path},{dst},{:.4},{},{:.1},{:.1}",
                r.gbps, r.retransmits, r.cpu_local, r.cpu_remote
            ));
            if path == "underlay" {
                under.push(r.gbps)
            } else {
                over.push(r.gbps)
            }
        }
    }
    (mean(&under), mean(&over))
}

/// MTUs and `ethtool -k` of every link on the path, to datapath-settings.txt; a one-line
/// summary of the offloads that matter for VXLAN per link in the report.
fn record_datapath_settings(lab: &Lab, report: &Report) {
    let (h1, c1) = (&lab.host(1).ns, &lab.container(1).ns);
    let links = [
        ("host1", h1.as_str(), "eth0"),
        ("host1", h1.as_str(), "flannel.1"),
        ("host1", h1.as_str(), "cbr0"),
        ("host1", h1.as_str(), "vethc1"),
        ("container1", c1.as_str(), "eth0"),
    ];
    let mut text = String::new();
    let have_ethtool = Command::new("ethtool").arg("--version").output().is_ok_and(|o| o.status.success());
    let keys = [
        ("tx-checksumming", "txcsum"),
        ("scatter-gather", "sg"),
        ("tcp-segmentation-offload", "tso"),
        ("generic-segmentation-offload", "gso"),
        ("generic-receive-offload", "gro"),
        ("tx-udp_tnl-segmentation", "udp_tnl_seg"),
        ("rx-udp-gro-forwarding", "udp_gro_fwd"),
    ];
    for (who, ns, dev) in links {
        let link = tool_json("ip", ns, &["-d", "link", "show", "dev", dev]);
        let mtu = link[0]["mtu"].as_u64().unwrap_or(0);
        let _ = writeln!(text, "== {who} {dev}: mtu {mtu}");
        let detail = run_cmd(Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", dev]));
        text.push_str(&String::from_utf8_lossy(&detail.stdout));
        let mut summary = format!("{who}/{dev}: mtu {mtu}");
        if have_ethtool {
            let out = run_cmd(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-k", dev]));
            let features = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&features);
            for (name, short) in keys {
                let value = features
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
                    .map(|v| v.split_whitespace().next().unwrap_or("?").to_string())
                    .unwrap_or_else(|| "n/a".into());
                let _ = write!(summary, " {short}={value}");
            }
        }
        text.push('\n');
        report.note(&format!("datapath link {summary}"));
        if who == "host1" && dev == "eth0" {
            report.figure("datapath_underlay_mtu_bytes", mtu as f64);
        }
        if who == "container1" {
            report.figure("datapath_overlay_mtu_bytes", mtu as f64);
        }
    }
    if !have_ethtool {
        text.push_str("ethtool not installed: offload settings not recorded\n");
        report.note("ethtool not installed: offload settings not recorded");
    }
    report.write("datapath-settings.txt", &text);
}

fn iperf_server(ns: &str) -> Bg {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iperf3 -s (apt-get install iperf3)");
    Bg(child)
}

struct IperfResult {
    gbps: f64,
    retransmits: u64,
    cpu_local: f64,
    cpu_remote: f64,
}

/// `iperf3 -c <dst> -t <secs> -O 1 -J` from `ns`, retried while the server is not listening yet.
fn iperf_client(ns: &str, dst: Ipv4Addr, secs: u64) -> IperfResult {
    let started = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-c", &dst.to_string(), "-t", &secs.to_string(), "-O", "1", "-J"])
            .stdin(Stdio::null())
            .output()
            .expect("run iperf3 -c");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let end = &doc["end"];
        if let (true, Some(bps)) = (out.status.success(), end["sum_received"]["bits_per_second"].as_f64()) {
            return IperfResult {
                gbps: bps / 1e9,
                retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
                cpu_local: end["cpu_utilization_percent"]["host_total"].as_f64().unwrap_or(f64::NAN),
                cpu_remote: end["cpu_utilization_percent"]["remote_total"].as_f64().unwrap_or(f64::NAN),
            };
        }
        let error = doc["error"].as_str().unwrap_or("").to_string();
        if started.elapsed() > Duration::from_secs(10) || !error.contains("connect") {
            panic!(
                "iperf3 -c {dst} in {ns} failed ({}): {error} {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout).chars().take(3000).collect::<String>()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}
