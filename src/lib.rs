//! weft: a flannel-compatible VXLAN overlay network daemon (`weftd`).

pub mod config;
pub mod lease;
pub mod netlink;
pub mod reconcile;
