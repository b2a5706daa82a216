//! What ships around the binary: systemd readiness, the units in `dist/`, the CoreOS
//! cloud-config and the Vagrant cluster. The files are checked against what weftd really
//! accepts, so a renamed flag or path breaks this test rather than a user's boot.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab::Lab;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A unit file as `section -> key -> values` (keys may repeat, e.g. ExecStart).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            unit.entry(section.clone()).or_default().entry(key.to_string()).or_default().push(value.to_string());
        }
    }
    unit
}

fn values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit.get(section).and_then(|s| s.get(key)).map(|v| v.iter().flat_map(|v| v.split_whitespace()).collect()).unwrap_or_default()
}

/// `weftd <args> --help`, run in a fresh empty network namespace (weftd never runs in the host's).
fn weftd_help(args: &[&str]) -> String {
    let out = Command::new("unshare").arg("--net").arg(lab::weftd_bin()).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "weftd {args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Checks one weftd unit: readiness, ordering, and that its commands name real flags and files.
fn check_weftd_unit(unit: &Unit, binary: &str) {
    assert_eq!(values(unit, "Service", "Type"), ["notify"]);
    assert_eq!(values(unit, "Service", "EnvironmentFile"), ["-/etc/weft/weftd.env"]);
    assert_eq!(values(unit, "Service", "ExecStart"), [binary]);
    assert_eq!(values(unit, "Service", "Restart"), ["on-failure"]);
    assert!(values(unit, "Unit", "After").iter().any(|u| u.starts_with("etcd")), "weftd must start after etcd");
    assert!(values(unit, "Unit", "Wants").iter().any(|u| u.starts_with("etcd")));
    assert_eq!(values(unit, "Unit", "Before"), ["docker.service"]);

    let post = values(unit, "Service", "ExecStartPost");
    assert_eq!(&post[..2], [binary, "docker-opts"]);
    let docker_help = weftd_help(&["docker-opts"]);
    for flag in post.iter().filter(|w| w.starts_with('-')) {
        assert!(docker_help.contains(&format!("  {flag} ")), "weftd docker-opts has no {flag}");
    }
    let flag_value = |flag: &str| post.iter().position(|w| *w == flag).map(|i| post[i + 1]).unwrap();
    assert_eq!(flag_value("-f"), "/run/flannel/subnet.env", "docker-opts must read weftd's default subnet file");
    assert!(weftd_help(&[]).contains("[default: /run/flannel/subnet.env]"));
    assert_eq!(flag_value("-d"), "/run/docker_opts.env");
}

fn check_docker_drop_in(unit: &Unit) {
    assert_eq!(values(unit, "Unit", "After"), ["weftd.service"]);
    assert_eq!(values(unit, "Unit", "Requires"), ["weftd.service"]);
    assert_eq!(values(unit, "Service", "EnvironmentFile"), ["/run/docker_opts.env"], "must source what docker-opts writes");
}

/// A settings file turns names across hosts on, for weftd and for `weftd docker-opts` (which
/// runs with the same environment and must read the variable too, to give docker its DNS).
fn check_names_on(text: &str) {
    assert!(text.lines().any(|l| l.trim() == "FLANNELD_NAMES=true"), "names across hosts must be on:\n{text}");
    let help = weftd_help(&["docker-opts"]);
    for name in ["FLANNELD_NAMES", "FLANNELD_NAMES_DOMAIN"] {
        assert!(help.contains(&format!("[env: {name}")), "weftd docker-opts reads no {name}");
    }
}

/// Every FLANNELD_* variable a settings file sets must be one weftd reads.
fn check_env_file(text: &str) {
    let help = weftd_help(&[]);
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.trim().trim_start_matches('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("FLANNELD_"))
        .collect();
    assert!(!names.is_empty());
    for name in names {
        assert!(help.contains(&format!("[env: {name}")), "weftd reads no {name}");
    }
}

#[test]
fn dist_units_start_weftd_after_etcd_and_before_docker() {
    check_weftd_unit(&parse_unit(&read("dist/weftd.service")), "/usr/local/bin/weftd");
    check_docker_drop_in(&parse_unit(&read("dist/docker.service.d/40-weft.conf")));
    check_env_file(&read("dist/weftd.env"));
    check_names_on(&read("dist/weftd.env"));
}

fn unit_named<'a>(units: &'a [Yaml], name: &str) -> &'a Yaml {
    units.iter().find(|u| u["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("cloud-config has no unit {name}"))
}

#[test]
fn cloud_config_orders_etcd_then_weftd_then_docker() {
    let text = read("cloud-config/cloud-config.yaml");
    assert!(text.starts_with("#cloud-config\n"));
    let doc = &YamlLoader::load_from_str(&text).expect("cloud-config is valid YAML")[0];
    let units = doc["coreos"]["units"].as_vec().expect("coreos.units");
    let order: Vec<&str> = units.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(order, ["etcd-member.service", "weft-network-config.service", "weftd.service", "docker.service"]);
    for unit in units {
        assert_eq!(unit["command"].as_str(), Some("start"), "{unit:?}");
    }

    let config = parse_unit(unit_named(units, "weft-network-config.service")["content"].as_str().unwrap());
    assert_eq!(values(&config, "Unit", "After"), ["etcd-member.service"]);
    assert_eq!(values(&config, "Unit", "Before"), ["weftd.service"]);

    let weftd = unit_named(units, "weftd.service")["content"].as_str().unwrap();
    check_weftd_unit(&parse_unit(weftd), "/opt/bin/weftd");
    assert!(values(&parse_unit(weftd), "Unit", "After").contains(&"etcd-member.service"));
    assert_eq!(
        weftd.replace("/opt/bin/weftd", "/usr/local/bin/weftd"),
        read("dist/weftd.service"),
        "cloud-config's weftd.service must match dist/"
    );

    let drop_in = &unit_named(units, "docker.service")["drop-ins"][0]["content"];
    let drop_in = drop_in.as_str().unwrap();
    check_docker_drop_in(&parse_unit(drop_in));
    assert_eq!(drop_in, read("dist/docker.service.d/40-weft.conf"), "the docker drop-in must match dist/");

    let files = doc["write_files"].as_vec().expect("write_files");
    let file = |path: &str| {
        files
            .iter()
            .find(|f| f["path"].as_str() == Some(path))
            .and_then(|f| f["content"].as_str())
            .unwrap_or_else(|| panic!("no {path}"))
    };
    check_env_file(file("/etc/weft/weftd.env"));
    check_names_on(file("/etc/weft/weftd.env"));
    let script = file("/opt/bin/weft-network-config");
    assert!(script.contains(r#"'{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'"#));
    assert!(values(&config, "Service", "ExecStart") == ["/opt/bin/weft-network-config"]);
    let syntax = Command::new("sh").arg("-n").arg("-c").arg(script).status().unwrap();
    assert!(syntax.success(), "the network-config script must be valid sh");
}

#[test]
fn vagrant_files_pass_their_syntax_checks_and_use_shipped_files() {
    let ruby = Command::new("ruby")
        .arg("-c")
        .arg(Path::new(ROOT).join("vagrant/Vagrantfile"))
        .output()
        .expect("ruby is installed by make deps");
    assert!(ruby.status.success() && String::from_utf8_lossy(&ruby.stdout).contains("Syntax OK"), "{ruby:?}");
    for script in ["vagrant/provision.sh", "vagrant/check.sh"] {
        let status = Command::new("bash").arg("-n").arg(Path::new(ROOT).join(script)).status().unwrap();
        assert!(status.success(), "{script} has a syntax error");
    }
    let provision = read("vagrant/provision.sh");
    for shipped in provision.split_whitespace().filter_map(|w| w.strip_prefix("/vagrant/")) {
        if !shipped.starts_with("target/") {
            assert!(Path::new(ROOT).join(shipped).exists(), "provision.sh installs {shipped}, which is not in the repository");
        }
    }
    check_env_file(&provision);
    check_names_on(&provision);
}

#[test]
fn systemd_is_told_ready_only_once_subnet_env_exists() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let n = lab.add_host();
    let socket_path = lab.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _daemon = lab.start_weftd_env(n, &[], &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut message = [0u8; 256];
    let len = socket.recv(&mut message).expect("weftd must send READY=1 within 20 s");
    let env = lab.host(n).subnet_env().expect("subnet.env must exist when READY=1 arrives");
    assert!(env.contains_key("FLANNEL_SUBNET"));
    assert!(String::from_utf8_lossy(&message[..len]).contains("READY=1"));
}
