//! `weftd status`: the network config, every lease, and — for this host — whether each peer's
//! route, ARP and FDB entries are in the kernel and right; for a dual-stack network the same for
//! each lease's IPv6 part on the IPv6 device. Needs etcd and the local kernel, not a running
//! daemon. The assessment is a pure function of what was read, so it is unit tested.

mod checks;
mod observe;
mod render;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::Serialize;
use thiserror::Error;

use crate::config::{ConfigError, NetworkConfig};
use crate::device;
use crate::etcd::{MalformedLease, NameKey, RegistryError};
use crate::lease::{EtcdLeaseId, Lease};
use crate::model::{self, KernelContext, KernelState};
use crate::names::publish::{self, PublishedName};
use crate::names::skydns::Domain;
use crate::netlink::{NetlinkError, VxlanSpec, VXLAN_OVERHEAD};
use crate::reconcile::ThisHost;
use crate::underlay::{Underlay, UnderlayError};

pub use checks::{check_family, Check, FamilyChecks, PartCheck};
pub use observe::observe;
pub use render::render;

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
    /// No underlay matches and no `--public-ip` (`--public-ipv6` IPv6 only) says who we are.
    #[error(transparent)]
    Underlay(#[from] UnderlayError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    /// The lease's IPv4 subnet, PublicIP and VtepMAC; `None` for an IPv6-only lease.
    pub subnet: Option<Ipv4Network>,
    pub public_ip: Option<Ipv4Addr>,
    pub vtep_mac: Option<String>,
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
    /// The lease's IPv6 part, for a dual-stack or IPv6-only network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6PartStatus>,
}

/// A lease's IPv6 part on this host's IPv6 device: as the lease writes it (each `None` where
/// it writes none), and how its route, NDP neighbour and FDB entry compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv6PartStatus {
    pub subnet: Option<Ipv6Network>,
    pub public_ip: Option<Ipv6Addr>,
    pub vtep_mac: Option<String>,
    /// Why weftd does not program this part, if it does not.
    pub skipped: Option<String>,
    pub direct: bool,
    pub route: Check,
    pub neighbour: Check,
    pub fdb: Check,
}

/// The IPv6 side of a dual-stack or IPv6-only network on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv6Status {
    pub network: Ipv6Network,
    pub subnet_len: u8,
    pub device: String,
    /// Our PublicIPv6: the lease's, else the underlay's; `None` when neither has one.
    pub public_ip: Option<Ipv6Addr>,
    pub own_subnet: Option<Ipv6Network>,
    /// Peer leases whose IPv6 part weftd programs, and how many have every entry right.
    pub peers: usize,
    pub peers_ok: usize,
    /// Leases whose IPv6 part weftd skips.
    pub skipped: usize,
    /// Entries on the IPv6 device that no lease explains.
    pub unexplained: usize,
    /// Whether the IPv6 device exists.
    pub device_present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The IPv4 overlay: `Network`, `SubnetLen`, the device, our PublicIP; each `None` for an
    /// IPv6-only network.
    pub network: Option<Ipv4Network>,
    pub subnet_len: Option<u8>,
    pub vni: u32,
    pub device: Option<String>,
    pub public_ip: Option<Ipv4Addr>,
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
    /// The IPv6 side, for a dual-stack or IPv6-only network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Status>,
}

/// Everything `assess` needs, as read from etcd and the kernel.
pub struct Observed {
    pub config: NetworkConfig,
    /// Our PublicIP, which finds our lease; `None` under an IPv6-only config.
    pub public_ip: Option<Ipv4Addr>,
    /// Our PublicIPv6 (the underlay's, else `--public-ipv6`), which finds our lease under an
    /// IPv6-only config; `None` where neither gives one.
    pub public_ipv6: Option<Ipv6Addr>,
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
    /// The IPv6 device's entries and context, for a dual-stack network.
    pub ipv6: Option<ObservedFamily<Ipv6Addr>>,
    /// With `--names`: the domain, and every key below its prefix.
    pub names: Option<(Domain, Vec<NameKey>)>,
}

/// What the kernel shows for one family's device.
#[derive(Debug, Clone)]
pub struct ObservedFamily<A: model::Family> {
    /// `None` when the device does not exist.
    pub kernel: Option<KernelState<A>>,
    pub context: KernelContext<A>,
    /// The device's settings: `None` when it does not exist or is not a VXLAN device.
    pub device: Option<VxlanSpec>,
}

