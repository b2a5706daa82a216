//! The VXLAN devices weft wants (`flannel.<VNI>`, and `flannel-v6.<VNI>` for a dual-stack
//! overlay), as a pure function of the underlay, the network config and our lease; and how a
//! device found in the kernel departs from it (its drift).
//!
//! The reconciler repairs drift on every pass and `weftd status` reports it, so both read the
//! same rules from here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use thiserror::Error;

use crate::config::NetworkConfig;
use crate::model::{device_name, ipv6_device_name, MacAddr};
use crate::netlink::{Kernel, NetlinkError, VxlanDevice, VxlanSpec, VXLAN6_OVERHEAD, VXLAN_OVERHEAD};
use crate::underlay::Underlay;

/// Why a VXLAN device could not be set up.
#[derive(Debug, Error)]
pub enum DeviceError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The IPv6 device's `accept_ra` could not be read or set to 0.
    #[error("cannot set {path} to 0: {source}")]
    AcceptRa { path: PathBuf, source: std::io::Error },
}

/// The IPv4 device, `flannel.<VNI>`, for the current `underlay` and our lease's VTEP `mac`:
/// `local` is the underlay's IPv4 address (flanneld's rule, also with `--public-ip`), the MTU
/// the config's or the underlay's minus the VXLAN headers (50 bytes). Peers reach us at the MAC
/// our lease advertises, so a device that another program gave another MAC is set back to it
/// rather than the lease rewritten: that repairs in one local write, and no peer's FDB or ARP
/// entry has to change.
pub fn desired_device(config: &NetworkConfig, underlay: &Underlay, local: Ipv4Addr, mac: MacAddr) -> VxlanSpec {
    let mtu = config.backend.mtu.unwrap_or(underlay.mtu.saturating_sub(VXLAN_OVERHEAD));
    vxlan_device(config, underlay, device_name(config.backend.vni), local.into(), mac, mtu)
}

/// The IPv6 device, `flannel-v6.<VNI>`: as [`desired_device`] (same VNI, port, underlay link
/// and learning), with `local` the underlay's IPv6 address and our lease's IPv6 VtepMAC `mac`.
/// Its MTU is the config's or the underlay's less IPv6 VXLAN's 70 bytes of headers, and never
/// more: the kernel refuses an IPv6 VXLAN device a larger one.
pub fn desired_ipv6_device(config: &NetworkConfig, underlay: &Underlay, local: Ipv6Addr, mac: MacAddr) -> VxlanSpec {
    let most = underlay.mtu.saturating_sub(VXLAN6_OVERHEAD);
    let mtu = config.backend.mtu.map_or(most, |mtu| mtu.min(most));
    vxlan_device(config, underlay, ipv6_device_name(config.backend.vni), local.into(), mac, mtu)
}

/// A VXLAN device named `name` over `underlay`, with the config's VNI, port, learning and GBP.
fn vxlan_device(config: &NetworkConfig, underlay: &Underlay, name: String, local: IpAddr, mac: MacAddr, mtu: u32) -> VxlanSpec {
    VxlanSpec {
        name,
        vni: config.backend.vni,
        port: config.backend.port,
        local,
        underlay_index: Some(underlay.index),
        mtu,
        learning: config.backend.learning,
        gbp: config.backend.gbp,
        mac,
    }
}

/// One attribute of the device that differs from what weft wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The attribute, in `ip -d link` terms (`local`, `MAC`, `mtu`...).
    pub attribute: &'static str,
    pub actual: String,
    pub wanted: String,
    /// Where the wanted value comes from, as the report words it ("lease says").
    pub basis: &'static str,
}

impl Drift {
    fn new(attribute: &'static str, actual: impl ToString, wanted: impl ToString, basis: &'static str) -> Self {
        Self { attribute, actual: actual.to_string(), wanted: wanted.to_string(), basis }
    }

    /// Whether `ip link set` can repair it on the live device; the VXLAN attributes proper
    /// (VNI, local, port, underlay, learning, GBP) need the device recreated.
    pub fn in_place(&self) -> bool {
        matches!(self.attribute, "MAC" | "mtu")
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}, {} {}", self.attribute, self.actual, self.basis, self.wanted)
    }
}

