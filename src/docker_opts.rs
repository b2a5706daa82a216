//! `weftd docker-opts`: docker daemon options from a subnet.env, written byte for byte as
//! flannel's `mk-docker-opts.sh` (v0.20.2, run by `/bin/sh`) writes them, so docker's unit and
//! any drop-in or script reading the file keep working unchanged.
//!
//! The script sources the subnet file over its environment, sets `DOCKER_OPT_BIP`,
//! `DOCKER_OPT_MTU` and `DOCKER_OPT_IPMASQ`, then lists its variables with `set | grep
//! DOCKER_OPT_` (name order, any line containing the marker) and writes each one it finds, and
//! all of them combined after the combined key's own value. weftd computes the same list.
//!
//! Where the script would write something docker must not use, weftd refuses instead and leaves
//! the old output untouched: an unreadable subnet file or one without FLANNEL_SUBNET (docker would
//! start with a default bridge), values the script's word splitting breaks into junk lines (white
//! space, `*?[`, backslashes, echo options), and names for which the output depends on which `sh`
//! runs the script (a combined key or file path containing `DOCKER_OPT_`).
//!
//! With `--names`, weftd adds the options that give containers weftd's DNS server (names
//! across hosts): `--dns=<docker0 address>` (the FLANNEL_SUBNET gateway, where weftd answers)
//! and `--dns-search=<domain>`, as two more `DOCKER_OPT_` variables, written exactly as the
//! script writes them when they are in its environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use thiserror::Error;

use crate::atomic_file::{self, AtomicWriteError};
use crate::names::skydns::{Domain, SkyDnsError};
use crate::subnet_env;

/// What mk-docker-opts.sh greps its variable listing for.
const MARKER: &str = "DOCKER_OPT_";

/// The variable `--allow-direct-routing` adds, as if it were in the script's environment.
const ALLOW_DIRECT_ROUTING: (&str, &str) = ("DOCKER_OPT_ALLOW_DIRECT_ROUTING", "--allow-direct-routing");

/// The variables `--names` adds, as if they were in the script's environment: the resolver
/// containers get (the docker0 address is appended) and the domain their short names are
/// completed with (appended too).
const DNS: (&str, &str) = ("DOCKER_OPT_DNS", "--dns=");
const DNS_SEARCH: (&str, &str) = ("DOCKER_OPT_DNS_SEARCH", "--dns-search=");

