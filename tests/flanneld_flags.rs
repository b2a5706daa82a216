//! Every flag flanneld v0.20.2 accepts gets a clear answer from the real weftd, in every Go form
//! (`-flag`, `--flag`, `=value` or a separate value) and as a `FLANNELD_*` variable: Kubernetes
//! flags are refused (exit 2) naming the whole flag and why, logging flags are accepted
//! with one warning each; and a network config asking for IPv6 is warned about once.

use std::time::Duration;

use lab::Lab;

const KUBE_MODE: &str = "Kubernetes mode is not implemented by weftd; use etcd (--etcd-endpoints)";
const KUBE_ONLY: &str = "used only in Kubernetes mode (-kube-subnet-mgr), which weftd does not implement";
const LOGGING: &str = "a flanneld logging flag that weftd ignores";

/// Runs weftd in host N's namespace with `env` set and `args`; returns (exit code, stderr).
fn weftd(lab: &Lab, n: usize, env: &[&str], args: &[&str]) -> (Option<i32>, String) {
    let bin = lab::weftd_bin();
    let mut command = vec!["env"];
    command.extend_from_slice(env);
    command.push(bin.to_str().unwrap());
    command.extend_from_slice(args);
    let out = lab.host(n).exec(&command);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn kubernetes_flags_are_refused_naming_the_whole_flag() {
    let mut lab = Lab::new();
    let n = lab.add_host();
    // (environment, arguments, the flag as weftd must name it, why)
    let cases: &[(&[&str], &[&str], &str, &str)] = &[
        (&[], &["-kube-subnet-mgr"], "-kube-subnet-mgr", KUBE_MODE),
        (&[], &["--kube-subnet-mgr"], "--kube-subnet-mgr", KUBE_MODE),
        (&[], &["-kube-subnet-mgr=true", "--iface", "eth0"], "-kube-subnet-mgr", KUBE_MODE),
        (&[], &["status", "--kube-subnet-mgr=1"], "--kube-subnet-mgr", KUBE_MODE),
        (&["FLANNELD_KUBE_SUBNET_MGR=true"], &[], "FLANNELD_KUBE_SUBNET_MGR=true", KUBE_MODE),
        (&[], &["-kube-api-url", "https://10.0.0.1:6443"], "-kube-api-url", KUBE_ONLY),
        (&[], &["--kube-api-url=https://10.0.0.1:6443"], "--kube-api-url", KUBE_ONLY),
        (&[], &["-kube-annotation-prefix=example.com"], "-kube-annotation-prefix", KUBE_ONLY),
        (&[], &["--kubeconfig-file", "/etc/kubeconfig"], "--kubeconfig-file", KUBE_ONLY),
        (&[], &["-net-config-path=/etc/kube-flannel/net-conf.json"], "-net-config-path", KUBE_ONLY),
        (&[], &["-set-node-network-unavailable=false"], "-set-node-network-unavailable", KUBE_ONLY),
        (&["FLANNELD_KUBECONFIG_FILE=/k"], &[], "FLANNELD_KUBECONFIG_FILE=/k", KUBE_ONLY),
    ];
    for (env, args, named, why) in cases {
        let (code, stderr) = weftd(&lab, n, env, args);
        assert_eq!(code, Some(2), "{env:?} {args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("weftd: {named}: {why}")), "{env:?} {args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{env:?} {args:?}: one line per refused flag: {stderr}");
    }
    // All refused flags are named at once, not one per attempt.
    let (code, stderr) = weftd(&lab, n, &["FLANNELD_NET_CONFIG_PATH=/n"], &["-kube-subnet-mgr", "-kube-api-url=https://k"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
}

#[test]
fn logging_flags_warn_once() {
    let mut lab = Lab::new();
    lab.put_network_config(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
    let n = lab.add_host();
    let args = [
        "-vmodule=reconcile=2",
        "-log_backtrace_at",
        "main.go:100",
        "--logtostderr",
        "-vmodule",
        "lease=3",
        "-kube-subnet-mgr=false",
        "-v=1",
    ];
    let env =
        [("FLANNELD_LOG_DIR", "/var/log/flannel"), ("FLANNELD_STDERRTHRESHOLD", "INFO"), ("FLANNELD_KUBE_SUBNET_MGR", "false")];
    let daemon = lab.start_weftd_env(n, &args, &env);
    lab.wait_subnet_env(n, Duration::from_secs(20));
    let log = daemon.log();
    for named in
        ["-vmodule", "-log_backtrace_at", "--logtostderr", "FLANNELD_LOG_DIR=/var/log/flannel", "FLANNELD_STDERRTHRESHOLD=INFO"]
    {
        let warning = format!("{named}: {LOGGING}");
        assert_eq!(log.matches(&warning).count(), 1, "one warning for {named}:\n{log}");
    }
    assert_eq!(log.matches(LOGGING).count(), 5, "{log}");
}
