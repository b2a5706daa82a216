//! One consistent read of every lease under `<prefix>/subnets/`, and which key holds a subnet
//! that several keys name.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{GetOptions, KeyValue};
use ipnetwork::{Ipv4Network, Ipv6Network};

use super::keys::{key_name, prefix_end};
use super::{Registry, RegistryError};
use crate::lease::{self, EtcdLeaseId, Lease, LeaseAttrs, LeaseError, LeaseId, UnreadableKey};
use crate::logtext;

/// A key under the subnets prefix that is not a readable lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedLease {
    pub key: String,
    /// The lease the key names, when the key itself is readable (only its value is bad).
    pub id: Option<LeaseId>,
    /// The IPv6 subnet a readable dual-stack or IPv6-only key names (`10.5.52.0-24&fd00:5:0:34::-64`), even
    /// when its value is bad or another key holds its IPv4 subnet: never handed out twice.
    pub ipv6_subnet: Option<Ipv6Network>,
    /// The etcd lease the key is attached to, if any.
    pub etcd_lease: Option<EtcdLeaseId>,
    pub mod_revision: i64,
    pub create_revision: i64,
    pub error: String,
}

/// A key naming an IPv6 subnet: a lease's, or a malformed or alias key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Claim {
    /// As the key writes it (host bits kept).
    pub subnet: Ipv6Network,
    /// The key's last path element.
    pub key: String,
    /// The lease the key holds; `None` for a key another key holding the same lease beat.
    pub holds: Option<LeaseId>,
    pub create_revision: i64,
}

impl Ipv6Claim {
    /// Of two keys naming one IPv6 subnet, the one etcd created first (then the lower key)
    /// keeps it: the order every host computes alike.
    pub fn rank(&self) -> (i64, &str) {
        (self.create_revision, &self.key)
    }

    /// Whether the two keys' IPv6 subnets share an address (one contains the other's start).
    pub fn overlaps(&self, other: Ipv6Network) -> bool {
        self.subnet.contains(other.network()) || other.contains(self.subnet.network())
    }
}

impl MalformedLease {
    /// The lease whose key exists but holds no readable value, if the key names one.
    pub(super) fn unreadable(&self) -> Option<(LeaseId, UnreadableKey)> {
        self.id.map(|id| {
            (
                id,
                UnreadableKey {
                    mod_revision: self.mod_revision,
                    etcd_lease: self.etcd_lease,
                    create_revision: self.create_revision,
                },
            )
        })
    }
}

/// Every lease under `<prefix>/subnets/` at one revision.
#[derive(Debug, Clone, Default)]
pub struct LeaseListing {
    pub revision: i64,
    pub leases: Vec<Lease>,
    pub malformed: Vec<MalformedLease>,
    /// Per lease, the key holding it (see [`LeaseListing::add`]).
    pub holders: BTreeMap<LeaseId, ListedKey>,
    /// Keys skipped because another key holds their lease, with that lease; each is also
    /// in `malformed`, naming the holder.
    pub aliases: Vec<(String, LeaseId)>,
}

/// A key under the subnets prefix, and when etcd created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    /// The whole key, `<prefix>/subnets/10.5.52.0-24`.
    pub key: String,
    pub create_revision: i64,
}

impl ListedKey {
    /// The key's last path element, `10.5.52.0-24`.
    pub fn name(&self) -> &str {
        key_name(&self.key)
    }
}

/// Why a key naming a subnet another key holds is skipped, naming both keys. flanneld reads
/// `<subnet>&<ipv6>-<len>` (dual stack) as a second key for `<subnet>`, so such keys are
/// not refused; one subnet still has one lease.
fn alias_error(subnet: LeaseId, holder: &str) -> String {
    format!("it names subnet {subnet}, which the key {holder} held first; skipped until that key is deleted")
}

