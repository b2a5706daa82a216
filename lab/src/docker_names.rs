//! Docker with names across hosts on, for the demo and the bench: weftd started with `--names`
//! and pointed at a lab host's dockerd, that dockerd started with `weftd docker-opts --names`
//! (so containers get `--dns=<docker0 address>` and `--dns-search=<domain>`), and containers
//! started with extra `docker run` options (exposed ports, a name).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::docker::{docker_opts_words, weftd_docker_opts, Dockerd, CONTAINER_LIFETIME_SECS};
use crate::{Lab, Weftd};

/// The domain weftd publishes names under unless told otherwise (`--names-domain`).
pub const NAMES_DOMAIN: &str = "weft.local";

/// Starts weftd on host N with `--names` and `extra` flags, following the dockerd host N will
/// run ([`Dockerd::socket_uri`], so weftd may start first, as systemd orders them). The socket
/// goes in `DOCKER_HOST`, not `--docker-host`: [`Dockerd::stop`] kills every process whose
/// command line names the daemon's dir, weftd included.
pub fn start_weftd_with_names(lab: &Lab, n: usize, extra: &[&str], env: &[(&str, &str)]) -> Weftd {
    let docker_host = Dockerd::socket_uri(lab, n);
    let flags: Vec<&str> = ["--names"].iter().chain(extra).copied().collect();
    let env: Vec<(&str, &str)> = [("DOCKER_HOST", docker_host.as_str())].iter().chain(env).copied().collect();
    lab.start_weftd_env(n, &flags, &env)
}

/// `weftd docker-opts --names` in host N (see [`weftd_docker_opts`]): the options file,
/// parsed, with `DOCKER_OPT_DNS` and `DOCKER_OPT_DNS_SEARCH`.
pub fn docker_opts_with_names(lab: &Lab, n: usize) -> BTreeMap<String, String> {
    weftd_docker_opts(lab, n, &["--names"])
}

/// Starts host N's dockerd with the `$DOCKER_OPTS` of `weftd docker-opts --names`; returns it
/// and those words (for showing the command line).
pub fn start_dockerd_with_names(lab: &Lab, n: usize) -> (Dockerd, Vec<String>) {
    let words = docker_opts_words(&docker_opts_with_names(lab, n));
    (Dockerd::start(lab, n, &words), words)
}

/// `docker run -d --name <name> <options> <image> sleep CONTAINER_LIFETIME_SECS` (e.g. options
/// `--expose 80`); the container's IP on docker0. Its services are started with `docker exec`,
/// so `sleep` stays its main process (the lab's last-resort bound on its life).
pub fn run_container_with(dockerd: &Dockerd, name: &str, options: &[&str], image: &str) -> Ipv4Addr {
    let lifetime = CONTAINER_LIFETIME_SECS.to_string();
    let mut args = vec!["run", "-d", "--name", name];
    args.extend(options);
    args.extend([image, "sleep", &lifetime]);
    dockerd.docker_ok(&args);
    let ip = dockerd.docker_ok(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", name]);
    ip.parse().unwrap_or_else(|e| panic!("container {name}: bad IP {ip:?} ({e})"))
}

/// Serves `page` as `/index.html` over HTTP on `port` from container `name` (busybox httpd,
/// started with `docker exec`, so it lives until the container stops).
pub fn serve_page(dockerd: &Dockerd, name: &str, port: u16, page: &str) {
    let script = format!("mkdir -p /www && printf '%s\\n' \"$1\" > /www/index.html && httpd -p 0.0.0.0:{port} -h /www");
    dockerd.exec_ok(name, &["sh", "-c", &script, "sh", page]);
}
