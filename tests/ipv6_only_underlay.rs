//! An IPv6-only network config (`"EnableIPv4": false`) on hosts that have no IPv4 at all (issue
//! 15, item 8): real `weftd`s in host namespaces whose eth0 holds only the lab's IPv6 address,
//! reaching etcd over IPv6, choose their underlay from IPv6 alone. Checked as an operator would:
//! the lease's `PublicIP` and `PublicIPv6` with `etcdctl get`, flannel-v6.1's `local` with
//! `ip -d link`, and weftd's warning that `--public-ip` is ignored.

use std::fs::File;
use std::net::{Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use lab::{poll, Host, Lab};
use nix::sched::{setns, CloneFlags};
use serde_json::Value;

const CONFIG: &str = r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(30);
/// Where etcd answers over IPv6: an address of etcd member 0's eth0, beside its IPv4 one.
const ETCD_IPV6: &str = "fd18::2";

/// A TCP relay in etcd member 0's namespace from `[fd18::2]:2379` to the member's loopback
/// listener (the lab's etcd listens on IPv4 only), so that hosts without IPv4 reach it; stopped
/// on Drop. A byte relay, not `etcd grpc-proxy`, so that only IPv6 is new here
/// (tests/etcd_grpc_proxy.rs runs weftd behind the proxy).
struct Ipv6Etcd {
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

impl Ipv6Etcd {
    fn start(lab: &Lab) -> Self {
        let ns = format!("{}e0", lab.id());
        let status = Command::new("ip")
            .args(["-n", &ns, "-6", "addr", "add", &format!("{ETCD_IPV6}/64"), "dev", "eth0", "nodad"])
            .status()
            .expect("run ip");
        assert!(status.success(), "adding {ETCD_IPV6} to {ns}'s eth0");
        let netns = File::open(format!("/var/run/netns/{ns}")).expect("open the etcd namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound) = mpsc::channel();
        let stopped = stop.clone();
        // The thread enters etcd's namespace; the relay threads it starts inherit it.
        let listener = thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).expect("enter the etcd namespace");
            let listener = TcpListener::bind(format!("[{ETCD_IPV6}]:2379")).expect("listen on etcd's IPv6 address");
            listener.set_nonblocking(true).expect("non-blocking listener");
            bound_tx.send(()).expect("report the listener");
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => drop(thread::spawn(move || relay(client))),
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        bound.recv().expect("the relay listens");
        Ipv6Etcd { stop, listener: Some(listener) }
    }
}

/// Copies bytes both ways between `client` and etcd's loopback listener until either side closes.
fn relay(client: TcpStream) {
    let Ok(server) = TcpStream::connect("127.0.0.1:2379") else { return };
    client.set_nonblocking(false).expect("blocking client");
    let (mut up_from, mut up_to) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut up_from, &mut up_to);
        let _ = up_to.shutdown(Shutdown::Write);
    });
    let (mut down_from, mut down_to) = (server, client);
    let _ = std::io::copy(&mut down_from, &mut down_to);
    let _ = down_to.shutdown(Shutdown::Write);
    let _ = up.join();
}

impl Drop for Ipv6Etcd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
    }
}

/// Takes every IPv4 address off the host's eth0 (lo keeps 127.0.0.1, which never counts) and
/// gives it an IPv6 default route by eth0 when `default_route`; asserts that no other IPv4
/// address and no IPv4 route is left.
fn without_ipv4(host: &Host, default_route: bool) {
    host.exec_ok(&["ip", "-4", "addr", "flush", "dev", "eth0"]);
    if default_route {
        host.exec_ok(&["ip", "-6", "route", "add", "default", "dev", "eth0"]);
    }
    let addresses: Vec<String> = (host.ip_json(&["-4", "addr", "show"]).as_array().unwrap().iter())
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| a["local"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(addresses, ["127.0.0.1"], "host {} still has IPv4", host.n);
    assert_eq!(host.ip_json(&["-4", "route", "show"]), Value::Array(vec![]), "host {} still has IPv4 routes", host.n);
}

/// Host N's lease as etcd holds it: the key without an IPv4 part whose value names `ipv6` as
/// PublicIPv6; `None` until there is one.
fn lease_of(lab: &Lab, ipv6: Ipv6Addr) -> Option<(String, Value)> {
    let leases = lab::dualstack::SUBNETS;
    lab.etcd_get_prefix(leases).into_iter().find_map(|(key, value)| {
        let value: Value = serde_json::from_str(&value).ok()?;
        (value["PublicIPv6"] == ipv6.to_string()).then(|| (key[leases.len()..].to_string(), value))
    })
}

/// flannel-v6.1's `local` (`ip -d -j link show flannel-v6.1` names it `local6`).
fn vxlan_local(host: &Host) -> Option<String> {
    let link = host.try_ip_json(&["-d", "link", "show", "flannel-v6.1"]).ok()?;
    link[0]["linkinfo"]["info_data"]["local6"].as_str().map(String::from)
}

#[test]
fn hosts_without_ipv4_take_their_underlay_from_ipv6_alone() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let _etcd6 = Ipv6Etcd::start(&lab);
    let (a, b) = (lab.add_host(), lab.add_host());
    // Host a: the IPv6 default route decides. Host b: no default route at all, --iface by its
    // IPv6 address, and a --public-ip that an IPv6-only config ignores.
    without_ipv4(lab.host(a), true);
    without_ipv4(lab.host(b), false);
    let etcd = format!("--etcd-endpoints=http://[{ETCD_IPV6}]:2379");
    let b_ipv6 = format!("--iface={}", lab.host(b).underlay_ipv6);
    let _daemons = [
        lab.start_weftd_picking_iface(a, &[&etcd], &[]),
        lab.start_weftd_picking_iface(b, &[&etcd, &b_ipv6, "--public-ip=203.0.113.9"], &[]),
    ];
    let mut vteps = Vec::new();
    for n in [a, b] {
        let host = lab.host(n);
        let found = poll(&format!("host {n}'s IPv6-only lease"), CONVERGE, || lease_of(&lab, host.underlay_ipv6));
        let (key, value) = found;
        // flannel-v6.1 carries the subnet's network address: `fd00:5:0:9::-64` → fd00:5:0:9::.
        vteps.push(key.split('-').next().unwrap().parse::<Ipv6Addr>().unwrap());
        assert!(!key.contains('&') && key.starts_with("fd00:5:"), "host {n}: the key is the IPv6 part alone: {key}");
        assert_eq!(value["PublicIP"], "0.0.0.0", "host {n}: {value}");
        let local = poll(&format!("host {n}'s flannel-v6.1"), CONVERGE, || vxlan_local(host));
        assert_eq!(local, host.underlay_ipv6.to_string(), "host {n}: flannel-v6.1's local address");
    }
    // Over the overlay, with no IPv4 anywhere: each host reaches the other's VTEP address.
    poll("host a to ping host b's VTEP over flannel-v6.1", CONVERGE, || lab.host(a).ping(vteps[1]).then_some(()));
    poll("host b to ping host a's VTEP over flannel-v6.1", CONVERGE, || lab.host(b).ping(vteps[0]).then_some(()));
    let log = lab.log_tail(&format!("weftd-h{b}.log"), 200);
    let warnings = log.matches("--public-ip is ignored: the network config is IPv6 only").count();
    assert_eq!(warnings, 1, "host {b} warns once that --public-ip is ignored:\n{log}");
}