/// `decoded`, the value of the alias key `key`, as a malformed entry naming the holder.
pub(super) fn as_alias(decoded: Result<Lease, MalformedLease>, key: &str, subnet: LeaseId, holder: &str) -> MalformedLease {
    let (ipv6_subnet, etcd_lease, mod_revision, create_revision) = match decoded {
        Ok(lease) => (lease.ipv6_subnet, lease.etcd_lease, lease.mod_revision, lease.create_revision),
        Err(bad) => (bad.ipv6_subnet, bad.etcd_lease, bad.mod_revision, bad.create_revision),
    };
    let error = alias_error(subnet, holder);
    MalformedLease { key: key.to_string(), id: None, ipv6_subnet, etcd_lease, mod_revision, create_revision, error }
}

impl LeaseListing {
    /// Every IPv4 subnet a key names, readable or not: the keys holding them.
    pub fn occupied(&self) -> BTreeSet<Ipv4Network> {
        self.holders.keys().filter_map(|id| id.ipv4()).collect()
    }

    /// Every key naming an IPv6 subnet, readable or not: a malformed dual-stack key's IPv6
    /// subnet is as taken as its IPv4 one.
    pub fn ipv6_claims(&self) -> Vec<Ipv6Claim> {
        let leases = self.leases.iter().filter_map(|lease| {
            let key = self.holders.get(&lease.id()).map_or_else(|| lease.key_name(), |held| held.name().to_string());
            let (holds, create_revision) = (Some(lease.id()), lease.create_revision);
            lease.ipv6_subnet.map(|subnet| Ipv6Claim { subnet, key, holds, create_revision })
        });
        let malformed = self.malformed.iter().filter_map(|bad| {
            let (key, holds, create_revision) = (key_name(&bad.key).to_string(), bad.id, bad.create_revision);
            bad.ipv6_subnet.map(|subnet| Ipv6Claim { subnet, key, holds, create_revision })
        });
        leases.chain(malformed).collect()
    }

    /// Adds one decoded key. Of several keys naming one subnet, the one etcd created first
    /// (then the lower key) holds it, whatever the listing order; the others become malformed
    /// entries that name it.
    pub(super) fn add(&mut self, listed: ListedKey, decoded: Result<Lease, MalformedLease>) {
        let id = match &decoded {
            Ok(lease) => Some(lease.id()),
            Err(bad) => bad.id,
        };
        let decoded = match id {
            Some(id) => self.hold(id, listed, decoded),
            None => decoded,
        };
        match decoded {
            Ok(lease) => {
                self.leases.push(lease);
            }
            Err(malformed) => {
                self.malformed.push(malformed);
            }
        }
    }

    /// Gives the lease `subnet` to `listed` unless an earlier key holds it; returns what to add
    /// for it.
    fn hold(
        &mut self,
        subnet: LeaseId,
        listed: ListedKey,
        decoded: Result<Lease, MalformedLease>,
    ) -> Result<Lease, MalformedLease> {
        let rank = |k: &ListedKey| (k.create_revision, k.key.clone());
        match self.holders.get(&subnet).cloned() {
            None => {}
            Some(held) if rank(&held) < rank(&listed) => {
                self.aliases.push((listed.key.clone(), subnet));
                return Err(as_alias(decoded, &listed.key, subnet, held.name()));
            }
            Some(held) => {
                // A key created earlier can come later in key order: the one added before steps aside.
                let displaced = self.take(subnet);
                self.malformed.extend(displaced.map(|d| as_alias(d, &held.key, subnet, listed.name())));
                self.aliases.push((held.key, subnet));
            }
        }
        self.holders.insert(subnet, listed);
        decoded
    }

    /// Removes and returns what was added for the lease `subnet`.
    fn take(&mut self, subnet: LeaseId) -> Option<Result<Lease, MalformedLease>> {
        if let Some(at) = self.leases.iter().position(|l| l.id() == subnet) {
            return Some(Ok(self.leases.remove(at)));
        }
        let at = self.malformed.iter().position(|m| m.id == Some(subnet))?;
        Some(Err(self.malformed.remove(at)))
    }
}

