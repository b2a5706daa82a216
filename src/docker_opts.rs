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
//! start with a default bridge; an IPv6-only network's file is fine with `--ipv6`), values the script's word splitting breaks into junk lines (white
//! space, `*?[`, backslashes, echo options), and names for which the output depends on which `sh`
//! runs the script (a combined key or file path containing `DOCKER_OPT_`).
//!
//! mk-docker-opts.sh knows nothing of IPv6 (up to flannel v0.28). With `--ipv6`, weftd adds
//! docker's IPv6 options for the default bridge as two more `DOCKER_OPT_` variables, written
//! exactly as the script writes them when they are in its environment. An IPv6-only network's
//! subnet file (`"EnableIPv4": false`: no FLANNEL_SUBNET) then gives what the script gives without
//! FLANNEL_SUBNET: no `--bip`, docker's default IPv4 bridge beside the overlay's IPv6 subnet.
//!
//! With `--names` (names across hosts), weftd adds the options that give containers weftd's DNS
//! server: `--dns=<docker0 address>` (FLANNEL_SUBNET's address, where weftd answers) and
//! `--dns-search=<domain>`, as two more `DOCKER_OPT_` variables, written the same way.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnetwork::{Ipv4Network, Ipv6Network};
use thiserror::Error;

use crate::atomic_file::{self, AtomicWriteError};
use crate::names::skydns::Domain;
use crate::subnet_env;

/// What mk-docker-opts.sh greps its variable listing for.
const MARKER: &str = "DOCKER_OPT_";

/// The variable `--allow-direct-routing` adds, as if it were in the script's environment.
const ALLOW_DIRECT_ROUTING: (&str, &str) = ("DOCKER_OPT_ALLOW_DIRECT_ROUTING", "--allow-direct-routing");

/// The variables `--ipv6` adds, as if they were in the script's environment: docker's switch for
/// IPv6 on the default bridge, and the bridge's IPv6 subnet (the value is appended).
const IPV6: (&str, &str) = ("DOCKER_OPT_IPV6", "--ipv6");
const FIXED_CIDR_V6: (&str, &str) = ("DOCKER_OPT_FIXED_CIDR_V6", "--fixed-cidr-v6=");

/// The variables `--names` adds, as if they were in the script's environment: the resolver
/// containers get (docker0's address is appended) and the domain short names are completed
/// with (appended too).
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
    #[error(
        "--ipv6: neither the subnet file {path} nor the environment sets FLANNEL_IPV6_SUBNET, so this host has no \
         IPv6 subnet for docker; set \"EnableIPv6\": true and an \"IPv6Network\" in the network config (then \
         weftd writes it), or drop --ipv6"
    )]
    NoIpv6Subnet { path: PathBuf },
    #[error(
        "the subnet file {path} has FLANNEL_IPV6_SUBNET but no FLANNEL_SUBNET (an IPv6-only network), so without \
         --ipv6 docker would get no overlay address at all; pass --ipv6 for an IPv6-only network"
    )]
    Ipv6OnlyWithoutIpv6 { path: PathBuf },
    #[error(
        "--names: the subnet file {path} has no FLANNEL_SUBNET (an IPv6-only network); containers ask weftd's DNS \
         server at docker0's overlay IPv4 address, which an IPv6-only network does not give docker; drop --names"
    )]
    NamesWithoutIpv4 { path: PathBuf },
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
    /// `--ipv6`: add docker's `--ipv6` and `--fixed-cidr-v6=<FLANNEL_IPV6_SUBNET>`, which give
    /// the default bridge this host's IPv6 subnet (its `::1` as the bridge's gateway).
    pub ipv6: bool,
    /// `--names [--names-domain D]`: the domain names are published under; adds docker's
    /// `--dns=<docker0 address>` and `--dns-search=<domain>`, so containers ask weftd's DNS
    /// server and find `web` as `web.<domain>`. `None` leaves both out.
    pub names_domain: Option<Domain>,
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
    let subnet = set("FLANNEL_SUBNET");
    let gateway = match &subnet {
        Some(s) => Some(bridge_gateway(s).ok_or_else(|| invalid("FLANNEL_SUBNET", s.clone(), "an IPv4 CIDR like 10.5.72.1/24"))?),
        None => {
            check_ipv6_only(variables, request)?;
            None
        }
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
    if let Some(subnet) = subnet {
        variables.insert("DOCKER_OPT_BIP".into(), format!("--bip={subnet}"));
    }
    if let Some(mtu) = mtu {
        variables.insert("DOCKER_OPT_MTU".into(), format!("--mtu={mtu}"));
    }
    if let Some(flag) = docker_ip_masq {
        variables.insert("DOCKER_OPT_IPMASQ".into(), flag.into());
    }
    assign_opt_ins(variables, request, gateway)
}

