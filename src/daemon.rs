//! Wiring: start-up order, the task that holds our lease, the one task that writes the kernel,
//! and shutdown.
//!
//! Tasks talk through `watch` channels carrying whole states (our lease, every lease), never
//! events, so any task can fall behind or restart and still converge.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{ConfigError, NetworkConfig};
use crate::device;
use crate::etcd::{outage, EtcdOptions, Registry, RegistryError};
use crate::ipmasq;
use crate::keeper::{acquire, LeaseKeeper};
use crate::lease::{Lease, LeaseAttrs, LeaseSet, MacAddr};
use crate::log_within;
use crate::logtext::{self, LogBudget};
use crate::model::{self, KernelContext, KernelState, NexthopSupport};
use crate::netlink::{self, DeviceChanges, Kernel, NetlinkError, VxlanDevice, VxlanSpec};
use crate::observe::health::{self, Health};
use crate::observe::http::{self, HttpError};
use crate::observe::metrics::Metrics;
use crate::reconcile::apply::{self, Applied, Ongoing};
use crate::reconcile::{self, SkippedPeer, ThisHost};
use crate::subnet_env::{self, SubnetEnv, SubnetEnvError};
use crate::underlay::{self, Underlay, UnderlayChoice, UnderlayError};

/// Everything `weftd` needs, already parsed from flags and environment.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub etcd: EtcdOptions,
    /// `--iface`, `--iface-regex`, `--iface-can-reach` and `--public-ip`.
    pub underlay: UnderlayChoice,
    pub subnet_file: PathBuf,
    pub lease_ttl: Duration,
    pub renew_margin: Duration,
    pub resync_interval: Duration,
    /// How often the iptables rules are checked (`--iptables-resync`).
    pub iptables_resync: Duration,
    pub ip_masq: bool,
    pub iptables_forward_rules: bool,
    /// Where to serve /healthz and /readyz; `None` disables them.
    pub healthz: Option<std::net::SocketAddr>,
    /// Where to serve /metrics; `None` disables it.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Underlay(#[from] UnderlayError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    SubnetEnv(#[from] SubnetEnvError),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Runs the daemon until `shutdown` completes. On shutdown the device, its entries and our
/// lease are left in place so a restarted daemon drops no packets.
pub async fn run(options: DaemonOptions, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    tokio::select! {
        result = serve(options) => result,
        () = shutdown => {
            tracing::info!("shutting down; the overlay stays in place");
            Ok(())
        }
    }
}

async fn serve(options: DaemonOptions) -> Result<(), DaemonError> {
    let health = Health::default();
    if let Some(addr) = options.healthz {
        http::serve_health(addr, health.clone()).await?;
    }
    let metrics = Metrics::new();
    if let Some(addr) = options.metrics {
        http::serve_metrics(addr, metrics.clone()).await?;
    }
    let kernel = Kernel::connect()?;
    let underlay = underlay::find(&kernel, &options.underlay).await?;
    let public_ip = underlay.public_ip;
    tracing::info!(iface = %underlay.name, local_ip = %underlay.ip, %public_ip, mtu = underlay.mtu, "using underlay interface");

    let registry = outage::retry("connect to etcd", || Registry::connect(&options.etcd)).await?;
    if options.healthz.is_some() {
        let etcd = registry.clone();
        tokio::spawn(health::probe(health.clone(), Duration::from_secs(5), move || etcd_answers(etcd.clone())));
    }
    let config = wait_for_config(&registry).await?;
    tokio::spawn(crate::config_watch::follow(registry.clone(), config.clone()));

    let mac = vtep_mac(&kernel, &config, public_ip).await?;
    let spec = device::desired_device(&config, &underlay, mac);
    let device = device::ensure(&kernel, &spec).await?;

    let attrs = LeaseAttrs::vxlan(public_ip, config.backend.vni, device.mac);
    let previous = subnet_env::read_previous_subnet(&options.subnet_file);
    let own = acquire(&registry, &config, &attrs, options.lease_ttl, previous).await?;
    metrics.set_lease_expiry((!own.is_reservation()).then_some(options.lease_ttl));

    let (leases_tx, leases_rx) = watch::channel(Arc::new(LeaseSet::default()));
    let (own_tx, own_rx) = watch::channel(own);
    let (attrs_tx, attrs_rx) = watch::channel(attrs);
    tokio::spawn(registry.clone().follow_leases(leases_tx, metrics.clone()));
    let keeper = LeaseKeeper {
        registry,
        config: config.clone(),
        attrs: attrs_rx,
        ttl: options.lease_ttl,
        renew_margin: options.renew_margin,
        metrics: metrics.clone(),
    };
    tokio::spawn(keeper.run(own_tx, leases_rx.clone()));
    tokio::spawn(crate::peer_log::follow(leases_rx.clone(), own_rx.clone()));
    let (masq, forward, interval) = (options.ip_masq, options.iptables_forward_rules, options.iptables_resync);
    tokio::spawn(ipmasq::keep_rules(config.network, masq, forward, interval, own_rx.clone()));

    let direct_routing = config.backend.direct_routing;
    let device_changes = netlink::monitor(&kernel, &spec.name, device.index, config.network, direct_routing)?;
    let reconciler = Reconciler {
        kernel,
        spec,
        underlay,
        underlay_problem: None,
        lookup_underlay: false,
        attrs: attrs_tx,
        config,
        options,
        device_changes,
        health,
        metrics,
        last_reconciled: None,
        notified_ready: false,
        warnings: PeerWarnings::new(),
        failing: Ongoing::default(),
    };
    reconciler.run(own_rx, leases_rx).await
}

