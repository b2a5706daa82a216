//! Lab helpers (labs, weftd, subnet.env, dumps, logs, an etcd client in the lab), fake peers and their etcd preload.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// (routes, permanent neighbours, FDB entries) on host N's flannel-v6.1, from dumps; zeros
/// while the device does not exist.
pub(crate) fn dump_counts6(lab: &Lab, n: usize) -> (usize, usize, usize) {
    let ns = &lab.host(n).ns;
    let len =
        |tool: &str, args: &[&str]| lab::tool_json(tool, ns, args).ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0);
    let routes = len("ip", &["-6", "route", "show", "dev", "flannel-v6.1"]);
    let ndp = len("ip", &["-6", "neigh", "show", "dev", "flannel-v6.1", "nud", "permanent"]);
    let fdb = len("bridge", &["fdb", "show", "dev", "flannel-v6.1"]);
    (routes, ndp, fdb)
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
/// there: nothing in the lab routes to it) and a random locally administered VtepMAC; a
/// dual-stack one also has an IPv6 part.
#[derive(Clone, Debug)]
pub(crate) struct FakePeer {
    pub(crate) subnet: Ipv4Addr,
    public_ip: Ipv4Addr,
    mac: [u8; 6],
    pub(crate) v6: Option<FakeV6>,
}

/// The IPv6 part of a dual-stack fake peer: a /64, a PublicIPv6 in fd64::/16 (routed nowhere)
/// and an IPv6 VtepMAC of its own.
#[derive(Clone, Debug)]
pub(crate) struct FakeV6 {
    pub(crate) subnet: Ipv6Addr,
    public_ip: Ipv6Addr,
    mac: [u8; 6],
}

impl FakePeer {
    /// flanneld's key: `10.1.2.0-24`, or `10.1.2.0-24&fd00:6:0:3::-64` for dual-stack.
    pub(crate) fn key(&self) -> String {
        match &self.v6 {
            None => format!("{SUBNETS_PREFIX}{}-24", self.subnet),
            Some(v6) => format!("{SUBNETS_PREFIX}{}-24&{}-64", self.subnet, v6.subnet),
        }
    }

    /// Byte for byte what flanneld writes.
    pub(crate) fn value(&self) -> String {
        let v4 = format!(r#"{{"VNI":1,"VtepMAC":"{}"}}"#, mac_text(&self.mac));
        match &self.v6 {
            None => format!(r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{v4}}}"#, self.public_ip),
            Some(v6) => format!(
                r#"{{"PublicIP":"{}","PublicIPv6":"{}","BackendType":"vxlan","BackendData":{v4},"BackendV6Data":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
                self.public_ip,
                v6.public_ip,
                mac_text(&v6.mac)
            ),
        }
    }
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[derive(Default)]
pub(crate) struct FakeMaker {
    ips: HashSet<IpAddr>,
    macs: HashSet<[u8; 6]>,
}

impl FakeMaker {
    pub(crate) fn make(&mut self, subnet: Ipv4Addr) -> FakePeer {
        let public_ip = self.unique_ip(|rng| {
            IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + rng.random_range(1..(1u32 << 22) - 1)))
        });
        let IpAddr::V4(public_ip) = public_ip else { unreachable!("an IPv4 address was made") };
        FakePeer { subnet, public_ip, mac: self.unique_mac(), v6: None }
    }

    /// A dual-stack fake peer: IPv4 `subnet` and IPv6 `subnet6` (a /64).
    pub(crate) fn make_dual(&mut self, subnet: Ipv4Addr, subnet6: Ipv6Addr) -> FakePeer {
        let mut peer = self.make(subnet);
        let public_ip =
            self.unique_ip(|rng| IpAddr::V6(Ipv6Addr::from((0xfd64u128 << 112) | rng.random_range(1..u128::MAX >> 16))));
        let IpAddr::V6(public_ip) = public_ip else { unreachable!("an IPv6 address was made") };
        peer.v6 = Some(FakeV6 { subnet: subnet6, public_ip, mac: self.unique_mac() });
        peer
    }

    fn unique_ip(&mut self, mut random: impl FnMut(&mut rand::rngs::ThreadRng) -> IpAddr) -> IpAddr {
        let mut rng = rand::rng();
        loop {
            let ip = random(&mut rng);
            if self.ips.insert(ip) {
                return ip;
            }
        }
    }

    fn unique_mac(&mut self) -> [u8; 6] {
        let mut rng = rand::rng();
        loop {
            let mut mac: [u8; 6] = rng.random();
            mac[0] = (mac[0] & 0xfc) | 0x02; // unicast, locally administered
            if self.macs.insert(mac) {
                return mac;
            }
        }
    }
}

