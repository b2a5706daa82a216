//! Moving the kernel to what the leases ask for, level-triggered: `desired` (leases → wanted
//! entries) and `plan` (wanted vs kernel → changes) are pure, `apply` writes a plan through a
//! [`apply::Dataplane`], `pass` runs those steps for one address family's device, and
//! `reconciler` is the one task that runs a pass (IPv4, then dual-stack IPv6) whenever anything
//! changes.
//!
//! The reconciler never replays lease events: it compares the whole desired state with what the
//! kernel holds on our devices and applies the difference. A restart, a missed watch event or a
//! hand-deleted route all end in the same state.

pub mod apply;
pub mod desired;
pub mod pass;
pub mod plan;
pub mod readiness;
pub mod reconciler;
pub mod record;
pub mod underlay;
pub mod warnings;

pub use desired::{desired_state, SkippedPeer, ThisHost};
pub use plan::{plan, Plan};

#[cfg(test)]
mod tests;
