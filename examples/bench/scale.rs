//! Sections 3 and 3b, scale and scale6: one weftd started against K preloaded peers (IPv4-only
//! ones, or dual-stack ones with both families' entries to program), then one more lease.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::fixture::{
    dump_counts, dump_counts6, env_subnet, fake_subnets, fake_subnets6, flannel_index, keep_logs, new_lab, preload, start_weftd,
    with_etcd, FakeMaker, FakePeer, Part, PeerIndex,
};
use crate::monitor::{monitor_hosts, next_event, settle};
use crate::propagation::all_parts;
use crate::report::{cell, fmt_num, max_of, ms, pct, Report, Settings};
use crate::{BIG_NETWORK, DUAL_NETWORK, DUAL_NETWORK_V6, ENTRY_TIMEOUT, SCALE_TIMEOUT, SUBNET_ENV_TIMEOUT};
use lab::proc_status_kib as proc_status_kb;

/// What a scale section measures: IPv4-only peers (`scale`) or dual-stack ones (`scale6`).
#[derive(Clone, Copy)]
pub(crate) struct Mode {
    /// The section's name, which starts its figures and CSV files.
    name: &'static str,
    /// Dual-stack hosts and peers: both devices' entries are timed.
    pub(crate) dual: bool,
}

pub(crate) const IPV4_ONLY: Mode = Mode { name: "scale", dual: false };
pub(crate) const DUAL_STACK: Mode = Mode { name: "scale6", dual: true };

/// In dual-stack runs, how long without a new entry ends the wait: a weftd that programs no
/// IPv6 entries (one built before flannel-v6 existed) then costs this, not SCALE_TIMEOUT.
const QUIET: Duration = Duration::from_secs(10);

impl Mode {
    /// Kernel entries per peer: route, neighbour and FDB per family.
    pub(crate) fn parts(self) -> usize {
        if self.dual {
            6
        } else {
            3
        }
    }
}

