//! Everything weftd counts, in Prometheus form: state only; the `http` module serves it on
//! `--metrics-ip:--metrics-port` in the text exposition format.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::model::KernelState;

/// The `kind` label's values: every kind of kernel entry weft writes, a bounded set.
const ENTRY_KINDS: [&str; 5] = ["arp", "fdb", "nexthop", "route", "direct_route"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Everything weftd counts. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub peers: Gauge,
    pub peers_failing: Gauge,
    pub entries_refused: Family<KindLabel, Gauge>,
    pub kernel_entries: Family<KindLabel, Gauge>,
    pub reconcile_runs: Counter,
    pub reconcile_errors: Counter,
    pub entries_repaired: Counter,
    pub lease_expiry: Gauge<f64, AtomicU64>,
    pub etcd_reconnects: Counter,
    pub watch_restarts: Counter,
    pub lease_to_kernel: Histogram,
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
            peers: Gauge::default(),
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
            names_published: Gauge::default(),
            names_records: Gauge::default(),
            names_publish_errors: Counter::default(),
        };
        let r = &mut metrics.registry;
        r.register("peers", "Peer leases programmed into the kernel", metrics.peers.clone());
        r.register(
            "peers_failing",
            "Peer leases with a kernel entry the kernel refused in the last pass (retried every pass)",
            metrics.peers_failing.clone(),
        );
        r.register(
            "kernel_entries_refused",
            "Kernel entries refused in the last pass, by kind (arp, fdb, nexthop, route, direct_route)",
            metrics.entries_refused.clone(),
        );
        r.register(
            "kernel_entries",
            "ARP, FDB, nexthop and route entries on the VXLAN device, and direct routes",
            metrics.kernel_entries.clone(),
        );
        r.register("reconcile_runs", "Reconcile passes", metrics.reconcile_runs.clone());
        r.register("reconcile_errors", "Reconcile passes that failed", metrics.reconcile_errors.clone());
        r.register("entries_repaired", "Kernel entries fixed while the leases were unchanged", metrics.entries_repaired.clone());
        r.register_with_unit(
            "lease_expiry_timestamp",
            "When our lease expires unless renewed (0 for a reservation)",
            Unit::Seconds,
            metrics.lease_expiry.clone(),
        );
        r.register("etcd_reconnects", "Times etcd came back after being unreachable", metrics.etcd_reconnects.clone());
        r.register(
            "watch_restarts",
            "Times the lease watch was re-established with a fresh list",
            metrics.watch_restarts.clone(),
        );
        r.register_with_unit(
            "lease_event_to_kernel",
            "Time from a lease change arriving to the kernel matching it",
            Unit::Seconds,
            metrics.lease_to_kernel.clone(),
        );
        r.register("names_published", "Container names this host publishes in etcd (--names)", metrics.names_published.clone());
        r.register("names_records", "SkyDNS records this host publishes in etcd (--names)", metrics.names_records.clone());
        r.register(
            "names_publish_errors",
            "Publishing passes that failed to bring etcd to the containers running (retried)",
            metrics.names_publish_errors.clone(),
        );
        Arc::new(metrics)
    }

    /// Records what the kernel holds after a reconcile pass that wrote `state` except for
    /// `failed_peers` peers.
    pub fn set_programmed(&self, state: &KernelState, failed_peers: usize) {
        self.peers.set(state.peer_count().saturating_sub(failed_peers) as i64);
        let kinds = [
            ("arp", state.arp.len()),
            ("fdb", state.fdb.len()),
            ("nexthop", state.nexthops.len()),
            ("route", state.routes.len()),
            ("direct_route", state.direct_routes.len()),
        ];
        for (kind, count) in kinds {
            self.kernel_entries.get_or_create(&KindLabel { kind }).set(count as i64);
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
        metrics.set_programmed(&KernelState::default(), 0);
        metrics.set_failing(1, &[("fdb", 1)].into());
        metrics.lease_to_kernel.observe(0.002);
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
            "weft_names_published 0",
            "weft_names_records 0",
            "weft_names_publish_errors_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
