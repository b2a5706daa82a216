//! Section 6, names across hosts: how soon a container started on host A is resolvable on host
//! B, how fast B's weftd answers a name from its cache, and its memory with 5,000 names
//! published cluster-wide.
//!
//! Host A runs weftd --names and a real dockerd (started from `weftd docker-opts --names`);
//! host B runs weftd --names and gets its docker0 address from a lab "container" bridge (no
//! dockerd needed: only B's DNS server is timed). Queries go from B's network namespace to
//! B's FLANNEL_SUBNET gateway, port 53, polled every millisecond.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use etcd_client::{Txn, TxnOp};
use lab::docker::{BusyboxImage, Dockerd};
use lab::docker_names::{start_dockerd_with_names, start_weftd_with_names, NAMES_DOMAIN};
use lab::{parse_cidr, proc_status_kib, Lab, Weftd};
use weft::names::skydns::{Domain, Proto, RecordId, SkyRecord};

use crate::dns_probe::{DnsProbe, Reply};
use crate::fixture::{new_lab, with_etcd};
use crate::report::{cell, ms, pct, Report, Settings};
use crate::system::enter_netns;
use crate::{SMALL_NETWORK, SUBNET_ENV_TIMEOUT, TXN_OPS, WEFTD_ENV};

const IMAGE: &str = "busybox";
/// How often B's DNS server is asked while waiting for a name to appear or go.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// A name not resolvable by then counts as missing.
const NAME_TIMEOUT: Duration = Duration::from_secs(5);
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The TTL the preloaded records carry (seconds), as a publisher would write it.
const RECORD_TTL: u32 = 30;

pub(crate) fn bench_names(s: &Settings, report: &Report) {
    let mut lab = new_lab(2, SMALL_NETWORK);
    let daemons: Vec<Weftd> = (1..=2).map(|n| start_weftd_with_names(&lab, n, &[], &WEFTD_ENV)).collect();
    for n in 1..=2 {
        lab.wait_subnet_env(n, SUBNET_ENV_TIMEOUT);
    }
    lab.attach_container(2);
    let server = SocketAddr::new(IpAddr::V4(lab.container(2).gateway), 53);
    let image = BusyboxImage::build(lab.dir());
    let (dockerd, _) = start_dockerd_with_names(&lab, 1);
    dockerd.import(&image, IMAGE);
    eprintln!("host A runs dockerd; {} containers started one by one, each polled from host B", s.names_trials);

    let ns_b = lab.host(2).ns.clone();
    let trials = in_netns(&ns_b, || start_to_answer(&dockerd, server, s.names_trials));
    report_trials(report, &trials);

    let before = |field| proc_status_kib(daemons[1].pid(), field).unwrap_or(0) as f64;
    let (rss_before, anon_before) = (before("VmRSS"), before("RssAnon"));
    let preloaded = Instant::now();
    let names = preload_names(&lab, s.names);
    let last = format!("{}.{NAMES_DOMAIN}", names.last().expect("at least one name"));
    let (loaded_ms, latencies) = in_netns(&ns_b, || {
        let mut probe = DnsProbe::new(server);
        let loaded = probe.poll_until(&last, Reply::Answer, POLL_INTERVAL, Duration::from_secs(60));
        let loaded = loaded.map(|at| ms(preloaded, at)).unwrap_or(f64::NAN);
        (loaded, cached_latencies(&mut probe, &names, s.dns_queries))
    });
    report_cached(report, s.names, loaded_ms, s.dns_queries, &latencies);
    // Every host's weftd holds the whole domain (it answers for all of it), so A's and B's alike.
    for (daemon, host) in daemons.iter().zip(["a", "b"]) {
        let rss = |field| proc_status_kib(daemon.pid(), field).unwrap_or(0) as f64;
        for (field, figure) in [("VmRSS", "rss"), ("VmHWM", "hwm"), ("RssAnon", "anon")] {
            report.figure(&format!("names_{}_host_{host}_{figure}_kb", s.names), rss(field));
        }
    }
    report.figure("names_before_preload_host_b_rss_kb", rss_before);
    report.figure("names_before_preload_host_b_anon_kb", anon_before);
}

/// Runs `f` on a thread inside network namespace `ns` (the docker CLI it runs talks to dockerd
/// over a unix socket, which any namespace reaches).
fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter_netns(ns).unwrap_or_else(|e| panic!("{e}"));
            f()
        });
        handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// One trial: ms from `docker start` being called and from it returning to B's first answer,
/// and from `docker rm -f` returning to B's first NXDOMAIN (None: not within NAME_TIMEOUT).
struct Trial {
    call_to_answer: Option<f64>,
    return_to_answer: Option<f64>,
    start_ms: f64,
    removal: Option<f64>,
}