struct ScaleResult {
    k: usize,
    preload_ms: f64,
    first_ms: f64,
    all_ms: Option<f64>,
    /// When each family's entries were all there (dual-stack runs).
    ipv4_all_ms: Option<f64>,
    ipv6_all_ms: Option<f64>,
    /// The IPv6 entries seen, of 3K.
    ipv6_count: usize,
    /// When the one more lease's IPv4 entries were all there (dual-stack runs).
    one_ipv4_ms: Option<f64>,
    dump6: (usize, usize, usize),
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

pub(crate) fn bench_scale(s: &Settings, report: &Report) {
    bench_scale_mode(s, report, IPV4_ONLY, &s.scale_k);
}

/// scale with K dual-stack peers (`BENCH=scale6`, K from `BENCH_SCALE6_K`).
pub(crate) fn bench_scale6(s: &Settings, report: &Report) {
    bench_scale_mode(s, report, DUAL_STACK, &s.scale6_k);
}

fn bench_scale_mode(s: &Settings, report: &Report, mode: Mode, ks: &[usize]) {
    let mut rows = Vec::new();
    let mut timeline = Vec::new();
    let mut by_k: Vec<(usize, Vec<ScaleResult>)> = Vec::new();
    for &k in ks {
        let mut runs = Vec::new();
        for repeat in 1..=s.scale_repeats {
            let r = scale_run(k, report, mode);
            let ipv6 = if mode.dual { format!("; IPv6 {} of {}", r.ipv6_count, 3 * k) } else { String::new() };
            eprintln!(
                "{} K={k} run {repeat}: all {} entries in {} ms (first after {} ms{ipv6}), VmHWM {} kB; one more lease: {} ms, {} other entries touched",
                mode.name,
                mode.parts() * k,
                fmt_num(r.all_ms.unwrap_or(f64::NAN)),
                fmt_num(r.first_ms),
                r.hwm_kb,
                fmt_num(r.one_ms.unwrap_or(f64::NAN)),
                r.one_others
            );
            rows.push(csv_row(&r, repeat, mode));
            timeline.extend(r.timeline.iter().map(|(t, c, part)| format!("{},{repeat},{t:.3},{c},{part:?}", r.k)));
            runs.push(r);
        }
        by_k.push((k, runs));
    }
    let what = if mode.dual {
        "dual-stack peers preloaded, then one dual-stack weftd spawned; ms from spawn until all 6K entries (3K on flannel.1, 3K on flannel-v6.1)"
    } else {
        "fake peers preloaded, then one weftd spawned; ms from spawn until all 3K entries"
    };
    report.note(&format!(
        "{}: K {what} were notified; {} run(s) per K: median (max), peak RSS = highest VmHWM",
        mode.name, s.scale_repeats
    ));
    for (k, runs) in &by_k {
        scale_figures(report, mode, *k, runs);
    }
    let family_columns =
        if mode.dual { ",ipv4_all_ms,ipv6_all_ms,ipv6_entries,dump6_routes,dump6_ndp,dump6_fdb,one_change_ipv4_ms" } else { "" };
    report.csv(
        &format!("{}.csv", mode.name),
        &format!("k,run,preload_ms,first_entry_ms,program_all_ms,vmhwm_kb,vmrss_kb,dump_routes,dump_arp,dump_fdb,one_change_ms,one_change_put_rpc_ms,one_change_other_entries_touched,monitor_overflows{family_columns}"),
        &rows,
    );
    report.csv(&format!("{}_timeline.csv", mode.name), "k,run,ms,entries,entry", &timeline);
}

fn csv_row(r: &ScaleResult, repeat: usize, mode: Mode) -> String {
    let mut row = format!(
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
    );
    if mode.dual {
        let (routes, ndp, fdb) = r.dump6;
        row += &format!(
            ",{},{},{},{routes},{ndp},{fdb},{}",
            cell(r.ipv4_all_ms),
            cell(r.ipv6_all_ms),
            r.ipv6_count,
            cell(r.one_ipv4_ms)
        );
    }
    row
}

fn scale_figures(report: &Report, mode: Mode, k: usize, runs: &[ScaleResult]) {
    let name = mode.name;
    let all: Vec<f64> = runs.iter().map(|r| r.all_ms.unwrap_or(f64::NAN)).collect();
    let one: Vec<f64> = runs.iter().map(|r| r.one_ms.unwrap_or(f64::NAN)).collect();
    let first: Vec<f64> = runs.iter().map(|r| r.first_ms).collect();
    let incomplete = runs.iter().filter(|r| r.all_ms.is_none() || r.one_ms.is_none()).count();
    report.figure(&format!("{name}_k{k}_program_all_ms"), pct(&all, 50.0));
    report.figure(&format!("{name}_k{k}_program_all_max_ms"), max_of(&all));
    if mode.dual {
        let family = |f: fn(&ScaleResult) -> Option<f64>| runs.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect::<Vec<_>>();
        report.figure(&format!("{name}_k{k}_program_ipv4_ms"), pct(&family(|r| r.ipv4_all_ms), 50.0));
        report.figure(&format!("{name}_k{k}_program_ipv6_ms"), pct(&family(|r| r.ipv6_all_ms), 50.0));
        let ipv6_min = runs.iter().map(|r| r.ipv6_count).min().unwrap_or(0);
        report.figure(&format!("{name}_k{k}_ipv6_entries_min_count"), ipv6_min as f64);
        report.figure(&format!("{name}_k{k}_one_change_ipv4_ms"), pct(&family(|r| r.one_ipv4_ms), 50.0));
    }
    report.figure(&format!("{name}_k{k}_first_entry_ms"), pct(&first, 50.0));
    report.figure(&format!("{name}_k{k}_peak_rss_kb"), runs.iter().map(|r| r.hwm_kb).max().unwrap_or(0) as f64);
    report.figure(
        &format!("{name}_k{k}_dump_entries_min_count"),
        runs.iter().map(|r| r.dump.0 + r.dump.1 + r.dump.2 + r.dump6.0 + r.dump6.1 + r.dump6.2).min().unwrap_or(0) as f64,
    );
    report.figure(&format!("{name}_k{k}_one_change_ms"), pct(&one, 50.0));
    report.figure(&format!("{name}_k{k}_one_change_max_ms"), max_of(&one));
    report.figure(
        &format!("{name}_k{k}_one_change_other_entries_touched_max_count"),
        runs.iter().map(|r| r.one_others).max().unwrap_or(0) as f64,
    );
    let overflows: usize = runs.iter().map(|r| r.overflows).sum();
    if overflows > 0 || incomplete > 0 {
        report.figure(&format!("{name}_k{k}_monitor_overflows_count"), overflows as f64);
        report.figure(&format!("{name}_k{k}_incomplete_runs_count"), incomplete as f64);
    }
}

/// K fake peers of the mode's kind, each IPv4 /24 from 10.1.0.0 and, dual-stack, each /64 of
/// the IPv6 Network from its second.
fn fake_peers(maker: &mut FakeMaker, mode: Mode, k: usize) -> Vec<FakePeer> {
    let v4 = fake_subnets(1, k, &HashSet::new());
    if !mode.dual {
        return v4.into_iter().map(|sn| maker.make(sn)).collect();
    }
    let v6 = fake_subnets6(DUAL_NETWORK_V6, k, &HashSet::new());
    v4.into_iter().zip(v6).map(|(sn, sn6)| maker.make_dual(sn, sn6)).collect()
}

/// Entries of the K peers as they arrive: (ms since `t0`, entries so far, which entry).
struct Arrivals {
    timeline: Vec<(f64, usize, Part)>,
    /// When each family's 3K entries were all seen.
    ipv4_all_ms: Option<f64>,
    ipv6_all_ms: Option<f64>,
    ipv6_count: usize,
}

/// Follows the monitor until every entry of `peers` is in (or the deadline, or weftd died, or,
/// dual-stack, nothing new came for QUIET).
fn wait_all(
    rx: &std::sync::mpsc::Receiver<crate::monitor::Msg>,
    peers: &[FakePeer],
    mode: Mode,
    t0: Instant,
    weftd: &mut lab::Weftd,
    overflows: &mut usize,
) -> Arrivals {
    let (k, per_peer) = (peers.len(), mode.parts());
    let index = PeerIndex::new(peers);
    let mut seen = vec![[false; 6]; k];
    let (mut counts, mut last_new) = ([0usize; 2], Instant::now());
    let mut arrivals =
        Arrivals { timeline: Vec::with_capacity(per_peer * k), ipv4_all_ms: None, ipv6_all_ms: None, ipv6_count: 0 };
    let deadline = t0 + SCALE_TIMEOUT;
    while counts[0] + counts[1] < per_peer * k {
        let Some(ev) = next_event(rx, (Instant::now() + Duration::from_secs(1)).min(deadline), overflows) else {
            let quiet = mode.dual && last_new.elapsed() >= QUIET;
            if Instant::now() >= deadline || !weftd.is_running() || quiet {
                break;
            }
            continue;
        };
        let Some((i, part)) = index.added(peers, &ev) else { continue };
        if !std::mem::replace(&mut seen[i][part as usize], true) {
            let family = usize::from(part as usize >= 3);
            counts[family] += 1;
            last_new = Instant::now();
            let t = ms(t0, ev.at);
            arrivals.timeline.push((t, counts[0] + counts[1], part));
            let done = if family == 0 { &mut arrivals.ipv4_all_ms } else { &mut arrivals.ipv6_all_ms };
            if counts[family] == 3 * k {
                *done = Some(t);
            }
        }
    }
    arrivals.ipv6_count = counts[1];
    arrivals
}

fn scale_run(k: usize, report: &Report, mode: Mode) -> ScaleResult {
    let lab = new_lab(1, if mode.dual { DUAL_NETWORK } else { BIG_NETWORK });
    let mut maker = FakeMaker::default();
    let mut peers = fake_peers(&mut maker, mode, k);
    let preload_ms = preload(&lab, &peers);
    let (monitors, rx) = monitor_hosts(&lab, &[1]);
    let mut overflows = 0;

    let t0 = Instant::now();
    let mut weftd = start_weftd(&lab, 1);
    let arrivals = wait_all(&rx, &peers, mode, t0, &mut weftd, &mut overflows);
    let count = arrivals.timeline.len();
    let all_ms = (count == mode.parts() * k).then(|| arrivals.timeline.last().map_or(f64::NAN, |x| x.0));
    if all_ms.is_none() {
        keep_logs(&lab, report, &format!("{}-k{k}", mode.name));
        eprintln!("{} K={k}: only {count} of {} entries seen", mode.name, mode.parts() * k);
    }
    let env = lab.wait_subnet_env(1, SUBNET_ENV_TIMEOUT);
    let pid = weftd.pid();
    let dump = dump_counts(&lab, 1);
    let dump6 = if mode.dual { dump_counts6(&lab, 1) } else { (0, 0, 0) };
    let devices: Vec<u32> =
        [Some(flannel_index(&lab, 1)), mode.dual.then(|| flannel6_index(&lab)).flatten()].into_iter().flatten().collect();

    // One more lease, once weftd is quiet: how long for its entries, and what else moved.
    settle(&rx, Duration::from_secs(1), Duration::from_secs(15), &mut overflows);
    let extra = extra_peer(&mut maker, mode, &peers, &env);
    let (t_put, put_rpc_ms) = with_etcd(&lab, |rt, client| {
        let t = Instant::now();
        rt.block_on(client.put(extra.key(), extra.value(), None)).expect("put one more lease");
        (t, ms(t, Instant::now()))
    });
    peers.push(extra);
    let (parts, others) = one_more(&rx, &peers[k..], mode, t_put, &devices, &mut overflows);
    let (one_ms, one_ipv4_ms) = (all_parts(&parts[..mode.parts()]), all_parts(&parts[..3]));
    let hwm_kb = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    let rss_kb = proc_status_kb(pid, "VmRSS").unwrap_or(0);
    drop(monitors);
    ScaleResult {
        k,
        preload_ms,
        first_ms: arrivals.timeline.first().map_or(f64::NAN, |x| x.0),
        all_ms,
        ipv4_all_ms: arrivals.ipv4_all_ms,
        ipv6_all_ms: arrivals.ipv6_all_ms,
        ipv6_count: arrivals.ipv6_count,
        one_ipv4_ms,
        dump6,
        hwm_kb,
        rss_kb,
        dump,
        one_ms,
        one_put_rpc_ms: put_rpc_ms,
        one_others: others,
        overflows,
        timeline: arrivals.timeline,
    }
}

/// One more fake peer of the mode's kind, on subnets neither the peers nor our host (its
/// subnet.env) have.
fn extra_peer(maker: &mut FakeMaker, mode: Mode, peers: &[FakePeer], env: &BTreeMap<String, String>) -> FakePeer {
    let taken: HashSet<Ipv4Addr> = peers.iter().map(|p| p.subnet).chain([env_subnet(env)]).collect();
    let subnet = fake_subnets(250, 1, &taken)[0];
    if !mode.dual {
        return maker.make(subnet);
    }
    let own6 = env.get("FLANNEL_IPV6_SUBNET").and_then(|s| s.parse::<ipnetwork::Ipv6Network>().ok()).map(|n| n.network());
    let taken6: HashSet<Ipv6Addr> = peers.iter().filter_map(|p| p.v6.as_ref().map(|v| v.subnet)).chain(own6).collect();
    maker.make_dual(subnet, fake_subnets6(DUAL_NETWORK_V6, 1, &taken6)[0])
}

/// flannel-v6.1's ifindex, if it exists.
fn flannel6_index(lab: &lab::Lab) -> Option<u32> {
    let link = lab::tool_json("ip", &lab.host(1).ns, &["link", "show", "dev", "flannel-v6.1"]).ok()?;
    link[0]["ifindex"].as_u64().map(|i| i as u32)
}

/// The ms from the put until each of the one new lease's entries came (in `Part` order; `None`
/// for one that never came), and how many entries of others on our devices moved meanwhile.
fn one_more(
    rx: &std::sync::mpsc::Receiver<crate::monitor::Msg>,
    one: &[FakePeer],
    mode: Mode,
    t_put: Instant,
    devices: &[u32],
    overflows: &mut usize,
) -> ([Option<f64>; 6], usize) {
    let one_index = PeerIndex::new(one);
    let mut parts = [None; 6];
    let mut others = 0;
    let mut window_end = t_put + ENTRY_TIMEOUT;
    while let Some(ev) = next_event(rx, window_end, overflows) {
        if let Some((_, part)) = one_index.added(one, &ev) {
            parts[part as usize].get_or_insert(ms(t_put, ev.at));
            if parts[..mode.parts()].iter().all(Option::is_some) {
                // Keep watching for a second more: a full re-program would still be going on.
                window_end = ev.at + Duration::from_secs(1);
            }
        } else if devices.contains(&ev.ifindex) {
            others += 1;
        }
    }
    (parts, others)
}
