//! Following any key prefix (the names' SkyDNS domain): one consistent listing, then a watch
//! from the listed revision + 1, as the leases are followed; the caller lists again whenever
//! the watch says so.

use etcd_client::{EventType, GetOptions, WatchOptions, WatchStream};
use tokio::sync::watch;

use super::keys::prefix_end;
use super::listing::MAX_RESPONSE_BYTES;
use super::{NameKey, Registry, RegistryError};
use crate::lease::EtcdLeaseId;

/// Every key under a prefix at one revision, values as text (invalid UTF-8 replaced).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixListing {
    pub revision: i64,
    pub keys: Vec<NameKey>,
}

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixChange {
    Put { key: String, value: String },
    Delete { key: String },
}

/// A watch of a prefix, from a listing's revision on.
pub struct PrefixWatch {
    stream: WatchStream,
    reconnected: watch::Receiver<u64>,
}

impl PrefixWatch {
    /// The next changes, in order; `Ok(None)` when only a fresh listing can tell the keys
    /// (compaction, cancel, the watch ended, or the connections were dropped).
    ///
    /// # Errors
    /// The watch failed ([`RegistryError::Etcd`]).
    pub async fn next(&mut self) -> Result<Option<Vec<PrefixChange>>, RegistryError> {
        let message = tokio::select! {
            message = self.stream.message() => message.map_err(|source| RegistryError::Etcd { op: "watch prefix", source })?,
            _ = self.reconnected.changed() => return Ok(None),
        };
        let Some(response) = message.filter(|r| !r.canceled() && r.compact_revision() == 0) else { return Ok(None) };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let changes = response.events().iter().filter_map(|event| {
            let kv = event.kv()?;
            Some(match event.event_type() {
                EventType::Put => PrefixChange::Put { key: text(kv.key()), value: text(kv.value()) },
                EventType::Delete => PrefixChange::Delete { key: text(kv.key()) },
            })
        });
        Ok(Some(changes.collect()))
    }
}

impl Registry {
    /// Every key under `prefix` (`etcdctl get --prefix <prefix>`), in one response of at most
    /// [`MAX_RESPONSE_BYTES`].
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn list_prefix(&self, prefix: &str) -> Result<PrefixListing, RegistryError> {
        let options = GetOptions::new().with_range(prefix_end(prefix));
        let floor = self.store.floor();
        let response = self
            .call("list prefix", |c| {
                let (key, options) = (prefix.to_string(), options.clone());
                // Others' keys share the prefix: read up to the limit every listing has.
                async move { c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES).get(key, Some(options)).await }
            })
            .await?;
        self.store.response(response.header(), floor);
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let key = |kv: &etcd_client::KeyValue| NameKey {
            key: text(kv.key()),
            value: text(kv.value()),
            etcd_lease: EtcdLeaseId::attached(kv.lease()),
        };
        Ok(PrefixListing {
            revision: response.header().map(|h| h.revision()).unwrap_or_default(),
            keys: response.kvs().iter().map(key).collect(),
        })
    }

    /// Watches `prefix` from revision `after` + 1 (`etcdctl watch --prefix --rev`).
    ///
    /// # Errors
    /// Any etcd failure.
    pub async fn watch_prefix(&self, prefix: &str, after: i64) -> Result<PrefixWatch, RegistryError> {
        let options = WatchOptions::new().with_prefix().with_start_revision(after + 1);
        let reconnected = self.endpoints.reconnected();
        let stream = self
            .call("watch prefix", |c| {
                let (key, options) = (prefix.to_string(), options.clone());
                async move { c.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES).watch(key, Some(options)).await }
            })
            .await?;
        Ok(PrefixWatch { stream, reconnected })
    }
}
