//! One pass over one address family's VXLAN device (`flannel.<VNI>` or `flannel-v6.<VNI>`):
//! the device and its address set up, the kernel read, the desired state built, planned and
//! applied. The same steps for both families; the reconciler runs one per family it programs.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::device::{self, DeviceError};
use crate::model::{vtep_address, Family, KernelContext, KernelState};
use crate::netlink::{DeviceWatch, Kernel, KernelFamily, VxlanDevice, VxlanSpec};
use crate::reconcile::apply::{self, Applied};
use crate::reconcile::plan::plan;

/// What one family's pass is to reach: the device, and our lease's subnet of the family, whose
/// VTEP address the device carries as a host address (`/32` or `/128`, as flanneld gives it).
#[derive(Debug, Clone)]
pub struct FamilyTarget<A: Family> {
    pub spec: VxlanSpec,
    pub own_subnet: A::Network,
    /// The overlay network of the family (the config's `Network` or `IPv6Network`): direct
    /// routes to its subnets are ours.
    pub network: A::Network,
}

/// What a pass that reached the peers did: the state it wanted, what decided its form, what
/// the desired-state rule reported beside it (the peers it skipped), and the writes.
pub struct FamilyPass<A: Family, S> {
    pub desired: Arc<KernelState<A>>,
    pub context: KernelContext<A>,
    pub skipped: S,
    pub applied: Applied<A>,
}

/// Runs one pass for the device of family `A`: `desired` builds the wanted entries from the
/// kernel's facts, and the old form of the subnets in `keep` (leases whose key cannot be read)
/// is left in place. `None` when it could not reach the peers (no device, the kernel's tables
/// unreadable); that is logged here, once per pass, and retried by the next.
pub async fn run_family<A: KernelFamily, S>(
    kernel: &Kernel,
    watch: &DeviceWatch<A>,
    target: &FamilyTarget<A>,
    desired: impl FnOnce(&KernelContext<A>) -> (KernelState<A>, S),
    keep: &BTreeSet<A::Network>,
) -> Option<FamilyPass<A, S>> {
    let device = match ensure_device(kernel, target).await {
        Ok(device) => device,
        Err(e) => {
            tracing::error!(error = %e, device = %target.spec.name, "cannot set up the VXLAN device; retrying");
            return None;
        }
    };
    watch.follow_index(device.index);
    // The last pass's wanted state goes before this pass reads and builds its own, so three
    // full states never coexist (peak RSS at thousands of peers). Until `want` below, every
    // neighbour notification wakes us: a change made while we read is not missed.
    watch.forget_wanted();
    let (actual, context) = match kernel.read_state::<A>(device.index, target.network).await {
        Ok(read) => read,
        Err(e) => {
            tracing::error!(error = %e, device = %target.spec.name, "cannot read the kernel's tables; retrying");
            return None;
        }
    };
    let (wanted, skipped) = desired(&context);
    let desired = Arc::new(wanted);
    // Before writing: the echoes of our writes then agree with it and wake nobody.
    watch.want(Arc::clone(&desired));
    let mut plan = plan(&desired, &actual);
    // A subnet whose key exists but cannot be read keeps what the kernel has for it (a
    // restart has no last good value) until the key is fixed or deleted.
    plan.remove = plan.removals_keeping(keep);
    let mut applied = Applied::default();
    if !plan.is_empty() {
        tracing::debug!(
            device = %target.spec.name,
            added = plan.add.entry_count(),
            rewritten = plan.rewrite_nexthops.len(),
            removed = plan.remove.entry_count(),
            "applying kernel changes"
        );
        applied = apply::apply(kernel, device.index, &plan, &desired, &actual).await;
    }
    Some(FamilyPass { desired, context, skipped, applied })
}

/// The device as `target.spec` has it, with our VTEP address on it and no other of its family.
async fn ensure_device<A: KernelFamily>(kernel: &Kernel, target: &FamilyTarget<A>) -> Result<VxlanDevice, DeviceError> {
    let device = device::ensure(kernel, &target.spec).await?;
    let address = A::network(vtep_address(target.own_subnet), A::HOST_PREFIX).expect("a host prefix fits its family");
    kernel.ensure_address::<A>(device.index, address).await?;
    Ok(device)
}
