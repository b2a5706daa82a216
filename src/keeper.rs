//! Holds our lease: acquires it, renews it before it expires, writes it back when its key is
//! damaged, re-advertises it when the underlay is readdressed, and acquires the same subnet
//! again when it disappears or the store was replaced.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::NetworkConfig;
use crate::etcd::{outage, Outage, Previous, Registry, RegistryError};
use crate::lease::{Lease, LeaseAttrs, LeaseSet};
use crate::observe::metrics::Metrics;

/// Acquires a lease, riding out etcd outages; running out of subnets is fatal.
///
/// # Errors
/// What only the operator can fix: refused credentials or certificates, no free subnet.
pub async fn acquire(
    registry: &Registry,
    config: &NetworkConfig,
    attrs: &LeaseAttrs,
    ttl: Duration,
    previous: Previous,
) -> Result<Lease, RegistryError> {
    let lease = outage::retry("acquire a lease", || registry.acquire(config, attrs, ttl, previous)).await?;
    tracing::info!(subnet = %lease.id(), reservation = lease.is_reservation(), "lease acquired");
    Ok(lease)
}

/// Holds our lease: renews it before it expires, and acquires it again if it disappears.
pub struct LeaseKeeper {
    pub registry: Registry,
    /// The network our subnet must lie in.
    pub config: NetworkConfig,
    /// What our lease must say; the reconciler changes it when the underlay is readdressed.
    pub attrs: watch::Receiver<LeaseAttrs>,
    /// How long a granted etcd lease lasts (`--subnet-lease-ttl`, flanneld's 24 h).
    pub ttl: Duration,
    /// How long before expiry to renew (`--subnet-lease-renew-margin`), at most half the TTL.
    pub renew_margin: Duration,
    pub metrics: Arc<Metrics>,
}

impl LeaseKeeper {
    /// When to renew a lease granted (or renewed) at `since`. The margin is capped at half the
    /// TTL so a short test TTL with flanneld's default 60 min margin does not renew in a loop.
    fn renew_at(&self, since: Instant) -> Instant {
        since + self.ttl - self.renew_margin.min(self.ttl / 2)
    }

    /// Keeps our lease (`own`, which it publishes) for as long as the daemon runs, reading
    /// every lease from `leases`; returns once the daemon stops (either channel closed).
    pub async fn run(mut self, own: watch::Sender<Lease>, mut leases: watch::Receiver<Arc<LeaseSet>>) {
        let mut renew_at = self.renew_at(Instant::now());
        let mut outage = Outage::default();
        let mut replacements = self.registry.store_replacements();
        loop {
            let current = own.borrow().clone();
            let renew = !current.is_reservation();
            tokio::select! {
                // A replaced store is noticed before its leases are published: acquiring
                // afresh comes first, as an old value of our key there may hang on an etcd
                // lease the store no longer has, and rewriting it in place would fail.
                biased;
                // A wiped or restored store may lack our key, hold an old value, and has no
                // etcd lease we granted: the revisions `own_key` compares mean nothing across it.
                Ok(()) = replacements.changed() => {
                    tracing::info!(subnet = %current.id(), etcd_lease = current.etcd_lease.map_or(0, |id| id.0), "writing our lease into the replaced etcd store with a fresh etcd lease");
                    renew_at = self.reacquire(&own, &current).await;
                    // Our write went to the store that answered last: replacements seen while
                    // acquiring are covered by it.
                    replacements.borrow_and_update();
                }
                () = tokio::time::sleep_until(renew_at), if renew => {
                    renew_at = self.renew(&own, &current, &mut outage).await;
                }
                changed = self.attrs.changed() => {
                    if changed.is_err() {
                        return; // the reconciler is gone: the daemon is stopping
                    }
                    let attrs = self.attrs.borrow_and_update().clone();
                    if attrs != current.attrs {
                        renew_at = self.readvertise(&own, &current, &attrs).await.unwrap_or(renew_at);
                    }
                }
                changed = leases.changed() => {
                    if changed.is_err() {
                        return; // the registry task is gone: the daemon is stopping
                    }
                    let state = own_key(&current, &leases.borrow_and_update());
                    renew_at = self.keep_own_key(&own, &current, state).await.unwrap_or(renew_at);
                }
            }
        }
    }

