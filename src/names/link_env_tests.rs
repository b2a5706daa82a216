//! Unit tests of the link variables against docker's own (moby v28.5.2 daemon/links tests).

use super::*;

fn records(container: &str, host: &str, ports: &[(u16, Proto)]) -> Vec<(RecordId, SkyRecord)> {
    let host: IpAddr = host.parse().unwrap();
    std::iter::once(None)
        .chain(ports.iter().copied().map(Some))
        .map(|port| (RecordId::ipv4(container, port), SkyRecord { host, port: port.map(|p| p.0), ttl: 30 }))
        .collect()
}

/// moby's TestLinkNaming: alias `docker-1`, one port.
#[test]
fn one_port_as_docker_writes_it() {
    let env = link_env("docker-1", "db", &records("0123456789ab", "172.0.17.2", &[(6379, Proto::Tcp)])).unwrap();
    assert_eq!(
        env,
        "DOCKER_1_PORT=tcp://172.0.17.2:6379\n\
         DOCKER_1_PORT_6379_TCP=tcp://172.0.17.2:6379\n\
         DOCKER_1_PORT_6379_TCP_ADDR=172.0.17.2\n\
         DOCKER_1_PORT_6379_TCP_PORT=6379\n\
         DOCKER_1_PORT_6379_TCP_PROTO=tcp\n\
         DOCKER_1_NAME=/db/docker-1\n"
    );
}

/// moby's TestLinkMultipleEnv (without its `_ENV_` line: weft never publishes the
/// environment): TCP first, a run of consecutive ports gets `_START`/`_END`, in the order
/// docker's loop writes them.
#[test]
fn port_ranges_and_protocol_order_as_docker_writes_them() {
    let ports = [(6300, Proto::Udp), (6379, Proto::Tcp), (6380, Proto::Tcp), (6381, Proto::Tcp), (6382, Proto::Udp)];
    let env = link_env("docker", "db", &records("0123456789ab", "172.0.17.2", &ports)).unwrap();
    let port = |n: u16, proto: &str| {
        let upper = proto.to_ascii_uppercase();
        format!(
            "DOCKER_PORT_{n}_{upper}={proto}://172.0.17.2:{n}\nDOCKER_PORT_{n}_{upper}_ADDR=172.0.17.2\n\
             DOCKER_PORT_{n}_{upper}_PORT={n}\nDOCKER_PORT_{n}_{upper}_PROTO={proto}\n"
        )
    };
    let range = "DOCKER_PORT_6379_TCP_START=tcp://172.0.17.2:6379\nDOCKER_PORT_6379_TCP_PORT_START=6379\n\
                 DOCKER_PORT_6379_TCP_END=tcp://172.0.17.2:6381\nDOCKER_PORT_6379_TCP_PORT_END=6381\n";
    let expected = [
        "DOCKER_PORT=tcp://172.0.17.2:6379\n".to_string(),
        port(6379, "tcp"),
        port(6380, "tcp"),
        port(6381, "tcp"),
        port(6300, "udp"),
        range.to_string(),
        port(6382, "udp"),
        "DOCKER_NAME=/db/docker\n".to_string(),
    ]
    .concat();
    assert_eq!(env, expected);
    // The same set of lines as moby's expected list, sorted as its test sorts them.
    let mut lines: Vec<&str> = env.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 1 + 5 * 4 + 4 + 1);
    assert_eq!(
        lines[..3],
        ["DOCKER_NAME=/db/docker", "DOCKER_PORT=tcp://172.0.17.2:6379", "DOCKER_PORT_6300_UDP=udp://172.0.17.2:6300"]
    );
}

#[test]
fn no_ports_gives_the_name_alone_and_no_records_nothing() {
    assert_eq!(link_env("db", "weft", &records("0123456789ab", "10.5.72.2", &[])).unwrap(), "DB_NAME=/weft/db\n");
    assert_eq!(link_env("db", "weft", &[]), None);
}

#[test]
fn of_two_containers_sharing_a_name_the_lowest_id_is_linked() {
    let mut both = records("bbbbbbbbbbbb", "10.5.9.2", &[(80, Proto::Tcp)]);
    both.extend(records("aaaaaaaaaaaa", "10.5.72.2", &[(6379, Proto::Tcp)]));
    let env = link_env("db", "weft", &both).unwrap();
    assert!(env.starts_with("DB_PORT=tcp://10.5.72.2:6379\n") && !env.contains("10.5.9.2"), "{env}");
}
