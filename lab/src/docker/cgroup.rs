//! Cgroups and mounts a dockerd may leave behind: finding their processes, removing them, and
//! sweeping those of labs whose process was killed.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

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
pub(super) fn cgroup_pids(name: &str) -> BTreeSet<u32> {
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
pub(super) fn remove_cgroup_everywhere(name: &str) -> Vec<String> {
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
pub(super) fn sweep_abandoned_cgroups(labs_root: &Path) {
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