impl Registry {
    /// Lists every lease under the subnets prefix as one consistent snapshot, read in pages so
    /// thousands of leases never sit in memory twice over (raw response and decoded leases). A
    /// page over [`MAX_RESPONSE_BYTES`] is read again with half as many keys.
    ///
    /// # Errors
    /// Any etcd failure; [`RegistryError::LeaseTooLarge`] when one key alone is over the limit.
    pub async fn list_leases(&self) -> Result<LeaseListing, RegistryError> {
        let mut listing = LeaseListing::default();
        let revision = self.read_lease_pages(false, |kv| self.add_to_listing(&mut listing, kv)).await?;
        listing.revision = revision;
        Ok(listing)
    }

    /// Every key under the subnets prefix that names an IPv6 subnet, read without the values
    /// (`etcdctl get --prefix --keys-only`): what [`LeaseListing::ipv6_claims`] gives, for a
    /// fraction of the bytes and none of the JSON.
    ///
    /// # Errors
    /// As [`Registry::list_leases`].
    pub async fn list_ipv6_claims(&self) -> Result<Vec<Ipv6Claim>, RegistryError> {
        let mut keys = Vec::new();
        self.read_lease_pages(true, |kv| {
            let key = String::from_utf8_lossy(kv.key());
            keys.extend(self.keys.lease_name(&key).map(|name| (name.to_string(), kv.create_revision())));
        })
        .await?;
        Ok(ipv6_claims_of_keys(keys))
    }

    /// Reads every key under the subnets prefix (with its value unless `keys_only`) as one
    /// consistent snapshot, page by page, handing each to `each`; returns the snapshot's
    /// revision. Pages keep thousands of leases from sitting in memory twice over (raw
    /// response and decoded leases); a page over [`MAX_RESPONSE_BYTES`] is read again with
    /// half as many keys.
    async fn read_lease_pages(&self, keys_only: bool, mut each: impl FnMut(&KeyValue)) -> Result<i64, RegistryError> {
        let prefix = self.keys.subnets();
        let end = prefix_end(&prefix);
        // The revision of the first page read, once one was.
        let mut snapshot = None;
        let mut from = prefix.into_bytes();
        let mut page = if keys_only { KEYS_ONLY_PAGE } else { LIST_PAGE };
        let floor = self.store.floor();
        loop {
            // Every page after the first reads at the first page's revision: one snapshot.
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if keys_only {
                options = options.with_keys_only();
            }
            if let Some(revision) = snapshot {
                options = options.with_revision(revision);
            }
            let key = from.clone();
            let result = self
                .call("list leases", |c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES).get(key, Some(options)).await }
                })
                .await;
            let response = match result {
                Err(RegistryError::TooLarge { status, .. }) => {
                    let reason = status.message();
                    let key = logtext::clip(&String::from_utf8_lossy(&from)).to_string();
                    page = smaller_page(page).ok_or(RegistryError::LeaseTooLarge { key, limit: MAX_RESPONSE_BYTES })?;
                    tracing::debug!(page, %reason, "lease listing page too large; reading fewer keys at a time");
                    continue;
                }
                other => other?,
            };
            if snapshot.is_none() {
                snapshot = Some(response.header().map(|h| h.revision()).unwrap_or_default());
                self.store.response(response.header(), floor);
            }
            response.kvs().iter().for_each(&mut each);
            match response.kvs().last() {
                Some(last) if response.more() => from = [last.key(), &[0]].concat(),
                _ => return Ok(snapshot.unwrap_or_default()),
            }
        }
    }

    fn add_to_listing(&self, listing: &mut LeaseListing, kv: &KeyValue) {
        if let Some(decoded) = self.decode(kv) {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            listing.add(ListedKey { key, create_revision: kv.create_revision() }, decoded);
        }
    }

    /// Decodes a key-value under the subnets prefix. `None` for keys that are not leases at all
    /// (deeper paths); a malformed lease names its subnet when the key itself was readable.
    pub(super) fn decode(&self, kv: &KeyValue) -> Option<Result<Lease, MalformedLease>> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let name = self.keys.lease_name(&key)?;
        let (mod_revision, create_revision) = (kv.mod_revision(), kv.create_revision());
        let etcd_lease = EtcdLeaseId::attached(kv.lease());
        let malformed = |subnets: Option<(Option<Ipv4Network>, Option<Ipv6Network>)>, error: LeaseError| {
            let (subnet, ipv6_subnet) = subnets.unwrap_or_default();
            let id = subnet.map(LeaseId::Ipv4).or(ipv6_subnet.map(LeaseId::Ipv6));
            let error = error.to_string();
            MalformedLease { key: key.clone(), id, ipv6_subnet, etcd_lease, mod_revision, create_revision, error }
        };
        let (subnet, ipv6_subnet) = match lease::parse_lease_key(name) {
            Ok(subnets) => subnets,
            Err(e) => return Some(Err(malformed(None, e))),
        };
        // Inside JSON strings Go reads invalid UTF-8 as U+FFFD, as the lossy conversion does;
        // outside strings the bytes make the JSON invalid in both Go and weft.
        let text = String::from_utf8_lossy(kv.value());
        let lease = LeaseAttrs::from_json(&text).and_then(|attrs| {
            let lease = Lease { subnet, ipv6_subnet, attrs, etcd_lease, mod_revision, create_revision };
            lease.check_main_part().map(|()| lease)
        });
        Some(lease.map_err(|e| malformed(Some((subnet, ipv6_subnet)), e)))
    }
}

