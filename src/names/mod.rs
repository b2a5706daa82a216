//! Names across hosts (`--names`): containers published in etcd in the SkyDNS layout, served
//! by a DNS server on docker0, and read back as docker's legacy link variables.
//!
//! `skydns` is the one place the layout is written down (keys, values, which container names
//! are DNS labels); the publisher, the DNS server and `weftd link-env` all go through it.

pub mod dns;
pub mod skydns;
