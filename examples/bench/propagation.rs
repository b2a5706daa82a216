//! Section 2, propagation latency: from an etcd put (and delete) to the kernel entries on every host.

use std::collections::HashSet;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use etcd_client::PutOptions;

use crate::fixture::{dump_counts, env_subnet, fake_subnets, new_lab, with_etcd, FakeMaker, FakePeer, Part, PeerIndex};
use crate::monitor::{drain, monitor_hosts, next_event, Ev, Msg};
use crate::report::{cell, max_of, ms, pct, Report, Settings};
use crate::{BIG_NETWORK, ENTRY_TIMEOUT, SUBNET_ENV_TIMEOUT, WEFTD_ENV};
use lab::{poll, Lab, Weftd};

/// Where each host's weftd serves /metrics (inside its own namespace).
const METRICS_PORT: u16 = 9400;

pub(crate) fn bench_propagation(s: &Settings, report: &Report) {
    let n = s.hosts;
    let lab = new_lab(n, BIG_NETWORK);
    let metrics = ["--metrics-port", &METRICS_PORT.to_string()].map(String::from);
    let metrics = metrics.each_ref().map(String::as_str);
    let _daemons: Vec<Weftd> = (1..=n).map(|h| lab.start_weftd_env(h, &metrics, &WEFTD_ENV)).collect();
    let mut taken = HashSet::new();
    for h in 1..=n {
        taken.insert(env_subnet(&lab.wait_subnet_env(h, SUBNET_ENV_TIMEOUT)));
    }
    for h in 1..=n {
        poll(&format!("host {h} to program its {} peers", n - 1), Duration::from_secs(30), || {
            (dump_counts(&lab, h) == (n - 1, n - 1, n - 1)).then_some(())
        });
    }
    let mut maker = FakeMaker::default();
    let peers: Vec<FakePeer> = fake_subnets(200, s.puts, &taken).into_iter().map(|sn| maker.make(sn)).collect();
    let hosts: Vec<usize> = (1..=n).collect();
    let passes_before = settled_passes(&lab, n);
    let (monitors, mut rx) = monitor_hosts(&lab, &hosts);
    eprintln!("{n} hosts converged; {} puts of a new peer lease follow", peers.len());

    /// Per put: (etcd put RPC ms, per host [route, arp, fdb] add ms, per host delete-all ms).
    type PutSample = (f64, Vec<[Option<f64>; 3]>, Vec<Option<f64>>);
    let mut overflows = 0;
    let samples: Vec<PutSample> = with_etcd(&lab, |rt, client| {
        let lease = rt.block_on(client.lease_grant(3600, None)).expect("lease grant").id();
        let mut out = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let one = std::slice::from_ref(peer);
            let index = PeerIndex::new(one);
            drain(&rx);
            let t_put = Instant::now();
            rt.block_on(client.put(peer.key(), peer.value(), Some(PutOptions::new().with_lease(lease))))
                .unwrap_or_else(|e| panic!("put {}: {e}", peer.key()));
            let put_ms = ms(t_put, Instant::now());
            let added = wait_parts(&mut rx, n, t_put, |ev| index.added(one, ev).map(|(_, p)| p), &mut overflows);
            let t_del = Instant::now();
            rt.block_on(client.delete(peer.key(), None)).unwrap_or_else(|e| panic!("delete {}: {e}", peer.key()));
            let removed = wait_parts(&mut rx, n, t_del, |ev| index.removed(ev).map(|(_, p)| p), &mut overflows);
            let removed_all: Vec<Option<f64>> = removed.iter().map(|p| all_parts(p)).collect();
            if (i + 1) % 50 == 0 {
                eprintln!("  {} puts done", i + 1);
            }
            out.push((put_ms, added, removed_all));
        }
        let _ = rt.block_on(client.lease_revoke(lease));
        out
    });
    drop(monitors);
    let passes = settled_passes(&lab, n) - passes_before;

    let mut rows = Vec::new();
    let (mut all, mut route, mut del, mut puts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for (i, (put_ms, added, removed)) in samples.iter().enumerate() {
        puts.push(*put_ms);
        for (h, parts) in added.iter().enumerate() {
            let a = all_parts(parts);
            match a {
                Some(v) => all.push(v),
                None => missing += 1,
            }
            route.extend(parts[Part::Route as usize]);
            del.extend(removed[h]);
            rows.push(format!(
                "{},{},{},{},{},{},{},{:.3}",
                i + 1,
                h + 1,
                cell(parts[0]),
                cell(parts[1]),
                cell(parts[2]),
                cell(a),
                cell(removed[h]),
                put_ms
            ));
        }
    }
    report.csv("propagation.csv", "put,host,route_ms,arp_ms,fdb_ms,all_ms,delete_all_ms,etcd_put_rpc_ms", &rows);
    report.note(&format!(
        "propagation: {} puts x {n} hosts = {} samples; ms from the etcd put to the last of route+ARP+FDB on flannel.1 (netlink monitor)",
        samples.len(),
        samples.len() * n
    ));
    report.figure("propagation_p50_ms", pct(&all, 50.0));
    report.figure("propagation_p99_ms", pct(&all, 99.0));
    report.figure("propagation_max_ms", max_of(&all));
    report.figure("propagation_route_p50_ms", pct(&route, 50.0));
    report.figure("propagation_route_p99_ms", pct(&route, 99.0));
    report.figure("propagation_delete_p50_ms", pct(&del, 50.0));
    report.figure("propagation_delete_p99_ms", pct(&del, 99.0));
    report.figure("propagation_etcd_put_rpc_p50_ms", pct(&puts, 50.0));
    report.figure("propagation_missing_samples_count", missing as f64);
    // Each put and each delete is one lease change for every host.
    report.figure("propagation_passes_per_change_count", passes / (2 * samples.len() * n) as f64);
    report.figure("propagation_monitor_overflows_count", overflows as f64);
}

