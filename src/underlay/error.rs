//! Why the underlay choice found nothing: a flag's miss (the next flag is tried) and the error
//! that ends the choice, each naming the problem, the interfaces there are and what to do.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use nix::errno::Errno;
use thiserror::Error;

use super::ipv6::{listed_ipv6, Listed};
use super::{usable_addresses, HostView};
use crate::netlink::{Ipv4Link, Ipv6Address, NetlinkError};

/// Why one flag (or the default route) gave no underlay; the next flag is tried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Miss {
    #[error("--iface={value}: no interface has the IPv4 address {value}")]
    NoSuchAddress { value: String },
    #[error("--iface={value}: an IPv6 address, and the network config does not enable IPv6 (EnableIPv6)")]
    Ipv6Address { value: String },
    #[error("--iface={value}: no interface has the IPv6 address {value}")]
    NoSuchIpv6Address { value: String },
    #[error(
        "--iface={value}: an IPv4 address, and the network config is IPv6 only (EnableIPv4 is false); give one of \
         the interface's IPv6 addresses or its name"
    )]
    Ipv4AddressIpv6Only { value: String },
    #[error("--iface={value}: no interface is named {value:?}")]
    NoSuchName { value: String },
    #[error("{via}: interface {name} has no usable IPv4 address (global or link-local)")]
    NoAddress { via: String, name: String },
    #[error(
        "{via}: interface {name} has no usable IPv6 address (global, not refused by duplicate address \
         detection), and the network config enables IPv6"
    )]
    NoIpv6Address { via: String, name: String },
    #[error("{via}: interface {name} reports an MTU of 0")]
    NoMtu { via: String, name: String },
    #[error("--iface-regex={pattern}: matches no interface's {families} address or name")]
    NoPatternMatch { pattern: String, families: &'static str },
    #[error("--iface-can-reach={destination}: the kernel has no route to it ({errno})")]
    NoRoute { destination: Ipv4Addr, errno: Errno },
    #[error(
        "--iface-can-reach={destination}: an IPv4 destination needs an IPv4 route, and the network config is IPv6 \
         only (EnableIPv4 is false); choose the interface with --iface=<name or IPv6 address> or --iface-regex"
    )]
    CanReachNeedsIpv4 { destination: Ipv4Addr },
    #[error("{via}: the route has no single output interface (multipath or unreachable)")]
    RouteWithoutInterface { via: String },
    #[error("{via}: the route's output interface (index {index}) no longer exists")]
    RouteInterfaceGone { via: String, index: u32 },
}

/// The interfaces an error offers instead, as flanneld lists them: `eth0:[192.168.78.11]`,
/// and when the config enables IPv6, the usable IPv6 addresses after the IPv4 ones, best first:
/// `eth0:[192.168.78.11 fd18::11 fe80::1]`; when it is IPv6 only, the IPv6 ones alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available(pub Vec<(String, Vec<Ipv4Addr>, Vec<Ipv6Address>)>);

impl Available {
    pub(super) fn of(host: &HostView) -> Self {
        let ipv6 = |index| host.ipv6.as_ref().map(|v6| listed_ipv6(&v6.addresses, index)).unwrap_or_default();
        let ipv4 = |l: &Ipv4Link| if host.ipv6_only().is_some() { Vec::new() } else { usable_addresses(&l.addresses) };
        Self(host.links.iter().map(|l| (l.name.clone(), ipv4(l), ipv6(l.index))).collect())
    }
}

impl fmt::Display for Available {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, addresses, ipv6)) in self.0.iter().enumerate() {
            let addresses: Vec<String> =
                addresses.iter().map(Ipv4Addr::to_string).chain(ipv6.iter().map(|a| Listed(*a).to_string())).collect();
            write!(f, "{}{name}:[{}]", if i == 0 { "" } else { ", " }, addresses.join(" "))?;
        }
        Ok(())
    }
}

/// Why no underlay could be chosen.
#[derive(Debug, Error)]
pub enum UnderlayError {
    #[error("cannot read this host's interfaces and routes: {0}")]
    Kernel(#[from] NetlinkError),
    #[error(
        "no interface matches --iface/--iface-regex/--iface-can-reach ({}); available interfaces: {available}; \
         give an interface name or one of its {family} addresses with --iface, or a pattern for either with \
         --iface-regex",
        join(misses)
    )]
    NoMatch { misses: Vec<Miss>, available: Available, family: &'static str },
    #[error(
        "--public-ip={public_ip}: no interface has this address, so it cannot tell which interface to use \
         (available interfaces: {available}); if peers reach this host at an address it does not hold (NAT), \
         keep --public-ip and choose the interface with --iface=<name or address>"
    )]
    PublicIpNotLocal { public_ip: Ipv4Addr, available: Available },
    #[error(
        "--public-ipv6={public_ipv6}: no interface has this address, so it cannot tell which interface to use \
         (available interfaces: {available}); if peers reach this host at an address it does not hold (NAT), \
         keep --public-ipv6 and choose the interface with --iface=<name or address>"
    )]
    PublicIpv6NotLocal { public_ipv6: Ipv6Addr, available: Available },
    #[error(
        "there is no IPv4 default route to take the underlay from (available interfaces: {available}); \
         choose one with --iface=<name or address>, --iface-regex or --iface-can-reach, or add a default route"
    )]
    NoDefaultRoute { available: Available },
    #[error(
        "there is no IPv6 default route to take the underlay from, and the network config is IPv6 only \
         (EnableIPv4 is false) (available interfaces: {available}); choose one with --iface=<name or IPv6 address> \
         or --iface-regex, or add an IPv6 default route"
    )]
    NoIpv6OnlyDefaultRoute { available: Available },
    #[error(
        "the network config enables IPv6, and there is no IPv6 default route to take its underlay address from \
         (the IPv4 default route leaves by {ipv4_iface}; available interfaces: {available}); add an IPv6 default \
         route by {ipv4_iface}, or choose the interface with --iface=<name or address>"
    )]
    NoIpv6DefaultRoute { ipv4_iface: String, available: Available },
    #[error(
        "the IPv4 default route leaves by {ipv4_iface} but the IPv6 default route by {ipv6_iface}: both families \
         must use one underlay interface (available interfaces: {available}); choose it with \
         --iface=<name or address>, or make both default routes leave by the same interface"
    )]
    DefaultRoutesDiffer { ipv4_iface: String, ipv6_iface: String, available: Available },
    #[error("{miss} (available interfaces: {available}); choose another with --iface=<name or address>")]
    Unusable { miss: Miss, available: Available },
}

fn join(misses: &[Miss]) -> String {
    misses.iter().map(Miss::to_string).collect::<Vec<_>>().join("; ")
}