/// Whether etcd answers a trivial request now: the probe behind `/healthz`.
async fn etcd_answers(registry: Registry) -> bool {
    registry.ping().await.is_ok()
}

/// The VTEP MAC for our lease: the one a VXLAN device left by an earlier run has (peers may
/// still point at it), else one derived from the PublicIP and VNI, stable across restarts.
async fn vtep_mac(kernel: &Kernel, config: &NetworkConfig, public_ip: Ipv4Addr) -> Result<MacAddr, NetlinkError> {
    let existing = kernel.vxlan_device(&model::device_name(config.backend.vni)).await?;
    Ok(existing.and_then(|d| d.spec).map_or_else(|| model::derived_mac(public_ip, config.backend.vni), |spec| spec.mac))
}

/// Reads `<prefix>/config`, waiting (one try a second) while it is absent. An invalid config
/// is an error: the operator must fix it, and guessing would split the cluster.
async fn wait_for_config(registry: &Registry) -> Result<NetworkConfig, DaemonError> {
    let mut logged = false;
    loop {
        if let Some(text) = outage::retry("read network config", || registry.network_config()).await? {
            let config = NetworkConfig::parse(&text)?;
            tracing::info!(network = %config.network, subnet_len = config.subnet_len, vni = config.backend.vni, "network config loaded");
            if config.enable_ipv6 {
                tracing::warn!("network config has \"EnableIPv6\": true, but weftd runs IPv4 only (no IPv6 leases, routes or addresses); use flanneld for a dual-stack overlay until weftd supports IPv6");
            }
            return Ok(config);
        }
        if !logged {
            tracing::warn!(key = %registry.keys().config(), "network config not found in etcd; retrying every second until it is written");
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The one task that writes the kernel.
struct Reconciler {
    kernel: Kernel,
    /// The device as the last pass wanted it.
    spec: VxlanSpec,
    /// The underlay as last looked up.
    underlay: Underlay,
    /// How the last lookup of the underlay failed (the error's kind, and whether the interface
    /// in use was kept), logged once until it changes or the lookup succeeds again; not the
    /// error's text, which lists every interface and changes with any address.
    underlay_problem: Option<(std::mem::Discriminant<UnderlayError>, bool)>,
    /// Whether the underlay must be looked up again before the next pass (the last lookup
    /// failed, or the periodic resync is due).
    lookup_underlay: bool,
    /// What our lease must say, for the lease keeper to advertise.
    attrs: watch::Sender<LeaseAttrs>,
    config: NetworkConfig,
    options: DaemonOptions,
    /// Wakes us when someone else changes the device or its tables; follows the device's
    /// index, which changes when the device is recreated.
    device_changes: DeviceChanges,
    /// What /readyz reports.
    health: Health,
    metrics: Arc<Metrics>,
    /// The (own subnet, lease revision) of the last successful pass: a later pass that still
    /// has to change something, with neither changed, is repairing the kernel.
    last_reconciled: Option<(Ipv4Network, Option<i64>)>,
    /// Whether systemd has been told we are ready.
    notified_ready: bool,
    /// Peers already warned about, and how many more warnings of each kind may be logged.
    warnings: PeerWarnings,
    /// Kernel entries refused in the last pass, retried every pass and logged when they start
    /// and when they end.
    failing: Ongoing,
}

impl Reconciler {
    async fn run(
        mut self,
        mut own: watch::Receiver<Lease>,
        mut leases: watch::Receiver<Arc<LeaseSet>>,
    ) -> Result<(), DaemonError> {
        // Reconciling against an empty set before the first listing would tear down every
        // peer a restarted daemon left in place; wait for a real picture first.
        while leases.borrow().revision.is_none() {
            leases.changed().await.expect("the lease follower runs as long as the daemon");
        }
        loop {
            let own_lease = own.borrow_and_update().clone();
            let lease_set = Arc::clone(&leases.borrow_and_update());
            // Ready once our own device is set up and a pass has run: a peer the kernel refuses
            // is that peer's problem, and must not keep docker from starting on this host.
            if self.reconcile(&own_lease, &lease_set).await {
                self.write_subnet_env(&own_lease)?;
            }
            // Warnings held back are summarised when their window ends, even if nothing else
            // happens by then (a long resync interval, no underlay).
            let summary_at = self.warnings.summary_at();
            tokio::select! {
                _ = own.changed() => {}
                _ = leases.changed() => {}
                () = tokio::time::sleep(self.options.resync_interval) => self.lookup_underlay = true,
                () = self.device_changes.changed() => {}
                () = tokio::time::sleep_until(Instant::from_std(summary_at.unwrap_or_else(std::time::Instant::now))),
                    if summary_at.is_some() => self.warnings.flush(std::time::Instant::now()),
            }
        }
    }

    /// Moves the kernel to the desired state. Returns whether the pass ran: our device and
    /// address are set up and every peer was tried. Failures are logged here (a peer's once
    /// while it lasts) and retried on the next pass.
    async fn reconcile(&mut self, own: &Lease, leases: &LeaseSet) -> bool {
        self.metrics.reconcile_runs.inc();
        let started = std::time::Instant::now();
        let applied = self.reconcile_once(own, leases).await;
        let ran = applied.is_some();
        let failures = applied.map_or(0, |a| {
            let count = a.failures.len();
            self.track_failures(a);
            count
        });
        tracing::debug!(ran, failures, elapsed_us = started.elapsed().as_micros() as u64, "reconcile pass");
        if !ran || failures > 0 {
            self.metrics.reconcile_errors.inc();
        }
        ran
    }

    /// One pass; `None` when it could not reach the peers (no underlay, no device, the kernel's
    /// tables unreadable), else what the kernel accepted and refused.
    async fn reconcile_once(&mut self, own: &Lease, leases: &LeaseSet) -> Option<Applied> {
        if !self.follow_underlay().await {
            return None;
        }
        let public_ip = self.underlay.public_ip;
        self.advertise(public_ip, own);
        self.spec = device::desired_device(&self.config, &self.underlay, own.attrs.backend_data.vtep_mac);
        let device = match self.ensure_device(own).await {
            Ok(device) => {
                self.device_changes.follow_index(device.index);
                device
            }
            Err(e) => {
                tracing::error!(error = %e, device = %self.spec.name, "cannot set up the VXLAN device; retrying");
                return None;
            }
        };
        // The last pass's wanted state goes before this pass reads and builds its own, so three
        // full states never coexist (peak RSS at thousands of peers). Until `want` below, every
        // neighbour notification wakes us: a change made while we read is not missed.
        self.device_changes.forget_wanted();
        let (actual, context) = match self.kernel.read_state(device.index, self.config.network).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the kernel's tables; retrying");
                return None;
            }
        };
        let us = ThisHost { subnet: Some(own.subnet), public_ip, vtep_mac: Some(own.attrs.backend_data.vtep_mac) };
        let (desired, skipped) = reconcile::desired_state(&self.config, &us, leases, &context);
        self.warn_once(leases, skipped, &desired, &context);
        let desired = Arc::new(desired);
        // Before writing: the echoes of our writes then agree with it and wake nobody.
        self.device_changes.want(Arc::clone(&desired));
        let mut plan = reconcile::plan(&desired, &actual);
        // A subnet whose key exists but cannot be read keeps what the kernel has for it (a
        // restart has no last good value) until the key is fixed or deleted.
        plan.remove = plan.removals_keeping(&leases.unreadable.keys().copied().collect());
        let mut applied = Applied::default();
        if !plan.is_empty() {
            tracing::debug!(
                added = plan.add.entry_count(),
                rewritten = plan.rewrite_nexthops.len(),
                removed = plan.remove.entry_count(),
                "applying kernel changes"
            );
            applied = apply::apply(&self.kernel, device.index, &plan, &desired, &actual).await;
        }
        self.record(own, leases, &desired, &applied);
        Some(applied)
    }

    /// Logs each failure once when it starts and once when it ends, and counts the peers
    /// whose entries fail, so a refusal that lasts costs two log lines, not one per pass.
    fn track_failures(&mut self, applied: Applied) {
        let transitions = self.failing.update(applied.failures);
        for f in &transitions.started {
            let (errno, peer) = (f.errno.map(|e| format!("{e:?}")), f.peer.map(|p| p.to_string()));
            let peer = peer.as_deref().unwrap_or("none (leftover entry)");
            log_within!(self.warnings.refused, error, peer, action = f.change.action(), entry = %f.change, errno, error = %f.error, "the kernel refused a peer's entry; that peer stays unreachable from here, the others are unaffected; retrying every pass");
        }
        for (peer, action) in &transitions.ended {
            let peer = peer.map_or_else(|| "none (leftover entry)".to_string(), |p| p.to_string());
            log_within!(self.warnings.refused, info, peer, action, "a peer's kernel entry no longer fails");
        }
        self.metrics.set_failing(self.failing.peer_count(), &self.failing.count_by_kind());
    }

    /// Looks the underlay up again when a link or address changed (or the resync is due), the
    /// way it was chosen at start. Returns whether there is an underlay to build on. When none
    /// matches any more but the one in use is still there with its address (an interface
    /// chosen by `--iface <name>` was renamed), the overlay stays on it: tearing down a working
    /// datapath would help nobody, and a restart is what would move it.
    async fn follow_underlay(&mut self) -> bool {
        if !(self.device_changes.take_underlay_changed() || self.lookup_underlay) {
            return true;
        }
        let problem = match underlay::find(&self.kernel, &self.options.underlay).await {
            Ok(found) => {
                if found != self.underlay {
                    let (from, to) = (&self.underlay, &found);
                    tracing::info!(iface = %to.name, index = to.index, local_ip = %to.ip, mtu = to.mtu, was_iface = %from.name, was_index = from.index, was_ip = %from.ip, "underlay changed; following it");
                }
                self.underlay = found;
                self.lookup_underlay = false;
                if self.underlay_problem.take().is_some() {
                    tracing::info!(iface = %self.underlay.name, "underlay found again");
                }
                return true;
            }
            Err(e) => e,
        };
        self.lookup_underlay = true;
        let kept = underlay::by_index(&self.kernel, &self.underlay).await.ok().flatten();
        let kind = (std::mem::discriminant(&problem), kept.is_some());
        if self.underlay_problem != Some(kind) {
            match &kept {
                Some(kept) => {
                    tracing::warn!(error = %problem, iface = %kept.name, index = kept.index, "the underlay no longer matches how it was chosen; keeping the interface in use")
                }
                None => tracing::error!(error = %problem, "the underlay is gone; the overlay waits for it to come back"),
            }
            self.underlay_problem = Some(kind);
        }
        match kept {
            Some(kept) => {
                self.underlay = kept;
                true
            }
            None => false,
        }
    }

    /// Asks the lease keeper to advertise `public_ip` (the underlay was readdressed) if our
    /// lease says otherwise.
    fn advertise(&self, public_ip: Ipv4Addr, own: &Lease) {
        if own.attrs.public_ip != public_ip {
            let attrs = LeaseAttrs { public_ip, ..own.attrs.clone() };
            self.attrs.send_if_modified(|current| {
                let modified = *current != attrs;
                *current = attrs;
                modified
            });
        }
    }

    /// Warns once per peer about a lease we skip (again when its reason changes), and about a
    /// route that cannot point at its nexthop because another program's nexthop has the id;
    /// within each kind's budget, so a peer rewriting its value cannot flood the log.
    fn warn_once(&mut self, leases: &LeaseSet, skipped: Vec<SkippedPeer>, desired: &KernelState, context: &KernelContext) {
        let warnings = &mut self.warnings;
        warnings.flush(std::time::Instant::now());
        warnings.last.retain(|(subnet, _), _| leases.leases.contains_key(subnet));
        for peer in skipped {
            if warnings.first(peer.subnet, PeerWarning::Skipped, &peer.reason) {
                log_within!(warnings.skipped, warn, key = %peer.key(), subnet = %peer.subnet, reason = %logtext::clip(&peer.reason), "skipping peer lease");
            }
        }
        // Where the kernel has nexthops, desired_state gives a route none only for a taken id.
        if context.nexthops == NexthopSupport::Unavailable {
            return;
        }
        for route in desired.routes.iter().filter(|r| r.nexthop.is_none()) {
            if warnings.first(route.subnet, PeerWarning::NexthopTaken, "") {
                log_within!(warnings.nexthop_taken, warn, subnet = %route.subnet, gateway = %route.gateway, "another program's nexthop has this peer's id; its route takes flanneld's form instead");
            }
        }
    }

    /// Updates the metrics after a pass. Only changes the kernel accepted count: retrying a
    /// refused entry every pass repairs nothing.
    fn record(&mut self, own: &Lease, leases: &LeaseSet, desired: &KernelState, applied: &Applied) {
        self.metrics.set_programmed(desired, applied.failed_peers().len());
        let inputs = (own.subnet, leases.revision);
        let changes = applied.written as u64;
        if self.last_reconciled == Some(inputs) && changes > 0 {
            self.metrics.entries_repaired.inc_by(changes);
            tracing::info!(entries = changes, "repaired kernel entries");
        } else if self.last_reconciled != Some(inputs) && changes > 0 {
            if let Some(at) = leases.changed_at {
                self.metrics.lease_to_kernel.observe(at.elapsed().as_secs_f64());
            }
        }
        self.last_reconciled = Some(inputs);
    }

    async fn ensure_device(&self, own: &Lease) -> Result<VxlanDevice, NetlinkError> {
        let device = device::ensure(&self.kernel, &self.spec).await?;
        let address = Ipv4Network::new(model::vtep_address(own.subnet), 32).expect("/32 is valid");
        self.kernel.ensure_address(device.index, address).await?;
        Ok(device)
    }

    /// Writes subnet.env, then tells systemd (`Type=notify`) we are ready: a unit ordered
    /// after weftd.service can rely on the file existing and the overlay being programmed.
    fn write_subnet_env(&mut self, own: &Lease) -> Result<(), SubnetEnvError> {
        let env =
            SubnetEnv { network: self.config.network, subnet: own.subnet, mtu: self.spec.mtu, ip_masq: self.options.ip_masq };
        if env.write_if_changed(&self.options.subnet_file)? {
            tracing::info!(path = %self.options.subnet_file.display(), subnet = %own.subnet, "wrote subnet file");
        }
        if !self.notified_ready {
            if let Err(error) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
                tracing::warn!(%error, "cannot notify systemd of readiness");
            }
            self.health.set_ready();
            self.notified_ready = true;
        }
        Ok(())
    }
}

