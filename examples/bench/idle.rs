//! Section 4, idle cost: CPU, wakeups and kernel events of a converged weftd left alone.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::fixture::{fake_subnets, flannel_index, new_lab, preload, start_weftd, FakeMaker, FakePeer, PeerIndex};
use crate::monitor::{monitor_hosts, next_event, settle};
use crate::report::{Report, Settings};
use crate::system::thread_totals;
use crate::{BIG_NETWORK, SUBNET_ENV_TIMEOUT};
use lab::proc_status_kib as proc_status_kb;

pub(crate) fn bench_idle(s: &Settings, report: &Report) {
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
    lab.wait_subnet_env(1, SUBNET_ENV_TIMEOUT);
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
        1000 / lab::clock_ticks_per_second()
    ));
    report.figure("idle_cpu_ms", cpu_ms);
    report.figure("idle_cpu_schedstat_ms", sched_ms);
    report.figure("idle_cpu_pct", cpu_ms / (secs * 1e3) * 100.0);
    report.figure("idle_wakeups_count", wakeups as f64);
    report.figure("idle_wakeups_per_s", wakeups as f64 / secs);
    report.figure("idle_kernel_events_count", kernel_events as f64);
    report.figure("idle_rss_kb", proc_status_kb(pid, "VmRSS").unwrap_or(0) as f64);
}
