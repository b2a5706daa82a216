//! Reading what `weftd status` assesses: the network config, every lease and its TTL, the
//! underlay as it would be chosen now, and each family's device and tables.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};

use super::{Observed, ObservedFamily, StatusError};
use crate::config::NetworkConfig;
use crate::etcd::{EtcdOptions, Registry};
use crate::lease::EtcdLeaseId;
use crate::model::{self, KernelContext};
use crate::names::skydns::Domain;
use crate::netlink::{Kernel, KernelFamily, VxlanSpec};
use crate::underlay::{self, Families, Underlay, UnderlayChoice};

/// How many lease TTL requests `observe` keeps in flight on etcd's connection.
const TTL_REQUESTS_IN_FLIGHT: usize = 64;

/// Reads etcd and the kernel. The underlay `choice` finds this host's public addresses, which
/// identify its lease; `names` is the domain whose records are read (`--names`).
pub async fn observe(
    etcd: &EtcdOptions,
    choice: &UnderlayChoice,
    kernel: &Kernel,
    names: Option<&Domain>,
) -> Result<Observed, StatusError> {
    let unreachable = |source| StatusError::Etcd { endpoints: etcd.endpoints.join(","), source };
    let registry = Registry::connect(etcd).await.map_err(unreachable)?;
    let config_key = registry.keys().config();
    let text = registry.network_config().await.map_err(unreachable)?.ok_or(StatusError::NoConfig(config_key))?;
    let config = NetworkConfig::parse(&text)?;
    let (underlay, public_ip, public_ipv6) = observe_underlay(kernel, choice, &config).await?;
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
    let (v4, device) = match config.ipv4 {
        Some(v4) => observe_family::<Ipv4Addr>(kernel, &model::device_name(config.backend.vni), v4.network).await?,
        None => (ObservedFamily { kernel: None, context: KernelContext::default(), device: None }, None),
    };
    let ipv6 = match config.ipv6 {
        Some(v6) => Some(observe_family::<Ipv6Addr>(kernel, &model::ipv6_device_name(config.backend.vni), v6.network).await?),
        None => None,
    };
    let malformed = listing.malformed;
    let names = match names {
        Some(domain) => Some((domain.clone(), registry.list_names(&domain.prefix()).await.map_err(unreachable)?)),
        None => None,
    };
    Ok(Observed {
        config,
        public_ip,
        public_ipv6,
        leases: listing.leases,
        ttls,
        malformed,
        kernel: v4.kernel,
        device,
        underlay,
        context: v4.context,
        ipv6: ipv6.map(|(observed, device)| ObservedFamily { device, ..observed }),
        names,
    })
}

/// The underlay flanneld's rules choose now (or why none matches), and our public addresses:
/// the underlay's, else `--public-ip` and `--public-ipv6`. The report of an overlay with IPv4
/// identifies us by PublicIP, so its underlay needs no IPv6 address; an IPv6-only one's needs
/// only that.
///
/// # Errors
/// No underlay matches and no flag gives the address that identifies our lease.
async fn observe_underlay(
    kernel: &Kernel,
    choice: &UnderlayChoice,
    config: &NetworkConfig,
) -> Result<(Result<Underlay, String>, Option<Ipv4Addr>, Option<Ipv6Addr>), StatusError> {
    let families = if config.is_ipv6_only() { Families::Ipv6 } else { Families::Ipv4 };
    let underlay = underlay::find(kernel, choice, families).await;
    let (public_ip, public_ipv6) = match &underlay {
        Ok(underlay) => (underlay.public_ip, underlay.public_ipv6.or(choice.public_ipv6)),
        Err(_) => (choice.public_ip, choice.public_ipv6),
    };
    let identified = if config.is_ipv6_only() { public_ipv6.is_some() } else { public_ip.is_some() };
    match underlay {
        Err(e) if !identified => Err(e.into()),
        underlay => Ok((underlay.map_err(|e| e.to_string()), public_ip.filter(|_| config.ipv4.is_some()), public_ipv6)),
    }
}

/// The entries on family `A`'s device `name` and what decides their form (`ip neigh show dev`,
/// `bridge fdb show dev`, `ip route`, `ip nexthop`, with `-6` for IPv6), and the device's
/// settings. Read even without the device: the main table still tells which peers are direct.
async fn observe_family<A: KernelFamily>(
    kernel: &Kernel,
    name: &str,
    network: A::Network,
) -> Result<(ObservedFamily<A>, Option<VxlanSpec>), StatusError> {
    let link = kernel.vxlan_device(name).await?;
    let (state, context) = kernel.read_state::<A>(link.as_ref().map_or(0, |l| l.index), network).await?;
    let kernel_state = link.as_ref().map(|_| state);
    let device = link.and_then(|l| l.spec);
    Ok((ObservedFamily { kernel: kernel_state, context, device: None }, device))
}
