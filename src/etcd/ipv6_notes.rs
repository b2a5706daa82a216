//! What the lease follower of an IPv4-only host says about peers' IPv6 parts: once, that the
//! cluster has dual-stack peers; and once per key whose IPv6 part no host can use. Neither costs
//! a peer its IPv4 part, which weft programs either way (flanneld v0.20.2 drops or panics on
//! such a lease instead). A host with IPv6 on says nothing here: its IPv6 pass names every part
//! it skips, by the same rules and more (the config's IPv6 range).

use std::collections::HashMap;
use std::time::Instant;

use crate::config::Ipv6Config;
use crate::lease::Lease;
use crate::log_within;
use crate::logtext::{self, LogBudget};

/// Why `lease`'s IPv6 part is unusable by any host, in words naming the rule; `None` when it
/// has a usable one, or none at all.
pub fn ipv6_problem(lease: &Lease) -> Option<String> {
    let attrs = &lease.attrs;
    if let Some(error) = &attrs.ipv6_error {
        return Some(format!("its PublicIPv6 or BackendV6Data cannot be read: {error}"));
    }
    let Some(subnet) = lease.ipv6_subnet else {
        // A PublicIPv6 alone makes no IPv6 peer: flanneld writes it with IPv6 off too.
        return attrs.backend_v6_data.as_ref().map(|_| "its value has a BackendV6Data but its key no IPv6 subnet".into());
    };
    if attrs.public_ipv6.is_none() || attrs.backend_v6_data.is_none() {
        return Some("its key names an IPv6 subnet but its value lacks PublicIPv6 or BackendV6Data".into());
    }
    (subnet.ip() != subnet.network()).then(|| {
        format!("its key's IPv6 subnet {subnet} has host bits set (flannel writes {}/{})", subnet.network(), subnet.prefix())
    })
}

/// The follower's notes about IPv6 parts: each said once (again when a key's problem changes).
#[derive(Debug)]
pub(super) struct Ipv6Notes {
    /// Whether this host runs an IPv6 pass (its config enables IPv6): then nothing is said here.
    ipv6_host: bool,
    /// Whether the IPv4-only host said it met dual-stack peers.
    said_dual: bool,
    /// A fingerprint of the key and of the problem last warned about, per key.
    last: HashMap<u64, u64>,
    budget: LogBudget,
}

impl Ipv6Notes {
    pub(super) fn new(v6: Option<Ipv6Config>) -> Self {
        let budget = LogBudget::new("peers' IPv6 parts skipped", "their IPv4 entries stay; `weftd status` lists the peers");
        Ipv6Notes { ipv6_host: v6.is_some(), said_dual: false, last: HashMap::new(), budget }
    }

    /// A lease read from the key named `key` (listed, or put since).
    pub(super) fn seen(&mut self, key: &str, lease: &Lease) {
        if !self.ipv6_host && lease.ipv6_subnet.is_some() && !self.said_dual {
            self.said_dual = true;
            tracing::info!(%key, "the cluster has dual-stack peers; this host runs IPv4 only (no EnableIPv6 in the network config) and programs their IPv4 entries only");
        }
        // A host with IPv6 on has an IPv6 pass, which names every part it skips (once);
        // only an IPv4-only host, which has none, says here what it leaves out.
        let problem = ipv6_problem(lease).filter(|_| !self.ipv6_host);
        let Some(problem) = problem else { return self.forget(key) };
        let fingerprint = logtext::fingerprint(&problem);
        if self.last.insert(logtext::fingerprint(key), fingerprint) != Some(fingerprint) {
            let (subnet, problem) = (lease.id(), logtext::clip(&problem));
            log_within!(self.budget, warn, %key, %subnet, %problem, "skipping a peer's IPv6 part; its IPv4 part is used; fix the key or value");
        }
    }

    /// After a fresh listing: forgets keys no longer listed, then notes every lease.
    pub(super) fn relisted<'l>(&mut self, leases: impl Iterator<Item = (String, &'l Lease)>) {
        let mut still = HashMap::new();
        for (key, lease) in leases {
            self.seen(&key, lease);
            let fingerprint = logtext::fingerprint(&key);
            still.extend(self.last.get(&fingerprint).map(|problem| (fingerprint, *problem)));
        }
        self.last = still;
    }

    /// The key was deleted or now holds something else.
    pub(super) fn forget(&mut self, key: &str) {
        self.last.remove(&logtext::fingerprint(key));
    }

    /// When the summary of the warnings held back is due.
    pub(super) fn summary_at(&self) -> Option<Instant> {
        self.budget.summary_at()
    }

    /// Logs the summary of the warnings held back, if it is due.
    pub(super) fn flush(&mut self) {
        self.budget.flush(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::lease::{LeaseAttrs, MacAddr};

    fn dual(key_v6: &str) -> Lease {
        let attrs = LeaseAttrs::vxlan(Ipv4Addr::new(198, 18, 0, 12), 1, MacAddr([2, 0, 0, 0, 0, 1]))
            .with_ipv6(Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, 12), MacAddr([2, 0, 0, 0, 0, 2]));
        let subnet = Some("10.5.3.0/24".parse().unwrap());
        Lease { subnet, ipv6_subnet: Some(key_v6.parse().unwrap()), attrs, etcd_lease: None, mod_revision: 1, create_revision: 1 }
    }

    #[test]
    fn each_broken_ipv6_part_names_its_rule() {
        assert_eq!(ipv6_problem(&dual("fd00:5:0:3::/64")), None);
        let unread = Lease {
            attrs: LeaseAttrs { ipv6_error: Some("bad".into()), ..dual("fd00:5:0:3::/64").attrs },
            ..dual("fd00:5:0:3::/64")
        };
        let no_data =
            Lease { attrs: LeaseAttrs { backend_v6_data: None, ..dual("fd00:5:0:3::/64").attrs }, ..dual("fd00:5:0:3::/64") };
        let no_subnet = Lease { ipv6_subnet: None, ..dual("fd00:5:0:3::/64") };
        let cases = [
            (unread, "cannot be read: bad"),
            (no_data, "lacks PublicIPv6 or BackendV6Data"),
            (no_subnet, "BackendV6Data but its key no IPv6 subnet"),
            (dual("fd00:5:0:3::7/64"), "host bits set (flannel writes fd00:5:0:3::/64)"),
        ];
        for (lease, rule) in cases {
            let problem = ipv6_problem(&lease).unwrap_or_default();
            assert!(problem.contains(rule), "{lease:?}: {problem}");
        }
        // An IPv4-only host cannot tell the IPv6 range (it has no IPv6 config).
        assert_eq!(ipv6_problem(&dual("fd00:5:0:10::/64")), None);
    }
}
