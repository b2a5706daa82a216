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

/// One run of the script: weftd's arguments after `docker-opts -f S -d D`, its environment, the
/// subnet file, and what the script wrote. Cases with `--allow-direct-routing` were recorded
/// with `DOCKER_OPT_ALLOW_DIRECT_ROUTING=--allow-direct-routing` in the script's environment;
/// cases with `--ipv6` with `DOCKER_OPT_IPV6=--ipv6` and
/// `DOCKER_OPT_FIXED_CIDR_V6=--fixed-cidr-v6=<the file's FLANNEL_IPV6_SUBNET>` there.
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    subnet_file: &'static str,
    expected: &'static str,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case {
        name: "flannel_defaults",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "combined_key_set_in_env",
        args: &[],
        env: &[("DOCKER_OPTS", "--debug")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\"--debug  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "combined_key_value_with_spaces",
        args: &[],
        env: &[("DOCKER_OPTS", "--debug --tls")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\"--debug --tls  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "combined_key_empty_in_env",
        args: &[],
        env: &[("DOCKER_OPTS", "")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "individual_only",
        args: &["-i"],
        env: &[("DOCKER_OPTS", "--debug")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n",
    },
    Case {
        name: "combined_only",
        args: &["-c"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "individual_and_combined",
        args: &["-i", "-c"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "individual_and_combined_bundled",
        args: &["-ic"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "key_of_flannel_s_systemd_unit",
        args: &["-k", "DOCKER_NETWORK_OPTIONS"],
        env: &[("DOCKER_NETWORK_OPTIONS", "--debug")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_NETWORK_OPTIONS=\"--debug  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "custom_key_combined_only",
        args: &["-c", "-k", "DOCKER_NETWORK_OPTIONS"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_NETWORK_OPTIONS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "custom_key_ignores_docker_opts",
        args: &["-k", "OPTS"],
        env: &[("DOCKER_OPTS", "--debug")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nOPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "lower_case_custom_key",
        args: &["-k", "extra_opts"],
        env: &[("extra_opts", "--x")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nextra_opts=\"--x  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "m_leaves_ip_masq_out",
        args: &["-m"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n",
    },
    Case {
        name: "overlay_masquerades_so_docker_must_not",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1472\"\n",
    },
    Case {
        name: "overlay_masquerades_with_m",
        args: &["-m"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n",
    },
    Case {
        name: "m_skips_the_ipmasq_check",
        args: &["-m"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=yes\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n",
    },
    Case {
        name: "ipmasq_missing",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n",
    },
    Case {
        name: "ipmasq_empty",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --mtu=1472\"\n",
    },
    Case {
        name: "ipmasq_from_env",
        args: &[],
        env: &[("FLANNEL_IPMASQ", "true")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1472\"\n",
    },
    Case {
        name: "mtu_missing",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true\"\n",
    },
    Case {
        name: "mtu_empty",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPMASQ=false\nFLANNEL_MTU=\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true\"\n",
    },
    Case {
        name: "mtu_from_env",
        args: &[],
        env: &[("FLANNEL_MTU", "1400")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1400\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1400\"\n",
    },
    Case {
        name: "subnet_file_overrides_env",
        args: &[],
        env: &[("FLANNEL_MTU", "1400"), ("FLANNEL_SUBNET", "10.9.9.1/24"), ("FLANNEL_IPMASQ", "true")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "env_docker_opt_mtu_is_overridden",
        args: &[],
        env: &[("DOCKER_OPT_MTU", "--mtu=9000")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "env_docker_opt_mtu_kept_without_flannel_mtu",
        args: &[],
        env: &[("DOCKER_OPT_MTU", "--mtu=9000")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=9000\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=9000\"\n",
    },
    Case {
        name: "env_docker_opt_ipmasq_kept_with_m",
        args: &["-m"],
        env: &[("DOCKER_OPT_IPMASQ", "--ip-masq=false")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1472\"\n",
    },
    Case {
        name: "env_docker_opt_ipmasq_kept_without_flannel_ipmasq",
        args: &[],
        env: &[("DOCKER_OPT_IPMASQ", "--ip-masq=false")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=false --mtu=1472\"\n",
    },
    Case {
        name: "operator_options_in_name_order",
        args: &[],
        env: &[("DOCKER_OPT_LOG", "--log-level=warn"), ("DOCKER_OPT_A", "--a"), ("DOCKER_OPT_Z", "--z"), ("DOCKER_OPT_a", "--lower"), ("DOCKER_OPT__", "--u"), ("DOCKER_OPT_AB", "--ab")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_A=\"--a\"\nDOCKER_OPT_AB=\"--ab\"\nDOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_LOG=\"--log-level=warn\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPT_Z=\"--z\"\nDOCKER_OPT__=\"--u\"\nDOCKER_OPT_a=\"--lower\"\nDOCKER_OPTS=\" --a --ab --bip=10.1.74.1/24 --ip-masq=true --log-level=warn --mtu=1472 --z --u --lower\"\n",
    },
    Case {
        name: "any_name_containing_docker_opt_",
        args: &["-c"],
        env: &[("MY_DOCKER_OPT_X", "--my"), ("DOCKER_OPTS", "--debug"), ("XDOCKER_OPT_", "--x")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPTS=\"--debug  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472 --my --x\"\n",
    },
    Case {
        name: "any_value_containing_docker_opt_",
        args: &[],
        env: &[("FOO", "DOCKER_OPT_BAR"), ("BAR", "x=DOCKER_OPT_")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "BAR=\"x=DOCKER_OPT_\"\nDOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nFOO=\"DOCKER_OPT_BAR\"\nDOCKER_OPTS=\" x=DOCKER_OPT_ --bip=10.1.74.1/24 --ip-masq=true --mtu=1472 DOCKER_OPT_BAR\"\n",
    },
    Case {
        name: "empty_docker_opt_value",
        args: &[],
        env: &[("DOCKER_OPT_E", "")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_E=\"\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24  --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "shell_characters_pass_through",
        args: &[],
        env: &[("DOCKER_OPT_Q", "it's"), ("DOCKER_OPT_S", "$HOME"), ("DOCKER_OPT_D", "a\"b"), ("DOCKER_OPTS", "--label=\"a b\" $x")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_D=\"a\"b\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPT_Q=\"it's\"\nDOCKER_OPT_S=\"$HOME\"\nDOCKER_OPTS=\"--label=\"a b\" $x  --bip=10.1.74.1/24 a\"b --ip-masq=true --mtu=1472 it's $HOME\"\n",
    },
    Case {
        name: "subnet_file_sets_docker_variables",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\nDOCKER_OPTS=--debug\nDOCKER_OPT_LOG=--log-level=warn\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_LOG=\"--log-level=warn\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\"--debug  --bip=10.1.74.1/24 --ip-masq=true --log-level=warn --mtu=1472\"\n",
    },
    Case {
        name: "subnet_file_variable_overrides_env",
        args: &["-i"],
        env: &[("DOCKER_OPT_LOG", "--log-level=debug"), ("DOCKER_OPTS", "--env")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\nDOCKER_OPT_LOG=--log-level=warn\nDOCKER_OPTS=--file\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_LOG=\"--log-level=warn\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n",
    },
    Case {
        name: "subnet_file_with_comments_and_quotes",
        args: &[],
        env: &[],
        subnet_file: "# written by hand\n\nFLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=\"10.1.74.1/24\"\nFLANNEL_MTU=\"1472\"\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "allow_direct_routing",
        args: &["--allow-direct-routing"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_ALLOW_DIRECT_ROUTING=\"--allow-direct-routing\"\nDOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --allow-direct-routing --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "allow_direct_routing_individual_only",
        args: &["--allow-direct-routing", "-i"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_ALLOW_DIRECT_ROUTING=\"--allow-direct-routing\"\nDOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n",
    },
    Case {
        name: "allow_direct_routing_combined_key",
        args: &["--allow-direct-routing", "-c", "-k", "DOCKER_NETWORK_OPTIONS"],
        env: &[("DOCKER_NETWORK_OPTIONS", "--debug")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_NETWORK_OPTIONS=\"--debug  --allow-direct-routing --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "allow_direct_routing_with_m",
        args: &["--allow-direct-routing", "-m"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
        expected: "DOCKER_OPT_ALLOW_DIRECT_ROUTING=\"--allow-direct-routing\"\nDOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --allow-direct-routing --bip=10.1.74.1/24 --mtu=1472\"\n",
    },
    Case {
        name: "dual_stack_subnet_file",
        args: &[],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472\"\n",
    },
    Case {
        name: "ipv6",
        args: &["--ipv6"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=fd00:1:0:4a::1/64\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --bip=10.1.74.1/24 --fixed-cidr-v6=fd00:1:0:4a::1/64 --ip-masq=true --ipv6 --mtu=1472\"\n",
    },
    Case {
        name: "ipv6_individual_only",
        args: &["--ipv6", "-i"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=fd00:1:0:4a::1/64\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\n",
    },
    Case {
        name: "ipv6_combined_key",
        args: &["--ipv6", "-c", "-k", "DOCKER_NETWORK_OPTIONS"],
        env: &[("DOCKER_NETWORK_OPTIONS", "--debug")],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_NETWORK_OPTIONS=\"--debug  --bip=10.1.74.1/24 --fixed-cidr-v6=fd00:1:0:4a::1/64 --ip-masq=true --ipv6 --mtu=1472\"\n",
    },
    Case {
        name: "ipv6_allow_direct_routing_with_m",
        args: &["--ipv6", "--allow-direct-routing", "-m"],
        env: &[],
        subnet_file: "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:4a::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n",
        expected: "DOCKER_OPT_ALLOW_DIRECT_ROUTING=\"--allow-direct-routing\"\nDOCKER_OPT_BIP=\"--bip=10.1.74.1/24\"\nDOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6=fd00:1:0:4a::1/64\"\nDOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu=1472\"\nDOCKER_OPTS=\" --allow-direct-routing --bip=10.1.74.1/24 --fixed-cidr-v6=fd00:1:0:4a::1/64 --ipv6 --mtu=1472\"\n",
    },
];

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

/// A dual-stack weftd writes subnet.env; `weftd docker-opts --ipv6` turns it into the options a
/// dual-stack docker needs, in the script's order, byte for byte; without `--ipv6` the output is
/// the IPv4 one.
#[test]
fn docker_opts_ipv6_from_a_dual_stack_weftd_subnet_file() {
    let mut lab = lab::Lab::new();
    lab.put_network_config(
        r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#,
    );
    let n = lab.add_host();
    let _daemon = lab.start_weftd(n, &[]);
    let env = lab.wait_subnet_env(n, std::time::Duration::from_secs(20));
    let (bip, v6, mtu) = (&env["FLANNEL_SUBNET"], &env["FLANNEL_IPV6_SUBNET"], &env["FLANNEL_MTU"]);
    let scratch = Scratch::new();
    let out = scratch.path("docker_opts.env");
    let subnet_file = &lab.host(n).subnet_file;
    let run = docker_opts(subnet_file, &out, &["--ipv6"], &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let expected = format!(
        "DOCKER_OPT_BIP=\"--bip={bip}\"\nDOCKER_OPT_FIXED_CIDR_V6=\"--fixed-cidr-v6={v6}\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\n\
         DOCKER_OPT_IPV6=\"--ipv6\"\nDOCKER_OPT_MTU=\"--mtu={mtu}\"\n\
         DOCKER_OPTS=\" --bip={bip} --fixed-cidr-v6={v6} --ip-masq=true --ipv6 --mtu={mtu}\"\n"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    assert!(v6.starts_with("fd00:5:") && v6.ends_with("::1/64"), "{v6}");
    let run = docker_opts(subnet_file, &out, &[], &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ipv4_only = format!(
        "DOCKER_OPT_BIP=\"--bip={bip}\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu={mtu}\"\n\
         DOCKER_OPTS=\" --bip={bip} --ip-masq=true --mtu={mtu}\"\n"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), ipv4_only);
}
