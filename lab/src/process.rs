//! Child processes and commands: running a tool and reading its output, polling, waiting for
//! and signalling children, and what /proc tells about a process.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A child the lab and a handle (`Weftd`, `PingRun`) both hold, so the lab can reap it on Drop.
pub(crate) type SharedChild = Arc<Mutex<Child>>;

/// Calls `f` every 50 ms until it returns Some; panics after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_for(timeout, Duration::from_millis(50), f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Calls `f` every `step` until it returns Some, for at most `timeout`: its value, or None.
pub fn poll_for<T>(timeout: Duration, step: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(step);
    }
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

/// A field of /proc/<pid>/status in KiB (`VmHWM`, `VmRSS`); None if the process or the field
/// is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs a command to completion; panics only if it cannot be started.
pub(crate) fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().unwrap_or_else(|e| panic!("cannot run {} ({e}); try `make deps`", describe(cmd)))
}

/// Runs a command, panicking with its stderr unless it succeeds.
pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "{} failed ({}): {}", describe(cmd), out.status, stderr_of(&out));
    out
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", words.join(" "))
}

pub(crate) fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn open_log(path: &Path, append: bool) -> File {
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
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends SIG`name` to a child that has not been reaped yet (so its pid cannot have been reused).
pub(crate) fn signal(child: &mut Child, name: &str) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status();
    }
}

/// The exit status if the shared `child` exits within `timeout`.
pub(crate) fn wait_child(child: &SharedChild, timeout: Duration) -> Option<ExitStatus> {
    poll_for(timeout, Duration::from_millis(20), || lock(child).try_wait().expect("wait for child"))
}

/// `getconf CLK_TCK`: the unit of the times in /proc/<pid>/stat.
pub fn clock_ticks_per_second() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let out = run(Command::new("getconf").arg("CLK_TCK"));
        stdout_of(&out).trim().parse().expect("numeric CLK_TCK")
    })
}

/// SIGKILL and reap; the exit status, or None if it cannot be obtained.
pub(crate) fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

/// The start time (field 22 of /proc/<pid>/stat, which tells a reused pid apart) of a running
/// process; None if it is gone or a zombie (a SIGKILLed owner can linger unreaped).
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let mut stat = String::new();
    File::open(format!("/proc/{pid}/stat")).ok()?.read_to_string(&mut stat).ok()?;
    // The command name (field 2) may contain spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z" | &"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}
