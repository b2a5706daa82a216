//! Choosing our subnet: our existing lease, the previous subnet, or a random free one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use rand::Rng;

use super::{Lease, LeaseAttrs, LeaseId};
use crate::config::{Ipv4Config, Ipv6Config};

/// Picks a random subnet between SubnetMin and SubnetMax that no key in `taken` holds.
/// Probing from a random start keeps hosts that start together from all racing for the same
/// subnet, and costs at most `taken.len() + 1` probes however large the Network is.
pub fn pick_free_subnet(config: &Ipv4Config, taken: &BTreeSet<Ipv4Network>) -> Option<Ipv4Network> {
    let taken = AddressRanges::new(taken.iter().map(|s| ipv4_range(*s)));
    let count = subnet_count(config);
    let start = rand::rng().random_range(0..count);
    (0..count).map(|i| nth_subnet(config, (start + i) % count)).find(|s| !taken.overlaps(ipv4_range(*s)))
}

/// Our lease's IPv6 subnet under a dual-stack or IPv6-only config: the one `current` already names if it is
/// one the config hands out and no other lease holds it (a restart, or our lease taken over),
/// else `previous` (from the last subnet.env) if free, else a random free one. `taken` holds
/// the IPv6 subnets of every other lease. `None` when the IPv6 Network has no free subnet.
pub fn choose_ipv6_subnet(
    v6: &Ipv6Config,
    taken: &BTreeSet<Ipv6Network>,
    current: Option<Ipv6Network>,
    previous: Option<Ipv6Network>,
) -> Option<Ipv6Network> {
    let ranges = AddressRanges::new(taken.iter().map(|s| ipv6_range(*s)));
    let free = |s: &Ipv6Network| ipv6_subnet_fits(v6, *s) && !ranges.overlaps(ipv6_range(*s));
    current.filter(free).or_else(|| previous.filter(free)).or_else(|| {
        let size = 1u128 << (128 - v6.subnet_len);
        let count = (u128::from(v6.subnet_max) - u128::from(v6.subnet_min)) / size + 1;
        let start = rand::rng().random_range(0..count);
        let nth = |n: u128| {
            Ipv6Network::new(Ipv6Addr::from(u128::from(v6.subnet_min) + n * size), v6.subnet_len).expect("valid prefix")
        };
        // At most `taken.len() + 1` probes, as for IPv4, however large the IPv6 Network.
        (0..count).map(|i| nth((start + i) % count)).find(|s| !ranges.overlaps(ipv6_range(*s)))
    })
}

/// Whether `subnet` is one the IPv6 config could hand out: of IPv6SubnetLen, aligned, inside
/// IPv6SubnetMin..IPv6SubnetMax.
pub fn ipv6_subnet_fits(v6: &Ipv6Config, subnet: Ipv6Network) -> bool {
    subnet.prefix() == v6.subnet_len && subnet.ip() == subnet.network() && (v6.subnet_min..=v6.subnet_max).contains(&subnet.ip())
}

/// The first and last address of an IPv4 subnet, as numbers both families share.
fn ipv4_range(subnet: Ipv4Network) -> (u128, u128) {
    (u128::from(u32::from(subnet.network())), u128::from(u32::from(subnet.broadcast())))
}

/// The first and last address of an IPv6 subnet, as numbers.
fn ipv6_range(subnet: Ipv6Network) -> (u128, u128) {
    (u128::from(subnet.network()), u128::from(subnet.broadcast()))
}

/// The addresses a set of subnets covers, as disjoint ranges of either family's addresses as
/// numbers, so whether a subnet overlaps any of them (a lease of another length, left from
/// before SubnetLen changed) is one lookup.
struct AddressRanges(BTreeMap<u128, u128>);

