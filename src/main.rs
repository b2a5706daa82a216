//! `weftd`: command-line flags (flanneld's, in Go style, with `FLANNELD_*` variables) and start-up.

mod flanneld_flags;
mod libc_setup;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use weft::daemon::NamesOptions;
use weft::daemon::{self, DaemonOptions};
use weft::docker_opts::{self, DockerOptsRequest};
use weft::etcd::EtcdOptions;
use weft::names::dns::DnsOptions;
use weft::names::link_env;
use weft::names::skydns::Domain;
use weft::status;
use weft::underlay::UnderlayChoice;

/// weftd: a flannel-compatible VXLAN overlay network daemon.
///
/// Every flag may also be given as an environment variable FLANNELD_<FLAG> (upper case, dashes
/// as underscores), used when the flag is not on the command line. Flags may be written Go style,
/// with one dash or two, and `=value` or a separate value. Of flanneld's other flags, the
/// logging ones (-vmodule, -log_backtrace_at, -logtostderr, ...) are ignored with a warning, and
/// the Kubernetes-mode ones (-kube-subnet-mgr, ...) are refused.
#[derive(Debug, Parser)]
#[command(name = "weftd", version, about, long_about = None, max_term_width = 100)]
struct Flags {
    /// Comma-separated etcd endpoints.
    #[arg(
        long,
        global = true,
        env = "FLANNELD_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:4001,http://127.0.0.1:2379"
    )]
    etcd_endpoints: Vec<String>,
    /// etcd prefix holding the network config and the subnet leases.
    #[arg(long, global = true, env = "FLANNELD_ETCD_PREFIX", default_value = "/coreos.com/network")]
    etcd_prefix: String,
    /// TLS client key file for etcd.
    #[arg(long, global = true, env = "FLANNELD_ETCD_KEYFILE")]
    etcd_keyfile: Option<PathBuf>,
    /// TLS client certificate file for etcd.
    #[arg(long, global = true, env = "FLANNELD_ETCD_CERTFILE")]
    etcd_certfile: Option<PathBuf>,
    /// TLS CA file that signed etcd's server certificate.
    #[arg(long, global = true, env = "FLANNELD_ETCD_CAFILE")]
    etcd_cafile: Option<PathBuf>,
    /// etcd user name for authentication.
    #[arg(long, global = true, env = "FLANNELD_ETCD_USERNAME")]
    etcd_username: Option<String>,
    /// etcd password for authentication.
    #[arg(long, global = true, env = "FLANNELD_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
    /// Interface for inter-host traffic: a name (its first IPv4 address is used, and its best
    /// IPv6 one when the config enables IPv6) or an IPv4 or IPv6 address (that address is used);
    /// repeat to give fallbacks, tried in order.
    /// Default: the interface of the default route.
    #[arg(long, global = true, env = "FLANNELD_IFACE", value_delimiter = ',', action = ArgAction::Append)]
    iface: Vec<String>,
    /// Regex matched against every interface's IPv4 addresses, then (when the config enables
    /// IPv6) IPv6 addresses, then against names; repeatable, tried after every --iface.
    #[arg(long, global = true, env = "FLANNELD_IFACE_REGEX", action = ArgAction::Append)]
    iface_regex: Vec<String>,
    /// Use the interface and source address `ip route get <address>` shows; tried after every
    /// --iface and --iface-regex.
    #[arg(long, global = true, env = "FLANNELD_IFACE_CAN_REACH")]
    iface_can_reach: Option<Ipv4Addr>,
    /// IP address other hosts use to reach this one (the lease's PublicIP). Default: the
    /// underlay address. Without --iface/--iface-regex/--iface-can-reach, the interface holding it.
    #[arg(long, global = true, env = "FLANNELD_PUBLIC_IP")]
    public_ip: Option<Ipv4Addr>,
    /// IPv6 address other hosts use to reach this one (the lease's PublicIPv6), when the network
    /// config enables IPv6. Default: the underlay interface's IPv6 address. Without
    /// --iface/--iface-regex/--iface-can-reach/--public-ip, the interface holding it.
    #[arg(long, global = true, env = "FLANNELD_PUBLIC_IPV6")]
    public_ipv6: Option<Ipv6Addr>,
    /// File to write the subnet environment to (docker's --bip and --mtu come from it).
    #[arg(long, env = "FLANNELD_SUBNET_FILE", default_value = "/run/flannel/subnet.env")]
    subnet_file: PathBuf,
    /// Renew the lease this many minutes before it expires (1-1439).
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_RENEW_MARGIN", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..1440))]
    subnet_lease_renew_margin: u64,
    /// Lifetime of the subnet lease in etcd, e.g. 24h, 30m, 20s (weft extension).
    #[arg(long, env = "FLANNELD_SUBNET_LEASE_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    subnet_lease_ttl: Duration,
    /// How often to re-check the kernel against the leases, e.g. 10s (weft extension).
    #[arg(long, env = "FLANNELD_RESYNC_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    resync_interval: Duration,
    /// How often to check the iptables rules and restore them, in seconds.
    #[arg(long, env = "FLANNELD_IPTABLES_RESYNC", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    iptables_resync: u64,
    /// Masquerade traffic from the overlay to the outside (nat chain FLANNEL-POSTRTG).
    #[arg(long, env = "FLANNELD_IP_MASQ", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new())]
    ip_masq: bool,
    /// Accept overlay traffic in FORWARD (filter chain FLANNEL-FWD), even under a DROP policy.
    #[arg(long, env = "FLANNELD_IPTABLES_FORWARD_RULES", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", value_parser = BoolishValueParser::new())]
    iptables_forward_rules: bool,
    /// Address /healthz and /readyz listen on (flanneld's default is 0.0.0.0; weft keeps
    /// them local unless told otherwise).
    #[arg(long, env = "FLANNELD_HEALTHZ_IP", default_value = "127.0.0.1")]
    healthz_ip: std::net::IpAddr,
    /// Port of /healthz and /readyz; 0 disables them.
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = 0)]
    healthz_port: u16,
    /// Address /metrics listens on (weft extension).
    #[arg(long, env = "FLANNELD_METRICS_IP", default_value = "127.0.0.1")]
    metrics_ip: std::net::IpAddr,
    /// Port of the Prometheus /metrics endpoint; 0 disables it (weft extension).
    #[arg(long, env = "FLANNELD_METRICS_PORT", default_value_t = 0)]
    metrics_port: u16,
    /// Names across hosts: publish this host's running containers in etcd under their names
    /// (SkyDNS layout), and serve DNS for them on docker0's address (UDP and TCP port 53), other
    /// names through the resolvers of /etc/resolv.conf (weft extension). Off by default: then
    /// weftd talks to neither docker nor DNS clients. With `docker-opts`: also write docker's
    /// --dns=<docker0 address> and --dns-search=<names domain>.
    #[arg(long, global = true, env = "FLANNELD_NAMES", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = BoolishValueParser::new())]
    names: bool,
    /// The DNS domain containers' names are published and served under (db.weft.local is
    /// /skydns/local/weft/db; weft extension).
    #[arg(long, global = true, env = "FLANNELD_NAMES_DOMAIN", default_value = "weft.local")]
    names_domain: Domain,
    /// The docker daemon to follow with --names: unix://PATH or tcp://HOST:PORT.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
    /// Lifetime of the etcd lease the names hang on, renewed every third of it: a host that
    /// dies takes its names with it after this long (weft extension).
    #[arg(long, env = "FLANNELD_NAMES_LEASE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    names_lease_ttl: Duration,
    /// Log verbosity: 0 info, 1 debug, 2 or more trace. RUST_LOG overrides it.
    #[arg(long = "v", env = "FLANNELD_V", default_value_t = 0)]
    verbosity: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Without a command, weftd runs the daemon.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write docker daemon options (--bip, --mtu, --ip-masq) from a subnet file, byte for byte
    /// as flannel's mk-docker-opts.sh writes them. With neither -i nor -c, both kinds are written.
    DockerOpts(DockerOptsFlags),
    /// Show the overlay as etcd and this host's kernel see it: the network config, every lease,
    /// and whether each peer's route, ARP and FDB entries are present and right. Exits 0 when
    /// healthy, 1 when something is missing or wrong, 2 when it cannot tell (etcd unreachable).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print docker's legacy link variables (DB_PORT, DB_PORT_6379_TCP_ADDR, ..., DB_NAME) for
    /// a published name, read from etcd, as KEY=value lines for `docker run --env-file`.
    LinkEnv(LinkEnvFlags),
}

