//! The VXLAN devices at start-up: the IPv4 one set up before our lease is acquired (the lease
//! advertises its MAC), the MACs our lease advertises, and the device of a family the config no
//! longer enables removed.

use std::net::IpAddr;

use super::DaemonError;
use crate::config::NetworkConfig;
use crate::device;
use crate::lease::{LeaseAttrs, MacAddr};
use crate::model;
use crate::netlink::{self, Kernel, NetlinkError};
use crate::reconcile::reconciler::Ipv6Device;
use crate::underlay::Underlay;

/// Removes the VXLAN device of a family the config does not enable, left by a run before that
/// family was turned off (`flannel.<VNI>` under an IPv6-only config, `flannel-v6.<VNI>` under an
/// IPv4-only one): it carries only stale state, such as the address of a subnet no longer ours
/// and routes to peers' former subnets. `ip link del`.
///
/// # Errors
/// The kernel refused to show or delete the device.
pub(super) async fn remove_disabled(kernel: &Kernel, config: &NetworkConfig) -> Result<(), DaemonError> {
    let vni = config.backend.vni;
    let disabled = [(config.ipv4.is_none(), model::device_name(vni)), (config.ipv6.is_none(), model::ipv6_device_name(vni))];
    for (_, name) in disabled.into_iter().filter(|(off, _)| *off) {
        // Only a VXLAN device: a link of another kind by that name is not ours.
        let Some(device) = kernel.vxlan_device(&name).await?.filter(|device| device.spec.is_some()) else { continue };
        kernel.delete_link(device.index).await?;
        tracing::info!(device = %name, "removed the VXLAN device of an address family the network config no longer enables");
    }
    Ok(())
}

/// The IPv4 device, `flannel.<VNI>`, created or adopted before our lease is acquired (the
/// lease advertises its MAC); `None` under an IPv6-only config.
///
/// # Errors
/// The kernel refused to show or set up the device.
pub(super) async fn ipv4_device(
    kernel: &Kernel,
    config: &NetworkConfig,
    underlay: &Underlay,
) -> Result<Option<(netlink::VxlanSpec, netlink::VxlanDevice)>, DaemonError> {
    // A config with IPv4 gets an underlay with an IPv4 address (`underlay::find`).
    let (Some(_), Some(local), Some(public_ip)) = (config.ipv4, underlay.ip, underlay.public_ip) else { return Ok(None) };
    let vni = config.backend.vni;
    let mac = vtep_mac(kernel, &model::device_name(vni), public_ip, vni).await?;
    let spec = device::desired_device(config, underlay, local, mac);
    let device = device::ensure(kernel, &spec).await?;
    Ok(Some((spec, device)))
}

/// What our lease says: PublicIP and the IPv4 device's MAC `ipv4_mac`, and under a config with
/// IPv6 the PublicIPv6 and the IPv6 device's MAC (also returned, for the reconciler, which
/// creates or adopts that device in its first pass); IPv6 only, flanneld's IPv6-only value.
///
/// # Errors
/// The underlay has no IPv6 address to advertise; the kernel refused to show the IPv6 device.
pub(super) async fn lease_attrs(
    kernel: &Kernel,
    config: &NetworkConfig,
    underlay: &Underlay,
    ipv4_mac: Option<MacAddr>,
) -> Result<(LeaseAttrs, Option<Ipv6Device>), DaemonError> {
    let vni = config.backend.vni;
    let ipv4 = underlay.public_ip.zip(ipv4_mac).map(|(public_ip, mac)| LeaseAttrs::vxlan(public_ip, vni, mac));
    if config.ipv6.is_none() {
        return Ok((ipv4.expect("a config without IPv6 has IPv4, and its device"), None));
    }
    // Every lease written under a dual-stack config carries both parts: flanneld v0.20.2
    // peers panic on a lease without its IPv6 part.
    let public_ipv6 = underlay.public_ipv6.ok_or_else(|| DaemonError::NoPublicIpv6 { iface: underlay.name.clone() })?;
    let mac = vtep_mac(kernel, &model::ipv6_device_name(vni), public_ipv6, vni).await?;
    let attrs = match ipv4 {
        Some(attrs) => attrs.with_ipv6(public_ipv6, mac),
        None => LeaseAttrs::vxlan_ipv6_only(public_ipv6, vni, mac),
    };
    Ok((attrs, Some(Ipv6Device::new(mac))))
}

/// The VTEP MAC our lease advertises for the VXLAN device `name` (`flannel.<VNI>` or
/// `flannel-v6.<VNI>`): the one the device left by an earlier run has (peers may still point
/// at it), else one derived from the device family's public address and the VNI, stable
/// across restarts.
async fn vtep_mac(kernel: &Kernel, name: &str, public_ip: impl Into<IpAddr>, vni: u32) -> Result<MacAddr, NetlinkError> {
    let existing = kernel.vxlan_device(name).await?;
    Ok(existing.and_then(|d| d.spec).map_or_else(|| model::derived_mac(public_ip, vni), |spec| spec.mac))
}
