//! Lab helpers (labs, weftd, subnet.env, dumps, logs, an etcd client in the lab), fake peers and their etcd preload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::net::Ipv4Addr;
use std::panic;
use std::thread;
use std::time::Instant;

use etcd_client::{Client, Txn, TxnOp};
use rand::Rng;
use tokio::runtime::Runtime;

use crate::monitor::{Ev, Kind};
use crate::report::{ms, Report};
use crate::system::{enter_netns, tool_json};
use crate::{record_lab, SUBNETS_PREFIX, TXN_OPS, WEFTD_ENV};
use lab::{nth_address, parse_cidr, Lab, Weftd};

pub(crate) fn new_lab(hosts: usize, config: &str) -> Lab {
    let mut lab = Lab::new();
    record_lab(&lab);
    for _ in 0..hosts {
        lab.add_host();
    }
    lab.put_network_config(config);
    lab
}

pub(crate) fn start_weftd(lab: &Lab, n: usize) -> Weftd {
    lab.start_weftd_env(n, &[], &WEFTD_ENV)
}

/// The network address of a host's FLANNEL_SUBNET.
pub(crate) fn env_subnet(env: &BTreeMap<String, String>) -> Ipv4Addr {
    let (addr, prefix) = parse_cidr(&env["FLANNEL_SUBNET"]);
    nth_address(addr, prefix, 0)
}

pub(crate) fn flannel_index(lab: &Lab, n: usize) -> u32 {
    let link = lab.host(n).ip_json(&["link", "show", "dev", "flannel.1"]);
    link[0]["ifindex"].as_u64().expect("flannel.1 has an ifindex") as u32
}

/// (routes, ARP entries, FDB entries) on host N's flannel.1, from dumps.
pub(crate) fn dump_counts(lab: &Lab, n: usize) -> (usize, usize, usize) {
    let host = lab.host(n);
    let len = |v: serde_json::Value| v.as_array().map_or(0, Vec::len);
    let routes = len(tool_json("ip", &host.ns, &["route", "show", "dev", "flannel.1"]));
    let arp = len(tool_json("ip", &host.ns, &["neigh", "show", "dev", "flannel.1"]));
    let fdb = len(tool_json("bridge", &host.ns, &["fdb", "show", "dev", "flannel.1"]));
    (routes, arp, fdb)
}

/// Copies the lab's logs to `<out>/logs/<tag>/` (for trials that went wrong).
pub(crate) fn keep_logs(lab: &Lab, report: &Report, tag: &str) {
    let dest = report.path(&format!("logs/{tag}"));
    let _ = fs::create_dir_all(&dest);
    for entry in fs::read_dir(lab.dir()).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".log") {
            let _ = fs::copy(entry.path(), dest.join(&name));
        }
    }
}

/// Runs `f` in a thread that has entered the lab's etcd namespace, with a current-thread tokio
/// runtime and a connected etcd client (the endpoint is only reachable inside the lab).
pub(crate) fn with_etcd<R: Send>(lab: &Lab, f: impl FnOnce(&Runtime, &mut Client) -> R + Send) -> R {
    let ns = format!("{}e0", lab.id());
    assert!(lab.namespaces().contains(&ns), "the lab has no etcd namespace {ns}");
    let endpoint = lab.etcd_endpoint();
    thread::scope(|s| {
        let handle = s.spawn(move || {
            enter_netns(&ns).unwrap_or_else(|e| panic!("{e}"));
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            let mut client = rt
                .block_on(Client::connect([endpoint.as_str()], None))
                .unwrap_or_else(|e| panic!("connect to etcd at {endpoint}: {e}"));
            f(&rt, &mut client)
        });
        handle.join().unwrap_or_else(|e| panic::resume_unwind(e))
    })
}

// =============================================================================================
// Fake peers
// =============================================================================================

/// A peer lease that no host owns: a /24, a PublicIP in 100.64.0.0/10 (nothing is ever sent
/// there: nothing in the lab routes to it) and a random locally administered VtepMAC.
#[derive(Clone, Debug)]
pub(crate) struct FakePeer {
    pub(crate) subnet: Ipv4Addr,
    public_ip: Ipv4Addr,
    mac: [u8; 6],
}

