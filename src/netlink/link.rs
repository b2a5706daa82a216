//! Links: looking one up by name, and the VXLAN device itself (`ip link`).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use nix::errno::Errno;
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::{request_error, Kernel, NetlinkError};
use crate::model::MacAddr;

/// Everything the VXLAN device must be (the `device` module decides how a device that differs
/// is repaired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The underlay address VXLAN packets leave from: IPv4 for `flannel.<VNI>`, IPv6 for
    /// `flannel-v6.<VNI>` (`IFLA_VXLAN_LOCAL` or `IFLA_VXLAN_LOCAL6`).
    pub local: IpAddr,
    /// The index of the link VXLAN packets leave by (`dev` in `ip -d link`); `None` for a
    /// device bound to no link, which the kernel reports as no `IFLA_VXLAN_LINK` (or 0).
    pub underlay_index: Option<u32>,
    /// Bytes.
    pub mtu: u32,
    pub learning: bool,
    pub gbp: bool,
    /// The MAC our lease advertises as VtepMAC.
    pub mac: MacAddr,
}

/// The device of a name as it is in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub index: u32,
    /// Its settings; `None` when the link is not a VXLAN device.
    pub spec: Option<VxlanSpec>,
    pub up: bool,
}

/// The VXLAN device as it is in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanDevice {
    pub index: u32,
    pub mac: MacAddr,
}

impl Kernel {
    /// `ip link show <name>`; `None` when there is no such link.
    ///
    /// # Errors
    /// The kernel refused the request for another reason than `ENODEV`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let result = self.handle.link().get().match_name(name.to_string()).execute().try_next().await;
        match result.map_err(request_error("get link")) {
            Ok(link) => Ok(link),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip -d link show <name>`: the device as weft describes one (`spec` is `None` for a link
    /// of that name that is not a VXLAN device); `None` when there is no such link.
    ///
    /// # Errors
    /// As [`Kernel::link_by_name`].
    pub async fn vxlan_device(&self, name: &str) -> Result<Option<DeviceState>, NetlinkError> {
        let link = self.link_by_name(name).await?;
        Ok(link.map(|link| DeviceState {
            index: link.header.index,
            spec: vxlan_spec(&link),
            up: link.header.flags.contains(LinkFlags::Up),
        }))
    }

    /// `ip link add <name> type vxlan id <vni> local <ip> dev <underlay> dstport <port>
    /// nolearning address <mac> mtu <mtu>`, and `up` with `up` (else [`Kernel::set_link`]
    /// brings it up once what must precede that is done).
    ///
    /// # Errors
    /// The kernel refused the device (e.g. `EEXIST`: a link of that name exists).
    pub async fn create_vxlan(&self, spec: &VxlanSpec, up: bool) -> Result<VxlanDevice, NetlinkError> {
        let builder = LinkVxlan::new(&spec.name, spec.vni);
        let mut builder = match spec.local {
            IpAddr::V4(local) => builder.local(local),
            IpAddr::V6(local) => builder.local6(local),
        };
        builder = builder.port(spec.port).learning(spec.learning).mtu(spec.mtu).address(spec.mac.0.to_vec());
        if up {
            builder = builder.up();
        }
        // No `dev` is what a link index of 0 meant to the kernel: bound to no link.
        if let Some(index) = spec.underlay_index {
            builder = builder.dev(index);
        }
        if spec.gbp {
            builder = builder.gbp();
        }
        self.handle.link().add(builder.build()).execute().await.map_err(request_error("add vxlan link"))?;
        let created = self.link_by_name(&spec.name).await?.ok_or_else(|| NetlinkError::DeviceVanished(spec.name.clone()))?;
        Ok(VxlanDevice { index: created.header.index, mac: spec.mac })
    }

    /// `ip link del dev <index>`.
    ///
    /// # Errors
    /// The kernel refused (e.g. `ENODEV`: no such link).
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle.link().del(index).execute().await.map_err(request_error("delete link"))
    }

    /// `ip link set dev <index> address <mac> mtu <mtu> up`.
    ///
    /// # Errors
    /// The kernel refused one of the settings.
    pub async fn set_link(&self, index: u32, mac: MacAddr, mtu: u32) -> Result<(), NetlinkError> {
        let message = LinkUnspec::new_with_index(index).address(mac.0.to_vec()).mtu(mtu).up().build();
        self.handle.link().set(message).execute().await.map_err(request_error("set link"))
    }
}

/// A link's name; empty when the message carries none.
pub(super) fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A link's MTU in bytes; Ethernet's 1500 when the message carries none.
pub(super) fn link_mtu(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500)
}

fn link_mac(link: &LinkMessage) -> Option<MacAddr> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok().map(MacAddr),
        _ => None,
    })
}

/// The settings of a VXLAN link, as a [`VxlanSpec`]; `None` for a link of another kind.
fn vxlan_spec(link: &LinkMessage) -> Option<VxlanSpec> {
    let infos = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    if !infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan))) {
        return None;
    }
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    })?;
    let mut spec = VxlanSpec {
        name: link_name(link),
        vni: 0,
        port: 0,
        local: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        underlay_index: None,
        mtu: link_mtu(link),
        learning: false,
        gbp: false,
        mac: link_mac(link).unwrap_or(MacAddr([0; 6])),
    };
    for attribute in data {
        match attribute {
            InfoVxlan::Id(vni) => spec.vni = *vni,
            InfoVxlan::Port(port) => spec.port = *port,
            InfoVxlan::Local(local) => spec.local = IpAddr::V4(*local),
            InfoVxlan::Local6(local) => spec.local = IpAddr::V6(*local),
            InfoVxlan::Link(index) => spec.underlay_index = (*index != 0).then_some(*index),
            InfoVxlan::Learning(learning) => spec.learning = *learning,
            InfoVxlan::Gbp => spec.gbp = true,
            _ => {}
        }
    }
    Some(spec)
}
