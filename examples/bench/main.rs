//! Benchmarks of issue 6 (`make bench`, needs root): convergence, propagation latency (and
//! `propagation6`: dual-stack hosts and peers, issue 15), scale (IPv4-only peers, and `scale6`:
//! dual-stack peers), idle cost and datapath
//! throughput, and of issue 16: names across hosts (a container's name resolvable on another
//! host, DNS answer latency, memory with 5,000 names), measured on the namespace lab (the `lab`
//! crate).
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
//! (100,1000,2000,5000), `BENCH_SCALE6_K` (5000), `BENCH_SCALE_REPEATS` (3), `BENCH_IDLE_PEERS` (100),
//! `BENCH_IDLE_SECONDS` (60), `BENCH_IPERF_SECONDS` (10), `BENCH_IPERF_ROUNDS` (3),
//! `BENCH_NAMES_TRIALS` (100), `BENCH_NAMES` (5000), `BENCH_DNS_QUERIES` (10000).

mod convergence;
mod datapath;
mod dns_probe;
mod fixture;
mod idle;
mod monitor;
mod names;
mod propagation;
mod report;
mod scale;
mod system;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use convergence::bench_convergence;
use datapath::bench_datapath;
use idle::bench_idle;
use lab::{weftd_bin, Lab};
use names::bench_names;
use propagation::{bench_propagation, bench_propagation6};
use report::{Report, Settings};
use scale::{bench_scale, bench_scale6};

const SECTIONS: [&str; 8] = ["convergence", "propagation", "propagation6", "scale", "scale6", "idle", "datapath", "names"];
const SUBNETS_PREFIX: &str = "/coreos.com/network/subnets/";
/// The small network of the convergence and datapath labs (what `make demo` uses).
const SMALL_NETWORK: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// SMALL_NETWORK with Backend.DirectRouting: the lab's hosts share one link, so no VXLAN.
const DIRECT_NETWORK: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;
/// Room for thousands of /24 subnets (propagation, scale, idle).
const BIG_NETWORK: &str = r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#;
/// BIG_NETWORK dual-stack: room for thousands of /64s too (scale6).
const DUAL_NETWORK: &str = r#"{"Network":"10.0.0.0/8","EnableIPv6":true,"IPv6Network":"fd00:6::/48","Backend":{"Type":"vxlan"}}"#;
/// DUAL_NETWORK's IPv6Network address (a /48).
const DUAL_NETWORK_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 6, 0, 0, 0, 0, 0, 0);
/// weftd's own default (`--v 0`); the harness would otherwise run it at debug level.
const WEFTD_ENV: [(&str, &str); 1] = [("RUST_LOG", "info")];
/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;
const SUBNET_ENV_TIMEOUT: Duration = Duration::from_secs(30);
/// A (put, host) sample or a pair that has not converged by then counts as missing / broken.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(5);
const PAIR_TIMEOUT: Duration = Duration::from_secs(5);
const SCALE_TIMEOUT: Duration = Duration::from_secs(120);

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
        "propagation6" => bench_propagation6(&settings, &report),
        "scale" => bench_scale(&settings, &report),
        "scale6" => bench_scale6(&settings, &report),
        "idle" => bench_idle(&settings, &report),
        "datapath" => bench_datapath(&settings, &report),
        "names" => bench_names(&settings, &report),
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
    let namespaces = lab::netns_list();
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
