//! Test lab (design.md §3): hosts as network namespaces on a shared underlay bridge, etcd in
//! namespaces of its own, `weftd` processes, "container" namespaces and background pings, all
//! removed on Drop; real Docker in lab hosts (`docker`); and the helpers of single topics
//! (one module each, e.g. `drift`, `dns`, `dualstack`, `names`).
//!
//! A crate of its own (not published), used by the integration tests, `examples/demo.rs` and
//! `examples/bench`. It drives the system through `ip`, `bridge`, `etcd`, `etcdctl`, `openssl`
//! and `ping`. Every name is derived from a per-lab id (`w` + 5 hex digits) so labs can run in
//! parallel threads and processes. Needs root.
//!
//! etcd runs in one of four modes (`EtcdMode`): a single plain member, a three-member cluster,
//! client TLS with client certificates, or auth with users. The lab's own etcdctl helpers work in
//! every mode; weftd is only given the endpoints, so tests pass credentials (right or wrong).

use std::time::Duration;

pub mod bounded;
pub mod dns;
pub mod docker;
pub mod docker_names;
pub mod drift;
pub mod dualstack;
pub mod etcd_wipe;
pub mod firewall;
pub mod grpc_proxy;
pub mod hostile;
pub mod http;
pub mod ipv6_only;
pub mod lease_moves;
pub mod links;
pub mod names;

mod etcd;
mod etcdctl;
mod host;
mod lab;
mod netns;
mod ping;
mod process;
mod tls;
pub mod underlay6;
mod weftd;

pub use etcd::{EtcdMode, ETCD_ROOT_PASSWORD, ETCD_ROOT_USER, ETCD_WEFT_PASSWORD, ETCD_WEFT_USER};
pub use etcdctl::NETWORK_CONFIG_KEY;
pub use host::{nth_address, parse_cidr, Container, Host};
pub use lab::Lab;
pub use netns::{netns_list, tool_json, wait_wire_ready};
pub use ping::{PingRun, PingStats};
pub use process::{clock_ticks_per_second, pids_mentioning, poll, poll_for, proc_status_kib};
pub use tls::TlsFiles;
pub use weftd::{weftd_bin, Weftd};

/// Underlay addresses: etcd member K is .(2+K), host N is .(10+N).
const UNDERLAY_NET: [u8; 3] = [198, 18, 0];
/// How long a process gets to exit after SIGTERM or SIGINT.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(10);
