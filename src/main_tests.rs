//! Unit tests of weftd's command line.

use super::*;

fn parse(args: &[&str]) -> Flags {
    let args = std::iter::once("weftd").chain(args.iter().copied()).map(String::from);
    let matches = Flags::command().try_get_matches_from(go_style(args)).unwrap();
    Flags::from_arg_matches(&matches).unwrap()
}

#[test]
fn go_style_single_and_double_dash_flags() {
    let flags = parse(&["-etcd-endpoints=http://a:2379,http://b:2379", "--iface", "eth1", "-iface=10.0.0.5", "-ip-masq", "-v=2"]);
    assert_eq!(flags.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
    assert_eq!(flags.iface, ["eth1", "10.0.0.5"]);
    assert!(flags.ip_masq);
    assert_eq!(flags.verbosity, 2);
    let flags = parse(&["--ip-masq=false", "-subnet-lease-ttl", "30s", "--subnet-lease-renew-margin=5"]);
    assert!(!flags.ip_masq);
    assert_eq!(flags.subnet_lease_ttl, Duration::from_secs(30));
    assert_eq!(flags.subnet_lease_renew_margin, 5);
    let flags = parse(&["-iptables-resync=30", "--iface-can-reach", "198.18.0.2"]);
    assert_eq!(flags.iptables_resync, 30);
    assert_eq!(flags.iface_can_reach, Some(Ipv4Addr::new(198, 18, 0, 2)));
}

#[test]
fn public_ipv6_in_every_form_flanneld_takes() {
    let fd = |last| Some(Ipv6Addr::new(0xfd18, 0, 0, 0, 0, 0, 0, last));
    assert_eq!(parse(&["-public-ipv6=fd18::11"]).public_ipv6, fd(0x11));
    assert_eq!(parse(&["-public-ipv6", "fd18::12"]).public_ipv6, fd(0x12));
    assert_eq!(parse(&["--public-ipv6=fd18::13", "-iface=fd18::13"]).public_ipv6, fd(0x13));
    assert_eq!(parse(&["-iface=fd18::13"]).iface, ["fd18::13"]);
    assert_eq!(parse(&[]).public_ipv6, None);
    let args = ["weftd", "-public-ipv6=10.0.0.1"].map(String::from);
    assert!(Flags::command().try_get_matches_from(go_style(args.into_iter())).is_err(), "an IPv4 address is refused");
}

#[test]
fn flanneld_defaults() {
    let flags = parse(&[]);
    assert_eq!(flags.etcd_prefix, "/coreos.com/network");
    assert_eq!(flags.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
    assert_eq!(flags.subnet_lease_ttl, Duration::from_secs(24 * 3600));
    assert!(flags.iptables_forward_rules && !flags.ip_masq);
    assert_eq!(flags.iptables_resync, 5);
    assert!(!flags.names);
    assert_eq!(flags.names_domain.to_string(), "weft.local");
    let flags = parse(&["--names", "-names-domain=Cluster.Example."]);
    assert!(flags.names);
    assert_eq!(flags.names_domain.to_string(), "cluster.example");
}

#[test]
fn names_are_off_unless_asked_for() {
    let flags = parse(&[]);
    assert!(!flags.names);
    assert_eq!(flags.names_domain.to_string(), "weft.local");
    assert_eq!(flags.names_lease_ttl, Duration::from_secs(30));
    assert!(options(flags).unwrap().names.is_none(), "no docker connection, no extra task");
    let flags = parse(&["--names", "--names-domain", "Cluster.Example.", "--docker-host", "tcp://127.0.0.1:2375"]);
    let names = options(flags).unwrap().names.expect("--names");
    assert_eq!((names.domain.to_string(), names.docker_host.as_str()), ("cluster.example".into(), "tcp://127.0.0.1:2375"));
    assert!(options(parse(&["--names", "--docker-host", "/var/run/docker.sock"])).is_err(), "no scheme");
    let refused = Flags::command().try_get_matches_from(["weftd", "--names-domain", "not_a_domain"]);
    assert!(refused.is_err());
}
