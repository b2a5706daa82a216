//! Subnet leases: flannel's etcd key and value formats, the set of leases weft follows, and
//! picking a free subnet (pure). `codec` reads and writes values, `key` the key grammar,
//! `claim` the choice of a subnet.
//!
//! A lease lives at `<prefix>/subnets/10.5.52.0-24` with a JSON value such as
//! `{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`.
//! The encoder writes exactly that shape so flanneld peers can read it; the decoder reads keys
//! and values exactly as flanneld v0.20.2 does (its key pattern, Go's JSON rules).

use std::collections::BTreeMap;

use ipnetwork::{Ipv4Network, Ipv6Network};
use thiserror::Error;

// The type lives in `model`; reading it from text (Go's rules, `LeaseError`) stays here.
pub use crate::model::MacAddr;

/// The only backend weft speaks.
pub const BACKEND_VXLAN: &str = "vxlan";

/// Why a lease key or value could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LeaseError {
    #[error("lease key {0:?} is neither one flanneld reads (<ip>-<prefix length 0-31>, optionally &<ipv6>-<length>, e.g. 10.5.52.0-24) nor weft's IPv6-only key (<ipv6, compressed, lower case>-<length>, e.g. fd00:5:0:34::-64); delete it")]
    BadKey(String),
    #[error("lease key {key:?} is not how flannel writes the key of subnet {subnet} ({canonical:?}); it is ignored so it cannot alias that subnet's lease; delete it")]
    AliasKey { key: String, subnet: Ipv4Network, canonical: String },
    #[error("lease value is not flannel lease JSON: {0}")]
    BadValue(String),
    #[error("\"{0}\" is not a MAC address like c6:d2:32:6f:8f:44")]
    BadMac(String),
    #[error(
        "VtepMAC {0} is a multicast or all-zero address, which no VTEP has; the lease's host must write its VXLAN device's MAC"
    )]
    NotUnicastMac(MacAddr),
}

mod claim;
mod codec;
#[cfg(test)]
mod ipv6_only_tests;
mod key;
#[cfg(test)]
mod tests;

pub use claim::{
    candidate_subnets, choose_claim, choose_ipv6_only_claim, choose_ipv6_subnet, extending_ipv6_only, ipv6_subnet_fits,
    pick_free_subnet, subnet_fits, Claim,
};
pub use codec::{BackendType, LeaseAttrs, VxlanData};
pub use key::{lease_key, parse_lease_id, parse_lease_key, subnet_key};

/// What names a lease among the others: its IPv4 subnet (IPv4-only and dual-stack leases), or
/// for an IPv6-only lease, which has none, its IPv6 subnet. The key of every per-lease map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseId {
    Ipv4(Ipv4Network),
    Ipv6(Ipv6Network),
}

impl LeaseId {
    /// The IPv4 subnet this names, if it names one.
    pub fn ipv4(self) -> Option<Ipv4Network> {
        match self {
            Self::Ipv4(subnet) => Some(subnet),
            Self::Ipv6(_) => None,
        }
    }

    /// The IPv6 subnet this names, if it names one (an IPv6-only lease).
    pub fn ipv6(self) -> Option<Ipv6Network> {
        match self {
            Self::Ipv4(_) => None,
            Self::Ipv6(subnet) => Some(subnet),
        }
    }
}

impl std::str::FromStr for LeaseId {
    type Err = ipnetwork::IpNetworkError;

    /// A CIDR: `10.5.52.0/24` names an IPv4 (or dual-stack) lease, `fd00:5:0:34::/64` an
    /// IPv6-only one.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.parse()? {
            ipnetwork::IpNetwork::V4(subnet) => Self::Ipv4(subnet),
            ipnetwork::IpNetwork::V6(subnet) => Self::Ipv6(subnet),
        })
    }
}

impl From<Ipv4Network> for LeaseId {
    fn from(subnet: Ipv4Network) -> Self {
        Self::Ipv4(subnet)
    }
}

impl std::fmt::Display for LeaseId {
    /// `10.5.52.0/24`, or `fd00:5:0:34::/64` for an IPv6-only lease.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ipv4(subnet) => subnet.fmt(f),
            Self::Ipv6(subnet) => subnet.fmt(f),
        }
    }
}

/// A subnet lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The IPv4 subnet; `None` for an IPv6-only lease (`"EnableIPv4": false`), whose key is its
    /// IPv6 part alone. Every lease has at least one of the two subnets.
    pub subnet: Option<Ipv4Network>,
    /// The IPv6 subnet of a dual-stack or IPv6-only lease, from its key's `fd00:…-64` part, as
    /// written (host bits kept); `None` for an IPv4-only lease.
    pub ipv6_subnet: Option<Ipv6Network>,
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is attached to; `None` for a reservation, which never expires.
    pub etcd_lease: Option<EtcdLeaseId>,
    /// The key's etcd mod revision, used for compare-and-swap updates.
    pub mod_revision: i64,
    /// The etcd revision that created the key: unlike the mod revision it survives flanneld's
    /// renewals (a put), so it tells the established of two conflicting leases.
    pub create_revision: i64,
}

