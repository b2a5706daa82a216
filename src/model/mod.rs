//! The vocabulary every module shares: the kernel entries weft owns, what the kernel holds
//! besides them that decides their form, the MAC address type, and the rules that name things.
//!
//! A leaf: it uses no other module of the crate, so `netlink` (the kernel), `reconcile` (the
//! policy) and `status` (the report) read one definition of each entry and each rule.
//!
//! Address families: every entry, `KernelState` and `KernelContext` take a [`Family`]
//! parameter (`Ipv4Addr` or `Ipv6Addr`), IPv4 by default, which is all weft programs today
//! (flanneld's vxlan backend with `EnableIPv4`). IPv6 is an addition beside it:
//! `KernelState<Ipv6Addr>` already exists, and the rules in [`names`] have their IPv6 form
//! (the VTEP address of an IPv6 subnet, a nexthop id space of its own).

mod entries;
mod family;
mod kernel;
mod mac;
pub mod names;

pub use entries::{set_of, ArpEntry, DirectRoute, FdbEntry, KernelState, Nexthop, RouteEntry};
pub use family::{Family, Subnet, IPV6_NEXTHOP_IDS};
pub use kernel::{KernelContext, MainTable, NexthopSupport};
pub use mac::MacAddr;
pub use names::{derived_mac, device_name, ipv6_device_name, nexthop_gateway, nexthop_id, vtep_address};
