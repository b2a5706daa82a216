//! Acquiring our lease (create-if-absent, or take over our own), rewriting it in place, and
//! renewing it.

use std::time::Duration;

use std::collections::BTreeSet;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{Ipv6Claim, LeaseListing, Registry, RegistryError};
use crate::config::{Ipv6Config, NetworkConfig};
use crate::lease::{self, Claim, EtcdLeaseId, Lease, LeaseAttrs, LeaseId};

/// The subnets a host held before (its last subnet.env, or the lease it lost), asked for again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Previous {
    pub subnet: Option<Ipv4Network>,
    pub ipv6_subnet: Option<Ipv6Network>,
}

impl Registry {
    /// Acquires our lease in flanneld's order (see [`lease::choose_claim`], and
    /// [`lease::choose_ipv6_only_claim`] for an IPv6-only config), retrying when another host
    /// wins a race for the same subnet.
    pub async fn acquire(
        &self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
        ttl: Duration,
        previous: Previous,
    ) -> Result<Lease, RegistryError> {
        loop {
            let listing = self.list_leases().await?;
            let (claim, ipv6_subnet) = choose(config, attrs, &listing, previous)?;
            // Gone before `ipv6_contested` lists again: two listings of thousands of leases at
            // once were a dual-stack start's peak memory.
            drop(listing);
            let won = match &claim {
                Claim::Existing(existing) => {
                    // Under an IPv6-only config a lease taken over loses any IPv4 part.
                    let subnet = existing.subnet.filter(|_| config.ipv4.is_some());
                    self.take_over(existing, (subnet, ipv6_subnet), attrs, ttl).await?
                }
                Claim::Extend { lease, subnet } => self.take_over(lease, (Some(*subnet), ipv6_subnet), attrs, ttl).await?,
                Claim::Free(id) => self.create(id.ipv4(), ipv6_subnet, attrs, ttl).await?,
            };
            match won {
                Some(lease) => match self.ipv6_contested(&lease).await? {
                    None => return Ok(lease),
                    Some(first) => {
                        let (ipv6_subnet, holder) = (lease.ipv6_subnet.map(|s| s.to_string()), first.key);
                        tracing::info!(ipv6_subnet, %holder, "another key named our IPv6 subnet first; choosing another");
                        self.give_up_ipv6_only(&lease).await?;
                    }
                },
                None => tracing::debug!(?claim, "lost a race for a subnet; choosing again"),
            }
            // A little jitter so hosts that collided do not collide again in lockstep.
            let jitter = rand::random::<u64>() % 50;
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
    }

    /// The key that named `ours`'s IPv6 subnet before our key did, if any. etcd compares keys
    /// only by prefix, so no transaction can fail on an IPv6 subnet another key's suffix
    /// names: after winning, one more listing tells. Of two keys naming one IPv6 subnet the
    /// later ([`Ipv6Claim::rank`]) gives it up; it sees the earlier one, which was written
    /// before it listed, while the earlier may not see it and need not.
    async fn ipv6_contested(&self, ours: &Lease) -> Result<Option<Ipv6Claim>, RegistryError> {
        let Some(subnet) = ours.ipv6_subnet else { return Ok(None) };
        let claims = self.list_ipv6_claims().await?;
        Ok(first_ipv6_claim(&claims, subnet, (ours.create_revision, &ours.key_name())).cloned())
    }

    /// Deletes the key of our IPv6-only `lease` if nobody changed it since we wrote it: its key
    /// is the IPv6 subnet another key named first, so it holds nothing we keep (a dual-stack key
    /// instead moves with its new IPv6 subnet). A reservation is the operator's and stays.
    async fn give_up_ipv6_only(&self, lease: &Lease) -> Result<(), RegistryError> {
        if lease.subnet.is_some() || lease.is_reservation() {
            return Ok(());
        }
        let key = self.keys.lease_of(lease);
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key.clone(), CompareOp::Equal, lease.mod_revision)])
            .and_then(vec![TxnOp::delete(key, None)]);
        self.txn("give up a contested IPv6-only key", txn).await.map(drop)
    }

    /// Runs `txn` (`what` names it in errors), noting the store that answered.
    async fn txn(&self, what: &'static str, txn: Txn) -> Result<etcd_client::TxnResponse, RegistryError> {
        let floor = self.store.floor();
        let response = self
            .call(what, |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        self.store.response(response.header(), floor);
        Ok(response)
    }

    /// Creates a lease only if no key names its IPv4 subnet (`version == 0` over every key
    /// starting `10.5.52.0-24`, the plain key and every dual-stack one); an IPv6-only lease
    /// (`subnet` `None`) only if its key does not exist (other keys naming its IPv6 subnet are
    /// found by [`Registry::acquire`]'s second listing). `None` if one does.
    async fn create(
        &self,
        subnet: Option<Ipv4Network>,
        ipv6_subnet: Option<Ipv6Network>,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let etcd_lease = Some(self.grant(ttl).await?);
        let lease = Lease { subnet, ipv6_subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, create_revision: 0 };
        let condition = match lease.id() {
            id @ LeaseId::Ipv4(_) => Compare::version(self.keys.lease(id), CompareOp::Equal, 0).with_prefix(),
            LeaseId::Ipv6(_) => Compare::version(self.keys.lease_of(&lease), CompareOp::Equal, 0),
        };
        self.put_if(vec![condition], Vec::new(), lease).await
    }

    /// Rewrites an existing lease with our attributes and `subnets` (IPv4, IPv6: a lease from
    /// before IPv6 was turned on gains an IPv6 subnet, keeping its IPv4 one; one from before
    /// IPv4 was turned off loses its IPv4 part, one from before it was turned back on gains
    /// one; its key then changes, so the old key is deleted in the same transaction), if nobody
    /// changed it since we read it and no key names an IPv4 subnet it gains. A reservation
    /// stays a reservation (no etcd lease, never expires).
    async fn take_over(
        &self,
        existing: &Lease,
        (subnet, ipv6_subnet): (Option<Ipv4Network>, Option<Ipv6Network>),
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let old_key = self.keys.lease_of(existing);
        let etcd_lease = if existing.is_reservation() { None } else { Some(self.grant(ttl).await?) };
        let mut conditions = vec![Compare::mod_revision(old_key.clone(), CompareOp::Equal, existing.mod_revision)];
        if let (None, Some(gained)) = (existing.subnet, subnet) {
            // As `create`: no other key may name an IPv4 subnet we gain.
            conditions.push(Compare::version(self.keys.lease(LeaseId::Ipv4(gained)), CompareOp::Equal, 0).with_prefix());
        }
        let lease = Lease { subnet, ipv6_subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, ..existing.clone() };
        let moved = self.keys.lease_of(&lease) != old_key;
        // A new key is a new key: its create revision is the transaction's.
        let lease = if moved { Lease { create_revision: 0, ..lease } } else { lease };
        let delete_old = if moved { vec![TxnOp::delete(old_key, None)] } else { Vec::new() };
        let taken = self.put_if(conditions, delete_old, lease).await?;
        if let (Some(_), Some(EtcdLeaseId(old))) = (&taken, existing.etcd_lease) {
            // The key now hangs on the new etcd lease; the old one would idle until it expires.
            if let Err(error) = self.call("revoke old lease", |c| async move { c.lease_client().revoke(old).await }).await {
                tracing::debug!(%error, "could not revoke the previous etcd lease; it will expire on its own");
            }
        }
        Ok(taken)
    }

    /// Rewrites our lease with new attributes (a new PublicIP once the underlay was
    /// readdressed), keeping its subnet and etcd lease, if nobody changed the key since we
    /// wrote it. `None` if someone did: the caller acquires again.
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn rewrite(&self, lease: &Lease, attrs: &LeaseAttrs) -> Result<Option<Lease>, RegistryError> {
        let condition = Compare::mod_revision(self.keys.lease_of(lease), CompareOp::Equal, lease.mod_revision);
        self.put_if(vec![condition], Vec::new(), Lease { attrs: attrs.clone(), mod_revision: 0, ..lease.clone() }).await
    }

    /// Grants an etcd lease of `ttl` (whole seconds, at least one): our subnet lease's, or the
    /// names' own, which the names publisher keeps alive (`etcdctl lease grant <seconds>`).
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn grant(&self, ttl: Duration) -> Result<EtcdLeaseId, RegistryError> {
        let seconds = ttl.as_secs().max(1) as i64;
        let id = self.call("grant lease", |c| async move { c.lease_client().grant(seconds, None).await }).await?.id();
        Ok(EtcdLeaseId(id))
    }

    /// Puts `lease` at its key, after the operations `before`, if every condition holds; the
    /// lease as written, or `None` if not.
    async fn put_if(
        &self,
        conditions: Vec<Compare>,
        mut before: Vec<TxnOp>,
        mut lease: Lease,
    ) -> Result<Option<Lease>, RegistryError> {
        let options = lease.etcd_lease.map(|id| PutOptions::new().with_lease(id.0));
        before.push(TxnOp::put(self.keys.lease_of(&lease), lease.attrs.to_json(), options));
        let response = self.txn("lease transaction", Txn::new().when(conditions).and_then(before)).await?;
        if !response.succeeded() {
            return Ok(None);
        }
        lease.mod_revision = response.header().map(|h| h.revision()).unwrap_or_default();
        if lease.create_revision == 0 {
            lease.create_revision = lease.mod_revision; // this put created the key
        }
        Ok(Some(lease))
    }

    /// Renews an etcd lease once. `false` means etcd no longer knows it (it expired).
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn renew(&self, EtcdLeaseId(etcd_lease): EtcdLeaseId) -> Result<bool, RegistryError> {
        let response = self
            .call("keep lease alive", |c| async move {
                let (mut keeper, mut responses) = c.lease_client().keep_alive(etcd_lease).await?;
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await?;
        Ok(response.is_some_and(|r| r.ttl() > 0))
    }
}

/// What to claim, and the IPv6 subnet our lease will have: for a config with IPv4, the IPv4
/// claim ([`lease::choose_claim`]) and [`choose_ipv6`]; for an IPv6-only one,
/// [`lease::choose_ipv6_only_claim`] among every IPv6 subnet a key names.
///
/// # Errors
/// [`RegistryError::OutOfSubnets`] or [`RegistryError::OutOfIpv6Subnets`] when the Network
/// has no free subnet.
fn choose(
    config: &NetworkConfig,
    attrs: &LeaseAttrs,
    listing: &LeaseListing,
    previous: Previous,
) -> Result<(Claim, Option<Ipv6Network>), RegistryError> {
    let Some(v4) = &config.ipv4 else {
        // A config has at least one family (`NetworkConfig::parse`).
        let v6 = config.ipv6.as_ref().expect("an IPv6-only config has IPv6");
        return choose_ipv6_only(v6, attrs, listing, previous);
    };
    let claim = lease::choose_claim(v4, attrs, &listing.leases, &listing.occupied(), previous.subnet)
        .ok_or(RegistryError::OutOfSubnets { min: v4.subnet_min, max: v4.subnet_max })?;
    let Some(v6) = &config.ipv6 else { return Ok((claim, None)) };
    let claim = lease::extending_ipv6_only(claim, v6, attrs, &listing.leases);
    let ipv6_subnet = choose_ipv6(v6, &claim, &listing.ipv6_claims(), previous.ipv6_subnet)?;
    Ok((claim, Some(ipv6_subnet)))
}

/// [`choose`] under an IPv6-only config: [`lease::choose_ipv6_only_claim`] among every IPv6
/// subnet a key names.
fn choose_ipv6_only(
    v6: &Ipv6Config,
    attrs: &LeaseAttrs,
    listing: &LeaseListing,
    previous: Previous,
) -> Result<(Claim, Option<Ipv6Network>), RegistryError> {
    let claims = listing.ipv6_claims();
    let taken = claims.iter().map(|c| c.subnet).collect();
    // Only leases that could be ours are candidates (our PublicIPv6, or our previous IPv6
    // subnet), and of those none whose IPv6 subnet another key named first: the contest check
    // scans every key, so it runs for a handful of leases, not thousands.
    let could_be_ours = |l: &&Lease| {
        l.attrs.public_ipv6 == attrs.public_ipv6 || (l.ipv6_subnet.is_some() && l.ipv6_subnet == previous.ipv6_subnet)
    };
    let candidates: Vec<&Lease> =
        listing.leases.iter().filter(could_be_ours).filter(|l| !lost_ipv6_contest(&claims, l)).collect();
    let claim = lease::choose_ipv6_only_claim(v6, attrs, &candidates, &taken, previous.ipv6_subnet)
        .ok_or(RegistryError::OutOfIpv6Subnets { min: v6.subnet_min, max: v6.subnet_max })?;
    let ipv6_subnet = match &claim {
        Claim::Free(id) => id.ipv6(),
        existing => existing.existing().and_then(|lease| lease.ipv6_subnet),
    };
    Ok((claim, ipv6_subnet))
}

/// Our lease's IPv6 subnet under a dual-stack config ([`lease::choose_ipv6_subnet`]), keeping
/// the one the claimed lease already has. Every IPv6 subnet a key names is taken, readable or
/// not, but the claimed lease's own.
///
/// # Errors
/// [`RegistryError::OutOfIpv6Subnets`] when every IPv6 subnet is leased.
fn choose_ipv6(
    v6: &Ipv6Config,
    claim: &Claim,
    claims: &[Ipv6Claim],
    previous: Option<Ipv6Network>,
) -> Result<Ipv6Network, RegistryError> {
    let (current, holder) = match claim.existing() {
        Some(lease) => (lease.ipv6_subnet, Some(lease.id())),
        None => (None, None),
    };
    let taken: BTreeSet<Ipv6Network> =
        claims.iter().filter(|c| holder.is_none() || c.holds != holder).map(|c| c.subnet).collect();
    lease::choose_ipv6_subnet(v6, &taken, current, previous)
        .ok_or(RegistryError::OutOfIpv6Subnets { min: v6.subnet_min, max: v6.subnet_max })
}

/// Whether an IPv6-only `lease`'s subnet is named by another key that ranks before it.
fn lost_ipv6_contest(claims: &[Ipv6Claim], lease: &Lease) -> bool {
    let Some(subnet) = lease.ipv6_subnet.filter(|_| lease.subnet.is_none()) else { return false };
    let key = claims.iter().find(|c| c.holds == Some(lease.id())).map_or_else(|| lease.key_name(), |c| c.key.clone());
    first_ipv6_claim(claims, subnet, (lease.create_revision, &key)).is_some()
}

/// The first-ranked of the keys other than ours (ranked `ours`: create revision, key name)
/// whose IPv6 subnet overlaps `subnet`, if it ranks before ours.
fn first_ipv6_claim<'c>(claims: &'c [Ipv6Claim], subnet: Ipv6Network, ours: (i64, &str)) -> Option<&'c Ipv6Claim> {
    claims
        .iter()
        .filter(|c| c.key != ours.1 && c.overlaps(subnet))
        .min_by(|a, b| a.rank().cmp(&b.rank()))
        .filter(|c| c.rank() < ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(subnet: &str, key: &str, create_revision: i64) -> Ipv6Claim {
        Ipv6Claim { subnet: subnet.parse().unwrap(), key: key.into(), holds: None, create_revision }
    }

    /// Two hosts that created keys naming one IPv6 subnet: the later one, and only it, sees
    /// the earlier and gives the subnet up; a tie in revision goes to the lower key.
    #[test]
    fn the_later_of_two_keys_naming_one_ipv6_subnet_gives_it_up() {
        let ours: Ipv6Network = "fd00:5:0:2::/64".parse().unwrap();
        let claims = [
            claim("fd00:5:0:2::/64", "10.5.3.0-24&fd00:5:0:2::-64", 10),
            claim("fd00:5:0:2::/64", "10.5.4.0-24&fd00:5:0:2::-64", 12),
            claim("fd00:5:0:3::/64", "10.5.5.0-24&fd00:5:0:3::-64", 1),
        ];
        let first = first_ipv6_claim(&claims, ours, (12, "10.5.4.0-24&fd00:5:0:2::-64"));
        assert_eq!(first.map(|c| c.key.as_str()), Some("10.5.3.0-24&fd00:5:0:2::-64"));
        assert_eq!(first_ipv6_claim(&claims, ours, (10, "10.5.3.0-24&fd00:5:0:2::-64")), None, "the first keeps it");
        assert!(first_ipv6_claim(&claims, ours, (10, "10.5.2.0-24&fd00:5:0:2::-64")).is_none(), "same revision: lower key");
        // A malformed key's misaligned subnet, or a shorter prefix, still covers ours.
        let wide = [claim("fd00:5:0:2::9/64", "bad", 3), claim("fd00:5::/56", "wide", 4)];
        assert_eq!(first_ipv6_claim(&wide, ours, (20, "mine")).map(|c| c.key.as_str()), Some("bad"));
    }

    /// The claimed lease's own IPv6 subnet is not taken from it; every other key's is,
    /// including keys holding no IPv4 subnet (aliases, unreadable keys).
    #[test]
    fn every_ipv6_subnet_a_key_names_is_taken_but_the_claimed_leases_own() {
        let config = NetworkConfig::parse(
            r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","IPv6SubnetMin":"fd00:5:0:1::","IPv6SubnetMax":"fd00:5:0:3::"}"#,
        )
        .unwrap();
        let v6 = config.ipv6.unwrap();
        let held = |v6: &str, v4: &str| Ipv6Claim { holds: Some(v4.parse().unwrap()), ..claim(v6, v4, 1) };
        let claims = [held("fd00:5:0:1::/64", "10.5.1.0/24"), claim("fd00:5:0:2::5/64", "alias", 2)];
        for _ in 0..20 {
            let free = choose_ipv6(&v6, &Claim::Free("10.5.9.0/24".parse().unwrap()), &claims, None).unwrap();
            assert_eq!(free, "fd00:5:0:3::/64".parse().unwrap());
        }
        let attrs = LeaseAttrs::vxlan(std::net::Ipv4Addr::new(198, 18, 0, 1), 1, crate::lease::MacAddr([2, 0, 0, 0, 0, 1]));
        let (subnet, ipv6_subnet) = (Some("10.5.1.0/24".parse().unwrap()), Some("fd00:5:0:1::/64".parse().unwrap()));
        let ours = Lease { subnet, ipv6_subnet, attrs, etcd_lease: None, mod_revision: 1, create_revision: 1 };
        assert_eq!(choose_ipv6(&v6, &Claim::Existing(ours), &claims, None).unwrap(), "fd00:5:0:1::/64".parse().unwrap());
    }
}
