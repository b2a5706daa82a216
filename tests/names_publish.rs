//! Names across hosts, the publishing half (`--names`): real dockerd per lab host, real etcd,
//! real weftd. A weftd started before its dockerd attaches to it and publishes the container
//! "db" in etcd in the SkyDNS layout (checked with `etcdctl get`, key and JSON exactly); a
//! name that is no DNS label is skipped with one warning; `weftd link-env db` prints docker's
//! link variables byte for byte, and a container on host B started with them as `--env-file`
//! reaches db across the overlay; host B's DNS server answers db's A and SRV records to that
//! container; `weftd status --names` and `/metrics` count it; `docker stop` withdraws it
//! within 1 s; a docker restart publishes it again; a weftd restart deletes the names of
//! containers removed meanwhile and leaves the others untouched; a weftd killed for good
//! takes its names with it when its names lease expires.
//!
//! Needs root and the Debian packages `docker.io busybox-static` (`make deps`).

use std::fs;
use std::time::{Duration, Instant};

use lab::docker::{docker_opts_words, weftd_docker_opts, BusyboxImage, Dockerd};
use lab::names::EtcdRecord;
use lab::{poll, poll_for, Lab, Weftd};

const CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const CONVERGE: Duration = Duration::from_secs(30);
const IMAGE: &str = "weft-busybox:latest";
const DB_PREFIX: &str = "/skydns/local/weft/db/";
const PORT: u16 = 6379;
/// In host A's own namespace, so the same port in every lab.
const METRICS_PORT: &str = "9464";

/// Host A's weftd with names on, following the dockerd that will run at `docker_host`, given
/// as `DOCKER_HOST` (on the command line, the lab's dockerd teardown would take weftd for one
/// of dockerd's leftovers: it kills every process naming the daemon's dir).
fn start_names_weftd(lab: &Lab, n: usize, docker_host: &str, lease_ttl: &str) -> Weftd {
    let args = ["--ip-masq", "--names", "--names-lease-ttl", lease_ttl, "--metrics-port", METRICS_PORT];
    lab.start_weftd_env(n, &args, &[("DOCKER_HOST", docker_host)])
}

fn start_dockerd(lab: &Lab, n: usize) -> (Dockerd, Vec<String>) {
    lab.host(n).exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let words = docker_opts_words(&weftd_docker_opts(lab, n, &[]));
    (Dockerd::start(lab, n, &words), words)
}

/// `docker run -d --restart always --name NAME --expose 6379`: (full id, address).
fn run_exposed(dockerd: &Dockerd, name: &str) -> (String, String) {
    let id = dockerd.docker_ok(&["run", "-d", "--restart", "always", "--name", name, "--expose", "6379", IMAGE, "sleep", "900"]);
    (id, container_ip(dockerd, name))
}