/// Every way `actual` departs from `wanted`, in `ip -d link` order; empty when it matches.
pub fn drift(wanted: &VxlanSpec, actual: &VxlanSpec) -> Vec<Drift> {
    let mut found = Vec::new();
    let mut compare = |attribute, differs: bool, actual: String, wanted: String, basis| {
        if differs {
            found.push(Drift::new(attribute, actual, wanted, basis));
        }
    };
    compare("MAC", actual.mac != wanted.mac, actual.mac.to_string(), wanted.mac.to_string(), "lease says");
    compare("mtu", actual.mtu != wanted.mtu, actual.mtu.to_string(), wanted.mtu.to_string(), "should be");
    compare("vni", actual.vni != wanted.vni, actual.vni.to_string(), wanted.vni.to_string(), "config says");
    compare("local", actual.local != wanted.local, actual.local.to_string(), wanted.local.to_string(), "underlay has");
    let (dev, wanted_dev) = (actual.underlay_index, wanted.underlay_index);
    compare("dev", dev != wanted_dev, dev_text(dev), dev_text(wanted_dev), "underlay is");
    compare("dstport", actual.port != wanted.port, actual.port.to_string(), wanted.port.to_string(), "config says");
    let on_off = |on: bool| if on { "on" } else { "off" }.to_string();
    let (learning, gbp) = (wanted.learning, wanted.gbp);
    compare("learning", actual.learning != learning, on_off(actual.learning), on_off(learning), "config says");
    compare("gbp", actual.gbp != gbp, on_off(actual.gbp), on_off(gbp), "config says");
    found
}

/// A device's underlay link as the drift report words it: `index 4`, and `index 0` for none
/// (the kernel's number for it, which the report has always shown).
fn dev_text(index: Option<u32>) -> String {
    format!("index {}", index.unwrap_or(0))
}

/// The drift as one line per attribute, `<device>: <drift>`, joined by `; ` for a log field.
pub fn describe(name: &str, drift: &[Drift]) -> String {
    drift.iter().map(|d| format!("{name}: {d}")).collect::<Vec<_>>().join("; ")
}

/// Creates the VXLAN device or adopts the one there: one that matches `spec` is kept; its MAC
/// and MTU, when another program changed them, are set back in place; one whose VXLAN settings
/// differ (the kernel cannot change those on a live device), or a link of the name that is not
/// VXLAN, is deleted and created again. Mirrors `ip link add … type vxlan` / `ip link set`.
/// An IPv6 device (an IPv6 `local`) also gets `accept_ra` 0 before it goes up, as flanneld
/// sets it: router advertisements on the overlay must not give it addresses or routes.
///
/// # Errors
/// The kernel refused to read, create, delete or change the device; `accept_ra` could not be set.
pub async fn ensure(kernel: &Kernel, spec: &VxlanSpec) -> Result<VxlanDevice, DeviceError> {
    let ipv6 = spec.local.is_ipv6();
    if let Some(existing) = kernel.vxlan_device(&spec.name).await? {
        let found = existing.spec.as_ref().map(|actual| drift(spec, actual));
        match found {
            Some(found) if found.iter().all(Drift::in_place) => {
                if ipv6 {
                    refuse_router_advertisements(&spec.name)?;
                }
                if !found.is_empty() || !existing.up {
                    kernel.set_link(existing.index, spec.mac, spec.mtu).await?;
                    let drift = describe(&spec.name, &found);
                    tracing::info!(device = %spec.name, %drift, up = existing.up, "repaired the VXLAN device's MAC, MTU and state");
                }
                return Ok(VxlanDevice { index: existing.index, mac: spec.mac });
            }
            Some(found) => {
                let drift = describe(&spec.name, &found);
                tracing::warn!(device = %spec.name, %drift, "the VXLAN device has other settings; recreating it");
            }
            None => {
                tracing::warn!(device = %spec.name, "a link with the VXLAN device's name is not a VXLAN device; recreating it")
            }
        }
        kernel.delete_link(existing.index).await?;
    }
    // An IPv4 device is created up in one request, as it always was.
    let device = kernel.create_vxlan(spec, !ipv6).await?;
    if ipv6 {
        refuse_router_advertisements(&spec.name)?;
        kernel.set_link(device.index, spec.mac, spec.mtu).await?;
    }
    tracing::info!(device = %spec.name, vni = spec.vni, local = %spec.local, mac = %spec.mac, "created VXLAN device");
    Ok(device)
}

