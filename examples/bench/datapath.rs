//! Section 5, datapath: iperf3 throughput of the underlay and the overlay (unshaped, 10 Gbit/s, DirectRouting).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::fixture::{new_lab, start_weftd};
use crate::report::{mean, Report, Settings};
use crate::system::{run_cmd, tool_json, Bg};
use crate::{DIRECT_NETWORK, SMALL_NETWORK, SUBNET_ENV_TIMEOUT};
use lab::{poll, Lab, Weftd};

pub(crate) fn bench_datapath(s: &Settings, report: &Report) {
    let (lab, _daemons, c2) = datapath_lab(SMALL_NETWORK);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let (cn1, cn2) = (lab.container(1).ns.clone(), lab.container(2).ns.clone());

    record_datapath_settings(&lab, report);

    let _servers = [iperf_server(&cn2), iperf_server(&h2.ns)];
    let mut rows = Vec::new();
    let paths = [("underlay", h1.ns.as_str(), h2.underlay_ip), ("overlay", cn1.as_str(), c2)];
    let (u, o) = datapath_rounds(s, "unshaped", &paths, &mut rows);
    report.note(&format!(
        "datapath: iperf3 TCP, one stream, {} s (+1 s omitted) per run, {} round(s) alternating underlay (host1 -> host2 {}) and overlay (container1 -> container2 {c2}); mean of the rounds",
        s.iperf_secs, s.iperf_rounds, h2.underlay_ip
    ));
    report.figure("datapath_underlay_gbps", u);
    report.figure("datapath_overlay_gbps", o);
    report.figure("datapath_overlay_vs_underlay_pct", o / u * 100.0);

    // The lab's underlay is a software bridge: both paths run until a CPU is full, so the
    // ratio above is the overlay's CPU cost per byte. A real NIC caps the underlay; shaping
    // both hosts' underlay egress to 10 Gbit/s shows what the overlay keeps of a link.
    for host in [&h1, &h2] {
        run_cmd(Command::new("tc").args([
            "-n", &host.ns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "10gbit", "burst", "1mb", "latency", "10ms",
        ]));
    }
    let (u, o) = datapath_rounds(s, "10gbit", &paths, &mut rows);
    report.note("datapath_10gbit: the same runs with both hosts' underlay egress shaped to 10 Gbit/s (tc tbf on eth0), as a NIC would cap it");
    report.figure("datapath_10gbit_underlay_gbps", u);
    report.figure("datapath_10gbit_overlay_gbps", o);
    report.figure("datapath_10gbit_overlay_vs_underlay_pct", o / u * 100.0);
    drop((_servers, _daemons, lab));
    datapath_direct(s, report, &mut rows);
    report.csv(
        "datapath.csv",
        "underlay_shaping,round,path,destination,gbit_per_s,retransmits,sender_cpu_pct,receiver_cpu_pct",
        &rows,
    );
}

/// Two hosts running weftd with `config` and a container each, container 1 reaching container 2;
/// the lab, its daemons and container 2's address.
fn datapath_lab(config: &str) -> (Lab, Vec<Weftd>, Ipv4Addr) {
    let mut lab = new_lab(2, config);
    let daemons: Vec<Weftd> = (1..=2).map(|h| start_weftd(&lab, h)).collect();
    lab.wait_subnet_env(1, SUBNET_ENV_TIMEOUT);
    lab.wait_subnet_env(2, SUBNET_ENV_TIMEOUT);
    lab.attach_container(1);
    let c2 = lab.attach_container(2);
    poll("container 1 to reach container 2 over the overlay", Duration::from_secs(20), || {
        lab.container_ping(1, c2).then_some(())
    });
    (lab, daemons, c2)
}

/// With DirectRouting, hosts on one link route each other's subnets through the underlay with
/// no VXLAN: the container path costs two veths, a bridge and a forward on each side.
fn datapath_direct(s: &Settings, report: &Report, rows: &mut Vec<String>) {
    let (lab, _daemons, c2) = datapath_lab(DIRECT_NETWORK);
    let (h1, h2) = (lab.host(1), lab.host(2));
    let (cn1, cn2) = (lab.container(1).ns.as_str(), lab.container(2).ns.as_str());
    let _servers = [iperf_server(cn2), iperf_server(&h2.ns)];
    let paths = [("underlay", h1.ns.as_str(), h2.underlay_ip), ("overlay", cn1, c2)];
    let (u, o) = datapath_rounds(s, "direct-routing", &paths, rows);
    report.note("datapath_direct: the same unshaped runs with Backend.DirectRouting (the lab's hosts share one link, so container traffic is routed through the underlay without VXLAN)");
    report.figure("datapath_direct_underlay_gbps", u);
    report.figure("datapath_direct_overlay_gbps", o);
    report.figure("datapath_direct_overlay_vs_underlay_pct", o / u * 100.0);
}