#[derive(Debug, Error)]
pub enum DockerOptsError {
    #[error("cannot read the subnet file {path}: {source} (has weftd written it yet?)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("neither the subnet file {path} nor the environment sets {key}; the file should be written by weftd")]
    Missing { path: PathBuf, key: &'static str },
    #[error("the subnet file {path} has {key}={value:?}, which is not {expected}")]
    Invalid { path: PathBuf, key: &'static str, value: String, expected: &'static str },
    #[error("-k {key:?}: {reason}")]
    CombinedKey { key: String, reason: &'static str },
    #[error(
        "{path}: a path containing DOCKER_OPT_ makes mk-docker-opts.sh pass on its own variables, differently \
         in each sh; use another path"
    )]
    MarkedPath { path: PathBuf },
    #[error("{name}={value:?} {reason}; mk-docker-opts.sh would write broken lines for it, so weftd refuses: {advice}")]
    Unsafe { name: String, value: String, reason: &'static str, advice: &'static str },
    #[error("--names-domain: {0}")]
    Domain(#[source] SkyDnsError),
    #[error("cannot write the docker options file: {0}")]
    Write(#[from] AtomicWriteError),
}

/// mk-docker-opts.sh's flags, plus weft's opt-in `--allow-direct-routing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerOptsRequest {
    /// `-f`: the subnet file to read.
    pub subnet_file: PathBuf,
    /// `-d`: the docker environment file to write.
    pub docker_env: PathBuf,
    /// `-i`: one `DOCKER_OPT_*` variable per option.
    pub individual: bool,
    /// `-c`: all options in one combined variable.
    pub combined: bool,
    /// `-k`: the combined variable's name.
    pub combined_key: String,
    /// `-m` clears this: leave `--ip-masq` out (for old docker versions).
    pub ip_masq: bool,
    /// `--allow-direct-routing`: add docker's (28.2+) option of that name, which keeps its
    /// iptables rules from dropping overlay traffic routed straight to containers.
    pub allow_direct_routing: bool,
    /// `--names [--names-domain D]`: the domain names are published under (e.g. `weft.local`);
    /// adds docker's `--dns=<docker0 address>` and `--dns-search=<domain>`, so containers ask
    /// weftd's DNS server and find `web` as `web.<domain>`. `None` leaves both out.
    pub names_domain: Option<String>,
}

/// The shell variables mk-docker-opts.sh sees, by name.
type ShellVariables = BTreeMap<String, String>;

/// Whether `name` is a shell variable name (what `-k` must be, and what `sh` imports).
fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The script's variables after it sourced the subnet file: the environment (only names `sh`
/// imports), overlaid by the file's assignments.
fn script_variables(env: impl IntoIterator<Item = (String, String)>, subnet_file: ShellVariables) -> ShellVariables {
    let mut variables: ShellVariables = env.into_iter().filter(|(name, _)| is_shell_name(name)).collect();
    variables.extend(subnet_file);
    variables
}

/// Checks the names the script would list among its own variables, where `sh`s disagree.
fn check_names(request: &DockerOptsRequest) -> Result<(), DockerOptsError> {
    let key = &request.combined_key;
    let reason = if !is_shell_name(key) {
        Some("the combined key must be a shell variable name (letters, digits, _; not starting with a digit)")
    } else if key.contains(MARKER) {
        Some("a combined key containing DOCKER_OPT_ makes mk-docker-opts.sh pass on its own variables, differently in each sh; use another name")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(DockerOptsError::CombinedKey { key: key.clone(), reason });
    }
    for path in [&request.subnet_file, &request.docker_env] {
        if path.to_string_lossy().contains(MARKER) {
            return Err(DockerOptsError::MarkedPath { path: path.clone() });
        }
    }
    Ok(())
}

/// Sets what the script sets from the `FLANNEL_*` variables (empty counts as unset, as `[ -n ]`
/// does), plus weft's opt-in options. Values are copied as written, after checking them.
fn assign_options(variables: &mut ShellVariables, request: &DockerOptsRequest) -> Result<(), DockerOptsError> {
    let path = &request.subnet_file;
    let set = |key: &str| variables.get(key).filter(|v| !v.is_empty()).cloned();
    let invalid = |key: &'static str, value: String, expected: &'static str| DockerOptsError::Invalid {
        path: path.clone(),
        key,
        value,
        expected,
    };
    let subnet = set("FLANNEL_SUBNET").ok_or_else(|| DockerOptsError::Missing { path: path.clone(), key: "FLANNEL_SUBNET" })?;
    let gateway = match subnet.parse::<Ipv4Network>() {
        Ok(network) if subnet.contains('/') => network.ip(),
        _ => return Err(invalid("FLANNEL_SUBNET", subnet, "an IPv4 CIDR like 10.5.72.1/24")),
    };
    let mtu = set("FLANNEL_MTU");
    if let Some(mtu) = mtu.as_ref().filter(|m| !m.bytes().all(|b| b.is_ascii_digit())) {
        return Err(invalid("FLANNEL_MTU", mtu.clone(), "a number"));
    }
    // The flag docker needs is the inverse: when the overlay masquerades, docker must not
    // masquerade the same traffic again. `-m` skips the check altogether, as in the script.
    let docker_ip_masq = match set("FLANNEL_IPMASQ").filter(|_| request.ip_masq).as_deref() {
        None => None,
        Some("true") => Some("--ip-masq=false"),
        Some("false") => Some("--ip-masq=true"),
        Some(other) => return Err(invalid("FLANNEL_IPMASQ", other.to_string(), "true or false")),
    };
    variables.insert("DOCKER_OPT_BIP".into(), format!("--bip={subnet}"));
    if let Some(mtu) = mtu {
        variables.insert("DOCKER_OPT_MTU".into(), format!("--mtu={mtu}"));
    }
    if let Some(flag) = docker_ip_masq {
        variables.insert("DOCKER_OPT_IPMASQ".into(), flag.into());
    }
    if request.allow_direct_routing {
        variables.insert(ALLOW_DIRECT_ROUTING.0.into(), ALLOW_DIRECT_ROUTING.1.into());
    }
    if let Some(domain) = &request.names_domain {
        let domain: Domain = domain.parse().map_err(DockerOptsError::Domain)?;
        // FLANNEL_SUBNET's address is docker0's (`--bip`), where weftd's DNS server listens.
        variables.insert(DNS.0.into(), format!("{}{gateway}", DNS.1));
        variables.insert(DNS_SEARCH.0.into(), format!("{}{domain}", DNS_SEARCH.1));
    }
    Ok(())
}

/// Why the script cannot pass `value` on intact: its unquoted `$(set | grep …)` and
/// `echo $NAME` split it at white space, expand `*?[` as file names, and `sh`'s echo interprets
/// backslashes and takes `-n` (bash's also `-e`, `-E`) as its own option.
fn unsafe_value(value: &str) -> Option<&'static str> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains white space")
    } else if value.contains(['*', '?', '[']) {
        Some("contains *, ? or [")
    } else if value.contains('\\') {
        Some("contains a backslash")
    } else if value.len() > 1 && value.starts_with('-') && value[1..].bytes().all(|b| b"neE".contains(&b)) {
        Some("is an option of echo")
    } else {
        None
    }
}