impl FakePeer {
    pub(crate) fn key(&self) -> String {
        format!("{SUBNETS_PREFIX}{}-24", self.subnet)
    }

    /// Byte for byte what flanneld writes.
    pub(crate) fn value(&self) -> String {
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            self.public_ip,
            mac_text(&self.mac)
        )
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[derive(Default)]
pub(crate) struct FakeMaker {
    ips: HashSet<Ipv4Addr>,
    macs: HashSet<[u8; 6]>,
}

impl FakeMaker {
    pub(crate) fn make(&mut self, subnet: Ipv4Addr) -> FakePeer {
        let mut rng = rand::rng();
        let public_ip = loop {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + rng.random_range(1..(1u32 << 22) - 1));
            if self.ips.insert(ip) {
                break ip;
            }
        };
        let mac = loop {
            let mut mac: [u8; 6] = rng.random();
            mac[0] = (mac[0] & 0xfc) | 0x02; // unicast, locally administered
            if self.macs.insert(mac) {
                break mac;
            }
        };
        FakePeer { subnet, public_ip, mac }
    }
}

/// `count` distinct /24s from 10.<first>.0.0 upwards, skipping `taken`.
pub(crate) fn fake_subnets(first: u8, count: usize, taken: &HashSet<Ipv4Addr>) -> Vec<Ipv4Addr> {
    (0u32..)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, first, 0, 0)) + (i << 8)))
        .filter(|s| !taken.contains(s))
        .take(count)
        .collect()
}

/// Puts `peers` into etcd in transactions of at most TXN_OPS puts (no etcd lease).
pub(crate) fn preload(lab: &Lab, peers: &[FakePeer]) -> f64 {
    with_etcd(lab, |rt, client| {
        let started = Instant::now();
        for chunk in peers.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk.iter().map(|p| TxnOp::put(p.key(), p.value(), None)).collect();
            rt.block_on(client.txn(Txn::new().and_then(ops))).unwrap_or_else(|e| panic!("preload txn: {e}"));
        }
        ms(started, Instant::now())
    })
}

/// Which of a peer's three entries an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Route = 0,
    Arp = 1,
    Fdb = 2,
}

/// Finds the fake peer (and entry) an event adds, or, with `del`, removes.
pub(crate) struct PeerIndex {
    by_subnet: HashMap<Ipv4Addr, usize>,
    by_mac: HashMap<[u8; 6], usize>,
}

impl PeerIndex {
    pub(crate) fn new(peers: &[FakePeer]) -> PeerIndex {
        PeerIndex {
            by_subnet: peers.iter().enumerate().map(|(i, p)| (p.subnet, i)).collect(),
            by_mac: peers.iter().enumerate().map(|(i, p)| (p.mac, i)).collect(),
        }
    }

    pub(crate) fn added(&self, peers: &[FakePeer], ev: &Ev) -> Option<(usize, Part)> {
        if ev.del {
            return None;
        }
        match ev.kind {
            Kind::Route { dst, len: 24 } => self.by_subnet.get(&dst).map(|&i| (i, Part::Route)),
            Kind::Arp { ip, mac: Some(mac), permanent: true } => {
                let &i = self.by_subnet.get(&ip)?;
                (peers[i].mac == mac).then_some((i, Part::Arp))
            }
            Kind::Fdb { mac, dst: Some(dst) } => {
                let &i = self.by_mac.get(&mac)?;
                (peers[i].public_ip == dst).then_some((i, Part::Fdb))
            }
            _ => None,
        }
    }

    pub(crate) fn removed(&self, ev: &Ev) -> Option<(usize, Part)> {
        if !ev.del {
            return None;
        }
        match ev.kind {
            Kind::Route { dst, len: 24 } => self.by_subnet.get(&dst).map(|&i| (i, Part::Route)),
            Kind::Arp { ip, .. } => self.by_subnet.get(&ip).map(|&i| (i, Part::Arp)),
            Kind::Fdb { mac, .. } => self.by_mac.get(&mac).map(|&i| (i, Part::Fdb)),
            _ => None,
        }
    }
}
