//! Following the local dockerd (`--docker-host`): which containers run, with which name,
//! address on the default bridge and exposed ports. Level-triggered: every (re)attach and
//! every event of interest ends in a fresh listing of all running containers, sent whole; an
//! event only says "look again", so a missed or reordered one costs nothing.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::{FutureExt, StreamExt};
use thiserror::Error;
use tokio::sync::watch;

use super::skydns::Proto;

/// The network docker's `--bip` configures, the only one on the overlay.
const DEFAULT_BRIDGE: &str = "bridge";
/// How long one docker request may take (the events stream itself is not bounded).
const REQUEST_TIMEOUT_SECS: u64 = 10;
/// How often an absent dockerd is looked for.
const ATTACH_RETRY: Duration = Duration::from_secs(1);
/// Container events that may change what is published: the container runs or stops, its name
/// changes, or its address on a network does.
const EVENTS: [&str; 7] = ["start", "die", "stop", "destroy", "rename", "connect", "disconnect"];

/// Why talking to dockerd failed.
#[derive(Debug, Error)]
pub enum DockerError {
    #[error("--docker-host (DOCKER_HOST) {0:?} is neither unix://PATH nor tcp://HOST:PORT")]
    BadHost(String),
    #[error("docker {op} failed: {source}")]
    Api { op: &'static str, source: bollard::errors::Error },
    #[error("docker's event stream ended")]
    EventsEnded,
}

/// One running container as the publisher needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full id (64 hex digits).
    pub id: String,
    /// Its name without docker's leading `/` (`db`).
    pub name: String,
    /// Its address on the default bridge, if it is attached there.
    pub ipv4: Option<Ipv4Addr>,
    /// Its global IPv6 address on the default bridge, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// Its exposed ports (`EXPOSE`, `--expose`), TCP and UDP; SCTP ones are left out.
    pub ports: BTreeSet<(u16, Proto)>,
}

/// Every running container, as last listed (empty while dockerd does not answer); `None`
/// until the first attempt to reach dockerd.
pub type Containers = Option<Arc<Vec<Container>>>;

/// Follows dockerd at `host` for as long as weftd runs: attaches when it comes up (looking
/// once a second, quietly), lists every running container on each attach and each event, and
/// attaches again when it goes away. A dockerd that does not answer runs nothing (its
/// containers die with it unless it runs with live-restore): the listing is then empty, so
/// the names of a stopped or restarting docker are withdrawn until it answers again.
pub async fn follow(host: String, containers: watch::Sender<Containers>) {
    let mut absent_logged = false;
    loop {
        match connect(&host).await {
            Ok(docker) => {
                tracing::info!(%host, "attached to docker; listing its containers");
                absent_logged = true;
                if let Err(error) = watch_events(&docker, &containers).await {
                    tracing::warn!(%host, %error, "lost docker; its names are withdrawn until it answers again");
                }
            }
            Err(error) if !absent_logged => {
                tracing::info!(%host, %error, "docker is not answering yet; publishing names once it does");
                absent_logged = true;
            }
            Err(error) => tracing::debug!(%host, %error, "docker still not answering"),
        }
        containers.send_if_modified(|old| {
            let was_empty = old.as_ref().is_some_and(|listed| listed.is_empty());
            *old = Some(Arc::default());
            !was_empty
        });
        tokio::time::sleep(ATTACH_RETRY).await;
    }
}

/// How weftd reaches dockerd at a `--docker-host`.
enum Transport {
    Unix,
    Http,
}

/// Checks a `--docker-host` before the daemon starts, so a typo is an error, not a retry.
///
/// # Errors
/// [`DockerError::BadHost`] unless it is `unix://PATH`, `tcp://HOST:PORT` or `http://…`.
pub fn check_host(host: &str) -> Result<(), DockerError> {
    transport(host).map(|_| ())
}

fn transport(host: &str) -> Result<Transport, DockerError> {
    match host.split_once("://") {
        Some(("unix", path)) if !path.is_empty() => Ok(Transport::Unix),
        Some(("tcp" | "http", address)) if !address.is_empty() => Ok(Transport::Http),
        _ => Err(DockerError::BadHost(host.to_string())),
    }
}

/// A client for `host` speaking the API version dockerd offers (Debian's 20.10 refuses newer).
async fn connect(host: &str) -> Result<Docker, DockerError> {
    let api = |source| DockerError::Api { op: "connect", source };
    let docker = match transport(host)? {
        Transport::Unix => Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(api)?,
        Transport::Http => Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION).map_err(api)?,
    };
    docker.negotiate_version().await.map_err(|source| DockerError::Api { op: "version", source })
}