impl Lease {
    /// The last path element of this lease's key as weft writes it ([`lease_key`]).
    pub fn key_name(&self) -> String {
        lease_key(self.id(), self.ipv6_subnet)
    }

    /// Whether the part that names the lease can be used: an IPv4 subnet needs `BackendData`;
    /// an IPv6-only lease needs a readable `PublicIPv6` and `BackendV6Data`, having nothing
    /// else (a dual-stack lease's IPv6 part may fail alone, see `LeaseAttrs::ipv6_error`).
    ///
    /// # Errors
    /// [`LeaseError::BadValue`] naming what is missing.
    pub fn check_main_part(&self) -> Result<(), LeaseError> {
        let attrs = &self.attrs;
        match self.id() {
            LeaseId::Ipv4(_) if attrs.backend_data.is_none() => Err(LeaseError::BadValue("it has no BackendData".into())),
            LeaseId::Ipv4(_) => Ok(()),
            LeaseId::Ipv6(_) => match (&attrs.ipv6_error, attrs.public_ipv6, &attrs.backend_v6_data) {
                (Some(problem), _, _) => Err(LeaseError::BadValue(problem.to_string())),
                (None, None, _) => Err(LeaseError::BadValue("its key is IPv6 only but it has no PublicIPv6".into())),
                (None, _, None) => Err(LeaseError::BadValue("its key is IPv6 only but it has no BackendV6Data".into())),
                (None, Some(_), Some(_)) => Ok(()),
            },
        }
    }

    /// What names this lease: its IPv4 subnet, or an IPv6-only lease's IPv6 subnet.
    pub fn id(&self) -> LeaseId {
        match (self.subnet, self.ipv6_subnet) {
            (Some(subnet), _) => LeaseId::Ipv4(subnet),
            (None, Some(subnet)) => LeaseId::Ipv6(subnet),
            // Keys are parsed (`parse_lease_key`) and claimed with at least one subnet.
            (None, None) => unreachable!("a lease without a subnet"),
        }
    }

    /// Whether the key hangs on no etcd lease: flannel's reservation, only for its PublicIP.
    pub fn is_reservation(&self) -> bool {
        self.etcd_lease.is_none()
    }
}

/// The id of an etcd lease (`etcdctl lease list`) a key is attached to. etcd reports a key on
/// none with the id 0, which [`EtcdLeaseId::attached`] turns into `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtcdLeaseId(pub i64);

impl EtcdLeaseId {
    /// The etcd lease of a key whose `lease` field etcd reports as `id`; `None` for 0.
    pub fn attached(id: i64) -> Option<Self> {
        (id != 0).then_some(Self(id))
    }
}

impl std::fmt::Display for EtcdLeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A subnet's lease key whose value cannot be read (see [`LeaseSet::unreadable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadableKey {
    /// The key's etcd mod revision, for a compare-and-swap repair by its owner.
    pub mod_revision: i64,
    /// The etcd lease the key is attached to; `None` for none.
    pub etcd_lease: Option<EtcdLeaseId>,
    /// The etcd revision that created the key, to tell an overwrite from a new key.
    pub create_revision: i64,
}

/// All leases known at one etcd revision, keyed by what names them ([`LeaseId`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseSet {
    /// The etcd revision the set reflects; `None` until the first listing, when the set is
    /// no picture of etcd at all.
    pub revision: Option<i64>,
    pub leases: BTreeMap<LeaseId, Lease>,
    /// Subnets whose key exists but holds no readable lease: their kernel entries stay as
    /// they are (a last good value in `leases` is kept) until the key is fixed or deleted.
    pub unreadable: BTreeMap<LeaseId, UnreadableKey>,
    /// When the last change arrived from etcd (for the event-to-kernel latency metric).
    pub changed_at: Option<std::time::Instant>,
    /// Per subnet, the etcd revision since which its lease has advertised its current VtepMAC
    /// (see [`LeaseSet::mac_since`]): of two leases carrying one MAC, the first to advertise
    /// it keeps it, however old the other's key. Only where that is not the lease's last write
    /// (a lease rewritten with its MAC unchanged): thousands of entries that say what the lease
    /// already says cost memory at every copy of the set.
    pub mac_since: BTreeMap<LeaseId, i64>,
    /// The same for the IPv6 VtepMAC (`BackendV6Data`) of a dual-stack lease: the IPv6 device
    /// is a device of its own, and its MAC has an owner of its own.
    pub ipv6_mac_since: BTreeMap<LeaseId, i64>,
    /// Per subnet, the name of the key holding it, where that is not the plain
    /// [`subnet_key`] (a key with a dual-stack part such as `10.5.52.0-24&fd00::-64`): another
    /// key naming the same subnet is skipped. See [`LeaseSet::key_of`].
    pub keys: BTreeMap<LeaseId, String>,
}

