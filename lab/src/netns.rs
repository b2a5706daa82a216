//! Network namespaces and cleanup: creating them (recorded for Drop), wiring them to the
//! underlay bridge, deleting them with whatever runs inside, and sweeping the leftovers of labs
//! whose process was killed before its Drop ran.

use std::collections::HashSet;
use std::fs;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{describe, lock, output, poll, process_start_time, run, stderr_of, stdout_of};
use crate::Lab;

/// Every lab's dir (logs, etcd data, subnet files, owner record) lives under this.
const LABS_ROOT: &str = "/tmp/weft-lab";
/// A lab dir without a valid owner file is only treated as abandoned after this long, so a lab
/// that is still being created in another process is never swept.
const OWNERLESS_GRACE: Duration = Duration::from_secs(60);

impl Lab {
    pub(crate) fn underlay_ns(&self) -> String {
        format!("{}u", self.id)
    }

    pub(crate) fn create_underlay(&mut self) {
        let ns = self.underlay_ns();
        self.add_netns(&ns);
        ip(&ns, &["link", "add", "br0", "type", "bridge"]);
        ip(&ns, &["link", "set", "br0", "up"]);
    }

    /// Creates a namespace, recorded for cleanup, with `lo` up.
    pub(crate) fn add_netns(&mut self, name: &str) {
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
    pub(crate) fn wire_to_underlay(&self, ns: &str, port: &str, addr: Ipv4Addr) {
        let underlay = self.underlay_ns();
        ip(ns, &["link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", &underlay]);
        ip(&underlay, &["link", "set", port, "master", "br0", "up"]);
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(ns, &["link", "set", "eth0", "up"]);
        wait_wire_ready(&underlay, port, ns, "eth0");
    }
}

/// Names from `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"]));
    stdout_of(&out).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// Waits until bridge port `port` in `bridge_ns` forwards and its veth peer `dev` in `ns` is
/// up. Carrier changes reach the bridge through the kernel's linkwatch, which may lag up to a
/// second, so without this the first packets over a fresh link can be dropped.
pub fn wait_wire_ready(bridge_ns: &str, port: &str, ns: &str, dev: &str) {
    poll(&format!("{bridge_ns}/{port} to forward and {ns}/{dev} to be up"), Duration::from_secs(10), || {
        let port_state = tool_json("bridge", bridge_ns, &["link", "show", "dev", port]).ok()?;
        let dev_state = tool_json("ip", ns, &["link", "show", "dev", dev]).ok()?;
        let forwarding = port_state[0]["state"] == "forwarding";
        (forwarding && dev_state[0]["operstate"] == "UP").then_some(())
    })
}

/// `ip netns exec <ns> <args...>` (the process execs into `args[0]`, so its pid is the
/// command's own).
pub(crate) fn netns_exec(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// `ip -n <ns> <args>`, panicking on failure.
pub(crate) fn ip(ns: &str, args: &[&str]) -> Output {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// Runs `<tool> -n <ns> -j <args>` and parses its JSON (empty output means `[]`).
pub fn tool_json(tool: &str, ns: &str, args: &[&str]) -> Result<serde_json::Value, String> {
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

/// Kills whatever still runs in `ns` (processes not spawned by us, e.g. left by a daemon),
/// then deletes it. Best effort: used from Drop.
pub(crate) fn destroy_netns(ns: &str) {
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

/// Parent of all lab dirs; a lab's dir is named after its id. Fixed rather than `$TMPDIR`:
/// the sweep must see the labs of every process, whatever its environment.
fn labs_root() -> PathBuf {
    PathBuf::from(LABS_ROOT)
}

/// Picks an unused id and creates its dir (atomic, so concurrent processes never share one),
/// recording this process as the owner.
pub(crate) fn claim_lab_dir() -> (String, PathBuf) {
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
pub(crate) fn sweep_abandoned_labs() {
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
