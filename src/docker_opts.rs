//! `weftd docker-opts`: docker daemon options from a subnet.env, with flannel's
//! `mk-docker-opts.sh` variables and flags, so docker's unit can keep sourcing the same file.
//!
//! Unlike the shell script, a missing or malformed subnet.env is an error that leaves the old
//! output untouched: docker must not start with an empty `--bip` and take a default bridge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use thiserror::Error;

use crate::subnet_env::{self, SubnetEnvError};

#[derive(Debug, Error)]
pub enum DockerOptsError {
    #[error("cannot read the subnet file {path}: {source} (has weftd written it yet?)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the subnet file {path} has no {key}; it should be written by weftd")]
    Missing { path: PathBuf, key: &'static str },
    #[error("the subnet file {path} has {key}={value:?}, which is not {expected}")]
    Invalid { path: PathBuf, key: &'static str, value: String, expected: &'static str },
    #[error(transparent)]
    Write(#[from] SubnetEnvError),
}

/// mk-docker-opts.sh's flags.
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
}

/// The options docker needs, read from a subnet file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DockerOptions {
    bip: Ipv4Network,
    mtu: u32,
    overlay_masquerades: bool,
}

/// The options docker needs, from a parsed subnet file at `path`.
fn read_options(path: &Path, env: &BTreeMap<String, String>) -> Result<DockerOptions, DockerOptsError> {
    let field = |key: &'static str| {
        env.get(key).map(String::as_str).ok_or_else(|| DockerOptsError::Missing { path: path.to_path_buf(), key })
    };
    let invalid = |key: &'static str, value: &str, expected: &'static str| DockerOptsError::Invalid {
        path: path.to_path_buf(),
        key,
        value: value.to_string(),
        expected,
    };
    let bip = field("FLANNEL_SUBNET")?;
    let bip = bip.parse().map_err(|_| invalid("FLANNEL_SUBNET", bip, "an IPv4 CIDR like 10.5.72.1/24"))?;
    let mtu = field("FLANNEL_MTU")?;
    let mtu = mtu.parse().map_err(|_| invalid("FLANNEL_MTU", mtu, "a number"))?;
    let overlay_masquerades = match env.get("FLANNEL_IPMASQ").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(invalid("FLANNEL_IPMASQ", other, "true or false")),
    };
    Ok(DockerOptions { bip, mtu, overlay_masquerades })
}

/// The docker environment file's text. `visible` holds the variables the script sees: its
/// environment, overlaid by what sourcing the subnet file sets. Every `DOCKER_OPT_*` among
/// them is passed on, as the script's `compgen -v DOCKER_OPT_` does, with ours overriding; they
/// come in name order (BIP, IPMASQ, MTU and any others between). The combined value starts with
/// the combined key's visible value, as the script's `eval` picks it up, with the script's spacing.
fn render(options: &DockerOptions, request: &DockerOptsRequest, visible: &BTreeMap<String, String>) -> String {
    let mut opts: BTreeMap<&str, String> =
        visible.iter().filter(|(key, _)| key.starts_with("DOCKER_OPT_")).map(|(k, v)| (k.as_str(), v.clone())).collect();
    opts.insert("DOCKER_OPT_BIP", format!("--bip={}", options.bip));
    opts.insert("DOCKER_OPT_MTU", format!("--mtu={}", options.mtu));
    // When the overlay masquerades, docker must not masquerade the same traffic again.
    if options.overlay_masquerades && request.ip_masq {
        opts.insert("DOCKER_OPT_IPMASQ", "--ip-masq=false".to_string());
    }
    let existing = visible.get(&request.combined_key).map_or("", String::as_str);
    let (individual, combined) = match (request.individual, request.combined) {
        (false, false) => (true, true),
        flags => flags,
    };
    let mut text = String::new();
    let mut all = format!("{existing} ");
    for (key, value) in &opts {
        if individual {
            text.push_str(&format!("{key}=\"{value}\"\n"));
        }
        all.push_str(value);
        all.push(' ');
    }
    if combined {
        text.push_str(&format!("{}=\"{all}\"\n", request.combined_key));
    }
    text
}