/// Compares every lease with the kernel. Healthy means: we hold a lease, every peer's three
/// entries are right, and nothing unexplained sits on the device; for a dual-stack network, the
/// same of the IPv6 side; for an IPv6-only one, of the IPv6 side alone.
pub fn assess(observed: &Observed) -> Status {
    let own = own_lease(observed);
    let own_subnet = own.and_then(|l| l.subnet);
    let v4 = assess_ipv4(observed, own);
    let v6 = assess_ipv6(observed, own);
    let leases: Vec<LeaseStatus> = observed.leases.iter().map(|lease| lease_status(observed, lease, own, &v4, &v6)).collect();
    let mut device_drift = device_drift(observed, own);
    device_drift.extend(ipv6_device_drift(observed, own));
    let ipv6_ok =
        v6.as_ref().is_none_or(|(status, checks)| status.device_present && status.own_subnet.is_some() && checks.is_ok());
    let ipv4_ok = v4.as_ref().is_none_or(|checks| own_subnet.is_some() && observed.kernel.is_some() && checks.is_ok());
    let v4_config = observed.config.ipv4;
    Status {
        network: v4_config.map(|v4| v4.network),
        subnet_len: v4_config.map(|v4| v4.subnet_len),
        vni: observed.config.backend.vni,
        device: v4_config.map(|_| model::device_name(observed.config.backend.vni)),
        public_ip: observed.public_ip,
        own_subnet,
        leases,
        malformed: observed.malformed.iter().map(|m| (m.key.clone(), m.error.clone())).collect(),
        unexplained: v4.as_ref().map_or(0, |checks| checks.unexplained),
        healthy: own.is_some() && ipv4_ok && device_drift.is_empty() && ipv6_ok,
        device_drift,
        underlay_problem: observed.underlay.as_ref().err().cloned(),
        ipv6: v6.map(|(status, _)| status),
        names: observed
            .names
            .as_ref()
            .map(|(domain, keys)| own_subnet.map(|s| publish::published_names(domain, s, keys)).unwrap_or_default()),
    }
}

/// Our lease: the one with our PublicIP, or under an IPv6-only config the IPv6-only one with
/// our PublicIPv6 (the underlay's).
fn own_lease(observed: &Observed) -> Option<&Lease> {
    let mut leases = observed.leases.iter();
    match observed.public_ip {
        Some(public_ip) => leases.find(|l| l.attrs.public_ip == public_ip),
        None => {
            let public_ipv6 = observed.public_ipv6?;
            leases.find(|l| l.subnet.is_none() && l.attrs.public_ipv6 == Some(public_ipv6))
        }
    }
}

/// The IPv4 side's checks; `None` under an IPv6-only config.
fn assess_ipv4(observed: &Observed, own: Option<&Lease>) -> Option<FamilyChecks> {
    let public_ip = observed.public_ip?;
    let us = ThisHost {
        subnet: own.and_then(|l| l.subnet),
        public_ip,
        vtep_mac: own.and_then(|l| l.attrs.backend_data.as_ref()).map(|data| data.vtep_mac),
    };
    let actual = observed.kernel.clone().unwrap_or_default();
    Some(check_family(&observed.config, &us, &observed.leases, &actual, &observed.context))
}

/// One lease's row: its IPv4 part and checks, and its IPv6 part where the network has one.
fn lease_status(
    observed: &Observed,
    lease: &Lease,
    own: Option<&Lease>,
    v4: &Option<FamilyChecks>,
    v6: &Option<(Ipv6Status, FamilyChecks)>,
) -> LeaseStatus {
    let part = v4.as_ref().map_or(PartCheck::Absent, |checks| checks.part(lease.id()));
    let (route, arp, fdb) = part.entries();
    let data = lease.attrs.backend_data.as_ref();
    LeaseStatus {
        subnet: lease.subnet,
        public_ip: lease.subnet.map(|_| lease.attrs.public_ip),
        vtep_mac: data.map(|data| data.vtep_mac.to_string()),
        expires_in_seconds: lease.etcd_lease.and_then(|id| observed.ttls.get(&id).copied().flatten()),
        reservation: lease.is_reservation(),
        this_host: own.is_some_and(|own| own.id() == lease.id()),
        skipped: part.skipped(),
        direct: part.is_direct(),
        route,
        arp,
        fdb,
        ipv6: v6.as_ref().map(|(_, checks)| ipv6_part(lease, checks)),
    }
}

/// The IPv6 side of a dual-stack or IPv6-only network, and each lease's IPv6 checks; `None`
/// for IPv4 only.
fn assess_ipv6(observed: &Observed, own: Option<&Lease>) -> Option<(Ipv6Status, FamilyChecks)> {
    let (config, seen) = observed.config.ipv6.zip(observed.ipv6.as_ref())?;
    let us = ipv6_this_host(observed, own);
    let actual = seen.kernel.clone().unwrap_or_default();
    let checks = check_family(&observed.config, &us, &observed.leases, &actual, &seen.context);
    let (peers, peers_ok) = checks.peer_counts();
    let status = Ipv6Status {
        network: config.network,
        subnet_len: config.subnet_len,
        device: model::ipv6_device_name(observed.config.backend.vni),
        public_ip: (us.public_ip != Ipv6Addr::UNSPECIFIED).then_some(us.public_ip),
        own_subnet: us.subnet,
        peers,
        peers_ok,
        skipped: checks.parts.values().filter(|p| matches!(p, PartCheck::Skipped(_))).count(),
        unexplained: checks.unexplained,
        device_present: seen.kernel.is_some(),
    };
    Some((status, checks))
}

