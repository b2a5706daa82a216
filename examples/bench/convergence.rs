//! Section 1, convergence: hosts started together until every container pair answers.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};
use nix::sys::time::TimeVal;

use crate::fixture::{keep_logs, new_lab, start_weftd};
use crate::report::{cell, fmt_num, lock, max_of, ms, pct, Report, Settings};
use crate::system::{enter_netns, ip_batch, LocalNetns};
use crate::{PAIR_TIMEOUT, SMALL_NETWORK, SUBNET_ENV_TIMEOUT};
use lab::{nth_address, parse_cidr, poll_for, Lab, Weftd};

struct TrialResult {
    t_spawn: Instant,
    /// ms between the first and the last daemon spawn.
    spawn_spread_ms: f64,
    env_at: Vec<Option<Instant>>,
    cfg_at: Vec<Option<Instant>>,
    /// (from, to, answered at)
    pairs: Vec<(usize, usize, Option<Instant>)>,
}

pub(crate) fn bench_convergence(s: &Settings, report: &Report) {
    let n = s.hosts;
    let mut trial_rows = Vec::new();
    let mut pair_rows = Vec::new();
    let (mut all_pairs, mut after_env, mut last_env, mut cfg_lag) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut after_ready = Vec::new();
    let (mut broken_total, mut broken_max, mut broken_trials) = (0usize, 0usize, 0usize);
    for trial in 1..=s.trials {
        let started = Instant::now();
        let (r, lab_id) = convergence_trial(n, trial, report);
        assert!(
            r.env_at.iter().any(Option::is_some),
            "trial {trial}: no host wrote subnet.env within {SUBNET_ENV_TIMEOUT:?}; not repeating that {} more times",
            s.trials - trial
        );
        let t0 = r.t_spawn;
        let envs: Vec<f64> = r.env_at.iter().flatten().map(|&t| ms(t0, t)).collect();
        let last_env_at = r.env_at.iter().flatten().max().copied();
        let broken = r.pairs.iter().filter(|p| p.2.is_none()).count();
        let last_pair = r.pairs.iter().filter_map(|p| p.2).max();
        let done = (broken == 0).then_some(last_pair).flatten();
        let all_ms = done.map(|t| ms(t0, t));
        let after_ms = done.zip(last_env_at).map(|(d, e)| ms(e, d));
        let last_env_ms = if envs.len() == n { max_of(&envs) } else { f64::NAN };
        // Per pair: from the moment both of its containers had addresses to the first reply.
        let ready_lags: Vec<f64> =
            r.pairs.iter().filter_map(|&(from, to, at)| Some(ms(r.cfg_at[from - 1]?.max(r.cfg_at[to - 1]?), at?))).collect();
        let ready_ms = (broken == 0).then(|| max_of(&ready_lags));
        for (e, c) in r.env_at.iter().zip(&r.cfg_at) {
            if let (Some(e), Some(c)) = (e, c) {
                cfg_lag.push(ms(*e, *c));
            }
        }
        for (from, to, at) in &r.pairs {
            pair_rows.push(format!("{trial},{from},{to},{}", cell(at.map(|t| ms(t0, t)))));
        }
        trial_rows.push(format!(
            "{trial},{},{},{},{},{broken},{:.3},{}",
            cell(all_ms),
            cell((!last_env_ms.is_nan()).then_some(last_env_ms)),
            cell(after_ms),
            cell(ready_ms),
            r.spawn_spread_ms,
            r.env_at.iter().map(|t| cell(t.map(|t| ms(t0, t)))).collect::<Vec<_>>().join(";")
        ));
        eprintln!(
            "trial {trial:2} (lab {lab_id}): last subnet.env {} ms, all {} pairs {} ms ({} ms after the last subnet.env), {broken} broken [trial took {:.1} s]",
            fmt_num(last_env_ms),
            r.pairs.len(),
            fmt_num(all_ms.unwrap_or(f64::NAN)),
            fmt_num(after_ms.unwrap_or(f64::NAN)),
            started.elapsed().as_secs_f64()
        );
        all_pairs.extend(all_ms);
        after_env.extend(after_ms);
        after_ready.extend(ready_ms);
        last_env.push(last_env_ms);
        broken_total += broken;
        broken_max = broken_max.max(broken);
        broken_trials += usize::from(broken > 0);
    }
    report.csv(
        "convergence.csv",
        "trial,all_pairs_ms,last_subnet_env_ms,after_last_subnet_env_ms,after_containers_ready_max_ms,broken_pairs,spawn_spread_ms,subnet_env_ms_per_host",
        &trial_rows,
    );
    report.csv("convergence_pairs.csv", "trial,from_host,to_host,first_reply_ms", &pair_rows);
    report.note(&format!(
        "convergence: {n} hosts started together, {} trials, {} directed container pairs each; pairs not answering within {}s count as broken\n\
         times from the first daemon spawn; container_setup = subnet.env seen -> container addressed (ip -batch); after_containers_ready = per trial, the slowest pair's first reply after both its containers had addresses",
        s.trials,
        n * (n - 1),
        PAIR_TIMEOUT.as_secs()
    ));
    report.figure("convergence_all_pairs_p50_ms", pct(&all_pairs, 50.0));
    report.figure("convergence_all_pairs_max_ms", max_of(&all_pairs));
    report.figure("convergence_last_subnet_env_p50_ms", pct(&last_env, 50.0));
    report.figure("convergence_after_last_subnet_env_p50_ms", pct(&after_env, 50.0));
    report.figure("convergence_after_last_subnet_env_max_ms", max_of(&after_env));
    report.figure("convergence_container_setup_p50_ms", pct(&cfg_lag, 50.0));
    report.figure("convergence_after_containers_ready_p50_ms", pct(&after_ready, 50.0));
    report.figure("convergence_after_containers_ready_max_ms", max_of(&after_ready));
    report.figure("convergence_broken_pairs_total_count", broken_total as f64);
    report.figure("convergence_broken_pairs_max_per_trial_count", broken_max as f64);
    report.figure("convergence_trials_with_broken_pairs_count", broken_trials as f64);
}