/// The docker environment file's text, from the script's variables after [`assign_options`].
fn render(variables: &ShellVariables, request: &DockerOptsRequest) -> Result<String, DockerOptsError> {
    let existing = variables.get(&request.combined_key).map_or("", String::as_str);
    if existing.contains('\\') {
        let advice = "write the options without backslashes";
        return Err(DockerOptsError::Unsafe {
            name: request.combined_key.clone(),
            value: existing.into(),
            reason: "contains a backslash",
            advice,
        });
    }
    let mut combined = if existing.is_empty() { String::new() } else { format!("{existing} ") };
    // The script sets `docker_opts` before listing its variables, so it is listed too.
    let mut listed = variables.clone();
    listed.insert("docker_opts".into(), combined.clone());
    let (individual, both) = match (request.individual, request.combined) {
        (false, false) => (true, true),
        flags => flags,
    };
    let mut text = String::new();
    for (name, value) in listed.iter().filter(|(name, value)| name.contains(MARKER) || value.contains(MARKER)) {
        if let Some(reason) = unsafe_value(value) {
            let advice = "give each docker option its own DOCKER_OPT_ variable, with a plain value";
            return Err(DockerOptsError::Unsafe { name: name.clone(), value: value.clone(), reason, advice });
        }
        if individual {
            text.push_str(&format!("{name}=\"{value}\"\n"));
        }
        combined.push(' ');
        combined.push_str(value);
    }
    if both {
        text.push_str(&format!("{}=\"{combined}\"\n", request.combined_key));
    }
    Ok(text)
}