impl AddressRanges {
    /// The ranges covering these `(first, last)` address ranges, given in ascending order of
    /// their first address.
    fn new(subnets: impl Iterator<Item = (u128, u128)>) -> Self {
        let mut ranges: BTreeMap<u128, u128> = BTreeMap::new();
        for (first, last) in subnets {
            // Sorted by network address, a subnet either lies inside the last range, extends
            // it, or starts a new one.
            match ranges.range(..=first).next_back().map(|(start, end)| (*start, *end)) {
                Some((start, end)) if end >= first => ranges.insert(start, end.max(last)),
                _ => ranges.insert(first, last),
            };
        }
        AddressRanges(ranges)
    }

    fn overlaps(&self, (first, last): (u128, u128)) -> bool {
        self.0.range(..=last).next_back().is_some_and(|(_, end)| *end >= first)
    }
}

/// How many subnets lie between SubnetMin and SubnetMax.
fn subnet_count(config: &Ipv4Config) -> u32 {
    (u32::from(config.subnet_max) - u32::from(config.subnet_min)) / config.subnet_size() + 1
}

fn nth_subnet(config: &Ipv4Config, n: u32) -> Ipv4Network {
    let network = u32::from(config.subnet_min) + n * config.subnet_size();
    Ipv4Network::new(Ipv4Addr::from(network), config.subnet_len).expect("valid prefix")
}

/// Every subnet the config allows, from SubnetMin to SubnetMax.
pub fn candidate_subnets(config: &Ipv4Config) -> impl Iterator<Item = Ipv4Network> + '_ {
    (0..subnet_count(config)).map(|n| nth_subnet(config, n))
}

/// Whether `subnet` is one the config could hand out (right size, inside the range).
pub fn subnet_fits(config: &Ipv4Config, subnet: Ipv4Network) -> bool {
    subnet.prefix() == config.subnet_len && subnet.network() >= config.subnet_min && subnet.network() <= config.subnet_max
}

/// What to do to get a lease, in flanneld's order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A lease (or reservation) already carrying our PublicIP: take it over.
    Existing(Lease),
    /// A free subnet to create a new lease for: an IPv4 subnet, or under an IPv6-only config
    /// an IPv6 one.
    Free(LeaseId),
    /// Our IPv6-only lease, from before IPv4 was turned on: it gains the free IPv4 `subnet`
    /// and keeps its IPv6 one.
    Extend { lease: Lease, subnet: Ipv4Network },
}

impl Claim {
    /// The lease claimed as it is, if any (taken over or extended).
    pub fn existing(&self) -> Option<&Lease> {
        match self {
            Claim::Existing(lease) | Claim::Extend { lease, .. } => Some(lease),
            Claim::Free(_) => None,
        }
    }
}

/// Of the leases carrying our public address, the one on our `previous` subnet (the lease we
/// held), else the first: another key carrying our address (stale, or copied) never takes a
/// restarted host off its own subnet.
fn ours_first<'l>(carrying_ours: impl Iterator<Item = &'l Lease>, on_previous: impl Fn(&Lease) -> bool) -> Option<&'l Lease> {
    let candidates: Vec<&Lease> = carrying_ours.collect();
    candidates.iter().find(|l| on_previous(l)).or(candidates.first()).copied()
}