/// `s.iperf_rounds` rounds of one iperf3 run per path; the mean Gbit/s of (underlay, overlay).
fn datapath_rounds(s: &Settings, shaping: &str, paths: &[(&str, &str, Ipv4Addr); 2], rows: &mut Vec<String>) -> (f64, f64) {
    let (mut under, mut over) = (Vec::new(), Vec::new());
    for round in 1..=s.iperf_rounds {
        for &(path, ns, dst) in paths {
            let r = iperf_client(ns, dst, s.iperf_secs);
            eprintln!(
                "{shaping} round {round} {path:8}: {:.2} Gbit/s, {} retransmits, cpu sender {:.0}% receiver {:.0}%",
                r.gbps, r.retransmits, r.cpu_local, r.cpu_remote
            );
            rows.push(format!(
                "{shaping},{round},{path},{dst},{:.4},{},{:.1},{:.1}",
                r.gbps, r.retransmits, r.cpu_local, r.cpu_remote
            ));
            if path == "underlay" {
                under.push(r.gbps)
            } else {
                over.push(r.gbps)
            }
        }
    }
    (mean(&under), mean(&over))
}

/// MTUs and `ethtool -k` of every link on the path, to datapath-settings.txt; a one-line
/// summary of the offloads that matter for VXLAN per link in the report.
fn record_datapath_settings(lab: &Lab, report: &Report) {
    let (h1, c1) = (&lab.host(1).ns, &lab.container(1).ns);
    let links = [
        ("host1", h1.as_str(), "eth0"),
        ("host1", h1.as_str(), "flannel.1"),
        ("host1", h1.as_str(), "cbr0"),
        ("host1", h1.as_str(), "vethc1"),
        ("container1", c1.as_str(), "eth0"),
    ];
    let mut text = String::new();
    let have_ethtool = Command::new("ethtool").arg("--version").output().is_ok_and(|o| o.status.success());
    let keys = [
        ("tx-checksumming", "txcsum"),
        ("scatter-gather", "sg"),
        ("tcp-segmentation-offload", "tso"),
        ("generic-segmentation-offload", "gso"),
        ("generic-receive-offload", "gro"),
        ("tx-udp_tnl-segmentation", "udp_tnl_seg"),
        ("rx-udp-gro-forwarding", "udp_gro_fwd"),
    ];
    for (who, ns, dev) in links {
        let link = tool_json("ip", ns, &["-d", "link", "show", "dev", dev]);
        let mtu = link[0]["mtu"].as_u64().unwrap_or(0);
        let _ = writeln!(text, "== {who} {dev}: mtu {mtu}");
        let detail = run_cmd(Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", dev]));
        text.push_str(&String::from_utf8_lossy(&detail.stdout));
        let mut summary = format!("{who}/{dev}: mtu {mtu}");
        if have_ethtool {
            let out = run_cmd(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-k", dev]));
            let features = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&features);
            for (name, short) in keys {
                let value = features
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
                    .map(|v| v.split_whitespace().next().unwrap_or("?").to_string())
                    .unwrap_or_else(|| "n/a".into());
                let _ = write!(summary, " {short}={value}");
            }
        }
        text.push('\n');
        report.note(&format!("datapath link {summary}"));
        if who == "host1" && dev == "eth0" {
            report.figure("datapath_underlay_mtu_bytes", mtu as f64);
        }
        if who == "container1" {
            report.figure("datapath_overlay_mtu_bytes", mtu as f64);
        }
    }
    if !have_ethtool {
        text.push_str("ethtool not installed: offload settings not recorded\n");
        report.note("ethtool not installed: offload settings not recorded");
    }
    report.write("datapath-settings.txt", &text);
}

fn iperf_server(ns: &str) -> Bg {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iperf3 -s (apt-get install iperf3)");
    Bg(child)
}

struct IperfResult {
    gbps: f64,
    retransmits: u64,
    cpu_local: f64,
    cpu_remote: f64,
}

/// `iperf3 -c <dst> -t <secs> -O 1 -J` from `ns`, retried while the server is not listening yet.
fn iperf_client(ns: &str, dst: Ipv4Addr, secs: u64) -> IperfResult {
    let started = Instant::now();
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-c", &dst.to_string(), "-t", &secs.to_string(), "-O", "1", "-J"])
            .stdin(Stdio::null())
            .output()
            .expect("run iperf3 -c");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let end = &doc["end"];
        if let (true, Some(bps)) = (out.status.success(), end["sum_received"]["bits_per_second"].as_f64()) {
            return IperfResult {
                gbps: bps / 1e9,
                retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
                cpu_local: end["cpu_utilization_percent"]["host_total"].as_f64().unwrap_or(f64::NAN),
                cpu_remote: end["cpu_utilization_percent"]["remote_total"].as_f64().unwrap_or(f64::NAN),
            };
        }
        let error = doc["error"].as_str().unwrap_or("").to_string();
        if started.elapsed() > Duration::from_secs(10) || !error.contains("connect") {
            panic!(
                "iperf3 -c {dst} in {ns} failed ({}): {error} {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout).chars().take(3000).collect::<String>()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}
