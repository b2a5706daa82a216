//! Unit tests of docker-opts: the script's variables, options and output for given inputs.

use super::*;

const SUBNET_FILE: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n";

fn request() -> DockerOptsRequest {
    DockerOptsRequest {
        subnet_file: "/run/flannel/subnet.env".into(),
        docker_env: "/run/docker_opts.env".into(),
        individual: false,
        combined: false,
        combined_key: "DOCKER_OPTS".into(),
        ip_masq: true,
        allow_direct_routing: false,
        ipv6: false,
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
    let names = DockerOptsRequest { names_domain: Some("weft.local".parse().unwrap()), ..request() };
    let with_names = output(&names, &[], SUBNET_FILE).unwrap();
    let as_env = [(DNS.0, "--dns=10.1.74.1"), (DNS_SEARCH.0, "--dns-search=weft.local")];
    assert_eq!(with_names, output(&request(), &as_env, SUBNET_FILE).unwrap());
    assert!(with_names.contains("DOCKER_OPTS=\" --bip=10.1.74.1/24 --dns=10.1.74.1 --dns-search=weft.local --ip-masq"));
    // The domain is written as the DNS server serves it: lower case, no root dot.
    let upper = DockerOptsRequest { names_domain: Some("Cluster.Example.".parse().unwrap()), ..request() };
    assert!(output(&upper, &[], SUBNET_FILE).unwrap().contains("DOCKER_OPT_DNS_SEARCH=\"--dns-search=cluster.example\"\n"));
    assert!(!output(&request(), &[], SUBNET_FILE).unwrap().contains("dns"));
}

const DUAL_STACK_FILE: &str = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\n\
    FLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n";

#[test]
fn ipv6_adds_two_docker_opt_variables_in_name_order() {
    let ipv6 = DockerOptsRequest { ipv6: true, ..request() };
    assert_eq!(
        output(&ipv6, &[], DUAL_STACK_FILE).unwrap(),
        "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=fd00:1:0:4a::1/64\"\n\
         DOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n\
         DOCKER_OPTS=\" --bip=10.1.74.1/24 --fixed-cidr-v6=fd00:1:0:4a::1/64 --ip-masq=true --ipv6 --mtu=1472\"\n"
    );
    let as_if_in_env = [(IPV6.0, IPV6.1), (FIXED_CIDR_V6.0, "--fixed-cidr-v6=fd00:1:0:4a::1/64")];
    assert_eq!(output(&ipv6, &[], DUAL_STACK_FILE).unwrap(), output(&request(), &as_if_in_env, DUAL_STACK_FILE).unwrap());
    // Without the option a dual-stack file gives the IPv4-only output.
    assert_eq!(output(&request(), &[], DUAL_STACK_FILE).unwrap(), output(&request(), &[], SUBNET_FILE).unwrap());
}

#[test]
fn ipv6_without_or_with_a_bad_ipv6_subnet_is_refused() {
    let ipv6 = DockerOptsRequest { ipv6: true, ..request() };
    let error = output(&ipv6, &[], SUBNET_FILE).unwrap_err().to_string();
    assert!(error.starts_with("--ipv6: neither the subnet file") && error.contains("\"EnableIPv6\": true"), "{error}");
    let empty = DUAL_STACK_FILE.replace("FLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64", "FLANNEL_IPV6_SUBNET=");
    assert!(matches!(output(&ipv6, &[], &empty), Err(DockerOptsError::NoIpv6Subnet { .. })));
    for bad in ["fd00:1:0:4a::1", "10.1.74.1/24", "fd00::/129"] {
        let file = DUAL_STACK_FILE.replace("fd00:1:0:4a::1/64", bad);
        let error = output(&ipv6, &[], &file).unwrap_err().to_string();
        assert!(error.contains(&format!("FLANNEL_IPV6_SUBNET={bad:?}, which is not an IPv6 CIDR")), "{error}");
    }
    assert!(output(&ipv6, &[("FLANNEL_IPV6_SUBNET", "fd00:9::1/64")], SUBNET_FILE).unwrap().contains("=fd00:9::1/64"));
}

/// `"EnableIPv4": false`: weftd writes only the IPv6 lines.
const IPV6_ONLY_FILE: &str =
    "FLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n";

#[test]
fn an_ipv6_only_subnet_file_gives_no_bip_with_ipv6() {
    let ipv6 = DockerOptsRequest { ipv6: true, ..request() };
    assert_eq!(
        output(&ipv6, &[], IPV6_ONLY_FILE).unwrap(),
        "DOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=fd00:1:0:4a::1/64\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n\
         DOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu=1430\"\n\
         DOCKER_OPTS=\" --fixed-cidr-v6=fd00:1:0:4a::1/64 --ip-masq=true --ipv6 --mtu=1430\"\n"
    );
    // A FLANNEL_SUBNET from the environment counts, as when the script sources the file over it.
    let with_env = output(&ipv6, &[("FLANNEL_SUBNET", "10.1.74.1/24")], IPV6_ONLY_FILE).unwrap();
    assert!(with_env.starts_with("DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\n"), "{with_env}");
}

#[test]
fn an_ipv6_only_subnet_file_without_ipv6_or_with_names_is_refused() {
    let error = output(&request(), &[], IPV6_ONLY_FILE).unwrap_err();
    assert!(matches!(error, DockerOptsError::Ipv6OnlyWithoutIpv6 { .. }), "{error}");
    assert!(error.to_string().contains("pass --ipv6 for an IPv6-only network"), "{error}");
    for ipv6 in [false, true] {
        let names = DockerOptsRequest { ipv6, names_domain: Some("weft.local".parse().unwrap()), ..request() };
        let error = output(&names, &[], IPV6_ONLY_FILE).unwrap_err();
        assert!(matches!(error, DockerOptsError::NamesWithoutIpv4 { .. }), "{error}");
        assert!(error.to_string().starts_with("--names: the subnet file /run/flannel/subnet.env has no FLANNEL_SUBNET"));
    }
    // Neither subnet: the file is not weftd's at all, whatever the flags.
    let neither = IPV6_ONLY_FILE.replace("FLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\n", "FLANNEL_IPV6_SUBNET=\n");
    for ipv6 in [false, true] {
        let error = output(&DockerOptsRequest { ipv6, ..request() }, &[], &neither).unwrap_err();
        assert!(matches!(error, DockerOptsError::Missing { key: "FLANNEL_SUBNET", .. }), "{error}");
    }
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
