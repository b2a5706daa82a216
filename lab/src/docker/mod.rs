//! Real Docker in lab hosts (design.md §3): a Debian `dockerd` per host namespace, started with
//! the options `weftd docker-opts` made from that host's subnet.env, a busybox image built
//! without a registry, and cleanup of everything dockerd leaves behind — on Drop, and for runs
//! that were killed, at the next start. Parts: `image` (the busybox image), `dockerd` (one
//! daemon and its teardown), `cgroup` (cgroups and mounts it may leave behind).
//!
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

mod cgroup;
mod dockerd;
mod image;

use std::collections::BTreeMap;
use std::fs;

use crate::{weftd_bin, Lab};

pub use cgroup::mounts_under;
pub use dockerd::{Dockerd, CONTAINER_LIFETIME_SECS};
pub use image::BusyboxImage;

// ---------------------------------------------------------------------------------------------
// docker options from weftd
// ---------------------------------------------------------------------------------------------

/// Set in `weftd docker-opts`'s environment; docker must be started with `--log-level=warn`.
pub const EXTRA_DOCKER_OPT: &str = "DOCKER_OPT_LOG_LEVEL=--log-level=warn";

/// Runs `weftd docker-opts -f <subnet.env> -d <file> <extra>` (flannel's mk-docker-opts.sh)
/// inside host N's namespace and returns the file it wrote, parsed: `DOCKER_OPT_BIP`,
/// `DOCKER_OPT_MTU`, `DOCKER_OPT_IPMASQ` (only with FLANNEL_IPMASQ=true),
/// `DOCKER_OPT_LOG_LEVEL` (from [`EXTRA_DOCKER_OPT`]), what `extra` adds, and `DOCKER_OPTS`.
pub fn weftd_docker_opts(lab: &Lab, n: usize, extra: &[&str]) -> BTreeMap<String, String> {
    let host = lab.host(n);
    let out_file = lab.dir().join(format!("h{n}")).join("docker_opts.env");
    let bin = weftd_bin();
    // An option of the operator's own, passed on as mk-docker-opts.sh passes every DOCKER_OPT_*.
    let mut args = vec![
        "env",
        EXTRA_DOCKER_OPT,
        bin.to_str().expect("weftd path is UTF-8"),
        "docker-opts",
        "-f",
        host.subnet_file.to_str().expect("subnet file path is UTF-8"),
        "-d",
        out_file.to_str().expect("lab dir is UTF-8"),
    ];
    args.extend(extra);
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
