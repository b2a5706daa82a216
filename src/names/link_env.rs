//! `weftd link-env NAME [--alias ALIAS] [--recipient RECIPIENT]`: docker's legacy link
//! variables (`DB_PORT=tcp://10.5.72.2:6379`, `DB_PORT_6379_TCP_ADDR=…`, …, `DB_NAME=/app/db`)
//! for a published name, read from etcd, as `KEY=value` lines for `docker run --env-file`.
//!
//! The lines are those docker's `--link` writes (moby's daemon/links), in its order: ports TCP
//! first then by number, the four variables per port, the `_START`/`_END` ones for a run of
//! consecutive ports, then `_NAME`. No `_ENV_` variables: weft never publishes a container's
//! environment. `_NAME` is `/<recipient>/<alias>`; without a recipient container (the env file
//! is written before it runs) the recipient is `--recipient`, `weft` by default.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use thiserror::Error;

use super::skydns::{Domain, Proto, RecordId, SkyRecord};
use crate::etcd::{Registry, RegistryError};

/// The recipient in `<ALIAS>_NAME=/<recipient>/<alias>` when none is given.
pub const DEFAULT_RECIPIENT: &str = "weft";

/// Why no variables could be printed.
#[derive(Debug, Error)]
pub enum LinkEnvError {
    #[error("no container named {name:?} is published in {domain} (no records under {prefix} in etcd)")]
    Unknown { name: String, domain: Domain, prefix: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The link variables for the container behind `records` (the records of one name: the one
/// with the lowest container id when several containers share it) as docker writes them for
/// `--link <container>:<alias>` into a container named `recipient`. `None` without records.
pub fn link_env(alias: &str, recipient: &str, records: &[(RecordId, SkyRecord)]) -> Option<String> {
    let container = records.iter().map(|(id, _)| &id.container).min()?;
    // Docker's link variables carry the container's IPv4 address.
    let mine = records.iter().filter(|(id, _)| &id.container == container && !id.ipv6);
    let host: IpAddr = mine.clone().map(|(_, record)| record.host).next()?;
    let ports: BTreeSet<(Proto, u16)> = mine.filter_map(|(id, _)| id.port).map(|(port, proto)| (proto, port)).collect();
    // Docker's order: TCP first, then the other protocols, each by port number (Proto's order).
    let ports: Vec<(u16, Proto)> = ports.into_iter().map(|(proto, port)| (port, proto)).collect();
    Some(format_env(alias, recipient, host, &ports))
}

/// Docker's `Link.ToEnv` for `ports`, already in its order.
fn format_env(alias: &str, recipient: &str, host: IpAddr, ports: &[(u16, Proto)]) -> String {
    let upper = alias.to_ascii_uppercase().replace('-', "_");
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let url = |(port, proto): (u16, Proto)| format!("{proto}://{host}:{port}");
    let prefix = |(port, proto): (u16, Proto)| format!("{upper}_PORT_{port}_{}", proto.to_string().to_ascii_uppercase());
    let Some(&first) = ports.first() else {
        line(format!("{upper}_NAME=/{recipient}/{alias}"));
        return out;
    };
    line(format!("{upper}_PORT={}", url(first)));
    let (mut start, mut end) = (first, first);
    for (i, &port) in ports.iter().enumerate() {
        let p = prefix(port);
        line(format!("{p}={}", url(port)));
        line(format!("{p}_ADDR={host}"));
        line(format!("{p}_PORT={}", port.0));
        line(format!("{p}_PROTO={}", port.1));
        if i > 0 && port.0 == end.0.wrapping_add(1) && port.1 == start.1 {
            end = port;
            if i < ports.len() - 1 {
                continue;
            }
        }
        if end != start {
            let p = prefix(start);
            line(format!("{p}_START={}", url(start)));
            line(format!("{p}_PORT_START={}", start.0));
            line(format!("{p}_END={}", url(end)));
            line(format!("{p}_PORT_END={}", end.0));
        }
        (start, end) = (port, port);
    }
    line(format!("{upper}_NAME=/{recipient}/{alias}"));
    out
}

/// Reads `name`'s records from etcd and formats its link variables (see [`link_env`]).
///
/// # Errors
/// [`LinkEnvError::Unknown`] when nothing is published under the name; any etcd failure.
pub async fn read(
    registry: &Registry,
    domain: &Domain,
    name: &str,
    alias: &str,
    recipient: &str,
) -> Result<String, LinkEnvError> {
    let prefix = domain.name_prefix(name);
    let listed = registry.list_names(&prefix).await?;
    let records: BTreeMap<RecordId, SkyRecord> = listed
        .iter()
        .filter_map(|key| {
            let (_, id) = domain.parse_record_key(&key.key)?;
            Some((id, SkyRecord::from_json(&key.value).ok()?))
        })
        .collect();
    let records: Vec<(RecordId, SkyRecord)> = records.into_iter().collect();
    link_env(alias, recipient, &records).ok_or_else(|| LinkEnvError::Unknown {
        name: name.to_string(),
        domain: domain.clone(),
        prefix,
    })
}

#[cfg(test)]
#[path = "link_env_tests.rs"]
mod tests;
