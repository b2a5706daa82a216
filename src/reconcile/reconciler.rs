//! The one task that writes the kernel: wakes on a lease change, a kernel notification or the
//! resync timer, and runs one whole pass (desired → plan → apply) each time.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv6Network;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::NetworkConfig;
use crate::device;
use crate::lease::{parse_lease_key, Lease, LeaseAttrs, LeaseSet};
use crate::model::{KernelContext, MacAddr};
use crate::netlink::{DeviceChanges, Kernel, VxlanSpec};
use crate::reconcile::apply::Applied;
use crate::reconcile::desired::{desired_state, ThisHost};
use crate::reconcile::pass::{run_family, FamilyTarget};
use crate::reconcile::readiness::Readiness;
use crate::reconcile::record::{LeaseStamp, PassRecord};
use crate::reconcile::underlay::{advertise, UnderlayFollower};
use crate::reconcile::warnings::PeerWarnings;
use crate::subnet_env::SubnetEnvError;

/// The one task that writes the kernel, and what it keeps between passes.
pub struct Reconciler {
    pub kernel: Kernel,
    /// The IPv4 device as the last pass wanted it; `None` under an IPv6-only config.
    pub spec: Option<VxlanSpec>,
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
    /// The IPv6 device of a dual-stack or IPv6-only config; `None` when the config is IPv4 only.
    pub ipv6: Option<Ipv6Device>,
}

/// What the reconciler keeps of the IPv6 device between passes.
#[derive(Debug, Clone)]
pub struct Ipv6Device {
    /// The device's MAC while our lease advertises none (the device's own or the derived one).
    pub mac: MacAddr,
    /// The device as the last pass wanted it; `None` before one could.
    pub spec: Option<VxlanSpec>,
    /// Whether the IPv6 overlay's missing inputs were logged (once while they are missing).
    pub missing_logged: bool,
}

