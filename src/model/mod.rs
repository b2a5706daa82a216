//! The vocabulary every module shares: the kernel entries weft owns, what the kernel holds
//! besides them that decides their form, the MAC address type, and the rules that name things.
//!
//! A leaf: it uses no other module of the crate, so `netlink` (the kernel), `reconcile` (the
//! policy) and `status` (the report) read one definition of each entry and each rule.
//!
//! Address families: every entry is IPv4 today (flanneld's vxlan backend with `EnableIPv4`).
//! IPv6 is meant as an addition beside it: twin entries (or a family parameter) keyed by
//! `Ipv6Addr`/`Ipv6Network`, with the rules in [`names`] given their IPv6 form, rather than a
//! rewrite of the IPv4 ones.

mod entries;
mod kernel;
mod mac;
pub mod names;

pub use entries::{ArpEntry, DirectRoute, FdbEntry, KernelState, Nexthop, RouteEntry};
pub use kernel::{KernelContext, MainTable, NexthopSupport};
pub use mac::MacAddr;
pub use names::{derived_mac, device_name, nexthop_gateway, nexthop_id, vtep_address};
