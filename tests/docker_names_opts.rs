//! `weftd docker-opts --names` with real docker: a dockerd started from those options gives its
//! containers weftd's DNS server (the host's docker0 address, FLANNEL_SUBNET's gateway) and the
//! names domain as their search domain, checked in a container's /etc/resolv.conf as a user
//! would; without `--names`, docker's own resolver setup is left as it was.
//!
//! Needs root and the Debian packages `docker.io busybox-static` (`make deps`).

use std::time::Duration;

use lab::docker::{docker_opts_words, weftd_docker_opts, BusyboxImage, Dockerd};
use lab::docker_names::{docker_opts_with_names, NAMES_DOMAIN};
use lab::{parse_cidr, Lab, Weftd};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const IMAGE: &str = "weft-busybox:latest";

#[test]
fn containers_of_a_dockerd_started_from_docker_opts_names_ask_docker0_with_the_names_domain() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let n = lab.add_host();
    let _weftd: Weftd = lab.start_weftd(n, &["--ip-masq"]);
    let env = lab.wait_subnet_env(n, Duration::from_secs(30));
    let (gateway, _) = parse_cidr(&env["FLANNEL_SUBNET"]);

    let plain = weftd_docker_opts(&lab, n, &[]);
    assert!(!plain.keys().any(|k| k.starts_with("DOCKER_OPT_DNS")), "no DNS options without --names: {plain:?}");
    let opts = docker_opts_with_names(&lab, n);
    assert_eq!(opts.get("DOCKER_OPT_DNS"), Some(&format!("--dns={gateway}")), "{opts:?}");
    assert_eq!(opts.get("DOCKER_OPT_DNS_SEARCH"), Some(&format!("--dns-search={NAMES_DOMAIN}")), "{opts:?}");

    let image = BusyboxImage::build(lab.dir());
    let mut dockerd = Dockerd::start(&lab, n, &docker_opts_words(&opts));
    dockerd.import(&image, IMAGE);
    let ip = dockerd.run_container("probe", IMAGE);
    let resolv = dockerd.exec_ok("probe", &["cat", "/etc/resolv.conf"]);
    let lines: Vec<&str> = resolv.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(lines, [format!("search {NAMES_DOMAIN}"), format!("nameserver {gateway}")], "container {ip}: {resolv}");
    // The nameserver is this host's bridge address, which the container reaches directly.
    let docker0 = lab.host(n).ip_json(&["-4", "addr", "show", "dev", "docker0"]);
    assert_eq!(docker0[0]["addr_info"][0]["local"].as_str(), Some(gateway.to_string().as_str()), "{docker0}");
    dockerd.exec_ok("probe", &["ping", "-c", "1", "-W", "2", &gateway.to_string()]);

    let problems = dockerd.stop();
    assert!(problems.is_empty(), "docker teardown left things behind: {problems:#?}");
}