    /// Renews our etcd lease once; returns when to act next.
    async fn renew(&self, own: &watch::Sender<Lease>, current: &Lease, outage: &mut Outage) -> Instant {
        // `run` schedules no renewal for a reservation, which hangs on no etcd lease.
        let Some(etcd_lease) = current.etcd_lease else { return Instant::now() + self.ttl };
        match self.registry.renew(etcd_lease).await {
            Ok(true) => {
                outage.recovered();
                tracing::info!(subnet = %current.id(), "lease renewed");
                self.metrics.set_lease_expiry(Some(self.ttl));
                self.renew_at(Instant::now())
            }
            Ok(false) => {
                tracing::warn!(subnet = %current.id(), "lease expired in etcd; acquiring again");
                self.reacquire(own, current).await
            }
            Err(e) => {
                outage.failed(&e);
                Instant::now() + outage.backoff()
            }
        }
    }

    /// Acts on what our key holds; returns the new renewal time if the lease changed.
    async fn keep_own_key(&self, own: &watch::Sender<Lease>, current: &Lease, state: OwnKey) -> Option<Instant> {
        match state {
            OwnKey::Held => None,
            OwnKey::Damaged { mod_revision, create_revision } => {
                tracing::warn!(subnet = %current.id(), "our lease key holds something other than our lease; writing our lease back");
                let attrs = self.attrs.borrow().clone();
                // The rewrite keeps the key, so our lease takes its create revision.
                let seen = Lease { mod_revision, create_revision, ..current.clone() };
                self.readvertise(own, &seen, &attrs).await
            }
            OwnKey::Lost => {
                tracing::warn!(subnet = %current.id(), "our lease was deleted or taken over in etcd; acquiring again");
                Some(self.reacquire(own, current).await)
            }
        }
    }