/// The etcd revisions since which a lease has advertised its VtepMACs, IPv4 and IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAges {
    pub ipv4: i64,
    pub ipv6: i64,
}

impl LeaseSet {
    /// The etcd revision since which `lease` has advertised its VtepMAC; where the follower
    /// never recorded one, the lease's last write, the best a single listing knows.
    pub fn mac_since(&self, lease: &Lease) -> i64 {
        self.mac_since.get(&lease.id()).copied().unwrap_or(lease.mod_revision)
    }

    /// As [`LeaseSet::mac_since`], for the IPv6 VtepMAC.
    pub fn ipv6_mac_since(&self, lease: &Lease) -> i64 {
        self.ipv6_mac_since.get(&lease.id()).copied().unwrap_or(lease.mod_revision)
    }

    /// Both ages of `lease` as this set has them.
    pub fn mac_ages(&self, lease: &Lease) -> MacAges {
        MacAges { ipv4: self.mac_since(lease), ipv6: self.ipv6_mac_since(lease) }
    }

    /// The revisions since which `lease`, just read, advertises its VtepMACs: each kept from
    /// this set when the subnet's lease here carries the same MAC, else the new value's write.
    pub fn mac_since_for(&self, lease: &Lease) -> MacAges {
        let Some(known) = self.leases.get(&lease.id()) else {
            return MacAges { ipv4: lease.mod_revision, ipv6: lease.mod_revision };
        };
        let ipv6_mac = |l: &Lease| l.attrs.backend_v6_data.as_ref().map(|data| data.vtep_mac);
        let ipv4_mac = |l: &Lease| l.attrs.backend_data.as_ref().map(|data| data.vtep_mac);
        let same_ipv4 = ipv4_mac(known).is_some() && ipv4_mac(known) == ipv4_mac(lease);
        let same_ipv6 = ipv6_mac(known).is_some() && ipv6_mac(known) == ipv6_mac(lease);
        MacAges {
            ipv4: if same_ipv4 { self.mac_since(known) } else { lease.mod_revision },
            ipv6: if same_ipv6 { self.ipv6_mac_since(known) } else { lease.mod_revision },
        }
    }

    /// Records a lease read from the key `key` (its name, as in [`LeaseSet::keys`]), keeping
    /// when its VtepMAC was first advertised if that is unchanged.
    pub fn put(&mut self, key: String, lease: Lease) {
        let since = self.mac_since_for(&lease);
        self.record_mac_since(&lease, since);
        let id = lease.id();
        self.unreadable.remove(&id);
        self.leases.insert(id, lease);
        self.record_key(id, key);
    }

    /// Notes since which revisions `lease` has advertised its VtepMACs.
    pub fn record_mac_since(&mut self, lease: &Lease, since: MacAges) {
        for (ages, since) in [(&mut self.mac_since, since.ipv4), (&mut self.ipv6_mac_since, since.ipv6)] {
            match since == lease.mod_revision {
                true => ages.remove(&lease.id()),
                false => ages.insert(lease.id(), since),
            };
        }
    }

    /// Notes that the key named `key` holds the lease `id`; kept only where the name is not the
    /// one weft writes for the lease held (or, with none, the plain key of `id`).
    pub fn record_key(&mut self, id: LeaseId, key: String) {
        let written = self.leases.get(&id).map_or_else(|| lease_key(id, None), Lease::key_name);
        match key == written {
            true => self.keys.remove(&id),
            false => self.keys.insert(id, key),
        };
    }

    /// The name of the key holding the lease `id`, if any key does.
    pub fn key_of(&self, id: LeaseId) -> Option<String> {
        let written = || match self.leases.get(&id) {
            Some(lease) => Some(lease.key_name()),
            None => self.unreadable.contains_key(&id).then(|| lease_key(id, None)),
        };
        self.keys.get(&id).cloned().or_else(written)
    }

    /// Forgets the lease `id`: its key was deleted.
    pub fn remove(&mut self, id: LeaseId) {
        self.leases.remove(&id);
        self.unreadable.remove(&id);
        self.mac_since.remove(&id);
        self.ipv6_mac_since.remove(&id);
        self.keys.remove(&id);
    }
}
