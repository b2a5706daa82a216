//! Pings: one-shot from a host or container, and background runs that count what got lost.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::netns::netns_exec;
use crate::process::{kill_and_reap, lock, output, signal, tail, wait_child, SharedChild};
use crate::{Lab, TERMINATE_TIMEOUT};

impl Lab {
    /// Pings `dst` every `interval` from host N's container until `PingRun::finish`.
    pub fn start_ping(&self, from_container: usize, dst: Ipv4Addr, interval: Duration) -> PingRun {
        let ns = self.container(from_container).ns.clone();
        self.spawn_ping(&ns, dst, interval)
    }

    /// Pings `dst` every `interval` from host N's namespace until `PingRun::finish`.
    pub fn start_host_ping(&self, n: usize, dst: Ipv4Addr, interval: Duration) -> PingRun {
        let ns = self.host(n).ns.clone();
        self.spawn_ping(&ns, dst, interval)
    }

    /// `ping -i <interval> -W 1 <dst>` in `ns`, output to `<dir>/pingK.out` (not `.log`, so
    /// `dump_logs` leaves the reply lines out).
    pub(crate) fn spawn_ping(&self, ns: &str, dst: Ipv4Addr, interval: Duration) -> PingRun {
        let k = self.pings.fetch_add(1, Ordering::Relaxed);
        let out_name = format!("ping{k}.out");
        let interval = format!("{}", interval.as_secs_f64());
        let dst_text = dst.to_string();
        let cmd = netns_exec(ns, &["ping", "-n", "-i", &interval, "-W", "1", &dst_text]);
        let child = self.spawn_logged(cmd, &out_name, false);
        PingRun { what: format!("ping from {ns} to {dst}"), child, out_path: self.dir.join(out_name) }
    }
}

/// One ping (1 s timeout) from namespace `ns`.
pub(crate) fn ping_from(ns: &str, dst: impl Into<std::net::IpAddr>) -> bool {
    let dst = dst.into().to_string();
    output(&mut netns_exec(ns, &["ping", "-n", "-q", "-c1", "-W1", &dst])).status.success()
}

/// A ping running in the background (`Lab::start_ping`); killed on Drop.
pub struct PingRun {
    what: String,
    child: SharedChild,
    out_path: PathBuf,
}

/// What a `PingRun` counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests that had their chance: ping's "transmitted", less the last one if it was
    /// still unanswered when ping was stopped (it may just have been in flight).
    pub sent: u64,
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
}

impl PingRun {
    /// Stops ping with SIGINT (so it prints its summary) and returns the counts; panics if
    /// ping had already died (e.g. "Network is unreachable" at start) or printed no summary.
    pub fn finish(self) -> PingStats {
        {
            let mut child = lock(&self.child);
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited early ({status}):\n{}", self.what, self.output());
            }
            signal(&mut child, "INT");
        }
        let status = wait_child(&self.child, TERMINATE_TIMEOUT).unwrap_or_else(|| panic!("{} ignored SIGINT", self.what));
        let text = self.output();
        parse_ping_output(&text).unwrap_or_else(|| panic!("{} ({status}) printed no summary:\n{}", self.what, tail(&text, 20)))
    }

    /// Everything ping printed so far.
    pub fn output(&self) -> String {
        fs::read(&self.out_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

impl Drop for PingRun {
    fn drop(&mut self) {
        kill_and_reap(&mut lock(&self.child));
    }
}

/// Reads iputils ping's "N packets transmitted, M received" and its reply lines.
fn parse_ping_output(text: &str) -> Option<PingStats> {
    let summary = text.lines().find(|l| l.contains(" packets transmitted, "))?;
    let count_before = |word: &str| -> Option<u64> {
        let head = &summary[..summary.find(word)?];
        head.rsplit([' ', ',']).find(|w| !w.is_empty())?.parse().ok()
    };
    let transmitted = count_before(" packets transmitted")?;
    let received = count_before(" received")?;
    // Sequence numbers start at 1, so the last request sent is number `transmitted`.
    let last = format!("icmp_seq={transmitted} ");
    let last_answered = text.lines().any(|l| l.contains(" bytes from ") && l.contains(&last) && !l.contains("DUP!"));
    let sent = if last_answered || transmitted == 0 { transmitted } else { transmitted - 1 };
    Some(PingStats { sent, received, lost: sent.saturating_sub(received) })
}
