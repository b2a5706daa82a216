//! Demo (`make demo`, needs root): names across hosts with real docker. Two hosts (network
//! namespaces) share one etcd; each runs `weftd --names`, then a dockerd of its own started with
//! the options `weftd docker-opts --names` writes. "web" (busybox httpd) runs on host A,
//! "client" on host B; the client pings web by IP and by name and fetches web's page by name.
//!
//! Exits non-zero if a step fails. Everything (containers, dockerds, their mounts, namespaces,
//! files) is removed on the way out, after a failure too; the last lines say what was left (nothing).
//! DEMO_KEEP=1 keeps it all until Enter is pressed.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use lab::docker::{mounts_under, BusyboxImage, Dockerd};
use lab::docker_names::{run_container_with, serve_page, start_dockerd_with_names, start_weftd_with_names, NAMES_DOMAIN};
use lab::{netns_list, weftd_bin, Lab, Weftd};

const NETWORK_CONFIG: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;
const SUBNET_TIMEOUT: Duration = Duration::from_secs(30);
/// A name is published within a second; the first packets across may wait for ARP.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const IMAGE: &str = "busybox";
const HOSTS: [(usize, &str); 2] = [(1, "A"), (2, "B")];

fn main() {
    let bin = weftd_bin();
    if !bin.exists() {
        eprintln!("demo: {} not found; build it first (`make build`)", bin.display());
        std::process::exit(2);
    }
    let (failures, id, dir) = run_demo();
    let failures = failures + usize::from(!nothing_left(&id, &dir));
    if failures > 0 {
        eprintln!("\ndemo: {failures} step(s) failed");
    }
    std::process::exit(if failures == 0 { 0 } else { 1 });
}

/// Runs the demo; returns how many steps failed, and the lab's id and dir (gone by then).
/// Declared after the lab, the dockerds are stopped before it is removed (also when a panic
/// unwinds).
fn run_demo() -> (usize, String, PathBuf) {
    let mut lab = Lab::new();
    for _ in HOSTS {
        lab.add_host();
    }
    lab.put_network_config(NETWORK_CONFIG);
    println!("Two hosts, A and B, as network namespaces; etcd at {}.", lab.etcd_endpoint());
    println!("$ etcdctl put /coreos.com/network/config '{NETWORK_CONFIG}'");

    section("weftd --names on each host (it starts before docker, as systemd orders them)");
    let _weftd: Vec<Weftd> = HOSTS.iter().map(|&(n, _)| start_weftd(&lab, n)).collect();
    for (n, name) in HOSTS {
        lab.wait_subnet_env(n, SUBNET_TIMEOUT);
        println!("\nhost {name}$ cat /run/flannel/subnet.env");
        print!("{}", std::fs::read_to_string(&lab.host(n).subnet_file).expect("subnet.env was just seen"));
    }

    section("docker on each host, with the options `weftd docker-opts --names` writes");
    let image = BusyboxImage::build(lab.dir());
    let mut dockers: Vec<Dockerd> = HOSTS.iter().map(|&(n, name)| start_docker(&lab, n, name, &image)).collect();

    section("containers: \"web\" on host A serves a page, \"client\" runs on host B");
    let (a, b) = (&dockers[0], &dockers[1]);
    let web = run_shown(a, "A", "web", &["--expose", "80"]);
    serve_page(a, "web", 80, "hello from web on host A");
    println!("host A$ docker exec web httpd -p 80 -h /www    # serves \"hello from web on host A\"");
    let client = run_shown(b, "B", "client", &[]);

    let mut failures = 0;
    section("the names weftd published in etcd, in the SkyDNS layout (web by host A, client by host B)");
    failures += usize::from(!show_records(&lab));

    section("from \"client\" on host B");
    failures += steps_from_client(b, web);
    section("and back, from \"web\" on host A");
    failures += usize::from(!step(a, "web", &["ping", "-c", "1", "-W", "1", "client"], |out| out.contains(&client.to_string())));

    if failures > 0 {
        println!("\nweftd logs follow");
        lab.dump_logs(30);
    }
    if std::env::var_os("DEMO_KEEP").is_some() {
        keep_until_enter(&lab, &dockers);
    }
    let failures = failures + usize::from(!stop_docker(&lab, &mut dockers));
    (failures, lab.id().to_string(), lab.dir().to_path_buf())
}

fn section(title: &str) {
    println!("\n== {title}");
}

/// weftd on host N with names on, pointed at the dockerd that host will run.
fn start_weftd(lab: &Lab, n: usize) -> Weftd {
    println!("host {}$ DOCKER_HOST=unix://…/docker-h{n}/docker.sock weftd --ip-masq --names", HOSTS[n - 1].1);
    start_weftd_with_names(lab, n, &["--ip-masq"], &[])
}

/// Starts host N's dockerd from weftd's options and loads the busybox image into it.
fn start_docker(lab: &Lab, n: usize, name: &str, image: &BusyboxImage) -> Dockerd {
    let (dockerd, words) = start_dockerd_with_names(lab, n);
    println!("\nhost {name}$ weftd docker-opts --names && cat /run/docker_opts.env | grep DOCKER_OPTS=");
    println!("DOCKER_OPTS=\" {}\"", words.join(" "));
    println!("host {name}$ dockerd $DOCKER_OPTS &    # then: docker import busybox.tar {IMAGE}");
    dockerd.import(image, IMAGE);
    dockerd
}

