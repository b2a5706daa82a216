//! Sections 2 and 2b, propagation latency: from an etcd put (and delete) to the kernel entries
//! on every host, for IPv4-only peers (`propagation`) and dual-stack ones (`propagation6`).

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use etcd_client::PutOptions;

use crate::fixture::{
    dump_counts, dump_counts6, env_subnet, fake_subnets, fake_subnets6, new_lab, with_etcd, FakeMaker, FakePeer, Part, PeerIndex,
};
use crate::monitor::{drain, monitor_hosts, next_event, Ev, Msg};
use crate::report::{cell, max_of, ms, pct, Report, Settings};
use crate::scale::{Mode, DUAL_STACK, IPV4_ONLY};
use crate::{BIG_NETWORK, DUAL_NETWORK, DUAL_NETWORK_V6, ENTRY_TIMEOUT, SUBNET_ENV_TIMEOUT, WEFTD_ENV};
use lab::{poll, Lab, Weftd};

/// Where each host's weftd serves /metrics (inside its own namespace).
const METRICS_PORT: u16 = 9400;

/// Per put: (etcd put RPC ms, per host the ms each entry was added, per host delete-all ms).
type PutSample = (f64, Vec<Vec<Option<f64>>>, Vec<Option<f64>>);

/// propagation (`BENCH=propagation`): IPv4-only hosts, each put adds a route, ARP and FDB
/// entry on flannel.1 of every host.
pub(crate) fn bench_propagation(s: &Settings, report: &Report) {
    bench_propagation_mode(s, report, IPV4_ONLY);
}

/// propagation with dual-stack hosts and peer leases (`BENCH=propagation6`): each put adds a
/// route, neighbour and FDB entry on flannel.1 and on flannel-v6.1 of every host.
pub(crate) fn bench_propagation6(s: &Settings, report: &Report) {
    bench_propagation_mode(s, report, DUAL_STACK);
}

fn bench_propagation_mode(s: &Settings, report: &Report, mode: Mode) {
    let n = s.hosts;
    let lab = new_lab(n, if mode.dual { DUAL_NETWORK } else { BIG_NETWORK });
    let metrics = ["--metrics-port", &METRICS_PORT.to_string()].map(String::from);
    let metrics = metrics.each_ref().map(String::as_str);
    let _daemons: Vec<Weftd> = (1..=n).map(|h| lab.start_weftd_env(h, &metrics, &WEFTD_ENV)).collect();
    let peers = converge(&lab, n, mode, s.puts);
    let hosts: Vec<usize> = (1..=n).collect();
    let passes_before = settled_passes(&lab, n);
    let (monitors, mut rx) = monitor_hosts(&lab, &hosts);
    eprintln!("{n} hosts converged; {} puts of a new peer lease follow", peers.len());
    let mut overflows = 0;
    let samples = put_and_delete(&lab, n, &peers, &mut rx, mode, &mut overflows);
    drop(monitors);
    let passes = settled_passes(&lab, n) - passes_before;
    propagation_figures(report, mode, &samples, n, passes, overflows);
}

/// Waits until every host has its subnet file and its n - 1 peers programmed (both devices,
/// dual-stack); returns `puts` fake peers of the mode's kind on subnets no host holds.
fn converge(lab: &Lab, n: usize, mode: Mode, puts: usize) -> Vec<FakePeer> {
    let (mut taken, mut taken6) = (HashSet::new(), HashSet::new());
    for h in 1..=n {
        let env = lab.wait_subnet_env(h, SUBNET_ENV_TIMEOUT);
        taken.insert(env_subnet(&env));
        if let Some(subnet6) = env.get("FLANNEL_IPV6_SUBNET") {
            // `fd00:6:0:12::1/64` -> fd00:6:0:12:: (the /64's network address).
            let address: Ipv6Addr = subnet6.split('/').next().and_then(|a| a.parse().ok()).expect("an IPv6 subnet");
            taken6.insert(Ipv6Addr::from(u128::from(address) & !((1u128 << 64) - 1)));
        }
    }
    let want = (n - 1, n - 1, n - 1);
    // flannel-v6.1 also routes its own address and fe80::/64: peers' routes come on top.
    let ipv6_done = |(routes, ndp, fdb): (usize, usize, usize)| routes >= n - 1 && (ndp, fdb) == (n - 1, n - 1);
    for h in 1..=n {
        poll(&format!("host {h} to program its {} peers", n - 1), Duration::from_secs(30), || {
            (dump_counts(lab, h) == want && (!mode.dual || ipv6_done(dump_counts6(lab, h)))).then_some(())
        });
    }
    let mut maker = FakeMaker::default();
    let v4 = fake_subnets(200, puts, &taken);
    if !mode.dual {
        return v4.into_iter().map(|sn| maker.make(sn)).collect();
    }
    let v6 = fake_subnets6(DUAL_NETWORK_V6, puts, &taken6);
    v4.into_iter().zip(v6).map(|(sn, sn6)| maker.make_dual(sn, sn6)).collect()
}

