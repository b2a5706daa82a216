//! Acquiring our lease (create-if-absent, or take over our own), rewriting it in place, and
//! renewing it.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use ipnetwork::Ipv4Network;

use super::{Registry, RegistryError};
use crate::config::NetworkConfig;
use crate::lease::{self, Claim, EtcdLeaseId, Lease, LeaseAttrs};

impl Registry {
    /// Acquires our lease in flanneld's order (see [`lease::choose_claim`]), retrying when
    /// another host wins a race for the same subnet.
    pub async fn acquire(
        &self,
        config: &NetworkConfig,
        attrs: &LeaseAttrs,
        ttl: Duration,
        previous: Option<Ipv4Network>,
    ) -> Result<Lease, RegistryError> {
        loop {
            let listing = self.list_leases().await?;
            let claim = lease::choose_claim(config, attrs, &listing.leases, &listing.occupied(), previous)
                .ok_or(RegistryError::OutOfSubnets { min: config.subnet_min, max: config.subnet_max })?;
            let won = match &claim {
                Claim::Existing(existing) => self.take_over(existing, attrs, ttl).await?,
                Claim::Free(subnet) => self.create(*subnet, attrs, ttl).await?,
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

    /// Creates a lease only if the key does not exist (`version(key) == 0`). `None` if it does.
    async fn create(&self, subnet: Ipv4Network, attrs: &LeaseAttrs, ttl: Duration) -> Result<Option<Lease>, RegistryError> {
        let key = self.keys.lease(subnet);
        let etcd_lease = Some(self.grant(ttl).await?);
        let condition = Compare::version(key.clone(), CompareOp::Equal, 0);
        let lease = Lease { subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, create_revision: 0 };
        self.put_if(condition, &key, lease).await
    }

    /// Rewrites an existing lease with our attributes, if nobody changed it since we read it.
    /// A reservation stays a reservation (no etcd lease, never expires).
    async fn take_over(&self, existing: &Lease, attrs: &LeaseAttrs, ttl: Duration) -> Result<Option<Lease>, RegistryError> {
        let key = self.keys.lease(existing.subnet);
        let etcd_lease = if existing.is_reservation() { None } else { Some(self.grant(ttl).await?) };
        let condition = Compare::mod_revision(key.clone(), CompareOp::Equal, existing.mod_revision);
        let lease = Lease { subnet: existing.subnet, attrs: attrs.clone(), etcd_lease, mod_revision: 0, ..existing.clone() };
        let taken = self.put_if(condition, &key, lease).await?;
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
        let key = self.keys.lease(lease.subnet);
        let condition = Compare::mod_revision(key.clone(), CompareOp::Equal, lease.mod_revision);
        self.put_if(condition, &key, Lease { attrs: attrs.clone(), mod_revision: 0, ..lease.clone() }).await
    }

    /// Grants an etcd lease of `ttl` (whole seconds, at least one).
    async fn grant(&self, ttl: Duration) -> Result<EtcdLeaseId, RegistryError> {
        let seconds = ttl.as_secs().max(1) as i64;
        let id = self.call("grant lease", |c| async move { c.lease_client().grant(seconds, None).await }).await?.id();
        Ok(EtcdLeaseId(id))
    }

    /// Puts `lease` at `key` if `condition` holds; the lease as written, or `None` if not.
    async fn put_if(&self, condition: Compare, key: &str, mut lease: Lease) -> Result<Option<Lease>, RegistryError> {
        let options = lease.etcd_lease.map(|id| PutOptions::new().with_lease(id.0));
        let txn = Txn::new().when([condition]).and_then([TxnOp::put(key, lease.attrs.to_json(), options)]);
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