/// `docker run -d --name <name> <options> busybox sleep …`, shown with the address docker gave.
fn run_shown(dockerd: &Dockerd, host: &str, name: &str, options: &[&str]) -> Ipv4Addr {
    let ip = run_container_with(dockerd, name, options, IMAGE);
    println!(
        "host {host}$ docker run -d --name {name} {}{IMAGE} sleep …    # got {ip}",
        options.iter().map(|o| format!("{o} ")).collect::<String>()
    );
    ip
}

/// `etcdctl get --prefix /skydns/local/weft/` until web's records are there; whether they came.
fn show_records(lab: &Lab) -> bool {
    let prefix = format!("/skydns/{}/", NAMES_DOMAIN.split('.').rev().collect::<Vec<_>>().join("/"));
    println!("$ etcdctl get --prefix {prefix}");
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let records = lab.etcd_get_prefix(&prefix);
        if records.iter().any(|(key, _)| key.starts_with(&format!("{prefix}web/"))) || Instant::now() >= deadline {
            for (key, value) in &records {
                println!("{key}\n{value}");
            }
            let ok = !records.is_empty();
            if !ok {
                println!("FAIL: nothing published within {STEP_TIMEOUT:?}");
            }
            return ok;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ping by IP, name and port lookups, ping by name and an HTTP fetch by name, from client on
/// host B.
fn steps_from_client(b: &Dockerd, web: Ipv4Addr) -> usize {
    let web_ip = web.to_string();
    let fqdn = format!("web.{NAMES_DOMAIN}");
    let srv = format!("_80._tcp.{fqdn}");
    println!("client$ cat /etc/resolv.conf    # written by docker from --dns and --dns-search");
    print!("{}", String::from_utf8_lossy(&b.exec("client", &["cat", "/etc/resolv.conf"]).stdout));
    let steps: [(&[&str], &str); 5] = [
        (&["ping", "-c", "1", "-W", "1", &web_ip], "1 packets received"),
        (&["nslookup", &fqdn], &web_ip),
        (&["nslookup", "-type=SRV", &srv], " 80 "),
        (&["ping", "-c", "1", "-W", "1", "web"], &web_ip),
        (&["wget", "-q", "-O", "-", "http://web/"], "hello from web on host A"),
    ];
    steps.iter().filter(|(args, expect)| !step(b, "client", args, |out| out.contains(expect))).count()
}

/// Runs `docker exec <container> <args>` until it succeeds with output `ok` accepts, or
/// STEP_TIMEOUT; shows the command and its last output. Whether it succeeded.
fn step(dockerd: &Dockerd, container: &str, args: &[&str], ok: impl Fn(&str) -> bool) -> bool {
    println!("\n{container}$ {}", args.join(" "));
    let started = Instant::now();
    let mut tries = 0;
    let (passed, out) = loop {
        tries += 1;
        let out: Output = dockerd.exec(container, args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let passed = out.status.success() && ok(&text);
        if passed || started.elapsed() >= STEP_TIMEOUT {
            break (passed, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{}", out.trim_end());
    let took = started.elapsed().as_secs_f64();
    match (passed, tries) {
        (true, 1) => {}
        (true, _) => println!("(answered on try {tries}, after {took:.1} s)"),
        (false, _) => println!("FAIL: no good answer in {tries} tries ({took:.1} s)"),
    }
    passed
}

/// Stops the dockerds (their containers, shims, cgroups, mounts) and says what they left;
/// whether nothing. The lab (namespaces, etcd, weftd, files) goes when it is dropped after this.
fn stop_docker(lab: &Lab, dockers: &mut [Dockerd]) -> bool {
    section("cleaning up");
    let mut problems: Vec<String> = dockers.iter_mut().rev().flat_map(Dockerd::stop).collect();
    problems.extend(mounts_under(lab.dir()).into_iter().map(|m| format!("mount left: {m}")));
    for problem in &problems {
        println!("LEFT BEHIND: {problem}");
    }
    println!("containers and dockerds stopped, their cgroups and mounts removed");
    problems.is_empty()
}

/// After the lab is dropped: whether none of its namespaces and files are left; says which.
fn nothing_left(id: &str, dir: &std::path::Path) -> bool {
    let namespaces: Vec<String> = netns_list().into_iter().filter(|ns| ns.starts_with(id)).collect();
    let files = dir.exists();
    if namespaces.is_empty() && !files {
        println!("namespaces {id}*, etcd, weftd and {} removed: nothing left", dir.display());
    } else {
        println!("LEFT BEHIND: namespaces {namespaces:?}, {} {}", dir.display(), if files { "exists" } else { "removed" });
    }
    namespaces.is_empty() && !files
}

/// Prints how to look around, then waits for Enter (or end of input) before cleaning up.
fn keep_until_enter(lab: &Lab, dockers: &[Dockerd]) {
    println!("\n== DEMO_KEEP: everything stays up until you press Enter");
    for (dockerd, (_, name)) in dockers.iter().zip(HOSTS) {
        println!("host {name}: docker -H {} exec -it <web|client> sh", dockerd.host_uri());
    }
    println!("etcd: ip netns exec {} etcdctl --endpoints {} get --prefix /skydns", lab.host(1).ns, lab.etcd_endpoint());
    println!("logs: {}", lab.dir().display());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}