/// What a peer was warned about; each kind is remembered apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerWarning {
    Skipped,
    NexthopTaken,
}

/// The warnings a peer's lease can cause: each once per peer and reason, and each kind within
/// a [`LogBudget`], so neither the number of values peers write, nor their size, nor how
/// often they flip between them grows the log or this state.
#[derive(Debug)]
struct PeerWarnings {
    /// One fingerprint of the last warning per peer and kind, dropped when the lease goes.
    last: HashMap<(Ipv4Network, PeerWarning), u64>,
    skipped: LogBudget,
    nexthop_taken: LogBudget,
    /// Kernel refusals starting and ending: a peer flipping between a value the kernel
    /// refuses and one it takes would otherwise cost two lines a flip.
    refused: LogBudget,
}

impl PeerWarnings {
    fn new() -> Self {
        PeerWarnings {
            last: HashMap::new(),
            skipped: LogBudget::new("peer leases skipped", "`weftd status` lists them"),
            nexthop_taken: LogBudget::new(
                "peers' routes took flanneld's form (their nexthop id is taken)",
                "`ip route` shows their routes",
            ),
            refused: LogBudget::new(
                "peers' kernel entries refused or recovered",
                "the weft_peers_failing metric counts the peers failing now",
            ),
        }
    }

    /// Records a warning about `subnet`; whether it differs from the last one of its kind.
    fn first(&mut self, subnet: Ipv4Network, kind: PeerWarning, reason: &str) -> bool {
        let fingerprint = logtext::fingerprint(reason);
        self.last.insert((subnet, kind), fingerprint) != Some(fingerprint)
    }

    /// When the next summary of warnings held back is due.
    fn summary_at(&self) -> Option<std::time::Instant> {
        [&self.skipped, &self.nexthop_taken, &self.refused].into_iter().filter_map(LogBudget::summary_at).min()
    }

    /// Logs the summaries due at `now`.
    fn flush(&mut self, now: std::time::Instant) {
        [&mut self.skipped, &mut self.nexthop_taken, &mut self.refused].into_iter().for_each(|budget| budget.flush(now));
    }
}
