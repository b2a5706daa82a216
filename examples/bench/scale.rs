//! Section 3, scale: one weftd started against K preloaded peers, then one more lease.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::fixture::{
    dump_counts, env_subnet, fake_subnets, flannel_index, keep_logs, new_lab, preload, start_weftd, with_etcd, FakeMaker,
    FakePeer, Part, PeerIndex,
};
use crate::monitor::{monitor_hosts, next_event, settle};
use crate::propagation::all_three;
use crate::report::{cell, fmt_num, max_of, ms, pct, Report, Settings};
use crate::{BIG_NETWORK, ENTRY_TIMEOUT, SCALE_TIMEOUT, SUBNET_ENV_TIMEOUT};
use lab::proc_status_kib as proc_status_kb;

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

pub(crate) fn bench_scale(s: &Settings, report: &Report) {
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
    lab.wait_subnet_env(1, SUBNET_ENV_TIMEOUT);
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