/// Who we are in IPv6: our lease's IPv6 part, its PublicIPv6 (else the underlay's, else the
/// unspecified address, which no peer can rightly have) and its IPv6 VtepMAC.
fn ipv6_this_host(observed: &Observed, own: Option<&Lease>) -> ThisHost<Ipv6Addr> {
    let underlay_ip = observed.underlay.as_ref().ok().and_then(|u| u.public_ipv6);
    ThisHost {
        subnet: own.and_then(|l| l.ipv6_subnet),
        public_ip: own.and_then(|l| l.attrs.public_ipv6).or(underlay_ip).unwrap_or(Ipv6Addr::UNSPECIFIED),
        vtep_mac: own.and_then(|l| l.attrs.backend_v6_data.as_ref()).map(|d| d.vtep_mac),
    }
}

/// A lease's IPv6 part as status shows it: what the lease writes, and its checks.
fn ipv6_part(lease: &Lease, checks: &FamilyChecks) -> Ipv6PartStatus {
    let part = checks.part(lease.id());
    let (route, neighbour, fdb) = part.entries();
    Ipv6PartStatus {
        subnet: lease.ipv6_subnet,
        public_ip: lease.attrs.public_ipv6,
        vtep_mac: lease.attrs.backend_v6_data.as_ref().map(|d| d.vtep_mac.to_string()),
        skipped: part.skipped(),
        direct: part.is_direct(),
        route,
        neighbour,
        fdb,
    }
}

/// The device's drift from what the current underlay, the config and our lease's VtepMAC ask
/// for; nothing to compare without our lease or the device, which are reported on their own.
fn device_drift(observed: &Observed, own: Option<&Lease>) -> Vec<String> {
    let name = model::device_name(observed.config.backend.vni);
    let (Some(own), Some(actual)) = (own, &observed.device) else { return Vec::new() };
    let Some(mac) = own.attrs.backend_data.as_ref().map(|data| data.vtep_mac) else { return Vec::new() };
    let wanted = match &observed.underlay {
        Ok(underlay) => match underlay.ip {
            Some(local) => device::desired_device(&observed.config, underlay, local, mac),
            None => return Vec::new(),
        },
        // Without an underlay, only what the config and the lease decide can be compared: the
        // device's own local address and MTU stand in for the missing interface's, and its own
        // underlay link (or none) for that interface.
        Err(_) => {
            // flannel.1's local is IPv4; anything else is drift the comparison reports.
            let local = match actual.local {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let stand_in = Underlay {
                name: String::new(),
                index: actual.underlay_index.unwrap_or_default(), // replaced just below
                ip: Some(local),
                mtu: actual.mtu + VXLAN_OVERHEAD,
                public_ip: Some(own.attrs.public_ip),
                ipv6: own.attrs.public_ipv6,
                public_ipv6: own.attrs.public_ipv6,
            };
            let wanted = device::desired_device(&observed.config, &stand_in, local, mac);
            VxlanSpec { underlay_index: actual.underlay_index, ..wanted }
        }
    };
    let drift = device::drift(&wanted, actual);
    drift.iter().map(|d| format!("{name}: {d}")).collect()
}

/// flannel-v6's drift from what the underlay, the config and our lease's IPv6 VtepMAC ask for;
/// nothing to compare without our lease's IPv6 part, the device or an underlay with an IPv6
/// address (the first two are reported on their own, the last as the missing PublicIPv6).
fn ipv6_device_drift(observed: &Observed, own: Option<&Lease>) -> Vec<String> {
    let (Some(own), Some(seen), Ok(underlay)) = (own, observed.ipv6.as_ref(), &observed.underlay) else { return Vec::new() };
    // The device's local is the underlay's own IPv6 address (the PublicIPv6 may be a NAT's).
    let local = underlay.ipv6.or(underlay.public_ipv6);
    let (Some(actual), Some(data), Some(local)) = (&seen.device, &own.attrs.backend_v6_data, local) else {
        return Vec::new();
    };
    let wanted = device::desired_ipv6_device(&observed.config, underlay, local, data.vtep_mac);
    device::drift(&wanted, actual).iter().map(|d| format!("{}: {d}", wanted.name)).collect()
}

#[cfg(test)]
mod tests;