/// The IPv6 claims of lease keys given as (name, create revision), as a full listing makes
/// them: of keys naming one lease (an IPv4-only key and a dual-stack key for the same IPv4
/// subnet, say), the one etcd created first, then the lower key, holds it; the others are
/// aliases (`holds: None`). Unreadable keys claim nothing.
fn ipv6_claims_of_keys(keys: Vec<(String, i64)>) -> Vec<Ipv6Claim> {
    let named: Vec<(LeaseId, Option<Ipv6Network>, String, i64)> = keys
        .into_iter()
        .filter_map(|(name, created)| {
            let (subnet, ipv6_subnet) = lease::parse_lease_key(&name).ok()?;
            Some((subnet.map(LeaseId::Ipv4).or(ipv6_subnet.map(LeaseId::Ipv6))?, ipv6_subnet, name, created))
        })
        .collect();
    let mut holders: BTreeMap<LeaseId, (i64, &str)> = BTreeMap::new();
    for (id, _, name, created) in &named {
        let rank = (*created, name.as_str());
        holders.entry(*id).and_modify(|held| *held = (*held).min(rank)).or_insert(rank);
    }
    named
        .iter()
        .filter_map(|(id, ipv6_subnet, name, created)| {
            let holds = (holders[id] == (*created, name.as_str())).then_some(*id);
            Some(Ipv6Claim { subnet: (*ipv6_subnet)?, key: name.clone(), holds, create_revision: *created })
        })
        .collect()
}

/// Keys per request when listing leases; fewer when a page comes back too large.
const LIST_PAGE: i64 = 500;

/// Keys per request when listing lease keys without values: a key is under 100 bytes, so
/// 10,000 of them are a response of about 1 MB, and 5,000 leases one round trip, not ten.
const KEYS_ONLY_PAGE: i64 = 10_000;

/// The largest etcd response weftd decodes, in bytes: the most one listing page or watch
/// response may hold in memory. flanneld's client takes up to 2 GiB; etcd's own limit on a
/// written value is 1.5 MiB (`--max-request-bytes`), so one key always fits, and a page of many
/// large values is read again in smaller pages.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// The page size to try after a page of `page` keys was too large; `None` at one key.
fn smaller_page(page: i64) -> Option<i64> {
    (page > 1).then_some(page / 2)
}

#[cfg(test)]
#[path = "listing_tests.rs"]
pub(super) mod tests;
