//! flanneld v0.20.2's flags that weftd does not implement as flanneld does, each with a clear
//! answer before clap sees the command line: logging-only flags (klog's) are accepted with one
//! warning each; Kubernetes-mode flags are refused naming the whole flag and why.
//! flanneld's other flags (etcd, underlay, subnet file, iptables, healthz, -v, -version, -h)
//! are weftd's own clap flags. Every flag here is also read from `FLANNELD_<FLAG>` (upper case,
//! dashes as underscores) when not on the command line, as flanneld does; an empty variable is
//! unset, as for flanneld.

use std::collections::BTreeSet;

use thiserror::Error;

/// How weftd answers one of flanneld's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A logging flag: it changes nothing weftd does, so it is dropped with a warning.
    Ignored,
    /// A mode weftd lacks: running without it would not do what the operator asked.
    Refused(&'static str),
}

struct FlanneldFlag {
    name: &'static str,
    /// Go's bool flags take no separate value (`-flag` or `-flag=false`); others take one.
    takes_value: bool,
    answer: Answer,
    /// A false value asks for what weftd does anyway (etcd mode), so it is accepted silently.
    false_is_harmless: bool,
}

const KUBE_MODE: &str = "Kubernetes mode is not implemented by weftd; use etcd (--etcd-endpoints)";
const KUBE_ONLY: &str =
    "used only in Kubernetes mode (-kube-subnet-mgr), which weftd does not implement; weftd reads its network config from etcd (--etcd-endpoints); remove it";

const fn flag(name: &'static str, takes_value: bool, answer: Answer) -> FlanneldFlag {
    FlanneldFlag { name, takes_value, answer, false_is_harmless: false }
}

/// flanneld v0.20.2's flags (main.go's flag set, and the klog flags) that clap does not take.
const FLAGS: &[FlanneldFlag] = &[
    FlanneldFlag { name: "kube-subnet-mgr", takes_value: false, answer: Answer::Refused(KUBE_MODE), false_is_harmless: true },
    flag("kube-api-url", true, Answer::Refused(KUBE_ONLY)),
    flag("kube-annotation-prefix", true, Answer::Refused(KUBE_ONLY)),
    flag("kubeconfig-file", true, Answer::Refused(KUBE_ONLY)),
    flag("net-config-path", true, Answer::Refused(KUBE_ONLY)),
    flag("set-node-network-unavailable", false, Answer::Refused(KUBE_ONLY)),
    // flanneld copies these three from klog.
    flag("vmodule", true, Answer::Ignored),
    flag("log_backtrace_at", true, Answer::Ignored),
    // klog's others: flanneld v0.20.2 rejects them, but they are only about logging.
    flag("logtostderr", false, Answer::Ignored),
    flag("alsologtostderr", false, Answer::Ignored),
    flag("add_dir_header", false, Answer::Ignored),
    flag("skip_headers", false, Answer::Ignored),
    flag("skip_log_headers", false, Answer::Ignored),
    flag("log_dir", true, Answer::Ignored),
    flag("log_file", true, Answer::Ignored),
    flag("log_file_max_size", true, Answer::Ignored),
    flag("stderrthreshold", true, Answer::Ignored),
];

/// A logging flag weftd dropped, as the operator wrote it (`-vmodule` or `FLANNELD_VMODULE`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}: a flanneld logging flag that weftd ignores (weftd logs to stderr; set verbosity with -v or RUST_LOG)")]
pub struct Ignored(pub String);

/// The refused flags, one line each, naming the flag as written and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", .0.join("\n"))]
pub struct Refused(pub Vec<String>);

/// The command line clap should parse, and the logging flags dropped from it or the environment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Screened {
    pub args: Vec<String>,
    pub ignored: Vec<Ignored>,
}