#[derive(Debug, Args)]
struct LinkEnvFlags {
    /// The published name (a DNS label: `db` for db.weft.local).
    name: String,
    /// The alias the variables are named after (DB_... for db); the name by default.
    #[arg(long)]
    alias: Option<String>,
    /// The container the variables are for, in <ALIAS>_NAME=/<recipient>/<alias>.
    #[arg(long, default_value = link_env::DEFAULT_RECIPIENT)]
    recipient: String,
}

#[derive(Debug, Args)]
struct DockerOptsFlags {
    /// Subnet file to read.
    #[arg(short = 'f', value_name = "SUBNET-FILE", default_value = "/run/flannel/subnet.env")]
    subnet_file: PathBuf,
    /// Docker environment file to write.
    #[arg(short = 'd', value_name = "DOCKER-ENV-FILE", default_value = "/run/docker_opts.env")]
    docker_env: PathBuf,
    /// Write each option as its own variable, e.g. DOCKER_OPT_MTU="--mtu=1450".
    #[arg(short = 'i')]
    individual: bool,
    /// Write all options combined into one variable (see -k).
    #[arg(short = 'c')]
    combined: bool,
    /// Name of the combined variable.
    #[arg(short = 'k', value_name = "COMBINED-KEY", default_value = "DOCKER_OPTS")]
    combined_key: String,
    /// Leave --ip-masq out (for old docker versions).
    #[arg(short = 'm')]
    no_ip_masq: bool,
    /// Also write docker's --allow-direct-routing (Docker 28.2 and later), as the variable
    /// DOCKER_OPT_ALLOW_DIRECT_ROUTING and in the combined one: without it, Docker 28's
    /// iptables rules drop overlay traffic routed straight to containers. Off by default.
    #[arg(long)]
    allow_direct_routing: bool,
    /// Also write docker's IPv6 options for the default bridge from the subnet file's
    /// FLANNEL_IPV6_SUBNET (a dual-stack network): DOCKER_OPT_IPV6="--ipv6" and
    /// DOCKER_OPT_FIXED_CIDR_V6="--fixed-cidr-v6=<FLANNEL_IPV6_SUBNET>", and both in the combined
    /// one. An error if the subnet file has no IPv6 subnet. Off by default.
    #[arg(long)]
    ipv6: bool,
}