fn start_to_answer(dockerd: &Dockerd, server: SocketAddr, trials: usize) -> Vec<Trial> {
    let mut probe = DnsProbe::new(server);
    (0..trials)
        .map(|i| {
            let name = format!("bench{i}");
            let fqdn = format!("{name}.{NAMES_DOMAIN}");
            dockerd.docker_ok(&["create", "--name", &name, "--expose", "80", IMAGE, "sleep", "900"]);
            let called = Instant::now();
            dockerd.docker_ok(&["start", &name]);
            let returned = Instant::now();
            let answered = probe.poll_until(&fqdn, Reply::Answer, POLL_INTERVAL, NAME_TIMEOUT);
            dockerd.docker_ok(&["rm", "-f", &name]);
            let removed = Instant::now();
            let gone = probe.poll_until(&fqdn, Reply::NoAnswer, POLL_INTERVAL, NAME_TIMEOUT);
            Trial {
                call_to_answer: answered.map(|at| ms(called, at)),
                return_to_answer: answered.map(|at| ms(returned, at)),
                start_ms: ms(called, returned),
                removal: gone.map(|at| ms(removed, at)),
            }
        })
        .collect()
}

fn report_trials(report: &Report, trials: &[Trial]) {
    let rows: Vec<String> = trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!("{i},{:.3},{},{},{}", t.start_ms, cell(t.call_to_answer), cell(t.return_to_answer), cell(t.removal))
        })
        .collect();
    report.csv("names_start.csv", "trial,docker_start_ms,call_to_answer_ms,return_to_answer_ms,rm_to_nxdomain_ms", &rows);
    let values = |f: fn(&Trial) -> Option<f64>| trials.iter().filter_map(f).collect::<Vec<f64>>();
    let missing = trials.iter().filter(|t| t.return_to_answer.is_none()).count();
    report.note(&format!(
        "names: {} containers started on host A (docker create, then docker start), host B's DNS asked every {} ms",
        trials.len(),
        POLL_INTERVAL.as_millis()
    ));
    for (name, series) in [
        ("names_start_return_to_answer", values(|t| t.return_to_answer)),
        ("names_start_call_to_answer", values(|t| t.call_to_answer)),
        ("names_docker_start", trials.iter().map(|t| t.start_ms).collect()),
        ("names_rm_return_to_nxdomain", values(|t| t.removal)),
    ] {
        report.figure(&format!("{name}_p50_ms"), pct(&series, 50.0));
        report.figure(&format!("{name}_p99_ms"), pct(&series, 99.0));
    }
    report.figure("names_start_missing_count", missing as f64);
}

/// Writes `count` names in the SkyDNS layout, as publishers on other hosts would (an address
/// record and a port record each, addresses in the network), without an etcd lease; the names.
fn preload_names(lab: &Lab, count: usize) -> Vec<String> {
    let domain: Domain = NAMES_DOMAIN.parse().expect("the default domain is valid");
    let (base, _) = parse_cidr("10.5.0.0/16");
    let mut ops = Vec::with_capacity(2 * count);
    let names: Vec<String> = (0..count).map(|i| format!("svc{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let host = IpAddr::V4(Ipv4Addr::from(u32::from(base) + 0x100 * (200 + i as u32 / 250) + 2 + i as u32 % 250));
        let container = format!("{i:012x}");
        for port in [None, Some((80, Proto::Tcp))] {
            let record = SkyRecord { host, port: port.map(|(p, _)| p), ttl: RECORD_TTL };
            let key = domain.record_key(name, &RecordId::ipv4(&container, port));
            ops.push(TxnOp::put(key, serde_json::to_string(&record).expect("a record is JSON"), None));
        }
    }
    let put_ms = with_etcd(lab, |rt, client| {
        let started = Instant::now();
        for chunk in ops.chunks(TXN_OPS) {
            rt.block_on(client.txn(Txn::new().and_then(chunk.to_vec()))).unwrap_or_else(|e| panic!("preload names: {e}"));
        }
        ms(started, Instant::now())
    });
    eprintln!("{count} names ({} keys) written in {put_ms:.0} ms", ops.len());
    names
}

/// Round trips (ms) of `queries` A queries for names of the cache, in turn.
fn cached_latencies(probe: &mut DnsProbe, names: &[String], queries: usize) -> Vec<f64> {
    (0..queries)
        .filter_map(|i| {
            let fqdn = format!("{}.{NAMES_DOMAIN}", names[i % names.len()]);
            match probe.query(&fqdn, QUERY_TIMEOUT) {
                (Some(Reply::Answer), took) => Some(took.as_secs_f64() * 1e3),
                _ => None,
            }
        })
        .collect()
}

fn report_cached(report: &Report, count: usize, loaded_ms: f64, queries: usize, latencies: &[f64]) {
    report.note(&format!(
        "names: {count} names preloaded (2 records each); host B's DNS then asked {queries} times for them in turn"
    ));
    report.figure("names_cached_unanswered_count", (queries - latencies.len()) as f64);
    report.figure(&format!("names_{count}_preload_start_to_last_answer_ms"), loaded_ms);
    report.figure("names_cached_answer_p50_ms", pct(latencies, 50.0));
    report.figure("names_cached_answer_p99_ms", pct(latencies, 99.0));
    report.figure("names_cached_answer_max_ms", latencies.iter().copied().fold(f64::NAN, f64::max));
}