impl Ipv6Device {
    /// The IPv6 device of MAC `mac`, not yet set up by a pass.
    pub fn new(mac: MacAddr) -> Self {
        Self { mac, spec: None, missing_logged: false }
    }
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
            let stamp = LeaseStamp::of(&leases.borrow_and_update());
            // Ready once our own device is set up and a pass has run: a peer the kernel refuses
            // is that peer's problem, and must not keep docker from starting on this host.
            if let (true, Some(mtu)) = (self.reconcile(&own_lease, stamp, &leases).await, self.mtu()) {
                self.readiness.signal(&own_lease, mtu)?;
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

    /// The MTU containers get (`FLANNEL_MTU`), bytes: the smaller of the devices' (dual-stack,
    /// the IPv6 one's headers are 20 bytes longer), so a container's packets fit either tunnel
    /// without a round of path MTU discovery. `None` before a pass set a device up.
    fn mtu(&self) -> Option<u32> {
        let ipv6 = self.ipv6.as_ref().and_then(|v6| v6.spec.as_ref());
        self.spec.iter().chain(ipv6).map(|spec| spec.mtu).min()
    }

    /// Moves the kernel to the desired state, the IPv4 device's and the IPv6 one's (each where
    /// the config enables its family), from the lease set `leases` holds (`stamp`: its revision
    /// when the pass began). Returns whether the pass ran: our devices and addresses are set up
    /// and every peer was tried. Failures are logged here (a peer's once while it lasts) and
    /// retried on the next pass.
    ///
    /// The set is borrowed only while a step reads it, never across a kernel round trip: a
    /// pass that kept it would make the lease follower copy the whole set at every change it
    /// applies meanwhile (our own lease's rewrite comes during the first pass), which at
    /// thousands of peers was the largest part of the peak memory. A change arriving meanwhile
    /// wakes the next pass, as before.
    async fn reconcile(&mut self, own: &Lease, stamp: LeaseStamp, leases: &watch::Receiver<Arc<LeaseSet>>) -> bool {
        self.record.started();
        let started = std::time::Instant::now();
        let ipv4 = match self.follow_underlay(own).await {
            false => None,
            true if self.config.ipv4.is_some() => self.reconcile_ipv4(own, leases).await.map(Some),
            true => Some(None), // IPv6 only: no IPv4 part
        };
        let Some(ipv4) = ipv4 else {
            tracing::debug!(ran = false, elapsed_us = started.elapsed().as_micros() as u64, "reconcile pass");
            self.record.ended(false, 0);
            return false;
        };
        let ipv6 = match self.ipv6.is_some() {
            true => Some(self.reconcile_ipv6(own, leases).await),
            false => None,
        };
        let ran = !matches!(ipv6, Some(None));
        let ipv6 = ipv6.flatten();
        let written = ipv4.as_ref().map_or(0, |a| a.written) + ipv6.as_ref().map_or(0, |a| a.written);
        self.record.applied(own, stamp, written);
        let mut failures = 0;
        if let Some(applied) = ipv4 {
            failures += applied.failures.len();
            let transitions = self.record.failures(applied.failures);
            self.warnings.log_refusals(&transitions);
        }
        if let Some(applied) = ipv6 {
            failures += applied.failures.len();
            let transitions = self.record.ipv6_failures(applied.failures);
            self.warnings.log_refusals(&transitions);
        }
        tracing::debug!(ran, failures, elapsed_us = started.elapsed().as_micros() as u64, "reconcile pass");
        self.record.ended(ran, failures);
        ran
    }

    /// Follows the underlay (a readdressed or replaced interface) and asks the lease keeper to
    /// advertise its public addresses; `false` while there is no underlay.
    async fn follow_underlay(&mut self, own: &Lease) -> bool {
        let underlay_changed = self.device_changes.take_underlay_changed();
        if !self.underlay.follow(&self.kernel, underlay_changed).await {
            return false;
        }
        let underlay = self.underlay.current();
        let ipv6 = self.ipv6.as_ref().and_then(|v6| Some((underlay.public_ipv6?, v6.mac)));
        // An IPv6-only lease keeps PublicIP 0.0.0.0, whatever IPv4 address the interface has.
        advertise(&self.attrs, self.config.ipv4.and(underlay.public_ip), ipv6, own);
        true
    }

    /// The IPv4 part of a pass; `None` when it could not reach the peers (no device, the
    /// kernel's tables unreadable), else what the kernel accepted and refused. The state it
    /// wanted is recorded and released before the IPv6 part reads the kernel; the monitor keeps
    /// its neighbour entries only.
    async fn reconcile_ipv4(&mut self, own: &Lease, leases: &watch::Receiver<Arc<LeaseSet>>) -> Option<Applied> {
        let underlay = self.underlay.current();
        // A config with IPv4 has an IPv4 underlay, lease subnet, VtepMAC and device watch.
        let (local, public_ip, own_subnet) = (underlay.ip?, underlay.public_ip?, own.subnet?);
        let (v4, watch, data) = (self.config.ipv4?, self.device_changes.ipv4.as_ref()?, own.attrs.backend_data.as_ref()?);
        let spec = device::desired_device(&self.config, underlay, local, data.vtep_mac);
        self.spec = Some(spec.clone());
        let target = FamilyTarget { spec, own_subnet, network: v4.network };
        let us = ThisHost { subnet: Some(own_subnet), public_ip, vtep_mac: Some(data.vtep_mac) };
        let keep = leases.borrow().unreadable.keys().filter_map(|id| id.ipv4()).collect();
        let config = &self.config;
        let desired = |context: &KernelContext| desired_state(config, &us, &leases.borrow(), context);
        let pass = run_family(&self.kernel, watch, &target, desired, &keep).await?;
        self.record.skipped::<std::net::Ipv4Addr>(&pass.skipped);
        self.record.programmed(&pass.desired, pass.applied.failed_peers().len());
        self.warnings.warn_once(&leases.borrow(), pass.skipped, &pass.desired, &pass.context);
        drop(pass.desired);
        watch.keep_neighbours();
        Some(pass.applied)
    }

    /// The IPv6 part of a pass, on `flannel-v6.<VNI>`: as the IPv4 part, from the leases' IPv6
    /// parts. `None` when it could not reach the peers, which includes an underlay without an
    /// IPv6 address (logged once while it lasts).
    async fn reconcile_ipv6(&mut self, own: &Lease, leases: &watch::Receiver<Arc<LeaseSet>>) -> Option<Applied<Ipv6Addr>> {
        let (v6, watch) = (self.ipv6.as_mut()?, self.device_changes.ipv6.as_ref()?);
        let underlay = self.underlay.current();
        let inputs = (underlay.public_ipv6, own.ipv6_subnet, self.config.ipv6.map(|c| c.network));
        let (Some(public_ip), Some(own_subnet), Some(network)) = inputs else {
            if !std::mem::replace(&mut v6.missing_logged, true) {
                tracing::error!(iface = %underlay.name, has_ipv6_subnet = own.ipv6_subnet.is_some(), "the IPv6 overlay waits: the underlay has no global IPv6 address, or our lease no IPv6 subnet");
            }
            return None;
        };
        v6.missing_logged = false;
        // Peers reach us at the MAC our lease advertises; the device is set back to it.
        let mac = own.attrs.backend_v6_data.as_ref().map_or(v6.mac, |data| data.vtep_mac);
        // The device's local is the address packets leave from; PublicIPv6 may be a NAT's.
        let local = underlay.ipv6.unwrap_or(public_ip);
        v6.spec = Some(device::desired_ipv6_device(&self.config, underlay, local, mac));
        let target = FamilyTarget { spec: v6.spec.clone()?, own_subnet, network };
        let us = ThisHost { subnet: Some(own_subnet), public_ip, vtep_mac: Some(mac) };
        // The IPv6 subnet of a key whose value cannot be read is in its name, if anywhere.
        let keep = unreadable_ipv6(&leases.borrow());
        let config = &self.config;
        let desired = |context: &KernelContext<Ipv6Addr>| desired_state(config, &us, &leases.borrow(), context);
        let pass = run_family(&self.kernel, watch, &target, desired, &keep).await?;
        self.record.skipped::<Ipv6Addr>(&pass.skipped);
        self.record.programmed(&pass.desired, pass.applied.failed_peers().len());
        self.warnings.warn_once_ipv6(&leases.borrow(), pass.skipped, &pass.desired, &pass.context);
        drop(pass.desired);
        watch.keep_neighbours();
        Some(pass.applied)
    }
}

/// The IPv6 subnets of the keys whose value cannot be read, from their names: what the IPv6
/// pass leaves in place for them.
fn unreadable_ipv6(leases: &LeaseSet) -> BTreeSet<Ipv6Network> {
    leases.unreadable.keys().filter_map(|s| parse_lease_key(&leases.key_of(*s)?).ok()?.1).collect()
}
