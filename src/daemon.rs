//! Wiring: start-up order, the task that holds our lease, the one task that writes the kernel,
//! and shutdown.
//!
//! Tasks talk through `watch` channels carrying whole states (our lease, every lease), never
//! events, so any task can fall behind or restart and still converge.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::{self, JoinError, JoinSet};

use crate::config::{ConfigError, NetworkConfig};
use crate::device;
use crate::etcd::{outage, EtcdOptions, Previous, Registry, RegistryError};
use crate::ipmasq;
use crate::keeper::{acquire, LeaseKeeper};
use crate::lease::{Lease, LeaseAttrs, LeaseSet};
use crate::model;
use crate::names::dns::{self, DnsError, DnsOptions};
use crate::names::docker;
use crate::names::publish::Publisher;
use crate::names::skydns::Domain;
use crate::netlink::{self, Kernel, NetlinkError};
use crate::observe::health::{self, Health};
use crate::observe::http::{self, HttpError};
use crate::observe::metrics::Metrics;
use crate::reconcile::readiness::Readiness;
use crate::reconcile::reconciler::Reconciler;
use crate::reconcile::record::PassRecord;
use crate::reconcile::underlay::UnderlayFollower;
use crate::reconcile::warnings::PeerWarnings;
use crate::subnet_env::{self, SubnetEnvError};
use crate::underlay::{self, Families, Underlay, UnderlayChoice, UnderlayError};

/// Everything `weftd` needs, already parsed from flags and environment.
#[derive(Debug)]
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
    /// The socket /healthz and /readyz are served on, bound by the caller (so a test can bind
    /// port 0 and learn the port); `None` disables them.
    pub healthz: Option<std::net::TcpListener>,
    /// The socket /metrics is served on, bound by the caller; `None` disables it.
    pub metrics: Option<std::net::TcpListener>,
    /// `--names`: the DNS server on docker0 for this domain's names; `None` without it.
    pub names_dns: Option<DnsOptions>,
    /// `--names`: publish this host's containers; `None` (the default) leaves docker alone.
    pub names: Option<NamesOptions>,
}

