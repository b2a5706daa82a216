//! `weftd status`: the network config, every lease, and — for this host — whether each peer's
//! route, ARP and FDB entries are in the kernel and right. Needs etcd and the local kernel, not
//! a running daemon. The assessment is a pure function of what was read, so it is unit tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures::{StreamExt, TryStreamExt};
use ipnetwork::Ipv4Network;
use serde::Serialize;
use thiserror::Error;

use crate::config::{ConfigError, NetworkConfig};
use crate::device;
use crate::etcd::{EtcdOptions, MalformedLease, NameKey, Registry, RegistryError};
use crate::lease::{EtcdLeaseId, Lease, LeaseSet};
use crate::model::{self, KernelContext, KernelState};
use crate::names::publish::{self, PublishedName};
use crate::names::skydns::Domain;
use crate::netlink::{Kernel, NetlinkError, VxlanSpec, VXLAN_OVERHEAD};
use crate::reconcile::{self, ThisHost};
use crate::underlay::Underlay;

#[derive(Debug, Error)]
pub enum StatusError {
    #[error("cannot reach etcd at {endpoints}: {source}")]
    Etcd { endpoints: String, source: RegistryError },
    #[error("there is no network config at {0}; write one with etcdctl put")]
    NoConfig(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the kernel: {0}")]
    Netlink(#[from] NetlinkError),
}

/// How one kernel entry compares with what the lease asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Ok,
    Missing,
    /// Present with other values (another MAC, gateway or destination).
    Wrong,
    /// Not applicable: our own lease, or a lease weftd skips.
    #[serde(rename = "-")]
    NotApplicable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    pub subnet: Ipv4Network,
    pub public_ip: Ipv4Addr,
    pub vtep_mac: String,
    /// Seconds until the etcd lease expires; `None` for a reservation.
    pub expires_in_seconds: Option<i64>,
    pub reservation: bool,
    pub this_host: bool,
    /// Why weftd does not program this lease, if it does not.
    pub skipped: Option<String>,
    /// Reached by a direct route (`Backend.DirectRouting`), which needs no ARP or FDB entry.
    pub direct: bool,
    pub route: Check,
    pub arp: Check,
    pub fdb: Check,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub network: Ipv4Network,
    pub subnet_len: u8,
    pub vni: u32,
    pub device: String,
    pub public_ip: Ipv4Addr,
    pub own_subnet: Option<Ipv4Network>,
    pub leases: Vec<LeaseStatus>,
    pub malformed: BTreeMap<String, String>,
    /// Entries on the device that no lease explains.
    pub unexplained: usize,
    /// How the device departs from what the underlay, the config and our lease ask for, one
    /// line per attribute (`flannel.1: local 10.0.0.9, underlay has 198.18.0.11`).
    pub device_drift: Vec<String>,
    /// Why no underlay matches how it is chosen, if none does.
    pub underlay_problem: Option<String>,
    /// With `--names`: this host's published names (records in our subnet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<PublishedName>>,
    pub healthy: bool,
}

/// Everything `assess` needs, as read from etcd and the kernel.
pub struct Observed {
    pub config: NetworkConfig,
    pub public_ip: Ipv4Addr,
    pub leases: Vec<Lease>,
    pub ttls: BTreeMap<EtcdLeaseId, Option<i64>>,
    pub malformed: Vec<MalformedLease>,
    /// `None` when the device does not exist.
    pub kernel: Option<KernelState>,
    /// The device's settings: `None` when it does not exist or is not a VXLAN device.
    pub device: Option<VxlanSpec>,
    /// The underlay as flanneld's rules choose it now, or why none matches.
    pub underlay: Result<Underlay, String>,
    /// Where the main routing table reaches peers' PublicIPs (for `Backend.DirectRouting`), and
    /// which nexthop ids other programs hold.
    pub context: KernelContext,
    /// With `--names`: the domain, and every key below its prefix.
    pub names: Option<(Domain, Vec<NameKey>)>,
}

/// Compares every lease with the kernel. Healthy means: we hold a lease, every peer's three
/// entries are right, and nothing unexplained sits on the device.
pub fn assess(observed: &Observed) -> Status {
    let own = observed.leases.iter().find(|l| l.attrs.public_ip == observed.public_ip);
    let own_subnet = own.map(|l| l.subnet);
    let us = ThisHost { subnet: own_subnet, public_ip: observed.public_ip, vtep_mac: own.map(|l| l.attrs.backend_data.vtep_mac) };
    let set = LeaseSet { leases: observed.leases.iter().map(|l| (l.subnet, l.clone())).collect(), ..Default::default() };
    let (desired, skipped) = reconcile::desired_state(&observed.config, &us, &set, &observed.context);
    let direct: BTreeSet<Ipv4Network> = desired.direct_routes.iter().map(|r| r.subnet).collect();
    let skipped: BTreeMap<_, _> = skipped.into_iter().map(|s| (s.subnet, s.reason)).collect();
    let actual = observed.kernel.clone().unwrap_or_default();
    let leases: Vec<LeaseStatus> = observed
        .leases
        .iter()
        .map(|lease| {
            let this_host = Some(lease.subnet) == own_subnet;
            let skip = skipped.get(&lease.subnet).cloned();
            let checked = !this_host && skip.is_none();
            let (route, arp, fdb) = if checked && direct.contains(&lease.subnet) {
                (check_direct_route(lease, &actual), Check::NotApplicable, Check::NotApplicable)
            } else if checked {
                check_peer(lease, &actual)
            } else {
                (Check::NotApplicable, Check::NotApplicable, Check::NotApplicable)
            };
            LeaseStatus {
                subnet: lease.subnet,
                public_ip: lease.attrs.public_ip,
                vtep_mac: lease.attrs.backend_data.vtep_mac.to_string(),
                expires_in_seconds: lease.etcd_lease.and_then(|id| observed.ttls.get(&id).copied().flatten()),
                reservation: lease.is_reservation(),
                this_host,
                skipped: skip,
                direct: direct.contains(&lease.subnet),
                route,
                arp,
                fdb,
            }
        })
        .collect();
    let unexplained = reconcile::plan(&desired, &actual).remove.entry_count();
    let device_drift = device_drift(observed, own);
    let all_ok = leases.iter().all(|l| [l.route, l.arp, l.fdb].iter().all(|c| matches!(c, Check::Ok | Check::NotApplicable)));
    Status {
        network: observed.config.network,
        subnet_len: observed.config.subnet_len,
        vni: observed.config.backend.vni,
        device: model::device_name(observed.config.backend.vni),
        public_ip: observed.public_ip,
        own_subnet,
        leases,
        malformed: observed.malformed.iter().map(|m| (m.key.clone(), m.error.clone())).collect(),
        unexplained,
        healthy: own_subnet.is_some() && observed.kernel.is_some() && all_ok && unexplained == 0 && device_drift.is_empty(),
        device_drift,
        underlay_problem: observed.underlay.as_ref().err().cloned(),
        names: observed
            .names
            .as_ref()
            .map(|(domain, keys)| own_subnet.map(|subnet| publish::published_names(domain, subnet, keys)).unwrap_or_default()),
    }
}

/// The device's drift from what the current underlay, the config and our lease's VtepMAC ask
/// for; nothing to compare without our lease or the device, which are reported on their own.
fn device_drift(observed: &Observed, own: Option<&Lease>) -> Vec<String> {
    let name = model::device_name(observed.config.backend.vni);
    let (Some(own), Some(actual)) = (own, &observed.device) else { return Vec::new() };
    let mac = own.attrs.backend_data.vtep_mac;
    let wanted = match &observed.underlay {
        Ok(underlay) => device::desired_device(&observed.config, underlay, mac),
        // Without an underlay, only what the config and the lease decide can be compared: the
        // device's own local address and MTU stand in for the missing interface's, and its own
        // underlay link (or none) for that interface.
        Err(_) => {
            let stand_in = Underlay {
                name: String::new(),
                index: actual.underlay_index.unwrap_or_default(), // replaced just below
                ip: actual.local,
                mtu: actual.mtu + VXLAN_OVERHEAD,
                public_ip: own.attrs.public_ip,
                public_ipv6: own.attrs.public_ipv6,
            };
            VxlanSpec { underlay_index: actual.underlay_index, ..device::desired_device(&observed.config, &stand_in, mac) }
        }
    };
    let drift = device::drift(&wanted, actual);
    drift.iter().map(|d| format!("{name}: {d}")).collect()
}

/// A direct route to the lease's subnet through its PublicIP, and no VXLAN route for it.
fn check_direct_route(lease: &Lease, actual: &KernelState) -> Check {
    let vxlan_route = actual.routes.iter().any(|r| r.subnet == lease.subnet);
    match actual.direct_routes.iter().find(|r| r.subnet == lease.subnet) {
        Some(r) if r.gateway == lease.attrs.public_ip && !vxlan_route => Check::Ok,
        Some(_) => Check::Wrong,
        None if vxlan_route => Check::Wrong,
        None => Check::Missing,
    }
}

fn check_peer(lease: &Lease, actual: &KernelState) -> (Check, Check, Check) {
    let vtep = model::vtep_address(lease.subnet);
    let mac = lease.attrs.backend_data.vtep_mac;
    let route = match actual.routes.iter().find(|r| r.subnet == lease.subnet) {
        Some(r) if r.gateway == vtep && r.onlink => Check::Ok,
        Some(_) => Check::Wrong,
        None => Check::Missing,
    };
    let arp = match actual.arp.iter().find(|a| a.ip == vtep) {
        Some(a) if a.mac == mac => Check::Ok,
        Some(_) => Check::Wrong,
        None => Check::Missing,
    };
    let fdb = match actual.fdb.iter().filter(|f| f.mac == mac).map(|f| f.dst).collect::<Vec<_>>().as_slice() {
        [dst] if *dst == lease.attrs.public_ip => Check::Ok,
        [] => Check::Missing,
        _ => Check::Wrong,
    };
    (route, arp, fdb)
}

/// How many lease TTL requests `observe` keeps in flight on etcd's connection.
const TTL_REQUESTS_IN_FLIGHT: usize = 64;

/// Reads etcd and the kernel. `public_ip` identifies this host's lease.
/// `underlay` is the interface flanneld's rules choose now, or why none matches; `names` the
/// domain whose records are read (`--names`).
pub async fn observe(
    etcd: &EtcdOptions,
    public_ip: Ipv4Addr,
    underlay: Result<Underlay, String>,
    kernel: &Kernel,
    names: Option<&Domain>,
) -> Result<Observed, StatusError> {
    let unreachable = |source| StatusError::Etcd { endpoints: etcd.endpoints.join(","), source };
    let registry = Registry::connect(etcd).await.map_err(unreachable)?;
    let config_key = registry.keys().config();
    let text = registry.network_config().await.map_err(unreachable)?.ok_or(StatusError::NoConfig(config_key))?;
    let config = NetworkConfig::parse(&text)?;
    let listing = registry.list_leases().await.map_err(unreachable)?;
    let etcd_leases: BTreeSet<EtcdLeaseId> = listing.leases.iter().filter_map(|l| l.etcd_lease).collect();
    // etcd answers one lease per request; many in flight at once keep thousands of leases quick.
    let ttls = futures::stream::iter(etcd_leases)
        .map(|id| {
            let registry = &registry;
            async move { registry.time_to_live(id).await.map(|ttl| (id, ttl)) }
        })
        .buffer_unordered(TTL_REQUESTS_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(unreachable)?;
    // Read even without the device: the main table still tells which peers are direct.
    let link = kernel.vxlan_device(&model::device_name(config.backend.vni)).await?;
    let (state, context) = kernel.read_state(link.as_ref().map_or(0, |l| l.index), config.network).await?;
    let kernel_state = link.as_ref().map(|_| state);
    let malformed = listing.malformed;
    let device = link.and_then(|l| l.spec);
    let names = match names {
        Some(domain) => Some((domain.clone(), registry.list_names(&domain.prefix()).await.map_err(unreachable)?)),
        None => None,
    };
    Ok(Observed {
        config,
        public_ip,
        leases: listing.leases,
        ttls,
        malformed,
        kernel: kernel_state,
        device,
        underlay,
        context,
        names,
    })
}

/// The human-readable report.
pub fn render(status: &Status) -> String {
    let mut out = format!(
        "network    {} (subnets /{}, vxlan VNI {}, device {})\nthis host  {} -> {}\n\n",
        status.network,
        status.subnet_len,
        status.vni,
        status.device,
        status.public_ip,
        status.own_subnet.map_or("no lease".to_string(), |s| s.to_string()),
    );
    out.push_str(&format!(
        "{:<18} {:<15} {:<17} {:<13} {:<8} {:<8} {:<8}\n",
        "SUBNET", "PUBLIC IP", "VTEP MAC", "EXPIRES", "ROUTE", "ARP", "FDB"
    ));
    for l in &status.leases {
        let expires = match (l.reservation, l.expires_in_seconds) {
            (true, _) => "reservation".to_string(),
            (false, Some(s)) => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
            (false, None) => "expired".to_string(),
        };
        let word = |c: Check| match c {
            Check::Ok => "ok",
            Check::Missing => "MISSING",
            Check::Wrong => "WRONG",
            Check::NotApplicable => "-",
        };
        let note = if l.this_host {
            "  (this host)".to_string()
        } else if l.direct {
            "  (direct route)".to_string()
        } else {
            l.skipped.as_ref().map(|r| format!("  (skipped: {r})")).unwrap_or_default()
        };
        out.push_str(&format!(
            "{:<18} {:<15} {:<17} {:<13} {:<8} {:<8} {:<8}{note}\n",
            l.subnet.to_string(),
            l.public_ip.to_string(),
            l.vtep_mac,
            expires,
            word(l.route),
            word(l.arp),
            word(l.fdb)
        ));
    }
    for (key, error) in &status.malformed {
        out.push_str(&format!("malformed  {key}: {error}\n"));
    }
    if let Some(problem) = &status.underlay_problem {
        out.push_str(&format!("underlay   {problem}\n"));
    }
    for drift in &status.device_drift {
        out.push_str(&format!("drift      {drift}\n"));
    }
    if status.unexplained > 0 {
        out.push_str(&format!("{} entries on {} are not explained by any lease\n", status.unexplained, status.device));
    }
    if let Some(names) = &status.names {
        out.push_str(&format!("\nnames published by this host: {}\n", names.len()));
        for name in names {
            out.push_str(&format!("{:<24} {:<15} {}\n", name.name, name.host.to_string(), name.ports.join(" ")));
        }
    }
    out.push_str(if status.healthy { "\nhealthy\n" } else { "\nNOT healthy\n" });
    out
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
