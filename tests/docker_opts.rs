//! `weftd docker-opts` writes the bytes flannel's `mk-docker-opts.sh` (v0.20.2) writes, for a
//! table of flags, subnet files and environments, and refuses clearly where the script would
//! write a file docker must not use.
//!
//! The expected texts were recorded by running flannel's real script with `/bin/sh` (dash), and
//! checked identical under `bash --posix` and `busybox sh`, in a clean environment (`env -i`)
//! holding only the case's variables (and PATH); weftd runs here in the same clean environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

#[path = "docker_opts/cases.rs"]
mod cases;

use cases::CASES;

/// A scratch directory, removed on drop; unique per process and call.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weft-docker-opts-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `weftd docker-opts -f <subnet> -d <out> <args>` with exactly `env` as its environment.
fn docker_opts(subnet: &Path, out: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(lab::weftd_bin())
        .env_clear()
        .envs(env.iter().copied())
        .arg("docker-opts")
        .arg("-f")
        .arg(subnet)
        .arg("-d")
        .arg(out)
        .args(args)
        .output()
        .expect("run weftd docker-opts")
}

#[test]
fn docker_opts_writes_the_bytes_mk_docker_opts_writes() {
    let mut wrong = Vec::new();
    for case in CASES {
        let scratch = Scratch::new();
        let (subnet, out) = (scratch.path("subnet.env"), scratch.path("docker_opts.env"));
        std::fs::write(&subnet, case.subnet_file).unwrap();
        let run = docker_opts(&subnet, &out, case.args, case.env);
        let written = std::fs::read_to_string(&out).unwrap_or_default();
        if !run.status.success() || written != case.expected {
            wrong.push(format!(
                "{} ({}; {:?}): wrote\n{written:?}\nmk-docker-opts.sh writes\n{:?}\nstderr: {}",
                case.name,
                run.status,
                case.args,
                case.expected,
                String::from_utf8_lossy(&run.stderr).trim()
            ));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases differ:\n\n{}", wrong.len(), CASES.len(), wrong.join("\n\n"));
}

const SUBNET_FILE: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n";

/// (what, subnet file or None for none, args, env, what stderr must contain)
type Refusal =
    (&'static str, Option<&'static str>, &'static [&'static str], &'static [(&'static str, &'static str)], &'static str);

#[test]
fn docker_opts_refuses_what_the_script_would_write_broken_and_keeps_the_old_file() {
    let cases: &[Refusal] = &[
        ("no subnet file", None, &[], &[], "cannot read the subnet file"),
        ("no FLANNEL_SUBNET", Some("FLANNEL_MTU=1472\n"), &[], &[], "sets FLANNEL_SUBNET"),
        ("bad FLANNEL_IPMASQ", Some("FLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPMASQ=yes\n"), &[], &[], "FLANNEL_IPMASQ=\"yes\""),
        (
            "option with a space",
            Some(SUBNET_FILE),
            &[],
            &[("DOCKER_OPT_LOG", "--log-level=warn --debug")],
            "DOCKER_OPT_LOG=\"--log-level=warn --debug\" contains white space",
        ),
        ("file name pattern", Some(SUBNET_FILE), &[], &[("DOCKER_OPT_X", "--x=*")], "contains *, ? or ["),
        ("echo option", Some(SUBNET_FILE), &[], &[("DOCKER_OPT_X", "-n")], "is an option of echo"),
        (
            "backslash in the combined key",
            Some(SUBNET_FILE),
            &[],
            &[("DOCKER_OPTS", "a\\tb")],
            "DOCKER_OPTS=\"a\\\\tb\" contains a backslash",
        ),
        (
            "key naming a DOCKER_OPT_",
            Some(SUBNET_FILE),
            &["-k", "DOCKER_OPT_BIP"],
            &[],
            "-k \"DOCKER_OPT_BIP\": a combined key containing DOCKER_OPT_",
        ),
        ("key that is no variable name", Some(SUBNET_FILE), &["-k", "DOCKER-OPTS"], &[], "must be a shell variable name"),
        ("--ipv6 with an IPv4-only subnet file", Some(SUBNET_FILE), &["--ipv6"], &[], "--ipv6: neither the subnet file"),
        (
            "--ipv6 with a bad IPv6 subnet",
            Some("FLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1\n"),
            &["--ipv6"],
            &[],
            "FLANNEL_IPV6_SUBNET=\"fd00:1:0:4a::1\", which is not an IPv6 CIDR",
        ),
        ("IPv6-only subnet file without --ipv6", Some("FLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"), &[], &[], "pass --ipv6 for an IPv6-only network"),
        (
            "--names with an IPv6-only subnet file",
            Some("FLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"),
            &["--ipv6", "--names"],
            &[],
            "--names: the subnet file",
        ),
    ];
    for (what, subnet_text, args, env, message) in cases {
        let scratch = Scratch::new();
        let (subnet, out) = (scratch.path("subnet.env"), scratch.path("docker_opts.env"));
        if let Some(text) = subnet_text {
            std::fs::write(&subnet, text).unwrap();
        }
        std::fs::write(&out, "OLD\n").unwrap();
        let run = docker_opts(&subnet, &out, args, env);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.starts_with("weftd docker-opts: ") && stderr.contains(message), "{what}: {stderr}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "OLD\n", "{what}: the old file must stay");
    }
}

/// How long a weftd gets to write subnet.env.
const WEFTD_START: std::time::Duration = std::time::Duration::from_secs(20);

/// A lab whose network config is `config`, with one host running weftd.
fn lab_with_weftd(config: &str) -> (lab::Lab, lab::Weftd) {
    let mut lab = lab::Lab::new();
    lab.put_network_config(config);
    let n = lab.add_host();
    let daemon = lab.start_weftd(n, &[]);
    (lab, daemon)
}

/// What `weftd docker-opts -f <subnet> -d <out> <args>` writes; panics if it fails.
fn written(subnet: &Path, out: &Path, args: &[&str]) -> String {
    let run = docker_opts(subnet, out, args, &[]);
    assert!(run.status.success(), "{args:?}: {}", String::from_utf8_lossy(&run.stderr));
    std::fs::read_to_string(out).unwrap()
}

/// A dual-stack weftd writes subnet.env; `weftd docker-opts --ipv6` turns it into the options a
/// dual-stack docker needs, in the script's order, byte for byte; without `--ipv6` the output is
/// the IPv4 one.
#[test]
fn docker_opts_ipv6_from_a_dual_stack_weftd_subnet_file() {
    let (lab, _daemon) =
        lab_with_weftd(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#);
    let env = lab.wait_subnet_env(1, WEFTD_START);
    let (bip, v6, mtu) = (&env["FLANNEL_SUBNET"], &env["FLANNEL_IPV6_SUBNET"], &env["FLANNEL_MTU"]);
    let scratch = Scratch::new();
    let out = scratch.path("docker_opts.env");
    let subnet_file = &lab.host(1).subnet_file;
    let expected = format!(
        "DOCKER_OPT_BIP=\"--bip={bip}\"\nDOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6={v6}\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n\
         DOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu={mtu}\"\n\
         DOCKER_OPTS=\" --bip={bip} --fixed-cidr-v6={v6} --ip-masq=true --ipv6 --mtu={mtu}\"\n"
    );
    assert_eq!(written(subnet_file, &out, &["--ipv6"]), expected);
    assert!(v6.starts_with("fd00:5:") && v6.ends_with("::1/64"), "{v6}");
    let ipv4_only = format!(
        "DOCKER_OPT_BIP=\"--bip={bip}\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu={mtu}\"\n\
         DOCKER_OPTS=\" --bip={bip} --ip-masq=true --mtu={mtu}\"\n"
    );
    assert_eq!(written(subnet_file, &out, &[]), ipv4_only);
}

/// An IPv6-only weftd (`"EnableIPv4": false`) writes subnet.env without FLANNEL_SUBNET;
/// `weftd docker-opts --ipv6` turns it into docker's IPv6 options without `--bip`, byte for byte
/// what the script writes for such a file; without `--ipv6`, and with `--names`, it refuses.
#[test]
fn docker_opts_ipv6_from_an_ipv6_only_weftd_subnet_file() {
    let (lab, _daemon) =
        lab_with_weftd(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#);
    let env = lab.wait_ipv6_subnet_env(1, WEFTD_START);
    assert!(!env.contains_key("FLANNEL_SUBNET"), "{env:?}");
    let (v6, mtu) = (&env["FLANNEL_IPV6_SUBNET"], &env["FLANNEL_MTU"]);
    let scratch = Scratch::new();
    let out = scratch.path("docker_opts.env");
    let subnet_file = &lab.host(1).subnet_file;
    let expected = format!(
        "DOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6={v6}\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n\
         DOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu={mtu}\"\n\
         DOCKER_OPTS=\" --fixed-cidr-v6={v6} --ip-masq=true --ipv6 --mtu={mtu}\"\n"
    );
    assert_eq!(written(subnet_file, &out, &["--ipv6"]), expected);
    for (args, message) in
        [(&["--ipv6", "--names"][..], "--names: the subnet file"), (&[][..], "pass --ipv6 for an IPv6-only network")]
    {
        let run = docker_opts(subnet_file, &out, args, &[]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), expected, "{args:?}: the old file stays");
    }
}

/// `--names` as the daemon takes it: from the flags or from `FLANNELD_NAMES` /
/// `FLANNELD_NAMES_DOMAIN` (one settings file for weftd and its ExecStartPost docker-opts); a
/// domain that is no DNS domain is refused and the old file stays.
#[test]
fn docker_opts_names_from_flags_or_the_daemon_s_environment() {
    let with_flags = |args: &[&str], env: &[(&str, &str)]| {
        let scratch = Scratch::new();
        let (subnet, out) = (scratch.path("subnet.env"), scratch.path("docker_opts.env"));
        std::fs::write(&subnet, SUBNET_FILE).unwrap();
        std::fs::write(&out, "OLD\n").unwrap();
        let run = docker_opts(&subnet, &out, args, env);
        (run, std::fs::read_to_string(&out).unwrap())
    };
    let (run, by_flags) = with_flags(&["--names", "--names-domain", "Cluster.Example."], &[]);
    assert!(run.status.success(), "{run:?}");
    assert!(by_flags.contains("DOCKER_OPT_DNS=\"--dns=10.1.74.1\"\nDOCKER_OPT_DNS_SEARCH=\"--dns-search=cluster.example\"\n"));
    let (run, by_env) = with_flags(&[], &[("FLANNELD_NAMES", "true"), ("FLANNELD_NAMES_DOMAIN", "cluster.example")]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(by_env, by_flags);
    let (_, off) = with_flags(&[], &[("FLANNELD_NAMES", "false")]);
    assert!(!off.contains("--dns"), "{off}");

    let (run, kept) = with_flags(&["--names", "--names-domain", "weft local"], &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("\"weft local\" is not a DNS domain"), "{stderr}");
    assert_eq!(kept, "OLD\n");
}