/// The reconcile passes all hosts' weftd have made, once no pass has been added for 300 ms.
fn settled_passes(lab: &Lab, n: usize) -> f64 {
    let total = || -> Option<f64> {
        (1..=n)
            .map(|h| {
                let (_, body) = lab::http::get(lab.host(h), METRICS_PORT, "/metrics")?;
                let line = body.lines().find(|l| l.starts_with("weft_reconcile_runs_total "))?;
                line.rsplit_once(' ')?.1.parse::<f64>().ok()
            })
            .sum()
    };
    poll("the reconcile pass counts to settle", Duration::from_secs(10), || {
        let before = total()?;
        std::thread::sleep(Duration::from_millis(300));
        (total()? == before).then_some(before)
    })
}

/// The last of the entries, if all of them came.
pub(crate) fn all_parts(parts: &[Option<f64>]) -> Option<f64> {
    parts.iter().try_fold(f64::NEG_INFINITY, |last, part| Some(last.max((*part)?)))
}

/// Collects, per host, the first time each part was seen (ms after `since`), until every host
/// has all three or ENTRY_TIMEOUT passes.
fn wait_parts(
    rx: &mut Receiver<Msg>,
    hosts: usize,
    since: Instant,
    mut part_of: impl FnMut(&Ev) -> Option<Part>,
    overflows: &mut usize,
) -> Vec<[Option<f64>; 3]> {
    let mut seen = vec![[None; 3]; hosts];
    let mut missing = hosts * 3;
    let deadline = since + ENTRY_TIMEOUT;
    while missing > 0 {
        let Some(ev) = next_event(rx, deadline, overflows) else { break };
        if let Some(part) = part_of(&ev) {
            let slot = &mut seen[ev.host - 1][part as usize];
            if slot.is_none() {
                *slot = Some(ms(since, ev.at));
                missing -= 1;
            }
        }
    }
    seen
}
