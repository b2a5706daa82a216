//! Names across hosts (`--names`): containers published in etcd in the SkyDNS layout, served
//! by a DNS server on docker0, and read back as docker's legacy link variables.
//!
//! `skydns` is the one place the layout is written down (keys, values, which container names
//! are DNS labels); the publisher, the DNS server and `weftd link-env` all go through it.
//! `docker` follows the local dockerd, `publish` keeps this host's records in etcd equal to
//! what it runs, `link_env` prints a name's records as docker's link variables.

pub mod dns;
pub mod docker;
pub mod link_env;
pub mod publish;
pub mod skydns;
