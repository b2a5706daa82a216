//! The domain's names as etcd holds them, kept in memory so a query never waits on etcd: filled
//! from a listing of the domain prefix, then changed by the watch's puts and deletes.

use std::collections::{BTreeMap, HashMap};

use crate::etcd::{NameKey, PrefixChange};
use crate::names::skydns::{Domain, RecordId, SkyRecord};

/// Every readable record of the domain, by name (a DNS label) and record id.
#[derive(Debug, Clone)]
pub struct NameCache {
    domain: Domain,
    names: HashMap<String, BTreeMap<RecordId, SkyRecord>>,
}

impl NameCache {
    /// An empty cache for `domain`.
    pub fn new(domain: Domain) -> Self {
        Self { domain, names: HashMap::new() }
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The cache holding exactly the listed keys (`keys`: every key under the domain prefix).
    /// Returns it and how many keys were skipped (not weft's layout, or an unreadable value).
    pub fn listed(domain: Domain, keys: &[NameKey]) -> (Self, usize) {
        let mut cache = Self::new(domain);
        let skipped = keys.iter().filter(|k| !cache.put(&k.key, &k.value)).count();
        (cache, skipped)
    }

    /// Applies one change from the watch. Returns `false` for a put that was skipped.
    pub fn apply(&mut self, change: &PrefixChange) -> bool {
        match change {
            PrefixChange::Put { key, value } => self.put(key, value),
            PrefixChange::Delete { key } => {
                self.delete(key);
                true
            }
        }
    }

    /// Stores the record at `key` (`/skydns/local/weft/db/<record id>`). Returns `false`, and
    /// forgets what the key held, when the key or the value does not fit the layout.
    fn put(&mut self, key: &str, value: &str) -> bool {
        let Some((name, id)) = self.domain.parse_record_key(key) else { return false };
        let Ok(record) = SkyRecord::from_json(value) else {
            self.delete(key);
            return false;
        };
        self.names.entry(name.to_string()).or_default().insert(id, record);
        true
    }

    fn delete(&mut self, key: &str) {
        let Some((name, id)) = self.domain.parse_record_key(key) else { return };
        if let Some(records) = self.names.get_mut(name) {
            records.remove(&id);
            if records.is_empty() {
                self.names.remove(name);
            }
        }
    }

    /// The records of `name` (a DNS label), by record id; `None` when the name has none.
    pub fn records(&self, name: &str) -> Option<&BTreeMap<RecordId, SkyRecord>> {
        self.names.get(name)
    }

    /// How many names have at least one record.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
