//! Everything weftd counts, in Prometheus form: state only; the `http` module serves it on
//! `--metrics-ip:--metrics-port` in the text exposition format.
//!
//! Dual-stack: the per-peer and per-entry series of IPv6 carry `family="ipv6"`; the IPv4 ones
//! keep the labels they had before IPv6 existed (none for `weft_peers`), so dashboards and
//! alerts on them see no change, and `{family=""}` selects IPv4 alone. IPv6 series appear once
//! an IPv6 pass has run, never for an IPv4-only config.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{self, KernelState};

/// The `kind` label's values: every kind of kernel entry weft writes, a bounded set.
const ENTRY_KINDS: [&str; 5] = ["arp", "fdb", "nexthop", "route", "direct_route"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// What became of a DNS query: `answered` (from the names' cache, NXDOMAIN included),
/// `forwarded` (answered by the host's resolvers) or `failed` (SERVFAIL, NOTIMP).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// The families' names, as the `family` label has them.
const IPV4: &str = <Ipv4Addr as model::Family>::NAME;
const IPV6: &str = <Ipv6Addr as model::Family>::NAME;

/// The labels of a per-entry series: `kind`, and `family` for IPv6 only (see the module docs).
pub type EntryLabels = Vec<(&'static str, &'static str)>;

/// `kind="<kind>"`, with `family="ipv6"` added for an IPv6 entry.
fn entry_labels<A: model::Family>(kind: &'static str) -> EntryLabels {
    match A::NAME {
        IPV4 => vec![("kind", kind)],
        name => vec![("kind", kind), ("family", name)],
    }
}

/// A gauge per family, one metric name: the IPv4 value without a label (as before dual-stack),
/// the IPv6 value with `family="ipv6"` once it has been set. Clones share their values, as a
/// `Gauge`'s do.
#[derive(Debug, Default, Clone)]
pub struct FamilyGauge {
    ipv4: Gauge,
    ipv6: Gauge,
    ipv6_set: Arc<AtomicBool>,
}

impl FamilyGauge {
    /// Sets the value of family `A`.
    pub fn set<A: model::Family>(&self, value: i64) {
        if A::NAME == IPV4 {
            self.ipv4.set(value);
        } else {
            self.ipv6.set(value);
            self.ipv6_set.store(true, Ordering::Relaxed);
        }
    }

    /// The value of family `A`.
    pub fn get<A: model::Family>(&self) -> i64 {
        if A::NAME == IPV4 {
            self.ipv4.get()
        } else {
            self.ipv6.get()
        }
    }
}

impl EncodeMetric for FamilyGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.ipv4.get())?;
        if self.ipv6_set.load(Ordering::Relaxed) {
            encoder.encode_family(&[("family", IPV6)])?.encode_gauge(&self.ipv6.get())?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Everything weftd counts. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub peers: FamilyGauge,
    pub peers_skipped: FamilyGauge,
    pub peers_failing: Gauge,
    pub entries_refused: Family<KindLabel, Gauge>,
    pub kernel_entries: Family<EntryLabels, Gauge>,
    pub reconcile_runs: Counter,
    pub reconcile_errors: Counter,
    pub entries_repaired: Counter,
    pub lease_expiry: Gauge<f64, AtomicU64>,
    pub etcd_reconnects: Counter,
    pub watch_restarts: Counter,
    pub lease_to_kernel: Histogram,
    pub dns_queries: Family<OutcomeLabel, Counter>,
    /// Names this host publishes (`--names`): running containers on the overlay.
    pub names_published: Gauge,
    /// SkyDNS records this host publishes (one per name, plus one per exposed port).
    pub names_records: Gauge,
    pub names_publish_errors: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("weft"),
            peers: FamilyGauge::default(),
            peers_skipped: FamilyGauge::default(),
            peers_failing: Gauge::default(),
            entries_refused: Family::default(),
            kernel_entries: Family::default(),
            reconcile_runs: Counter::default(),
            reconcile_errors: Counter::default(),
            entries_repaired: Counter::default(),
            lease_expiry: Gauge::default(),
            etcd_reconnects: Counter::default(),
            watch_restarts: Counter::default(),
            // 100 µs to ~3 s.
            lease_to_kernel: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            dns_queries: Family::default(),
            names_published: Gauge::default(),
            names_records: Gauge::default(),
            names_publish_errors: Counter::default(),
        };
        metrics.register_peers();
        metrics.register_daemon();
        Arc::new(metrics)
    }

    /// Registers the series about peers and their kernel entries.
    fn register_peers(&mut self) {
        let r = &mut self.registry;
        r.register("peers", "Peer leases programmed into the kernel", self.peers.clone());
        r.register(
            "peers_skipped",
            "Peer leases (or their IPv6 parts) not programmed because they break a rule; `weftd status` says which",
            self.peers_skipped.clone(),
        );
        r.register(
            "peers_failing",
            "Peer leases with a kernel entry the kernel refused in the last pass (retried every pass)",
            self.peers_failing.clone(),
        );
        r.register(
            "kernel_entries_refused",
            "Kernel entries refused in the last pass, by kind (arp, fdb, nexthop, route, direct_route)",
            self.entries_refused.clone(),
        );
        r.register(
            "kernel_entries",
            "ARP, FDB, nexthop and route entries on the VXLAN device, and direct routes",
            self.kernel_entries.clone(),
        );
    }

    /// Registers the series about passes, the lease, etcd and names.
    fn register_daemon(&mut self) {
        let r = &mut self.registry;
        r.register("reconcile_runs", "Reconcile passes", self.reconcile_runs.clone());
        r.register("reconcile_errors", "Reconcile passes that failed", self.reconcile_errors.clone());
        r.register("entries_repaired", "Kernel entries fixed while the leases were unchanged", self.entries_repaired.clone());
        r.register_with_unit(
            "lease_expiry_timestamp",
            "When our lease expires unless renewed (0 for a reservation)",
            Unit::Seconds,
            self.lease_expiry.clone(),
        );
        r.register("etcd_reconnects", "Times etcd came back after being unreachable", self.etcd_reconnects.clone());
        r.register("watch_restarts", "Times the lease watch was re-established with a fresh list", self.watch_restarts.clone());
        r.register_with_unit(
            "lease_event_to_kernel",
            "Time from a lease change arriving to the kernel matching it",
            Unit::Seconds,
            self.lease_to_kernel.clone(),
        );
        r.register(
            "dns_queries",
            "DNS queries on docker0 (--names), by outcome: answered, forwarded, failed",
            self.dns_queries.clone(),
        );
        r.register("names_published", "Container names this host publishes in etcd (--names)", self.names_published.clone());
        r.register("names_records", "SkyDNS records this host publishes in etcd (--names)", self.names_records.clone());
        r.register(
            "names_publish_errors",
            "Publishing passes that failed to bring etcd to the containers running (retried)",
            self.names_publish_errors.clone(),
        );
    }

    /// Records what the kernel holds after a reconcile pass of family `A` that wrote `state`
    /// except for `failed_peers` peers.
    pub fn set_programmed<A: model::Family>(&self, state: &KernelState<A>, failed_peers: usize) {
        self.peers.set::<A>(state.peer_count().saturating_sub(failed_peers) as i64);
        let kinds = [
            ("arp", state.arp.len()),
            ("fdb", state.fdb.len()),
            ("nexthop", state.nexthops.len()),
            ("route", state.routes.len()),
            ("direct_route", state.direct_routes.len()),
        ];
        for (kind, count) in kinds {
            self.kernel_entries.get_or_create(&entry_labels::<A>(kind)).set(count as i64);
        }
    }

    /// Records the failures going on: `peers` peers with a refused entry, and the refused
    /// entries per kind. Every kind is set, so one that recovered reads 0.
    pub fn set_failing(&self, peers: usize, by_kind: &BTreeMap<&'static str, usize>) {
        self.peers_failing.set(peers as i64);
        for kind in ENTRY_KINDS {
            self.entries_refused.get_or_create(&KindLabel { kind }).set(by_kind.get(kind).copied().unwrap_or(0) as i64);
        }
    }

    /// Our lease now expires `ttl` from now; `None` for a reservation.
    pub fn set_lease_expiry(&self, ttl: Option<Duration>) {
        let at = ttl.map(|ttl| SystemTime::now() + ttl).map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        self.lease_expiry.set(at.unwrap_or(0.0));
    }

    /// Counts one DNS query with its outcome (`answered`, `forwarded` or `failed`).
    pub fn count_dns_query(&self, outcome: &'static str) {
        self.dns_queries.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Every metric in the OpenMetrics text format (`application/openmetrics-text`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_metric_with_the_weft_prefix() {
        let metrics = Metrics::new();
        metrics.reconcile_runs.inc();
        metrics.set_programmed(&KernelState::<Ipv4Addr>::default(), 0);
        metrics.set_failing(1, &[("fdb", 1)].into());
        metrics.lease_to_kernel.observe(0.002);
        metrics.count_dns_query("forwarded");
        let text = metrics.encode();
        for name in [
            "weft_peers ",
            "weft_peers_failing 1",
            "weft_kernel_entries_refused{kind=\"fdb\"} 1",
            "weft_kernel_entries_refused{kind=\"route\"} 0",
            "weft_kernel_entries{kind=\"route\"} 0",
            "weft_reconcile_runs_total 1",
            "weft_reconcile_errors_total 0",
            "weft_entries_repaired_total 0",
            "weft_lease_expiry_timestamp_seconds ",
            "weft_etcd_reconnects_total 0",
            "weft_watch_restarts_total 0",
            "weft_lease_event_to_kernel_seconds_count 1",
            "weft_dns_queries_total{outcome=\"forwarded\"} 1",
            "weft_names_published 0",
            "weft_names_records 0",
            "weft_names_publish_errors_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("family"), "an IPv4-only daemon shows no family label:\n{text}");
    }

    #[test]
    fn ipv6_series_carry_a_family_label_and_leave_the_ipv4_ones_as_they_were() {
        let metrics = Metrics::new();
        let v4 = KernelState {
            routes: [crate::model::RouteEntry {
                subnet: "10.5.2.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 5, 2, 0),
                onlink: true,
                nexthop: None,
            }]
            .into(),
            ..Default::default()
        };
        metrics.set_programmed(&v4, 0);
        metrics.set_programmed(&KernelState::<Ipv6Addr>::default(), 0);
        metrics.peers_skipped.set::<Ipv6Addr>(2);
        let text = metrics.encode();
        for line in [
            "weft_peers 1\n",
            "weft_peers{family=\"ipv6\"} 0\n",
            "weft_peers_skipped 0\n",
            "weft_peers_skipped{family=\"ipv6\"} 2\n",
            "weft_kernel_entries{kind=\"route\"} 1\n",
            "weft_kernel_entries{kind=\"route\",family=\"ipv6\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE weft_peers gauge").count(), 1, "one metric family per name:\n{text}");
    }
}