/// FLANNEL_SUBNET's address (`10.5.72.1/24` -> 10.5.72.1, docker0's), if it is an IPv4 CIDR.
fn bridge_gateway(subnet: &str) -> Option<Ipv4Addr> {
    subnet.parse::<Ipv4Network>().ok().filter(|_| subnet.contains('/')).map(|network| network.ip())
}

/// A subnet file without FLANNEL_SUBNET: fine only as an IPv6-only network's (FLANNEL_IPV6_SUBNET
/// set) with `--ipv6` and without `--names`; otherwise the reason docker would be left without.
fn check_ipv6_only(variables: &ShellVariables, request: &DockerOptsRequest) -> Result<(), DockerOptsError> {
    let path = request.subnet_file.clone();
    if variables.get("FLANNEL_IPV6_SUBNET").is_none_or(|v| v.is_empty()) {
        return Err(DockerOptsError::Missing { path, key: "FLANNEL_SUBNET" });
    }
    if request.names_domain.is_some() {
        return Err(DockerOptsError::NamesWithoutIpv4 { path });
    }
    if !request.ipv6 {
        return Err(DockerOptsError::Ipv6OnlyWithoutIpv6 { path });
    }
    Ok(())
}

/// weft's opt-in options: `--allow-direct-routing`, `--ipv6`, and `--names` (its resolver at
/// docker0's address `gateway`, which only an IPv6-only network lacks, and those refuse `--names`).
fn assign_opt_ins(
    variables: &mut ShellVariables,
    request: &DockerOptsRequest,
    gateway: Option<Ipv4Addr>,
) -> Result<(), DockerOptsError> {
    if request.allow_direct_routing {
        variables.insert(ALLOW_DIRECT_ROUTING.0.into(), ALLOW_DIRECT_ROUTING.1.into());
    }
    if request.ipv6 {
        let subnet = ipv6_subnet(variables, &request.subnet_file)?;
        variables.insert(IPV6.0.into(), IPV6.1.into());
        variables.insert(FIXED_CIDR_V6.0.into(), format!("{}{subnet}", FIXED_CIDR_V6.1));
    }
    if let Some(domain) = &request.names_domain {
        // FLANNEL_SUBNET's address is docker0's (`--bip`), where weftd's DNS server listens.
        let gateway = gateway.ok_or_else(|| DockerOptsError::NamesWithoutIpv4 { path: request.subnet_file.clone() })?;
        variables.insert(DNS.0.into(), format!("{}{gateway}", DNS.1));
        variables.insert(DNS_SEARCH.0.into(), format!("{}{domain}", DNS_SEARCH.1));
    }
    Ok(())
}

/// `FLANNEL_IPV6_SUBNET` as written (`fd00:5:0:7::1/64`): docker takes the host bits too and
/// gives its bridge the first address of the prefix, the address flanneld's convention names.
fn ipv6_subnet(variables: &ShellVariables, path: &std::path::Path) -> Result<String, DockerOptsError> {
    let key = "FLANNEL_IPV6_SUBNET";
    let subnet =
        variables.get(key).filter(|v| !v.is_empty()).ok_or_else(|| DockerOptsError::NoIpv6Subnet { path: path.to_path_buf() })?;
    if !subnet.contains('/') || subnet.parse::<Ipv6Network>().is_err() {
        let expected = "an IPv6 CIDR like fd00:5:0:7::1/64";
        return Err(DockerOptsError::Invalid { path: path.to_path_buf(), key, value: subnet.clone(), expected });
    }
    Ok(subnet.clone())
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
/// [`DockerOptsError`] when the subnet file cannot be read or lacks a valid FLANNEL_SUBNET (an
/// IPv6-only file may, with `--ipv6` and without `--names`), when a value would come out broken
/// (see the module docs), or when the output cannot be written; the old output is then left as
/// it was.
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
#[path = "docker_opts_tests.rs"]
mod tests;