/// Reads the subnet file and writes the docker environment file atomically.
pub fn write_docker_opts(request: &DockerOptsRequest) -> Result<(), DockerOptsError> {
    let path = &request.subnet_file;
    let text = std::fs::read_to_string(path).map_err(|source| DockerOptsError::Read { path: path.clone(), source })?;
    let subnet_file = subnet_env::parse_env(&text);
    let options = read_options(path, &subnet_file)?;
    // Variables that are not UTF-8 cannot be docker options; skip them rather than panic.
    let mut visible: BTreeMap<String, String> =
        std::env::vars_os().filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?))).collect();
    visible.extend(subnet_file);
    subnet_env::write_if_changed(&request.docker_env, &render(&options, request, &visible))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> DockerOptsRequest {
        DockerOptsRequest {
            subnet_file: "/run/flannel/subnet.env".into(),
            docker_env: "/run/docker_opts.env".into(),
            individual: false,
            combined: false,
            combined_key: "DOCKER_OPTS".into(),
            ip_masq: true,
        }
    }

    fn visible(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn options(masq: bool) -> DockerOptions {
        DockerOptions { bip: "10.5.72.1/24".parse().unwrap(), mtu: 1450, overlay_masquerades: masq }
    }

    #[test]
    fn default_output_matches_mk_docker_opts() {
        assert_eq!(
            render(&options(false), &request(), &visible(&[])),
            "DOCKER_OPT_BIP=\"--bip=10.5.72.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\nDOCKER_OPTS=\" --bip=10.5.72.1/24 --mtu=1450 \"\n"
        );
    }

    #[test]
    fn ip_masq_is_inverted_and_can_be_left_out() {
        let text = render(&options(true), &request(), &visible(&[]));
        assert!(text.contains("DOCKER_OPT_IPMASQ=\"--ip-masq=false\"\n"), "{text}");
        assert!(text.contains("DOCKER_OPTS=\" --bip=10.5.72.1/24 --ip-masq=false --mtu=1450 \""), "{text}");
        let no_masq = DockerOptsRequest { ip_masq: false, ..request() };
        assert!(!render(&options(true), &no_masq, &visible(&[])).contains("ip-masq"));
    }

    #[test]
    fn individual_combined_and_key_flags() {
        let only_individual = DockerOptsRequest { individual: true, ..request() };
        assert!(!render(&options(false), &only_individual, &visible(&[])).contains("DOCKER_OPTS="));
        let only_combined = DockerOptsRequest { combined: true, combined_key: "OPTS".into(), ..request() };
        assert_eq!(
            render(&options(false), &only_combined, &visible(&[("OPTS", "--debug")])),
            "OPTS=\"--debug --bip=10.5.72.1/24 --mtu=1450 \"\n"
        );
    }

    #[test]
    fn other_docker_opt_variables_are_passed_on_and_ours_win() {
        let env = visible(&[("DOCKER_OPT_LOG", "--log-level=warn"), ("DOCKER_OPT_MTU", "--mtu=9000"), ("PATH", "/bin")]);
        assert_eq!(
            render(&options(false), &request(), &env),
            "DOCKER_OPT_BIP=\"--bip=10.5.72.1/24\"\nDOCKER_OPT_LOG=\"--log-level=warn\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n\
             DOCKER_OPTS=\" --bip=10.5.72.1/24 --log-level=warn --mtu=1450 \"\n"
        );
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
            ("FLANNEL_MTU=1450\n", "has no FLANNEL_SUBNET"),
            ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=big\n", "FLANNEL_MTU=\"big\""),
            ("FLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes\n", "FLANNEL_IPMASQ=\"yes\""),
        ] {
            std::fs::write(&input, text).unwrap();
            let error = write_docker_opts(&req).unwrap_err().to_string();
            assert!(error.contains(message), "{error}");
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "OLD\n");
        std::fs::write(
            &input,
            "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        write_docker_opts(&req).unwrap();
        assert!(std::fs::read_to_string(&out).unwrap().starts_with("DOCKER_OPT_BIP=\"--bip=10.5.72.1/24\"\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
