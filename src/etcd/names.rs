//! The etcd side of names (`--names`): every key below a domain's prefix in one read, and
//! single records written on, or deleted from, an etcd lease of the names' own. The SkyDNS
//! layout itself is the `names` module's business; here keys and values are plain text.

use std::time::Duration;

use etcd_client::PutOptions;

use super::{Registry, RegistryError};
use crate::lease::EtcdLeaseId;

/// One key below a names prefix, as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameKey {
    pub key: String,
    pub value: String,
    /// The etcd lease the key hangs on; `None` for a key that never expires.
    pub etcd_lease: Option<EtcdLeaseId>,
}

impl Registry {
    /// Every key below `prefix` (`etcdctl get --prefix /skydns/local/weft/`), in key order.
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn list_names(&self, prefix: &str) -> Result<Vec<NameKey>, RegistryError> {
        Ok(self.list_prefix(prefix).await?.keys)
    }

    /// Writes one record on `etcd_lease` (`etcdctl put --lease <id> <key> <value>`).
    ///
    /// # Errors
    /// Any etcd failure; an expired lease is etcd's "requested lease not found".
    pub async fn put_name(&self, key: &str, value: &str, etcd_lease: EtcdLeaseId) -> Result<(), RegistryError> {
        let options = PutOptions::new().with_lease(etcd_lease.0);
        self.call("put name", |c| {
            let (key, value, options) = (key.to_string(), value.to_string(), options.clone());
            async move { c.kv_client().put(key, value, Some(options)).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes one record (`etcdctl del <key>`); deleting a key that is gone is no error.
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn delete_name(&self, key: &str) -> Result<(), RegistryError> {
        self.call("delete name", |c| {
            let key = key.to_string();
            async move { c.kv_client().delete(key, None).await }
        })
        .await
        .map(|_| ())
    }

    /// Whether `etcd_lease` is alive and was granted for `ttl` (whole seconds), so a restarted
    /// publisher with the same `--names-lease-ttl` may keep renewing it
    /// (`etcdctl lease timetolive <id>`).
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn names_lease_fits(&self, etcd_lease: EtcdLeaseId, ttl: Duration) -> Result<bool, RegistryError> {
        let response = self
            .call("names lease time to live", |c| async move { c.lease_client().time_to_live(etcd_lease.0, None).await })
            .await?;
        Ok(response.ttl() > 0 && response.granted_ttl() == ttl.as_secs().max(1) as i64)
    }
}