/// One trial in a fresh lab: containers are wired before the daemons start (so link set-up,
/// which can take a second of the kernel's linkwatch, is not timed), the daemons are released
/// together, each container gets its address as soon as its host's subnet.env appears, and
/// every ordered pair then pings (in-process ICMP every 10 ms) until the first reply.
fn convergence_trial(n: usize, trial: usize, report: &Report) -> (TrialResult, String) {
    let lab = new_lab(n, SMALL_NETWORK);
    let mut containers = LocalNetns::default();
    for h in 1..=n {
        prewire_container(&lab, &mut containers, h);
    }
    for h in 1..=n {
        wait_prewired(&lab, h);
    }

    // Per host: None = pending, Some(Some(ip)) = configured, Some(None) = gave up.
    let ready: Mutex<Vec<Option<Option<Ipv4Addr>>>> = Mutex::new(vec![None; n + 1]);
    let ready_cv = Condvar::new();
    let barrier = Barrier::new(n);
    let spawn_at: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let env_at: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; n + 1]);
    let cfg_at: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; n + 1]);
    let lab_ref = &lab;

    let (pairs, _daemons) = thread::scope(|sc| {
        let hosts: Vec<_> = (1..=n)
            .map(|h| {
                let (ready, ready_cv, barrier, spawn_at, env_at, cfg_at) =
                    (&ready, &ready_cv, &barrier, &spawn_at, &env_at, &cfg_at);
                sc.spawn(move || {
                    barrier.wait();
                    lock(spawn_at).push(Instant::now());
                    // Caught so the pair threads waiting for this host are always released.
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                        let daemon = start_weftd(lab_ref, h);
                        let ip = wait_env_fast(lab_ref, h).map(|env| {
                            lock(env_at)[h] = Some(Instant::now());
                            let ip = configure_container(lab_ref, h, &env);
                            lock(cfg_at)[h] = Some(Instant::now());
                            ip
                        });
                        (daemon, ip)
                    }));
                    lock(ready)[h] = Some(outcome.as_ref().ok().and_then(|(_, ip)| *ip));
                    ready_cv.notify_all();
                    match outcome {
                        Ok((daemon, _)) => daemon,
                        Err(e) => panic::resume_unwind(e),
                    }
                })
            })
            .collect();
        let pair_threads: Vec<_> = (1..=n)
            .flat_map(|from| (1..=n).filter(move |&to| to != from).map(move |to| (from, to)))
            .enumerate()
            .map(|(k, (from, to))| {
                let (ready, ready_cv) = (&ready, &ready_cv);
                let ns = format!("{}c{from}", lab_ref.id());
                let id = ((trial as u16) << 7) ^ (k as u16) ^ 0x5700;
                sc.spawn(move || {
                    let dst = {
                        let mut r = lock(ready);
                        while r[from].is_none() || r[to].is_none() {
                            r = ready_cv.wait(r).unwrap_or_else(|e| e.into_inner());
                        }
                        r[from].flatten().and(r[to].flatten())
                    };
                    let at = dst.and_then(|dst| icmp_first_reply(&ns, dst, id, PAIR_TIMEOUT));
                    (from, to, at)
                })
            })
            .collect();
        let pairs: Vec<_> = pair_threads.into_iter().map(|t| t.join().unwrap_or_else(|e| panic::resume_unwind(e))).collect();
        let daemons: Vec<Weftd> = hosts.into_iter().map(|t| t.join().unwrap_or_else(|e| panic::resume_unwind(e))).collect();
        (pairs, daemons)
    });
    let spawned = lock(&spawn_at).clone();
    let first_spawn = *spawned.iter().min().expect("daemons were started");
    let result = TrialResult {
        t_spawn: first_spawn,
        spawn_spread_ms: ms(first_spawn, *spawned.iter().max().expect("daemons were started")),
        env_at: lock(&env_at)[1..].to_vec(),
        cfg_at: lock(&cfg_at)[1..].to_vec(),
        pairs,
    };
    if result.pairs.iter().any(|p| p.2.is_none()) {
        keep_logs(&lab, report, &format!("convergence-trial{trial}"));
    }
    let id = lab.id().to_string();
    drop(containers);
    (result, id)
}

