//! The one task that writes the kernel: wakes on a lease change, a kernel notification or the
//! resync timer, and runs one whole pass (desired → plan → apply) each time.

use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::NetworkConfig;
use crate::device;
use crate::lease::{Lease, LeaseAttrs, LeaseSet};
use crate::model;
use crate::netlink::{DeviceChanges, Kernel, NetlinkError, VxlanDevice, VxlanSpec};
use crate::reconcile::apply::{self, Applied};
use crate::reconcile::desired::{desired_state, ThisHost};
use crate::reconcile::plan::plan;
use crate::reconcile::readiness::Readiness;
use crate::reconcile::record::PassRecord;
use crate::reconcile::underlay::{advertise, UnderlayFollower};
use crate::reconcile::warnings::PeerWarnings;
use crate::subnet_env::SubnetEnvError;

/// The one task that writes the kernel, and what it keeps between passes.
pub struct Reconciler {
    pub kernel: Kernel,
    /// The device as the last pass wanted it.
    pub spec: VxlanSpec,
    pub underlay: UnderlayFollower,
    /// What our lease must say, for the lease keeper to advertise.
    pub attrs: watch::Sender<LeaseAttrs>,
    pub config: NetworkConfig,
    /// How often a pass runs with nothing changed (`--resync-interval`).
    pub resync_interval: Duration,
    /// Wakes us when someone else changes the device or its tables; follows the device's
    /// index, which changes when the device is recreated.
    pub device_changes: DeviceChanges,
    pub readiness: Readiness,
    pub record: PassRecord,
    /// Peers already warned about, and how many more warnings of each kind may be logged.
    pub warnings: PeerWarnings,
}

impl Reconciler {
    /// Runs passes until the task is dropped.
    ///
    /// # Errors
    /// subnet.env cannot be written.
    pub async fn run(
        mut self,
        mut own: watch::Receiver<Lease>,
        mut leases: watch::Receiver<Arc<LeaseSet>>,
    ) -> Result<(), SubnetEnvError> {
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
                self.readiness.signal(&own_lease, self.spec.mtu)?;
            }
            // Warnings held back are summarised when their window ends, even if nothing else
            // happens by then (a long resync interval, no underlay).
            let summary_at = self.warnings.summary_at();
            tokio::select! {
                _ = own.changed() => {}
                _ = leases.changed() => {}
                () = tokio::time::sleep(self.resync_interval) => self.underlay.resync(),
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
        self.record.started();
        let started = std::time::Instant::now();
        let applied = self.reconcile_once(own, leases).await;
        let ran = applied.is_some();
        let failures = applied.map_or(0, |a| {
            let count = a.failures.len();
            let transitions = self.record.failures(a.failures);
            self.warnings.log_refusals(&transitions);
            count
        });
        tracing::debug!(ran, failures, elapsed_us = started.elapsed().as_micros() as u64, "reconcile pass");
        self.record.ended(ran, failures);
        ran
    }

    /// One pass; `None` when it could not reach the peers (no underlay, no device, the kernel's
    /// tables unreadable), else what the kernel accepted and refused.
    async fn reconcile_once(&mut self, own: &Lease, leases: &LeaseSet) -> Option<Applied> {
        let underlay_changed = self.device_changes.take_underlay_changed();
        if !self.underlay.follow(&self.kernel, underlay_changed).await {
            return None;
        }
        let underlay = self.underlay.current();
        let public_ip = underlay.public_ip;
        advertise(&self.attrs, public_ip, own);
        self.spec = device::desired_device(&self.config, underlay, own.attrs.backend_data.vtep_mac);
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
        let (desired, skipped) = desired_state(&self.config, &us, leases, &context);
        self.record.skipped::<std::net::Ipv4Addr>(&skipped);
        self.warnings.warn_once(leases, skipped, &desired, &context);
        let desired = Arc::new(desired);
        // Before writing: the echoes of our writes then agree with it and wake nobody.
        self.device_changes.want(Arc::clone(&desired));
        let mut plan = plan(&desired, &actual);
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
        self.record.applied(own, leases, &desired, &applied);
        Some(applied)
    }

    async fn ensure_device(&self, own: &Lease) -> Result<VxlanDevice, NetlinkError> {
        let device = device::ensure(&self.kernel, &self.spec).await?;
        let address = Ipv4Network::new(model::vtep_address(own.subnet), 32).expect("/32 is valid");
        self.kernel.ensure_address(device.index, address).await?;
        Ok(device)
    }
}