impl DockerOptsFlags {
    /// The request, with `--names`' domain when names across hosts are on (a global flag).
    fn request(self, names_domain: Option<Domain>) -> DockerOptsRequest {
        DockerOptsRequest {
            subnet_file: self.subnet_file,
            docker_env: self.docker_env,
            individual: self.individual,
            combined: self.combined,
            combined_key: self.combined_key,
            ip_masq: !self.no_ip_masq,
            allow_direct_routing: self.allow_direct_routing,
            ipv6: self.ipv6,
            names_domain,
        }
    }
}

/// Long flags that Go's flag package lets users write with a single dash.
fn go_style(args: impl Iterator<Item = String>) -> Vec<String> {
    let names = Flags::command().get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect::<Vec<_>>();
    flanneld_flags::go_style(&names, args)
}

fn options(flags: Flags) -> anyhow::Result<DaemonOptions> {
    if flags.names {
        weft::names::docker::check_host(&flags.docker_host)?;
    }
    let iface_regex = flags
        .iface_regex
        .iter()
        .map(|r| regex::Regex::new(r).with_context(|| format!("--iface-regex {r:?} is not a valid regular expression")))
        .collect::<anyhow::Result<_>>()?;
    Ok(DaemonOptions {
        etcd: EtcdOptions {
            endpoints: flags.etcd_endpoints,
            prefix: flags.etcd_prefix,
            username: flags.etcd_username,
            password: flags.etcd_password,
            ca_file: flags.etcd_cafile,
            cert_file: flags.etcd_certfile,
            key_file: flags.etcd_keyfile,
        },
        underlay: UnderlayChoice {
            ifaces: flags.iface,
            iface_regex,
            can_reach: flags.iface_can_reach,
            public_ip: flags.public_ip,
            public_ipv6: flags.public_ipv6,
        },
        subnet_file: flags.subnet_file,
        lease_ttl: flags.subnet_lease_ttl,
        renew_margin: Duration::from_secs(flags.subnet_lease_renew_margin * 60),
        resync_interval: flags.resync_interval,
        iptables_resync: Duration::from_secs(flags.iptables_resync),
        ip_masq: flags.ip_masq,
        iptables_forward_rules: flags.iptables_forward_rules,
        // Bound only when the daemon runs (`with_listeners`): `weftd status` on the same host,
        // with the same FLANNELD_* environment, must not try to take the daemon's ports.
        healthz: None,
        metrics: None,
        names_dns: flags
            .names
            .then(|| DnsOptions { domain: flags.names_domain.clone(), resolv_conf: PathBuf::from("/etc/resolv.conf") }),
        names: flags.names.then_some(NamesOptions {
            domain: flags.names_domain,
            docker_host: flags.docker_host,
            lease_ttl: flags.names_lease_ttl,
        }),
    })
}