/// Polls host N's subnet file every 2 ms (a file, not kernel state) until it names a subnet.
fn wait_env_fast(lab: &Lab, n: usize) -> Option<BTreeMap<String, String>> {
    poll_for(SUBNET_ENV_TIMEOUT, Duration::from_millis(2), || {
        lab.host(n).subnet_env().filter(|e| e.contains_key("FLANNEL_SUBNET") && e.contains_key("FLANNEL_MTU"))
    })
}

/// Host N's container `<lab id>cN`, wired like `Lab::attach_container` does (bridge `cbr0`,
/// veth `vethcN`, `eth0` inside) but without addresses yet.
fn prewire_container(lab: &Lab, local: &mut LocalNetns, n: usize) {
    let host_ns = &lab.host(n).ns;
    let ns = format!("{}c{n}", lab.id());
    local.add(&ns);
    ip_batch(
        host_ns,
        &[
            "link add cbr0 type bridge".into(),
            "link set cbr0 up".into(),
            format!("link add vethc{n} type veth peer name eth0 netns {ns}"),
            format!("link set vethc{n} master cbr0 up"),
        ],
    );
    ip_batch(&ns, &["link set eth0 up".into()]);
}

fn wait_prewired(lab: &Lab, n: usize) {
    let (host_ns, ns) = (&lab.host(n).ns, format!("{}c{n}", lab.id()));
    lab::wait_wire_ready(host_ns, &format!("vethc{n}"), &ns, "eth0");
}

/// Gives host N's prewired container its address from subnet.env (the bridge gets
/// FLANNEL_SUBNET, every link FLANNEL_MTU, the container .2 and a default route).
fn configure_container(lab: &Lab, n: usize, env: &BTreeMap<String, String>) -> Ipv4Addr {
    let (subnet, mtu) = (&env["FLANNEL_SUBNET"], &env["FLANNEL_MTU"]);
    let (gateway, prefix) = parse_cidr(subnet);
    let addr = nth_address(gateway, prefix, 2);
    ip_batch(
        &lab.host(n).ns,
        &[format!("addr add {subnet} dev cbr0"), format!("link set cbr0 mtu {mtu}"), format!("link set vethc{n} mtu {mtu}")],
    );
    ip_batch(
        &format!("{}c{n}", lab.id()),
        &[
            format!("link set eth0 mtu {mtu}"),
            format!("addr add {addr}/{prefix} dev eth0"),
            format!("route add default via {gateway}"),
        ],
    );
    addr
}

/// From namespace `ns`, sends an ICMP echo request to `dst` every 10 ms until the first echo
/// reply; returns when it arrived, or None after `timeout`.
fn icmp_first_reply(ns: &str, dst: Ipv4Addr, id: u16, timeout: Duration) -> Option<Instant> {
    enter_netns(ns).unwrap_or_else(|e| panic!("{e}"));
    let fd =
        socket::socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp).expect("raw ICMP socket");
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 2_000)).expect("SO_RCVTIMEO");
    let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    for seq in 1u16.. {
        let _ = socket::sendto(fd.as_raw_fd(), &echo_request(id, seq), &to, socket::MsgFlags::empty());
        let next = Instant::now() + Duration::from_millis(10);
        while Instant::now() < next {
            match socket::recvfrom::<SockaddrIn>(fd.as_raw_fd(), &mut buf) {
                Ok((len, Some(from))) if from.ip() == dst && len >= 28 => {
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    let icmp = &buf[ihl..len];
                    if icmp.len() >= 8 && icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id {
                        return Some(Instant::now());
                    }
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
    None
}

fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8; // echo request
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"weftbnch");
    let mut sum: u32 = p.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}