/// Go's `strconv.ParseBool` false spellings.
fn is_go_false(value: &str) -> bool {
    matches!(value, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

/// The table entry `arg` names (`-flag`, `--flag`, either with `=value`), its name as written,
/// and the inline value.
fn lookup(arg: &str) -> Option<(&'static FlanneldFlag, &str, Option<&str>)> {
    let bare = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    let (name, value) = bare.split_once('=').map_or((bare, None), |(n, v)| (n, Some(v)));
    let flag = FLAGS.iter().find(|f| f.name == name)?;
    Some((flag, &arg[..arg.len() - bare.len() + name.len()], value))
}

/// What screening found so far.
#[derive(Default)]
struct Verdicts {
    screened: Screened,
    refused: Vec<String>,
    warned: BTreeSet<&'static str>,
}

impl Verdicts {
    /// Answers one use of `flag` (written as `written`); a logging flag is warned about once.
    fn judge(&mut self, flag: &FlanneldFlag, written: String, value: Option<&str>) {
        match flag.answer {
            Answer::Ignored => {
                if self.warned.insert(flag.name) {
                    self.screened.ignored.push(Ignored(written));
                }
            }
            Answer::Refused(_) if flag.false_is_harmless && value.is_some_and(is_go_false) => {}
            Answer::Refused(why) => self.refused.push(format!("{written}: {why}")),
        }
    }
}

/// Takes flanneld's flags that clap does not know out of `args` (argv, program name first) and
/// looks at their `FLANNELD_*` variables through `env`.
///
/// # Errors
/// [`Refused`] listing every refused flag on the command line or in the environment.
pub fn screen(args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> Result<Screened, Refused> {
    let mut verdicts = Verdicts::default();
    let mut seen = BTreeSet::new();
    let mut args = args.into_iter();
    verdicts.screened.args.extend(args.next());
    while let Some(arg) = args.next() {
        if arg == "--" {
            verdicts.screened.args.push(arg);
            verdicts.screened.args.extend(args.by_ref());
            break;
        }
        let Some((flag, written, inline)) = lookup(&arg) else {
            verdicts.screened.args.push(arg);
            continue;
        };
        let value = match inline {
            Some(value) => Some(value.to_string()),
            None if flag.takes_value => args.next(),
            None => None,
        };
        seen.insert(flag.name);
        verdicts.judge(flag, written.to_string(), value.as_deref());
    }
    // As flanneld's SetFlagsFromEnv: only flags not given on the command line.
    for flag in FLAGS.iter().filter(|f| !seen.contains(f.name)) {
        let key = format!("FLANNELD_{}", flag.name.to_ascii_uppercase().replace('-', "_"));
        if let Some(value) = env(&key).filter(|v| !v.is_empty()) {
            verdicts.judge(flag, format!("{key}={value}"), Some(&value));
        }
    }
    if verdicts.refused.is_empty() {
        Ok(verdicts.screened)
    } else {
        Err(Refused(verdicts.refused))
    }
}

/// Go's flag package takes a long flag with one dash (`-etcd-endpoints=…`), clap with two:
/// every argument after the program's name that names one of `long_names` (or `help`,
/// `version`) with a single dash gets a second one; the rest pass unchanged.
pub fn go_style(long_names: &[String], args: impl Iterator<Item = String>) -> Vec<String> {
    let known = |name: &str| long_names.iter().any(|n| n == name) || name == "help" || name == "version";
    args.enumerate()
        .map(|(i, arg)| {
            let single_dash = i > 0 && arg.starts_with('-') && !arg.starts_with("--");
            let name = arg.trim_start_matches('-').split('=').next().unwrap_or_default();
            if single_dash && known(name) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Screened, Refused> {
        let args = std::iter::once("weftd").chain(args.iter().copied()).map(String::from).collect();
        screen(args, |key| env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn kubernetes_flags_are_refused_naming_the_whole_flag() {
        let refused = run(&["-kube-subnet-mgr", "--kube-api-url", "https://k:6443", "-public-ipv6=fd00::1"], &[]).unwrap_err();
        assert_eq!(refused.0.len(), 2, "{refused}");
        assert_eq!(refused.0[0], format!("-kube-subnet-mgr: {KUBE_MODE}"));
        assert!(refused.0[1].starts_with("--kube-api-url: used only in Kubernetes mode"), "{refused}");
        let refused = run(&[], &[("FLANNELD_KUBE_SUBNET_MGR", "true"), ("FLANNELD_NET_CONFIG_PATH", "/x")]).unwrap_err();
        assert!(refused.0[0].starts_with("FLANNELD_KUBE_SUBNET_MGR=true: Kubernetes mode"), "{refused}");
        assert!(refused.0[1].starts_with("FLANNELD_NET_CONFIG_PATH=/x: used only"), "{refused}");
    }

    #[test]
    fn etcd_mode_spelled_out_and_empty_variables_are_accepted() {
        let screened = run(&["-kube-subnet-mgr=false", "--iface", "eth0", "-public-ipv6=fd00::1"], &[]).unwrap();
        assert_eq!(screened.args, ["weftd", "--iface", "eth0", "-public-ipv6=fd00::1"], "weftd's own flag, left to clap");
        assert!(run(&[], &[("FLANNELD_KUBE_SUBNET_MGR", "0")]).is_ok());
        // The command line wins over the environment, as in flanneld.
        assert!(run(&["--kube-subnet-mgr=F"], &[("FLANNELD_KUBE_SUBNET_MGR", "true")]).is_ok());
    }

    #[test]
    fn logging_flags_are_dropped_with_one_warning_each() {
        let screened = run(
            &["-vmodule=x=2", "-v", "2", "-log_backtrace_at", "main.go:1", "-logtostderr", "--vmodule", "y=1", "-ip-masq"],
            &[("FLANNELD_LOG_DIR", "/var/log"), ("FLANNELD_VMODULE", "z=3")],
        )
        .unwrap();
        assert_eq!(screened.args, ["weftd", "-v", "2", "-ip-masq"]);
        let ignored: Vec<&str> = screened.ignored.iter().map(|i| i.0.as_str()).collect();
        assert_eq!(ignored, ["-vmodule", "-log_backtrace_at", "-logtostderr", "FLANNELD_LOG_DIR=/var/log"]);
        assert!(screened.ignored[0].to_string().starts_with("-vmodule: a flanneld logging flag that weftd ignores"));
    }

    #[test]
    fn other_arguments_and_everything_after_a_double_dash_are_left_alone() {
        let args = ["-etcd-prefix=/x", "docker-opts", "-k", "KUBE", "-m", "--", "-kube-subnet-mgr"];
        assert_eq!(run(&args, &[]).unwrap().args[1..], args);
        assert!(lookup("---vmodule").is_none() && lookup("vmodule").is_none() && lookup("-vmodulex").is_none());
    }
}
