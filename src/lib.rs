//! weft: a flannel-compatible VXLAN overlay network daemon (`weftd`).
//!
//! The library holds everything; `src/main.rs` only parses flags and starts [`daemon::run`].

pub mod atomic_file;
pub mod config;
pub mod config_watch;
pub mod daemon;
pub mod device;
pub mod docker_opts;
pub mod etcd;
pub mod go_json;
pub mod ipmasq;
pub mod keeper;
pub mod lease;
pub mod logtext;
pub mod model;
pub mod names;
pub mod netlink;
pub mod observe;
pub mod peer_log;
pub mod reconcile;
pub mod status;
pub mod subnet_env;
pub mod underlay;