    /// Acquires a lease again, preferring the subnets we had, and publishes it.
    async fn reacquire(&self, own: &watch::Sender<Lease>, previous: &Lease) -> Instant {
        let previous = Previous { subnet: previous.subnet, ipv6_subnet: previous.ipv6_subnet };
        loop {
            let attrs = self.attrs.borrow().clone();
            match acquire(&self.registry, &self.config, &attrs, self.ttl, previous).await {
                Ok(lease) => {
                    self.metrics.set_lease_expiry((!lease.is_reservation()).then_some(self.ttl));
                    own.send_replace(lease);
                    return self.renew_at(Instant::now());
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot acquire a lease; keeping the current overlay and retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    }
}

impl LeaseKeeper {
    /// Rewrites our lease with `attrs` (same subnet, same etcd lease) so peers follow a new
    /// PublicIP, retrying through etcd outages. If the key changed meanwhile, acquires again and
    /// returns the new renewal time.
    async fn readvertise(&self, own: &watch::Sender<Lease>, current: &Lease, attrs: &LeaseAttrs) -> Option<Instant> {
        if (attrs.public_ip, attrs.public_ipv6) != (current.attrs.public_ip, current.attrs.public_ipv6) {
            self.registry.reconnect().await;
        }
        let mut outage = Outage::default();
        loop {
            match self.registry.rewrite(current, attrs).await {
                Ok(Some(lease)) => {
                    outage.recovered();
                    log_readvertised(&lease);
                    own.send_replace(lease);
                    return None;
                }
                Ok(None) => {
                    tracing::warn!(subnet = %current.id(), "our lease changed in etcd before it could be re-advertised; acquiring again");
                    return Some(self.reacquire(own, current).await);
                }
                Err(e) => outage.failed(&e),
            }
            tokio::time::sleep(outage.backoff()).await;
        }
    }
}

/// Logs what our lease now advertises: each part it has (an IPv6-only lease has no IPv4 one).
fn log_readvertised(lease: &Lease) {
    let attrs = &lease.attrs;
    let ipv4 = attrs.backend_data.as_ref().map(|data| (attrs.public_ip, data.vtep_mac));
    let ipv6 = attrs.public_ipv6.zip(attrs.backend_v6_data.as_ref().map(|data| data.vtep_mac));
    tracing::info!(
        subnet = %lease.id(),
        public_ip = ipv4.map(|(ip, _)| tracing::field::display(ip)),
        vtep_mac = ipv4.map(|(_, mac)| tracing::field::display(mac)),
        public_ipv6 = ipv6.map(|(ip, _)| tracing::field::display(ip)),
        ipv6_vtep_mac = ipv6.map(|(_, mac)| tracing::field::display(mac)),
        "lease re-advertised"
    );
}

/// What our lease's key holds, as far as the lease keeper is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnKey {
    /// Our lease, on our etcd lease (or the watch has not caught up with our own write yet).
    Held,
    /// Something else written over our key in place, or written afresh outside any other
    /// host's etcd lease (a bad value, other attributes, another etcd lease): ours to write
    /// back, in place. The revisions are the key's as the watch saw it.
    Damaged { mod_revision: i64, create_revision: i64 },
    /// Deleted, or created afresh under another etcd lease (another host acquired the subnet
    /// after ours expired): acquire again.
    Lost,
}

/// What a lease set that is at least as new as our lease says of our key.
fn own_key(own: &Lease, leases: &LeaseSet) -> OwnKey {
    if leases.revision.is_none_or(|revision| revision < own.mod_revision) {
        return OwnKey::Held; // the watch has not caught up with our own write yet
    }
    let (etcd_lease, mod_revision, create_revision) = match (leases.unreadable.get(&own.id()), leases.leases.get(&own.id())) {
        (Some(bad), _) => (bad.etcd_lease, bad.mod_revision, bad.create_revision),
        (None, None) => return OwnKey::Lost,
        // Our dual-stack key, not just any key naming our IPv4 subnet: one naming another IPv6
        // subnet with our value is not ours to keep (its rewrite fails, so we acquire again).
        (None, Some(lease))
            if lease.attrs == own.attrs && lease.etcd_lease == own.etcd_lease && lease.ipv6_subnet == own.ipv6_subnet =>
        {
            return OwnKey::Held
        }
        (None, Some(lease)) => (lease.etcd_lease, lease.mod_revision, lease.create_revision),
    };
    // A host acquiring a subnet creates its key afresh (create-if-absent): a new create
    // revision. A put over our key keeps ours, whatever etcd lease it hangs the key on. A key
    // created afresh under our etcd lease or none was written by an operator, not a host.
    let overwritten = create_revision == own.create_revision;
    if overwritten || etcd_lease.is_none() || etcd_lease == own.etcd_lease {
        OwnKey::Damaged { mod_revision, create_revision }
    } else {
        OwnKey::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use crate::lease::{EtcdLeaseId, MacAddr, UnreadableKey};

    fn own() -> Lease {
        Lease {
            ipv6_subnet: None,
            subnet: Some("10.5.2.0/24".parse().unwrap()),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, 12), 1, MacAddr([2, 0, 0, 0, 0, 2])),
            etcd_lease: Some(EtcdLeaseId(9)),
            mod_revision: 10,
            create_revision: 10,
        }
    }

    #[test]
    fn lease_is_lost_only_once_the_watch_has_caught_up() {
        let mine = own();
        let empty_old = LeaseSet { revision: Some(9), ..Default::default() };
        assert_eq!(own_key(&mine, &empty_old), OwnKey::Held);
        let empty_new = LeaseSet { revision: Some(11), ..Default::default() };
        assert_eq!(own_key(&mine, &empty_new), OwnKey::Lost);
        let with_us = LeaseSet { revision: Some(11), leases: [(mine.id(), mine.clone())].into(), ..Default::default() };
        assert_eq!(own_key(&mine, &with_us), OwnKey::Held);
        // Another host acquired the subnet after ours expired: a new key on its etcd lease.
        let mut acquired = Lease { etcd_lease: Some(EtcdLeaseId(77)), mod_revision: 12, create_revision: 12, ..mine.clone() };
        acquired.attrs.public_ip = Ipv4Addr::new(198, 18, 0, 99);
        let taken = LeaseSet { revision: Some(12), leases: [(mine.id(), acquired)].into(), ..Default::default() };
        assert_eq!(own_key(&mine, &taken), OwnKey::Lost);
    }

    /// Our dual-stack key is ours; a key naming our IPv4 subnet with another IPv6 part (or
    /// none), even with our value and etcd lease, is not held: damaged, to write back.
    #[test]
    fn own_key_is_our_dual_stack_key_not_any_key_naming_our_ipv4_subnet() {
        let mine = Lease { ipv6_subnet: Some("fd00:5:0:2::/64".parse().unwrap()), ..own() };
        let held = |key: Lease| LeaseSet { revision: Some(11), leases: [(mine.id(), key)].into(), ..Default::default() };
        assert_eq!(own_key(&mine, &held(mine.clone())), OwnKey::Held);
        for other in [Some("fd00:5:0:3::/64".parse().unwrap()), None] {
            let key = Lease { ipv6_subnet: other, mod_revision: 11, ..mine.clone() };
            assert_eq!(own_key(&mine, &held(key)), OwnKey::Damaged { mod_revision: 11, create_revision: 10 }, "{other:?}");
        }
    }

    /// Every way a key can hold something other than our lease, readable or not: a put over
    /// our key (same create revision) is ours to write back whatever etcd lease it hangs on; a
    /// key created afresh is ours only on our etcd lease or none.
    #[test]
    fn own_key_tells_damage_from_another_hosts_acquisition() {
        let mine = own();
        let mut other_value = mine.attrs.clone();
        other_value.public_ip = Ipv4Addr::new(198, 18, 0, 99);
        let (foreign, ours, none) = (Some(EtcdLeaseId(77)), mine.etcd_lease, None);
        let (same_key, new_key) = (mine.create_revision, 12);
        let cases = [
            // (etcd lease, create revision, value, expected)
            (foreign, same_key, other_value.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: same_key }),
            (foreign, same_key, mine.attrs.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: same_key }),
            (none, same_key, mine.attrs.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: same_key }),
            (none, same_key, other_value.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: same_key }),
            (ours, same_key, other_value.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: same_key }),
            (none, new_key, other_value.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: new_key }),
            (ours, new_key, other_value.clone(), OwnKey::Damaged { mod_revision: 13, create_revision: new_key }),
            (foreign, new_key, other_value.clone(), OwnKey::Lost),
            (foreign, new_key, mine.attrs.clone(), OwnKey::Lost),
            (ours, same_key, mine.attrs.clone(), OwnKey::Held),
        ];
        for (etcd_lease, create_revision, attrs, expected) in cases {
            let key = Lease { etcd_lease, create_revision, mod_revision: 13, attrs, ..mine.clone() };
            let set = LeaseSet { revision: Some(13), leases: [(mine.id(), key.clone())].into(), ..Default::default() };
            assert_eq!(own_key(&mine, &set), expected, "readable {key:?}");
            if expected == OwnKey::Held {
                continue; // an unreadable key never holds our lease
            }
            // Unreadable: the last good value (ours) is still in `leases`, the key is not.
            let unreadable = UnreadableKey { mod_revision: 13, etcd_lease, create_revision };
            let set = LeaseSet {
                revision: Some(13),
                leases: [(mine.id(), mine.clone())].into(),
                unreadable: [(mine.id(), unreadable)].into(),
                ..Default::default()
            };
            assert_eq!(own_key(&mine, &set), expected, "unreadable {unreadable:?}");
        }
    }
}