/// How names are published (`--names`, `--names-domain`, `--docker-host`, `--names-lease-ttl`).
#[derive(Debug, Clone)]
pub struct NamesOptions {
    pub domain: Domain,
    /// `unix:///var/run/docker.sock`, or `tcp://HOST:PORT`.
    pub docker_host: String,
    /// The TTL of the etcd lease the records hang on.
    pub lease_ttl: Duration,
}

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Underlay(#[from] UnderlayError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    SubnetEnv(#[from] SubnetEnvError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// A dual-stack config, but the underlay has no IPv6 address to advertise.
    #[error("the network config enables IPv6, but the underlay interface {iface} has no global IPv6 address to advertise as PublicIPv6; give it one, or pass --public-ipv6")]
    NoPublicIpv6 { iface: String },
    /// `--names` under an IPv6-only config: names are published and served for docker0's
    /// IPv4 subnet, which such a host does not lease.
    #[error("--names needs an IPv4 subnet (docker0's address answers DNS, records name FLANNEL_SUBNET addresses), but the network config sets \"EnableIPv4\": false; run without --names, or enable IPv4 (dual-stack)")]
    NamesNeedIpv4,
    /// A task that runs as long as the daemon returned.
    #[error("the {task} task ended, which it must not while the daemon runs")]
    TaskEnded { task: &'static str },
    #[error("the {task} task failed")]
    TaskFailed { task: &'static str, source: Box<DaemonError> },
    /// Only with `panic = "unwind"` (tests, debug builds); a release build aborts instead.
    #[error("the {task} task panicked")]
    TaskPanicked { task: &'static str, source: JoinError },
}

/// The daemon's long-running tasks. The first to end, with an error or at all (every one is
/// meant to run as long as the daemon), ends the daemon with an error naming it; dropping the
/// set (that error, or shutdown) aborts the rest.
#[derive(Default)]
struct Tasks {
    set: JoinSet<Result<(), DaemonError>>,
    names: HashMap<task::Id, &'static str>,
}

impl Tasks {
    /// Starts `task`, which runs until the daemon stops unless it fails.
    fn spawn<E: Into<DaemonError>>(&mut self, name: &'static str, task: impl Future<Output = Result<(), E>> + Send + 'static) {
        let handle = self.set.spawn(async move { task.await.map_err(Into::into) });
        self.names.insert(handle.id(), name);
    }

    /// Starts `task`, which retries what fails itself and never returns.
    fn spawn_forever(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn(name, async move {
            task.await;
            Ok::<(), DaemonError>(())
        });
    }

    /// Waits for the first task to end; why it ended, as the daemon's error.
    async fn first_end(mut self) -> DaemonError {
        let Some(ended) = self.set.join_next_with_id().await else {
            return DaemonError::TaskEnded { task: "(none started)" };
        };
        let name = |id| self.names.get(&id).copied().unwrap_or("unnamed");
        match ended {
            Ok((id, Ok(()))) => DaemonError::TaskEnded { task: name(id) },
            Ok((id, Err(e))) => DaemonError::TaskFailed { task: name(id), source: Box::new(e) },
            Err(e) => DaemonError::TaskPanicked { task: name(e.id()), source: e },
        }
    }
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

async fn serve(mut options: DaemonOptions) -> Result<(), DaemonError> {
    let mut tasks = Tasks::default();
    let serves_health = options.healthz.is_some();
    let (health, metrics) = start_http(&mut tasks, &mut options)?;
    let kernel = Kernel::connect()?;
    let early = early_underlay(&kernel, &options.underlay).await?;

    let registry = outage::retry("connect to etcd", || Registry::connect(&options.etcd)).await?;
    if serves_health {
        let etcd = registry.clone();
        tasks.spawn_forever(
            "etcd health probe",
            health::probe(health.clone(), Duration::from_secs(5), move || etcd_answers(etcd.clone())),
        );
    }
    let config = wait_for_config(&registry).await?;
    if config.is_ipv6_only() && (options.names.is_some() || options.names_dns.is_some()) {
        return Err(DaemonError::NamesNeedIpv4);
    }
    tasks.spawn_forever("config watch", crate::config_watch::follow(registry.clone(), config.clone()));
    let underlay = final_underlay(&kernel, &options.underlay, &config, early).await?;

    devices::remove_disabled(&kernel, &config).await?;
    let ipv4_device = devices::ipv4_device(&kernel, &config, &underlay).await?;
    let (attrs, ipv6) =
        devices::lease_attrs(&kernel, &config, &underlay, ipv4_device.as_ref().map(|(_, device)| device.mac)).await?;
    let previous = Previous {
        subnet: subnet_env::read_previous_subnet(&options.subnet_file),
        ipv6_subnet: subnet_env::read_previous_ipv6_subnet(&options.subnet_file),
    };
    let own = acquire(&registry, &config, &attrs, options.lease_ttl, previous).await?;
    metrics.set_lease_expiry((!own.is_reservation()).then_some(options.lease_ttl));

    let (own_rx, leases_rx, attrs_tx) = start_lease_tasks(&mut tasks, registry, &config, &options, own, attrs, &metrics);

    let ipv4_watch = ipv4_device
        .as_ref()
        .zip(config.ipv4)
        .map(|((spec, device), v4)| netlink::DeviceWatch::new(&spec.name, device.index, v4.network));
    // Index 0 (no link) until the first pass has set the IPv6 device up: followed by name.
    let ipv6_name = model::ipv6_device_name(config.backend.vni);
    let ipv6_watch = config.ipv6.map(|v6| netlink::DeviceWatch::new(&ipv6_name, 0, v6.network));
    let device_changes = netlink::monitor(&kernel, ipv4_watch, ipv6_watch, config.backend.direct_routing)?;
    let readiness = Readiness::new(options.subnet_file, &config, options.ip_masq, health);
    let reconciler = Reconciler {
        kernel,
        spec: ipv4_device.map(|(spec, _)| spec),
        underlay: UnderlayFollower::new(options.underlay, Families::of(&config), underlay),
        attrs: attrs_tx,
        config,
        resync_interval: options.resync_interval,
        device_changes,
        readiness,
        record: PassRecord::new(metrics),
        warnings: PeerWarnings::default(),
        ipv6,
    };
    tasks.spawn("reconciler", reconciler.run(own_rx, leases_rx));
    Err(tasks.first_end().await)
}

/// Serves `/healthz` and `/metrics` on the listeners `main` bound (each only if given); the
/// health and metrics they report.
///
/// # Errors
/// A server could not start on its listener.
fn start_http(tasks: &mut Tasks, options: &mut DaemonOptions) -> Result<(Health, Arc<Metrics>), DaemonError> {
    let health = Health::default();
    if let Some(listener) = options.healthz.take() {
        tasks.spawn("/healthz server", http::serve_health(listener, health.clone())?);
    }
    let metrics = Metrics::new();
    if let Some(listener) = options.metrics.take() {
        tasks.spawn("/metrics server", http::serve_metrics(listener, metrics.clone())?);
    }
    Ok((health, metrics))
}

/// The underlay as IPv4 alone chooses it, before etcd is reached, so a wrong flag fails at
/// once. `None` when that found nothing but the flags do match once IPv6 addresses are looked
/// at (an IPv6 `--iface`, an `--iface-regex` for IPv6 addresses, `--public-ipv6`), or by IPv6
/// alone (a host without IPv4): only the config can say whether they will be, and
/// [`final_underlay`] reports the failure if not.
async fn early_underlay(kernel: &Kernel, choice: &UnderlayChoice) -> Result<Option<Underlay>, UnderlayError> {
    let error = match underlay::find(kernel, choice, Families::Ipv4).await {
        Ok(underlay) => return Ok(Some(underlay)),
        Err(e) => e,
    };
    if (choice.may_need_ipv6() && underlay::find(kernel, choice, Families::DualStack).await.is_ok())
        || underlay::find(kernel, choice, Families::Ipv6).await.is_ok()
    {
        tracing::debug!(%error, "no IPv4-only underlay; the network config decides whether IPv6 addresses count");
        return Ok(None);
    }
    Err(error)
}

/// The underlay the daemon builds on: the early one when the config is IPv4 only (where
/// `--public-ipv6` is ignored with a warning, as IPv6 is, and `--public-ip` likewise when the
/// config is IPv6 only), else looked up again by the same
/// rules with the IPv6 side.
async fn final_underlay(
    kernel: &Kernel,
    choice: &UnderlayChoice,
    config: &NetworkConfig,
    early: Option<Underlay>,
) -> Result<Underlay, UnderlayError> {
    if config.ipv6.is_none() {
        if let Some(public_ipv6) = choice.public_ipv6 {
            tracing::warn!(%public_ipv6, "--public-ipv6 is ignored: the network config does not enable IPv6 (EnableIPv6)");
        }
    }
    if let (None, Some(public_ip)) = (config.ipv4, choice.public_ip) {
        tracing::warn!(%public_ip, "--public-ip is ignored: the network config is IPv6 only (EnableIPv4 is false)");
    }
    let underlay = match early {
        Some(underlay) if config.ipv6.is_none() => underlay,
        _ => underlay::find(kernel, choice, Families::of(config)).await?,
    };
    let (local_ipv6, public_ipv6) = (underlay.ipv6.map(|ip| ip.to_string()), underlay.public_ipv6.map(|ip| ip.to_string()));
    let (local_ip, public_ip) = (underlay.ip.map(|ip| ip.to_string()), underlay.public_ip.map(|ip| ip.to_string()));
    tracing::info!(iface = %underlay.name, local_ip, public_ip, local_ipv6, public_ipv6, mtu = underlay.mtu, "using underlay interface");
    Ok(underlay)
}

/// Starts the tasks that follow the leases and hold ours (and those that act on them: the peer
/// log, the iptables rules, the DNS server on docker0's address, the names publisher); returns
/// our lease, every lease, and where to ask for new attrs.
fn start_lease_tasks(
    tasks: &mut Tasks,
    registry: Registry,
    config: &NetworkConfig,
    options: &DaemonOptions,
    own: Lease,
    attrs: LeaseAttrs,
    metrics: &Arc<Metrics>,
) -> (watch::Receiver<Lease>, watch::Receiver<Arc<LeaseSet>>, watch::Sender<LeaseAttrs>) {
    let (leases_tx, leases_rx) = watch::channel(Arc::new(LeaseSet::default()));
    let (own_tx, own_rx) = watch::channel(own);
    let (attrs_tx, attrs_rx) = watch::channel(attrs);
    if let Some(names) = options.names_dns.clone() {
        tasks.spawn("DNS server", dns::serve(registry.clone(), names, own_rx.clone(), Arc::clone(metrics)));
    }
    if let Some(names) = options.names.clone() {
        start_names_tasks(tasks, names, registry.clone(), own_rx.clone(), metrics);
    }
    tasks.spawn_forever(
        "lease follower",
        registry.clone().follow_leases(leases_tx, own_rx.clone(), Arc::clone(metrics), config.ipv6),
    );
    let keeper = LeaseKeeper {
        registry,
        config: config.clone(),
        attrs: attrs_rx,
        ttl: options.lease_ttl,
        renew_margin: options.renew_margin,
        metrics: Arc::clone(metrics),
    };
    tasks.spawn_forever("lease keeper", keeper.run(own_tx, leases_rx.clone()));
    let rules = ipmasq::RuleOptions {
        ip_masq: options.ip_masq,
        forward: options.iptables_forward_rules,
        dns: options.names_dns.is_some(),
        interval: options.iptables_resync,
    };
    // With no flag asking for rules there are none to keep, and `keep_rules` returns at once.
    if let (Some(v4), true) = (&config.ipv4, rules.ip_masq || rules.forward || rules.dns) {
        tasks.spawn_forever("iptables rules", ipmasq::keep_rules(v4.network, rules, own_rx.clone()));
    }
    // The DNS server listens on IPv4 only: no ip6tables rules guard it.
    let rules = ipmasq::RuleOptions { dns: false, ..rules };
    if let (Some(ipv6), true) = (&config.ipv6, rules.ip_masq || rules.forward) {
        tasks.spawn_forever("ip6tables rules", ipmasq::keep_rules(ipv6.network, rules, own_rx.clone()));
    }
    (own_rx, leases_rx, attrs_tx)
}

/// Starts the tasks of `--names`: one follows docker, one keeps this host's records in etcd.
fn start_names_tasks(
    tasks: &mut Tasks,
    names: NamesOptions,
    registry: Registry,
    own: watch::Receiver<Lease>,
    metrics: &Arc<Metrics>,
) {
    let (containers_tx, containers_rx) = watch::channel(None);
    tasks.spawn_forever("docker follower", docker::follow(names.docker_host, containers_tx));
    let publisher = Publisher {
        registry,
        domain: names.domain,
        lease_ttl: names.lease_ttl,
        containers: containers_rx,
        own,
        metrics: Arc::clone(metrics),
    };
    tasks.spawn_forever("names publisher", publisher.run());
}

/// Whether etcd answers a trivial request now: the probe behind `/healthz`.
async fn etcd_answers(registry: Registry) -> bool {
    registry.ping().await.is_ok()
}

/// Reads `<prefix>/config`, waiting (one try a second) while it is absent. An invalid config
/// is an error: the operator must fix it, and guessing would split the cluster.
async fn wait_for_config(registry: &Registry) -> Result<NetworkConfig, DaemonError> {
    let mut logged = false;
    loop {
        if let Some(text) = outage::retry("read network config", || registry.network_config()).await? {
            let config = NetworkConfig::parse(&text)?;
            let (network, subnet_len) = (config.ipv4.map(|v4| v4.network.to_string()), config.ipv4.map(|v4| v4.subnet_len));
            let ipv6_network = config.ipv6.map(|v6| v6.network.to_string());
            tracing::info!(network, subnet_len, ipv6_network, vni = config.backend.vni, "network config loaded");
            return Ok(config);
        }
        if !logged {
            tracing::warn!(key = %registry.keys().config(), "network config not found in etcd; retrying every second until it is written");
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

mod devices;

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
