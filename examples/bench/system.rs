//! Namespaces, processes, /proc: netns entry, `ip`/`bridge` commands, local namespaces, background processes, counters.

use std::fs::{self, File};
use std::process::{Child, Command, Output, Stdio};

use nix::sched::CloneFlags;

/// Moves the calling thread (only it) into network namespace `ns`.
pub(crate) fn enter_netns(ns: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {ns}: {e}"))
}

pub(crate) fn run_cmd(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    out
}

/// `ip -n <ns> -batch -` fed with `lines`, failing on the first error.
pub(crate) fn ip_batch(ns: &str, lines: &[String]) {
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

/// `<tool> -n <ns> -j <args>`, parsed; panics if it fails.
pub(crate) fn tool_json(tool: &str, ns: &str, args: &[&str]) -> serde_json::Value {
    lab::tool_json(tool, ns, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Namespaces made here (not by the lab), deleted on Drop with whatever runs in them. They are
/// named like the lab's own (`<lab id>cN`) so its sweep removes them after a killed run.
#[derive(Default)]
pub(crate) struct LocalNetns(Vec<String>);

impl LocalNetns {
    pub(crate) fn add(&mut self, name: &str) {
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
pub(crate) struct Bg(pub(crate) Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Per-process totals over all threads: context switches (voluntary, involuntary), on-CPU ns
/// (schedstat), thread count. Threads that exited in between are not counted.
pub(crate) fn thread_totals(pid: u32) -> (u64, u64, u64, usize) {
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