/// `sysctl -w net.ipv6.conf.<device>.accept_ra=0`, unless it already is 0.
fn refuse_router_advertisements(device: &str) -> Result<(), DeviceError> {
    let path = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{device}/accept_ra"));
    let failed = |source| DeviceError::AcceptRa { path: path.clone(), source };
    if std::fs::read_to_string(&path).map_err(failed)?.trim() != "0" {
        std::fs::write(&path, "0").map_err(failed)?;
        tracing::info!(%device, "set accept_ra to 0 on the IPv6 VXLAN device");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn underlay() -> Underlay {
        Underlay::example()
    }

    fn config(json: &str) -> NetworkConfig {
        NetworkConfig::parse(json).unwrap()
    }

    #[test]
    fn the_device_follows_the_underlay_and_the_lease() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let local = Ipv4Addr::new(198, 18, 0, 11);
        let spec = desired_device(&config(r#"{"Network":"10.5.0.0/16"}"#), &underlay(), local, mac);
        assert_eq!((spec.name.as_str(), spec.vni, spec.port, spec.mtu), ("flannel.1", 1, 8472, 1450));
        assert_eq!((spec.local, spec.underlay_index, spec.mac), (local.into(), Some(4), mac));
        let moved = Underlay { index: 9, mtu: 9000, ..underlay() };
        let json = r#"{"Network":"10.5.0.0/16","Backend":{"VNI":7,"Port":4789,"MTU":1400}}"#;
        let spec = desired_device(&config(json), &moved, Ipv4Addr::new(10, 0, 0, 9), mac);
        assert_eq!((spec.name.as_str(), spec.port, spec.mtu, spec.underlay_index), ("flannel.7", 4789, 1400, Some(9)));
        assert_eq!(spec.local, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)));
    }

    #[test]
    fn the_ipv6_device_is_the_ipv4_one_on_the_public_ipv6() {
        let (mac, mac6, local) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 6]), "fd18::11".parse().unwrap());
        let config4 = config(r#"{"Network":"10.5.0.0/16","Backend":{"VNI":7,"Port":4789}}"#);
        let spec = desired_ipv6_device(&config4, &underlay(), local, mac6);
        let ipv4 = desired_device(&config4, &underlay(), Ipv4Addr::new(198, 18, 0, 11), mac);
        assert_eq!((spec.name.as_str(), spec.local, spec.mac, spec.mtu), ("flannel-v6.7", IpAddr::V6(local), mac6, 1430));
        assert_eq!((spec.vni, spec.port, spec.underlay_index, spec.learning), (ipv4.vni, ipv4.port, ipv4.underlay_index, false));
        let json = |mtu| format!(r#"{{"Network":"10.5.0.0/16","Backend":{{"MTU":{mtu}}}}}"#);
        assert_eq!(desired_ipv6_device(&config(&json(1400)), &underlay(), local, mac6).mtu, 1400, "the config's");
        assert_eq!(
            desired_ipv6_device(&config(&json(1450)), &underlay(), local, mac6).mtu,
            1430,
            "no more than the kernel allows"
        );
        let lines: Vec<String> = drift(&spec, &VxlanSpec { local: "fd18::99".parse().unwrap(), ..spec.clone() })
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines, ["local fd18::99, underlay has fd18::11"]);
    }

    #[test]
    fn drift_names_each_attribute_and_how_it_is_repaired() {
        let local = Ipv4Addr::new(198, 18, 0, 11);
        let wanted = desired_device(&config(r#"{"Network":"10.5.0.0/16"}"#), &underlay(), local, MacAddr([2, 0, 0, 0, 0, 1]));
        assert!(drift(&wanted, &wanted).is_empty());
        let actual = VxlanSpec { mac: MacAddr([2, 0, 0, 0, 0, 9]), mtu: 1400, ..wanted.clone() };
        let found = drift(&wanted, &actual);
        assert!(found.iter().all(Drift::in_place), "{found:?}");
        assert_eq!(
            describe("flannel.1", &found),
            "flannel.1: MAC 02:00:00:00:00:09, lease says 02:00:00:00:00:01; flannel.1: mtu 1400, should be 1450"
        );
        let actual =
            VxlanSpec { local: Ipv4Addr::new(10, 0, 0, 9).into(), vni: 2, port: 4789, underlay_index: Some(3), ..wanted.clone() };
        let found = drift(&wanted, &actual);
        assert!(found.iter().all(|d| !d.in_place()), "{found:?}");
        let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "vni 2, config says 1",
                "local 10.0.0.9, underlay has 198.18.0.11",
                "dev index 3, underlay is index 4",
                "dstport 4789, config says 8472"
            ]
        );
        let unbound = VxlanSpec { underlay_index: None, ..wanted.clone() };
        let lines: Vec<String> = drift(&wanted, &unbound).iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["dev index 0, underlay is index 4"], "no link, in the kernel's number for it");
        let actual = VxlanSpec { learning: true, gbp: true, ..wanted.clone() };
        let lines: Vec<String> = drift(&wanted, &actual).iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["learning on, config says off", "gbp on, config says off"]);
    }
}