/// Lists, then re-lists after every batch of events, until the stream breaks. Events are
/// asked for from a second before the first listing, so none falls between the two.
async fn watch_events(docker: &Docker, containers: &watch::Sender<Containers>) -> Result<(), DockerError> {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().saturating_sub(1);
    let mut ports = PortCache::default();
    containers.send_replace(Some(Arc::new(list(docker, &mut ports).await?)));
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string(), "network".to_string()]),
        ("event".to_string(), EVENTS.iter().map(|e| e.to_string()).collect()),
    ]);
    let options = EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) };
    let mut events = std::pin::pin!(docker.events(Some(options)));
    loop {
        let event = events.next().await.ok_or(DockerError::EventsEnded)?;
        event.map_err(|source| DockerError::Api { op: "events", source })?;
        // A burst (docker stop: kill, die, stop) is one listing.
        while let Some(Some(more)) = events.next().now_or_never() {
            more.map_err(|source| DockerError::Api { op: "events", source })?;
        }
        let listed = list(docker, &mut ports).await?;
        containers.send_if_modified(|old| {
            let changed = old.as_deref() != Some(&listed);
            *old = Some(Arc::new(listed));
            changed
        });
    }
}

/// Exposed ports per container id: a container's config never changes, so each is inspected
/// once while it runs.
#[derive(Default)]
struct PortCache(HashMap<String, BTreeSet<(u16, Proto)>>);

/// Every running container (`docker ps`), with its exposed ports (`docker inspect`).
async fn list(docker: &Docker, ports: &mut PortCache) -> Result<Vec<Container>, DockerError> {
    let options = ListContainersOptions { all: false, ..Default::default() };
    let summaries =
        docker.list_containers(Some(options)).await.map_err(|source| DockerError::Api { op: "list containers", source })?;
    let mut listed = Vec::with_capacity(summaries.len());
    for summary in summaries {
        let (Some(id), Some(name)) = (summary.id.clone(), summary.names.as_ref().and_then(|n| n.first()).cloned()) else {
            continue;
        };
        let bridge = summary.network_settings.and_then(|s| s.networks).and_then(|mut n| n.remove(DEFAULT_BRIDGE));
        let ipv4 = bridge.as_ref().and_then(|b| b.ip_address.as_deref()).and_then(|ip| ip.parse().ok());
        let ipv6 = bridge.as_ref().and_then(|b| b.global_ipv6_address.as_deref()).and_then(|ip| ip.parse().ok());
        let exposed = match ports.0.get(&id) {
            Some(known) => known.clone(),
            None => match docker.inspect_container(&id, None).await {
                Ok(inspected) => exposed_ports(inspected.config.and_then(|c| c.exposed_ports).unwrap_or_default()),
                // Gone between the listing and now: the next event lists again.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => continue,
                Err(source) => return Err(DockerError::Api { op: "inspect container", source }),
            },
        };
        ports.0.insert(id.clone(), exposed.clone());
        listed.push(Container { id, name: name.trim_start_matches('/').to_string(), ipv4, ipv6, ports: exposed });
    }
    let running: BTreeSet<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    ports.0.retain(|id, _| running.contains(id.as_str()));
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(listed)
}

/// Docker's `ExposedPorts` keys (`6379/tcp`, `53/udp`, `9/sctp`) as TCP and UDP ports.
pub fn exposed_ports(keys: impl IntoIterator<Item = String>) -> BTreeSet<(u16, Proto)> {
    keys.into_iter()
        .filter_map(|key| {
            let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
            Some((port.parse().ok()?, proto.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts_are_unix_sockets_or_tcp() {
        for good in ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "http://docker:2375"] {
            assert!(check_host(good).is_ok(), "{good}");
        }
        for bad in ["/var/run/docker.sock", "unix://", "ssh://host", "npipe:////./pipe/docker_engine"] {
            assert!(matches!(check_host(bad), Err(DockerError::BadHost(_))), "{bad}");
        }
    }

    #[test]
    fn exposed_ports_are_tcp_and_udp_only() {
        let keys = ["6379/tcp", "53/udp", "9/sctp", "80", "x/tcp"].map(String::from);
        assert_eq!(exposed_ports(keys), BTreeSet::from([(53, Proto::Udp), (80, Proto::Tcp), (6379, Proto::Tcp)]));
    }
}