/// Reads the subnet file and writes the docker environment file atomically.
///
/// # Errors
/// [`DockerOptsError`] when the subnet file cannot be read or lacks a valid FLANNEL_SUBNET, when
/// a value would come out broken (see the module docs), or when the output cannot be written;
/// the old output is then left as it was.
pub fn write_docker_opts(request: &DockerOptsRequest) -> Result<(), DockerOptsError> {
    check_names(request)?;
    let path = &request.subnet_file;
    let text = std::fs::read_to_string(path).map_err(|source| DockerOptsError::Read { path: path.clone(), source })?;
    // Variables that are not UTF-8 cannot be docker options; skip them rather than panic.
    let env = std::env::vars_os().filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
    let mut variables = script_variables(env, subnet_env::parse_env(&text));
    assign_options(&mut variables, request)?;
    atomic_file::write_if_changed(&request.docker_env, &render(&variables, request)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBNET_FILE: &str =
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n";

    fn request() -> DockerOptsRequest {
        DockerOptsRequest {
            subnet_file: "/run/flannel/subnet.env".into(),
            docker_env: "/run/docker_opts.env".into(),
            individual: false,
            combined: false,
            combined_key: "DOCKER_OPTS".into(),
            ip_masq: true,
            allow_direct_routing: false,
            names_domain: None,
        }
    }

    /// What weftd writes for this environment and subnet file.
    fn output(request: &DockerOptsRequest, env: &[(&str, &str)], subnet_file: &str) -> Result<String, DockerOptsError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let mut variables = script_variables(env, subnet_env::parse_env(subnet_file));
        assign_options(&mut variables, request)?;
        render(&variables, request)
    }

    // Expected texts below are mk-docker-opts.sh v0.20.2's output (dash) for the same input.

    #[test]
    fn default_output_has_ipmasq_and_no_trailing_space() {
        assert_eq!(
            output(&request(), &[], SUBNET_FILE).unwrap(),
            "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n\
             DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n"
        );
    }

    #[test]
    fn combined_key_value_comes_first_with_two_spaces() {
        let only_combined = DockerOptsRequest { combined: true, combined_key: "OPTS".into(), ..request() };
        assert_eq!(
            output(&only_combined, &[("OPTS", "--debug"), ("DOCKER_OPTS", "--ignored")], SUBNET_FILE).unwrap(),
            "OPTS=\"--debug  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n"
        );
        let only_individual = DockerOptsRequest { individual: true, ..request() };
        assert!(!output(&only_individual, &[], SUBNET_FILE).unwrap().contains("DOCKER_OPTS="));
    }

    #[test]
    fn ipmasq_is_inverted_optional_and_unchecked_with_m() {
        let masq = SUBNET_FILE.replace("IPMASQ=false", "IPMASQ=true");
        assert!(output(&request(), &[], &masq).unwrap().contains("DOCKER_OPT_IPMASQ=\"--ip-masq=false\"\n"));
        let no_m = DockerOptsRequest { ip_masq: false, ..request() };
        assert!(!output(&no_m, &[], &masq).unwrap().contains("ip-masq"));
        let bad = SUBNET_FILE.replace("IPMASQ=false", "IPMASQ=yes");
        assert!(output(&no_m, &[], &bad).is_ok());
        assert!(output(&request(), &[], &bad).unwrap_err().to_string().contains("FLANNEL_IPMASQ=\"yes\""));
        let missing = SUBNET_FILE.replace("FLANNEL_IPMASQ=false\n", "");
        assert!(!output(&request(), &[], &missing).unwrap().contains("ip-masq"));
        assert!(output(&request(), &[("FLANNEL_IPMASQ", "true")], &missing).unwrap().contains("--ip-masq=false"));
    }

    #[test]
    fn missing_or_empty_mtu_leaves_the_option_out_or_to_the_environment() {
        let no_mtu = SUBNET_FILE.replace("FLANNEL_MTU=1472\n", "FLANNEL_MTU=\n");
        assert_eq!(
            output(&request(), &[], &no_mtu).unwrap(),
            "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n\
             DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true\"\n"
        );
        assert!(output(&request(), &[("DOCKER_OPT_MTU", "--mtu=9000")], &no_mtu).unwrap().contains("--mtu=9000"));
        // An empty assignment in the file hides the environment's value; no assignment does not.
        assert!(!output(&request(), &[("FLANNEL_MTU", "1400")], &no_mtu).unwrap().contains("--mtu"));
        let without = SUBNET_FILE.replace("FLANNEL_MTU=1472\n", "");
        assert!(output(&request(), &[("FLANNEL_MTU", "1400")], &without).unwrap().contains("--mtu=1400"));
        // The subnet file is sourced after the environment, so its values win.
        let from_file = output(&request(), &[("FLANNEL_MTU", "1400"), ("DOCKER_OPT_MTU", "--mtu=9000")], SUBNET_FILE);
        assert!(from_file.unwrap().contains("DOCKER_OPT_MTU=\"--mtu=1472\""));
    }

    #[test]
    fn every_variable_mentioning_docker_opt_is_passed_on_in_name_order() {
        let env = [
            ("DOCKER_OPT_a", "--lower"),
            ("MY_DOCKER_OPT_X", "--my"),
            ("FOO", "DOCKER_OPT_BAR"),
            ("DOCKER_OPT_A", "--a"),
            ("PATH", "/bin"),
        ];
        assert_eq!(
            output(&DockerOptsRequest { combined: true, ..request() }, &env, SUBNET_FILE).unwrap(),
            "DOCKER_OPTS=\" --a --bip=10.1.74.1/24 --ip-masq=true --mtu=1472 --lower DOCKER_OPT_BAR --my\"\n"
        );
        let empty = output(&request(), &[("DOCKER_OPT_E", "")], SUBNET_FILE).unwrap();
        assert!(empty.contains("DOCKER_OPT_E=\"\"\n") && empty.contains("/24  --ip-masq"), "{empty}");
    }

    #[test]
    fn allow_direct_routing_is_an_opt_in_docker_opt_variable() {
        let allow = DockerOptsRequest { allow_direct_routing: true, ..request() };
        let with_flag = output(&allow, &[], SUBNET_FILE).unwrap();
        assert_eq!(with_flag, output(&request(), &[ALLOW_DIRECT_ROUTING], SUBNET_FILE).unwrap());
        assert!(with_flag.starts_with("DOCKER_OPT_ALLOW_DIRECT_ROUTING=\"--allow-direct-routing\"\n"), "{with_flag}");
        assert!(with_flag.contains("DOCKER_OPTS=\" --allow-direct-routing --bip="), "{with_flag}");
        assert!(!output(&request(), &[], SUBNET_FILE).unwrap().contains("direct"));
    }

    #[test]
    fn names_add_the_docker0_resolver_and_the_search_domain() {
        let names = DockerOptsRequest { names_domain: Some("weft.local".into()), ..request() };
        let with_names = output(&names, &[], SUBNET_FILE).unwrap();
        let as_env = [("DOCKER_OPT_DNS", "--dns=10.1.74.1"), ("DOCKER_OPT_DNS_SEARCH", "--dns-search=weft.local")];
        assert_eq!(with_names, output(&request(), &as_env, SUBNET_FILE).unwrap());
        assert!(with_names.contains("DOCKER_OPTS=\" --bip=10.1.74.1/24 --dns=10.1.74.1 --dns-search=weft.local --ip-masq"));
        // The domain is written as the DNS server serves it: lower case, no root dot.
        let upper = DockerOptsRequest { names_domain: Some("Cluster.Example.".into()), ..request() };
        assert!(output(&upper, &[], SUBNET_FILE).unwrap().contains("DOCKER_OPT_DNS_SEARCH=\"--dns-search=cluster.example\"\n"));
        for bad in ["", "a b", "-x.local", "a..b", "*.local"] {
            let request = DockerOptsRequest { names_domain: Some(bad.into()), ..request() };
            assert!(matches!(output(&request, &[], SUBNET_FILE), Err(DockerOptsError::Domain(_))), "{bad:?}");
        }
        assert!(!output(&request(), &[], SUBNET_FILE).unwrap().contains("dns"));
    }

    #[test]
    fn values_the_script_would_break_are_refused() {
        for value in ["--a --b", "--label=x\ty", "--x=*", "--dns=[::1]", "a\\b", "-n", "-ne", "-E"] {
            let error = output(&request(), &[("DOCKER_OPT_X", value)], SUBNET_FILE).unwrap_err().to_string();
            assert!(error.starts_with(&format!("DOCKER_OPT_X={value:?}")), "{error}");
        }
        for value in ["--label=it's", "$HOME", "--n", "-x"] {
            assert!(output(&request(), &[("DOCKER_OPT_X", value)], SUBNET_FILE).is_ok(), "{value}");
        }
        assert!(output(&request(), &[("DOCKER_OPTS", "--a --b")], SUBNET_FILE).is_ok());
        assert!(output(&request(), &[("DOCKER_OPTS", "a\\b")], SUBNET_FILE).is_err());
        // The combined value is listed as the script's `docker_opts`, with a space at its end.
        assert!(output(&request(), &[("DOCKER_OPTS", "DOCKER_OPT_X")], SUBNET_FILE).is_err());
    }

    #[test]
    fn names_that_make_the_script_list_its_own_variables_are_refused() {
        for key in ["DOCKER_OPT_X", "BAD-NAME", "1X", ""] {
            let bad = DockerOptsRequest { combined_key: key.into(), ..request() };
            assert!(matches!(check_names(&bad), Err(DockerOptsError::CombinedKey { .. })), "{key}");
        }
        let bad_path = DockerOptsRequest { docker_env: "/run/DOCKER_OPT_x/env".into(), ..request() };
        assert!(matches!(check_names(&bad_path), Err(DockerOptsError::MarkedPath { .. })));
        assert!(check_names(&DockerOptsRequest { combined_key: "docker_extra_1".into(), ..request() }).is_ok());
    }

    #[test]
    fn bad_or_missing_input_is_an_error_and_leaves_the_output_alone() {
        let dir = std::env::temp_dir().join(format!("weft-docker-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("docker_opts.env");
        std::fs::write(&out, "OLD\n").unwrap();
        let input = dir.join("subnet.env");
        let req = DockerOptsRequest { subnet_file: input.clone(), docker_env: out.clone(), ..request() };
        assert!(matches!(write_docker_opts(&req), Err(DockerOptsError::Read { .. })));
        for (text, message) in [
            ("FLANNEL_MTU=1450\n", "sets FLANNEL_SUBNET"),
            ("FLANNEL_SUBNET=10.5.72.1\n", "FLANNEL_SUBNET=\"10.5.72.1\""),
            ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=big\n", "FLANNEL_MTU=\"big\""),
            ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes\n", "FLANNEL_IPMASQ=\"yes\""),
        ] {
            std::fs::write(&input, text).unwrap();
            let error = write_docker_opts(&req).unwrap_err().to_string();
            assert!(error.contains(message), "{error}");
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "OLD\n");
        std::fs::write(&input, SUBNET_FILE).unwrap();
        write_docker_opts(&req).unwrap();
        assert!(std::fs::read_to_string(&out).unwrap().starts_with("DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