fn container_ip(dockerd: &Dockerd, name: &str) -> String {
    dockerd.docker_ok(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", name])
}

/// db's two records, exactly as the publisher writes them.
fn db_records(id: &str, ip: &str) -> Vec<(String, String)> {
    vec![
        (format!("{DB_PREFIX}{}", &id[..12]), format!(r#"{{"host":"{ip}","ttl":30}}"#)),
        (format!("{DB_PREFIX}{}-{PORT}-tcp", &id[..12]), format!(r#"{{"host":"{ip}","port":{PORT},"ttl":30}}"#)),
    ]
}

fn key_values(records: &[EtcdRecord]) -> Vec<(String, String)> {
    records.iter().map(|r| (r.key.clone(), r.value.clone())).collect()
}

fn wait_records(lab: &Lab, prefix: &str, want: &[(String, String)], what: &str) -> Vec<EtcdRecord> {
    poll(what, CONVERGE, || {
        let records = lab.etcd_records(prefix);
        (key_values(&records) == want).then_some(records)
    })
}

#[test]
fn containers_are_published_followed_and_withdrawn() {
    let mut lab = Lab::new();
    lab.put_network_config(CONFIG);
    let (a, b) = (lab.add_host(), lab.add_host());
    // weftd before docker, as systemd orders them.
    let docker_host = Dockerd::socket_uri(&lab, a);
    let mut weftd_a = start_names_weftd(&lab, a, &docker_host, "60s");
    let _weftd_b = start_names_weftd(&lab, b, &Dockerd::socket_uri(&lab, b), "60s");
    let gateway_b = lab.wait_subnet_env(b, CONVERGE)["FLANNEL_SUBNET"].split('/').next().unwrap().to_string();
    lab.wait_subnet_env(a, CONVERGE);
    weftd_a.wait_log("docker is not answering yet", CONVERGE);
    let image = BusyboxImage::build(lab.dir());
    let (mut docker_a, words_a) = start_dockerd(&lab, a);
    let (docker_b, _) = start_dockerd(&lab, b);
    weftd_a.wait_log("attached to docker", CONVERGE);
    for dockerd in [&docker_a, &docker_b] {
        dockerd.import(&image, IMAGE);
    }

    let (id, ip) = run_exposed(&docker_a, "db");
    let web_id = docker_a.docker_ok(&["run", "-d", "--name", "web", IMAGE, "sleep", "900"]);
    docker_a.docker_ok(&["run", "-d", "--name", "bad_", IMAGE, "sleep", "900"]);
    wait_records(&lab, DB_PREFIX, &db_records(&id, &ip), "db's records in etcd");
    let web = lab.etcd_records("/skydns/local/weft/web/");
    assert_eq!(web.len(), 1, "web: one record, no port: {web:?}");
    assert_eq!(lab.etcd_records("/skydns/local/weft/bad-"), [], "a name that is no DNS label is not published");

    check_link_env(&lab, b, &docker_a, &docker_b, &ip);
    check_dns_on_b(&docker_b, &gateway_b, &ip);
    check_status(&lab, a, &ip);

    // Withdrawn at once when it stops, published again when it starts.
    docker_a.docker_ok(&["stop", "-t", "1", "db"]);
    let stopped = Instant::now();
    poll_for(Duration::from_secs(1), Duration::from_millis(20), || lab.etcd_records(DB_PREFIX).is_empty().then_some(()))
        .unwrap_or_else(|| panic!("db's records still in etcd 1 s after `docker stop`: {:?}", lab.etcd_records(DB_PREFIX)));
    println!("db withdrawn {:.0} ms after docker stop returned", stopped.elapsed().as_secs_f64() * 1e3);
    docker_a.docker_ok(&["start", "db"]);
    wait_records(&lab, DB_PREFIX, &db_records(&id, &container_ip(&docker_a, "db")), "db published again after docker start");

    // dockerd restarted: its names are withdrawn while it is down; weftd attaches again, and
    // db (restart always) is published again.
    docker_a.restart(&words_a);
    poll("weftd to attach to the restarted dockerd", CONVERGE, || {
        (weftd_a.log().matches("attached to docker").count() == 2).then_some(())
    });
    let ip = container_ip(&docker_a, "db");
    wait_records(&lab, DB_PREFIX, &db_records(&id, &ip), "db published again after dockerd restarted");
    let withdrawn = weftd_a.log().matches("name withdrawn name=db").count();
    assert_eq!(withdrawn, 2, "withdrawn on docker stop and while dockerd restarted:\n{}", weftd_a.log());
    let warnings = weftd_a.log().lines().filter(|l| l.contains("container not published") && l.contains("bad_")).count();
    assert_eq!(warnings, 1, "one warning for the name that is no label:\n{}", weftd_a.log());

    check_weftd_restart(&lab, a, &mut weftd_a, &docker_a, &docker_host, &web_id);
}

/// weftd restarted: names of containers removed meanwhile go, the others stay untouched
/// (same mod revision: the restarted weftd adopted the names lease). Then, with a short
/// lease, weftd killed for good: its names expire with the lease.
fn check_weftd_restart(lab: &Lab, a: usize, weftd: &mut Weftd, docker_a: &Dockerd, docker_host: &str, web_id: &str) {
    let db_before = lab.etcd_records(DB_PREFIX);
    let web_prefix = "/skydns/local/weft/web/";
    // web has no restart policy: the dockerd restart left it stopped.
    docker_a.docker_ok(&["start", "web"]);
    let web_key = format!("{web_prefix}{}", &web_id[..12]);
    poll("web published", CONVERGE, || (lab.etcd_records(web_prefix).iter().map(|r| &r.key).eq([&web_key])).then_some(()));
    weftd.kill9();
    docker_a.docker_ok(&["rm", "-f", "web"]);
    let mut restarted = start_names_weftd(lab, a, docker_host, "60s");
    poll("web's record deleted by the restarted weftd", CONVERGE, || lab.etcd_records(web_prefix).is_empty().then_some(()));
    restarted.wait_log("adopting the names' etcd lease", CONVERGE);
    assert_eq!(lab.etcd_records(DB_PREFIX), db_before, "db's records untouched by the restart");

    // Another lease TTL is another lease: every record moves to it; then killed for good.
    restarted.kill9();
    let mut short = start_names_weftd(lab, a, docker_host, "2s");
    let moved = poll("db's records on the 2 s lease", CONVERGE, || {
        let now = lab.etcd_records(DB_PREFIX);
        (now.len() == 2 && now.iter().all(|r| r.lease != db_before[0].lease && r.lease != 0)).then_some(now)
    });
    assert_eq!(key_values(&moved), key_values(&db_before), "same records, new lease");
    short.kill9();
    assert_eq!(lab.etcd_records(DB_PREFIX).len(), 2, "a killed weftd deletes nothing itself");
    poll("db's records to expire with the names lease", Duration::from_secs(10), || {
        lab.etcd_records(DB_PREFIX).is_empty().then_some(())
    });
}

/// `weftd link-env db` on host B: docker's variables byte for byte; a container started with
/// them as `--env-file` on host B fetches a page from db on host A by `DB_PORT_6379_TCP_ADDR`.
fn check_link_env(lab: &Lab, b: usize, docker_a: &Dockerd, docker_b: &Dockerd, ip: &str) {
    let out = lab.weftd_command(b, &["link-env", "db"]);
    assert!(out.status.success(), "link-env db: {}", String::from_utf8_lossy(&out.stderr));
    let expected = format!(
        "DB_PORT=tcp://{ip}:6379\nDB_PORT_6379_TCP=tcp://{ip}:6379\nDB_PORT_6379_TCP_ADDR={ip}\n\
         DB_PORT_6379_TCP_PORT=6379\nDB_PORT_6379_TCP_PROTO=tcp\nDB_NAME=/weft/db\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let aliased = lab.weftd_command(b, &["link-env", "db", "--alias", "cache", "--recipient", "app"]);
    let aliased = String::from_utf8_lossy(&aliased.stdout).into_owned();
    assert!(
        aliased.starts_with(&format!("CACHE_PORT=tcp://{ip}:6379\n")) && aliased.ends_with("CACHE_NAME=/app/cache\n"),
        "{aliased}"
    );

    let unknown = lab.weftd_command(b, &["link-env", "nosuch"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr).into_owned();
    assert_eq!(unknown.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("\"nosuch\"") && stderr.contains("weft.local"), "{stderr}");

    docker_a.exec_ok("db", &["sh", "-c", "mkdir -p /www && echo db-on-a > /www/index.html && httpd -p 6379 -h /www"]);
    let env_file = lab.dir().join("db.env");
    fs::write(&env_file, &out.stdout).unwrap();
    let env_file = env_file.to_str().unwrap();
    docker_b.docker_ok(&["run", "-d", "--name", "app", "--env-file", env_file, IMAGE, "sleep", "900"]);
    let fetch = "timeout 5 wget -q -O - http://$DB_PORT_6379_TCP_ADDR:$DB_PORT_6379_TCP_PORT/";
    let page = poll("a container on host B to reach db through its link variables", CONVERGE, || {
        let out = docker_b.exec("app", &["sh", "-c", fetch]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(page, "db-on-a");
}

/// The DNS server of host B's weftd (on its docker0 address) answers db's address and port,
/// to a container on host B, from the records host A's weftd published.
fn check_dns_on_b(docker_b: &Dockerd, gateway_b: &str, ip: &str) {
    // The SRV answer's data, `6379 <id>.db.weft.local`: the query name alone (echoed by
    // nslookup on NXDOMAIN too) also holds "6379".
    let srv_data = |text: &str| {
        let words: Vec<&str> = text.split_whitespace().collect();
        words.windows(2).any(|w| w[0] == "6379" && w[1].trim_end_matches('.').ends_with(".db.weft.local"))
    };
    let address = |text: &str| text.contains(ip);
    type Answers<'a> = &'a dyn Fn(&str) -> bool;
    let queries: [(&[&str], Answers); 2] =
        [(&["db.weft.local"], &address), (&["-type=srv", "_6379._tcp.db.weft.local"], &srv_data)];
    for (query, answers) in queries {
        let mut args = vec!["timeout", "4", "nslookup"];
        args.extend_from_slice(query);
        args.push(gateway_b);
        let answer = poll(&format!("nslookup {query:?} from a container on host B"), CONVERGE, || {
            let out = docker_b.exec("app", &args);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            answers(&text).then_some(text)
        });
        println!("{}", answer.trim());
    }
}

/// `weftd status --names` on host A lists db with its address and port; `/metrics` counts
/// its names (db, web) and records (db's two, web's one).
fn check_status(lab: &Lab, a: usize, ip: &str) {
    let port = METRICS_PORT.parse().unwrap();
    let (_, metrics) = lab::http::get(lab.host(a), port, "/metrics").expect("/metrics answers");
    for line in ["weft_names_published 2\n", "weft_names_records 3\n", "weft_names_publish_errors_total 0\n"] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
    let out = lab.weftd_command(a, &["status", "--names", "--iface", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("db ")).unwrap_or_else(|| panic!("no db in status:\n{text}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["db", ip, "6379/tcp"], "{text}");
    assert!(text.contains("names published by this host: 2"), "db and web:\n{text}");
}