/// `count` distinct /64s of `network` (a /48) from its second upwards, skipping `taken`.
pub(crate) fn fake_subnets6(network: Ipv6Addr, count: usize, taken: &HashSet<Ipv6Addr>) -> Vec<Ipv6Addr> {
    (1u128..=0xffff).map(|i| Ipv6Addr::from(u128::from(network) | (i << 64))).filter(|s| !taken.contains(s)).take(count).collect()
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

/// Which of a peer's entries an event is about: the three IPv4 ones on flannel.1, then the
/// three IPv6 ones on flannel-v6.1 (a dual-stack peer has all six).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Route = 0,
    Arp = 1,
    Fdb = 2,
    Route6 = 3,
    Ndp = 4,
    Fdb6 = 5,
}

impl Part {
    /// The IPv6 twin of an IPv4 part.
    fn of_family(self, ipv6: bool) -> Part {
        match (self, ipv6) {
            (Part::Route, true) => Part::Route6,
            (Part::Arp, true) => Part::Ndp,
            (Part::Fdb, true) => Part::Fdb6,
            (part, _) => part,
        }
    }
}

/// Finds the fake peer (and entry) an event adds, or, with `del`, removes: by subnet (the
/// route's destination, the neighbour's VTEP address) and by VtepMAC, of either family.
pub(crate) struct PeerIndex {
    by_subnet: HashMap<IpAddr, usize>,
    by_mac: HashMap<[u8; 6], (usize, bool)>,
}

impl PeerIndex {
    pub(crate) fn new(peers: &[FakePeer]) -> PeerIndex {
        let mut by_subnet: HashMap<IpAddr, usize> = peers.iter().enumerate().map(|(i, p)| (p.subnet.into(), i)).collect();
        let mut by_mac: HashMap<[u8; 6], (usize, bool)> = peers.iter().enumerate().map(|(i, p)| (p.mac, (i, false))).collect();
        for (i, v6) in peers.iter().enumerate().filter_map(|(i, p)| Some((i, p.v6.as_ref()?))) {
            by_subnet.insert(v6.subnet.into(), i);
            by_mac.insert(v6.mac, (i, true));
        }
        PeerIndex { by_subnet, by_mac }
    }

    /// The peer's subnet and MAC and public address of the family of `ip`.
    fn expected(peer: &FakePeer, ipv6: bool) -> Option<([u8; 6], IpAddr)> {
        match (ipv6, &peer.v6) {
            (false, _) => Some((peer.mac, peer.public_ip.into())),
            (true, Some(v6)) => Some((v6.mac, v6.public_ip.into())),
            (true, None) => None,
        }
    }

    pub(crate) fn added(&self, peers: &[FakePeer], ev: &Ev) -> Option<(usize, Part)> {
        if ev.del {
            return None;
        }
        match ev.kind {
            Kind::Route { dst, len: 24 | 64 } => self.by_subnet.get(&dst).map(|&i| (i, Part::Route.of_family(dst.is_ipv6()))),
            Kind::Arp { ip, mac: Some(mac), permanent: true } => {
                let &i = self.by_subnet.get(&ip)?;
                let (want, _) = Self::expected(&peers[i], ip.is_ipv6())?;
                (want == mac).then_some((i, Part::Arp.of_family(ip.is_ipv6())))
            }
            Kind::Fdb { mac, dst: Some(dst) } => {
                let &(i, ipv6) = self.by_mac.get(&mac)?;
                let (_, want) = Self::expected(&peers[i], ipv6)?;
                (want == dst).then_some((i, Part::Fdb.of_family(ipv6)))
            }
            _ => None,
        }
    }

    pub(crate) fn removed(&self, ev: &Ev) -> Option<(usize, Part)> {
        if !ev.del {
            return None;
        }
        match ev.kind {
            Kind::Route { dst, len: 24 | 64 } => self.by_subnet.get(&dst).map(|&i| (i, Part::Route.of_family(dst.is_ipv6()))),
            Kind::Arp { ip, .. } => self.by_subnet.get(&ip).map(|&i| (i, Part::Arp.of_family(ip.is_ipv6()))),
            Kind::Fdb { mac, .. } => self.by_mac.get(&mac).map(|&(i, ipv6)| (i, Part::Fdb.of_family(ipv6))),
            _ => None,
        }
    }
}