type Port = (std::net::IpAddr, u16);

/// Binds the sockets the daemon's HTTP endpoints listen on (`--healthz-*`, `--metrics-*`), here,
/// before the daemon starts; port 0 means the endpoint is off.
fn with_listeners(mut options: DaemonOptions, (healthz, metrics): (Port, Port)) -> anyhow::Result<DaemonOptions> {
    let bind = |(ip, port): Port| (port != 0).then(|| weft::observe::http::bind(std::net::SocketAddr::new(ip, port))).transpose();
    options.healthz = bind(healthz)?;
    options.metrics = bind(metrics)?;
    Ok(options)
}

fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // hickory-server logs every DNS query at info; weftd counts them instead (metrics).
    let quiet = std::env::var("RUST_LOG").map_or(true, |wanted| !wanted.contains("hickory"));
    let filter = if quiet { filter.add_directive("hickory_server=warn".parse().expect("a valid directive")) } else { filter };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// `weftd status`: exit 0 healthy, 1 unhealthy, 2 unable to tell.
fn show_status(flags: Flags, json: bool) -> ExitCode {
    let names = flags.names.then(|| flags.names_domain.clone());
    let result = options(flags).and_then(|options| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let kernel = weft::netlink::Kernel::connect()?;
            let observed = status::observe(&options.etcd, &options.underlay, &kernel, names.as_ref()).await?;
            Ok::<_, anyhow::Error>(status::assess(&observed))
        })
    });
    match result {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("status serializes"));
            } else {
                print!("{}", status::render(&report));
            }
            if report.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("weftd status: {}", weft::logtext::error_line(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// `weftd link-env`: exit 0 with the variables on stdout, 1 when the name is unknown or etcd
/// cannot be read.
fn show_link_env(flags: Flags, link: LinkEnvFlags) -> ExitCode {
    let domain = flags.names_domain.clone();
    let alias = link.alias.clone().unwrap_or_else(|| link.name.clone());
    let result = options(flags).and_then(|options| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let registry = runtime.block_on(weft::etcd::Registry::connect(&options.etcd))?;
        Ok(runtime.block_on(link_env::read(&registry, &domain, &link.name, &alias, &link.recipient))?)
    });
    let Err(e) = result.map(|env| print!("{env}")) else { return ExitCode::SUCCESS };
    eprintln!("weftd link-env: {}", weft::logtext::error_line(e.as_ref()));
    ExitCode::FAILURE
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = int.recv() => tracing::info!("received SIGINT"),
    }
}

fn main() -> ExitCode {
    libc_setup::tune_malloc();
    libc_setup::resolve_names_with_files_and_dns();
    let screened = match flanneld_flags::screen(std::env::args().collect(), |key| std::env::var(key).ok()) {
        Ok(screened) => screened,
        Err(refused) => {
            for line in &refused.0 {
                eprintln!("weftd: {line}");
            }
            // clap's exit code for a usage error.
            return ExitCode::from(2);
        }
    };
    let matches = Flags::command().get_matches_from(go_style(screened.args.into_iter()));
    let mut flags = Flags::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if flags.command.is_some() {
        for ignored in &screened.ignored {
            eprintln!("weftd: warning: {ignored}");
        }
    }
    match flags.command.take() {
        Some(Command::DockerOpts(docker)) => {
            let names_domain = flags.names.then(|| flags.names_domain.clone());
            return match docker_opts::write_docker_opts(&docker.request(names_domain)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weftd docker-opts: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Status { json }) => return show_status(flags, json),
        Some(Command::LinkEnv(link)) => return show_link_env(flags, link),
        None => {}
    }
    init_logging(flags.verbosity);
    for ignored in &screened.ignored {
        tracing::warn!(flag = %ignored.0, "{ignored}");
    }
    let ports = ((flags.healthz_ip, flags.healthz_port), (flags.metrics_ip, flags.metrics_port));
    let result = options(flags).and_then(|options| with_listeners(options, ports)).and_then(|options| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(daemon::run(options, shutdown_signal())).map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = weft::logtext::error_line(e.as_ref());
            tracing::error!("{line}");
            eprintln!("weftd: {line}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