/// Chooses our lease: an existing one with our PublicIP (`ours.public_ip`), else the lease on
/// the `previous` subnet if it carries our VtepMAC (an older value of our own lease: from
/// before the underlay was readdressed, restored from a backup), else the `previous` subnet (from
/// the last subnet.env or the lease we held) if it is still free, else a random free subnet.
/// `occupied` holds every subnet that has a key, readable or not, so a malformed key is never
/// handed out twice. `None` means the Network has no free subnet left.
pub fn choose_claim(
    config: &Ipv4Config,
    ours: &LeaseAttrs,
    leases: &[Lease],
    occupied: &BTreeSet<Ipv4Network>,
    previous: Option<Ipv4Network>,
) -> Option<Claim> {
    let fits = |l: &&Lease| l.subnet.is_some_and(|s| config.network.contains(s.network()) && s.prefix() == config.subnet_len);
    let by_ip = ours_first(leases.iter().filter(fits).filter(|l| l.attrs.public_ip == ours.public_ip), |l| l.subnet == previous);
    let mac = |attrs: &LeaseAttrs| attrs.backend_data.as_ref().map(|data| data.vtep_mac);
    let by_mac = || leases.iter().filter(fits).find(|l| l.subnet == previous && mac(&l.attrs) == mac(ours));
    if let Some(lease) = by_ip.or_else(by_mac) {
        return Some(Claim::Existing(lease.clone()));
    }
    let occupied_ranges = || AddressRanges::new(occupied.iter().map(|s| ipv4_range(*s)));
    if let Some(subnet) = previous.filter(|s| subnet_fits(config, *s) && !occupied_ranges().overlaps(ipv4_range(*s))) {
        return Some(Claim::Free(LeaseId::Ipv4(subnet)));
    }
    pick_free_subnet(config, occupied).map(|subnet| Claim::Free(LeaseId::Ipv4(subnet)))
}

/// Under a dual-stack config (`v6`), a free IPv4 `claim` becomes [`Claim::Extend`] when one of
/// `leases` is our IPv6-only lease (our PublicIPv6, an IPv6 subnet `v6` hands out): turning
/// IPv4 back on keeps each host's IPv6 subnet, as turning IPv6 on keeps its IPv4 one.
pub fn extending_ipv6_only(claim: Claim, v6: &Ipv6Config, ours: &LeaseAttrs, leases: &[Lease]) -> Claim {
    let Claim::Free(LeaseId::Ipv4(subnet)) = claim else { return claim };
    let fits = |l: &&Lease| l.subnet.is_none() && l.ipv6_subnet.is_some_and(|s| ipv6_subnet_fits(v6, s));
    let ours_v6 = |l: &&Lease| ours.public_ipv6.is_some() && l.attrs.public_ipv6 == ours.public_ipv6;
    match leases.iter().filter(fits).find(ours_v6) {
        Some(lease) => Claim::Extend { lease: lease.clone(), subnet },
        None => claim,
    }
}

/// Chooses our lease under an IPv6-only config, in the same order as [`choose_claim`]: a lease
/// whose IPv6 subnet the config hands out and that carries our PublicIPv6 (IPv6-only, or a
/// dual-stack lease of ours from before IPv4 was turned off: taken over, it loses its IPv4
/// part), else the one on the `previous` IPv6 subnet carrying our IPv6 VtepMAC, else `previous`
/// if free, else a random free IPv6 subnet. `taken` holds every IPv6 subnet a key names.
/// `None` means the IPv6 Network has no free subnet left.
pub fn choose_ipv6_only_claim(
    v6: &Ipv6Config,
    ours: &LeaseAttrs,
    leases: &[&Lease],
    taken: &BTreeSet<Ipv6Network>,
    previous: Option<Ipv6Network>,
) -> Option<Claim> {
    let fits = |l: &&Lease| l.ipv6_subnet.is_some_and(|s| ipv6_subnet_fits(v6, s));
    let with_our_ip =
        leases.iter().copied().filter(fits).filter(|l| ours.public_ipv6.is_some() && l.attrs.public_ipv6 == ours.public_ipv6);
    let by_ip = ours_first(with_our_ip, |l| l.ipv6_subnet == previous);
    let mac = |attrs: &LeaseAttrs| attrs.backend_v6_data.as_ref().map(|data| data.vtep_mac);
    let by_mac = || leases.iter().copied().filter(fits).find(|l| l.ipv6_subnet == previous && mac(&l.attrs) == mac(ours));
    if let Some(lease) = by_ip.or_else(by_mac) {
        return Some(Claim::Existing(lease.clone()));
    }
    choose_ipv6_subnet(v6, taken, None, previous).map(|subnet| Claim::Free(LeaseId::Ipv6(subnet)))
}
