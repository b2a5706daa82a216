//! Acquiring our lease (create-if-absent, or take over our own), rewriting it in place, and
//! renewing it.

use std::time::Duration;

use std::collections::BTreeSet;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{Registry, RegistryError};
use crate::config::NetworkConfig;
use crate::lease::{self, Claim, EtcdLeaseId, Lease, LeaseAttrs};

/// The subnets a host held before (its last subnet.env, or the lease it lost), asked for again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Previous {
    pub subnet: Option<Ipv4Network>,
    pub ipv6_subnet: Option<Ipv6Network>,
}

impl Registry {
    /// Acquires our lease in flanneld's order (see [`lease::choose_claim`]), retrying when
    /// another host wins a race for the same subnet.
    pub async fn acquire(
        &self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
        ttl: Duration,
        previous: Previous,
    ) -> Result<Lease, RegistryError> {
        loop {
            let listing = self.list_leases().await?;
            let claim = lease::choose_claim(config, attrs, &listing.leases, &listing.occupied(), previous.subnet)
                .ok_or(RegistryError::OutOfSubnets { min: config.subnet_min, max: config.subnet_max })?;
            let ipv6_subnet = choose_ipv6(config, &claim, &listing.leases, previous.ipv6_subnet)?;
            let won = match &claim {
                Claim::Existing(existing) => self.take_over(existing, ipv6_subnet, attrs, ttl).await?,
                Claim::Free(subnet) => self.create(*subnet, ipv6_subnet, attrs, ttl).await?,
            };
            match won {
                Some(lease) => return Ok(lease),
                None => {
                    tracing::debug!(?claim, "lost a race for a subnet; choosing again");
                    // A little jitter so hosts that collided do not collide again in lockstep.
                    let jitter = rand::random::<u64>() % 50;
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
            }
        }
    }

    /// Creates a lease only if no key names its IPv4 subnet (`version == 0` over every key
    /// starting `10.5.52.0-24`, the plain key and every dual-stack one). `None` if one does.
    async fn create(
        &self,
        subnet: Ipv4Network,
        ipv6_subnet: Option<Ipv6Network>,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let etcd_lease = Some(self.grant(ttl).await?);
        let condition = Compare::version(self.keys.lease(subnet), CompareOp::Equal, 0).with_prefix();
        let lease = Lease { subnet, ipv6_subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, create_revision: 0 };
        self.put_if(vec![condition], Vec::new(), lease).await
    }

    /// Rewrites an existing lease with our attributes (and our IPv6 subnet: a lease from before
    /// IPv6 was turned on gains one, keeping its IPv4 subnet; its key changes, so the old key is
    /// deleted in the same transaction), if nobody changed it since we read it. A reservation
    /// stays a reservation (no etcd lease, never expires).
    async fn take_over(
        &self,
        existing: &Lease,
        ipv6_subnet: Option<Ipv6Network>,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<Lease>, RegistryError> {
        let old_key = self.keys.lease_of(existing);
        let etcd_lease = if existing.is_reservation() { None } else { Some(self.grant(ttl).await?) };
        let condition = Compare::mod_revision(old_key.clone(), CompareOp::Equal, existing.mod_revision);
        let lease = Lease { ipv6_subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, ..existing.clone() };
        let moved = self.keys.lease_of(&lease) != old_key;
        // A new key is a new key: its create revision is the transaction's.
        let lease = if moved { Lease { create_revision: 0, ..lease } } else { lease };
        let delete_old = if moved { vec![TxnOp::delete(old_key, None)] } else { Vec::new() };
        let taken = self.put_if(vec![condition], delete_old, lease).await?;
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

    /// Grants an etcd lease of `ttl` (whole seconds, at least one).
    async fn grant(&self, ttl: Duration) -> Result<EtcdLeaseId, RegistryError> {
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
        let txn = Txn::new().when(conditions).and_then(before);
        let floor = self.store.floor();
        let response = self
            .call("lease transaction", |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        self.store.response(response.header(), floor);
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

/// Our lease's IPv6 subnet under a dual-stack config ([`lease::choose_ipv6_subnet`]), keeping
/// the one the claimed lease already has; `None` for IPv4 only.
///
/// # Errors
/// [`RegistryError::OutOfIpv6Subnets`] when every IPv6 subnet is leased.
fn choose_ipv6(
    config: &NetworkConfig,
    claim: &Claim,
    leases: &[Lease],
    previous: Option<Ipv6Network>,
) -> Result<Option<Ipv6Network>, RegistryError> {
    let Some(v6) = &config.ipv6 else { return Ok(None) };
    let (current, holder) = match claim {
        Claim::Existing(lease) => (lease.ipv6_subnet, Some(lease.subnet)),
        Claim::Free(_) => (None, None),
    };
    let taken: BTreeSet<Ipv6Network> = leases.iter().filter(|l| Some(l.subnet) != holder).filter_map(|l| l.ipv6_subnet).collect();
    lease::choose_ipv6_subnet(v6, &taken, current, previous)
        .map(Some)
        .ok_or(RegistryError::OutOfIpv6Subnets { min: v6.subnet_min, max: v6.subnet_max })
}