/// Puts each peer's lease, waits for its entries on every host, deletes it, waits for them to
/// go; one sample per put.
fn put_and_delete(
    lab: &Lab,
    n: usize,
    peers: &[FakePeer],
    rx: &mut Receiver<Msg>,
    mode: Mode,
    overflows: &mut usize,
) -> Vec<PutSample> {
    with_etcd(lab, |rt, client| {
        let lease = rt.block_on(client.lease_grant(3600, None)).expect("lease grant").id();
        let mut out = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let one = std::slice::from_ref(peer);
            let index = PeerIndex::new(one);
            drain(rx);
            let t_put = Instant::now();
            rt.block_on(client.put(peer.key(), peer.value(), Some(PutOptions::new().with_lease(lease))))
                .unwrap_or_else(|e| panic!("put {}: {e}", peer.key()));
            let put_ms = ms(t_put, Instant::now());
            let added = wait_parts(rx, n, mode.parts(), t_put, |ev| index.added(one, ev).map(|(_, p)| p), overflows);
            let t_del = Instant::now();
            rt.block_on(client.delete(peer.key(), None)).unwrap_or_else(|e| panic!("delete {}: {e}", peer.key()));
            let removed = wait_parts(rx, n, mode.parts(), t_del, |ev| index.removed(ev).map(|(_, p)| p), overflows);
            let removed_all: Vec<Option<f64>> = removed.iter().map(|p| all_parts(p)).collect();
            if (i + 1) % 50 == 0 {
                eprintln!("  {} puts done", i + 1);
            }
            out.push((put_ms, added, removed_all));
        }
        let _ = rt.block_on(client.lease_revoke(lease));
        out
    })
}

fn propagation_figures(report: &Report, mode: Mode, samples: &[PutSample], n: usize, passes: f64, overflows: usize) {
    let name = if mode.dual { "propagation6" } else { "propagation" };
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
            let cells: Vec<String> = parts.iter().map(|p| cell(*p)).collect();
            rows.push(format!("{},{},{},{},{},{put_ms:.3}", i + 1, h + 1, cells.join(","), cell(a), cell(removed[h])));
        }
    }
    let part_columns = if mode.dual { "route_ms,arp_ms,fdb_ms,route6_ms,ndp_ms,fdb6_ms" } else { "route_ms,arp_ms,fdb_ms" };
    report.csv(&format!("{name}.csv"), &format!("put,host,{part_columns},all_ms,delete_all_ms,etcd_put_rpc_ms"), &rows);
    let entries = if mode.dual {
        "route+ARP+FDB on flannel.1 and route+neighbour+FDB on flannel-v6.1"
    } else {
        "route+ARP+FDB on flannel.1"
    };
    report.note(&format!(
        "{name}: {} puts x {n} hosts = {} samples; ms from the etcd put to the last of {entries} (netlink monitor)",
        samples.len(),
        samples.len() * n
    ));
    report.figure(&format!("{name}_p50_ms"), pct(&all, 50.0));
    report.figure(&format!("{name}_p99_ms"), pct(&all, 99.0));
    report.figure(&format!("{name}_max_ms"), max_of(&all));
    report.figure(&format!("{name}_route_p50_ms"), pct(&route, 50.0));
    report.figure(&format!("{name}_route_p99_ms"), pct(&route, 99.0));
    report.figure(&format!("{name}_delete_p50_ms"), pct(&del, 50.0));
    report.figure(&format!("{name}_delete_p99_ms"), pct(&del, 99.0));
    report.figure(&format!("{name}_etcd_put_rpc_p50_ms"), pct(&puts, 50.0));
    report.figure(&format!("{name}_missing_samples_count"), missing as f64);
    // Each put and each delete is one lease change for every host.
    report.figure(&format!("{name}_passes_per_change_count"), passes / (2 * samples.len() * n) as f64);
    report.figure(&format!("{name}_monitor_overflows_count"), overflows as f64);
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

/// Collects, per host, the first time each of `parts` entries was seen (ms after `since`),
/// until every host has all of them or ENTRY_TIMEOUT passes.
fn wait_parts(
    rx: &mut Receiver<Msg>,
    hosts: usize,
    parts: usize,
    since: Instant,
    mut part_of: impl FnMut(&Ev) -> Option<Part>,
    overflows: &mut usize,
) -> Vec<Vec<Option<f64>>> {
    let mut seen = vec![vec![None; parts]; hosts];
    let mut missing = hosts * parts;
    let deadline = since + ENTRY_TIMEOUT;
    while missing > 0 {
        let Some(ev) = next_event(rx, deadline, overflows) else { break };
        if let Some(part) = part_of(&ev).filter(|p| (*p as usize) < parts) {
            let slot = &mut seen[ev.host - 1][part as usize];
            if slot.is_none() {
                *slot = Some(ms(since, ev.at));
                missing -= 1;
            }
        }
    }
    seen
}
