//! The human-readable report of `weftd status`: a table of leases, and for a dual-stack network
//! a second one of their IPv6 parts, with a line of peer counts per family; an IPv6-only
//! network's has the IPv6 table alone. An IPv4-only network's report is what it was before IPv6
//! existed.

use super::{Check, Ipv6Status, LeaseStatus, Status};

/// The human-readable report.
pub fn render(status: &Status) -> String {
    let vni = status.vni;
    let mut out = match (status.network, status.subnet_len, &status.device) {
        (Some(network), Some(len), Some(device)) => {
            format!("network    {network} (subnets /{len}, vxlan VNI {vni}, device {device})\n")
        }
        _ => format!("network    IPv6 only (EnableIPv4 false, vxlan VNI {vni})\n"),
    };
    if let Some(v6) = &status.ipv6 {
        out += &format!("ipv6       {} (subnets /{}, device {})\n", v6.network, v6.subnet_len, v6.device);
    }
    if let Some(public_ip) = status.public_ip {
        let own = status.own_subnet.map_or("no lease".to_string(), |s| s.to_string());
        out += &format!("this host  {public_ip} -> {own}\n");
    }
    if let Some(v6) = &status.ipv6 {
        let ip = v6.public_ip.map_or("no PublicIPv6".to_string(), |ip| ip.to_string());
        out += &format!("this host  {ip} -> {}\n", v6.own_subnet.map_or("no IPv6 subnet".to_string(), |s| s.to_string()));
    }
    if status.network.is_some() {
        out += "\n";
        out += &ipv4_table(&status.leases);
    }
    if status.ipv6.is_some() {
        out += "\n";
        out += &ipv6_table(&status.leases);
    }
    for (key, error) in &status.malformed {
        out += &format!("malformed  {key}: {error}\n");
    }
    if let Some(problem) = &status.underlay_problem {
        out += &format!("underlay   {problem}\n");
    }
    for drift in &status.device_drift {
        out += &format!("drift      {drift}\n");
    }
    if let (true, Some(device)) = (status.unexplained > 0, &status.device) {
        out += &format!("{} entries on {device} are not explained by any lease\n", status.unexplained);
    }
    if let Some(v6) = &status.ipv6 {
        out += &ipv6_summary(status, v6);
    }
    if let Some(names) = &status.names {
        out += &format!("\nnames published by this host: {}\n", names.len());
        for name in names {
            out += &format!("{:<24} {:<15} {}\n", name.name, name.host.to_string(), name.ports.join(" "));
        }
    }
    out += if status.healthy { "\nhealthy\n" } else { "\nNOT healthy\n" };
    out
}

/// A check as the tables show it: problems in capitals.
fn word(check: Check) -> &'static str {
    match check {
        Check::Ok => "ok",
        Check::Missing => "MISSING",
        Check::Wrong => "WRONG",
        Check::NotApplicable => "-",
    }
}

/// Why a row has no checks, or how its peer is reached, after the row.
fn note(this_host: bool, direct: bool, skipped: Option<&String>) -> String {
    if this_host {
        "  (this host)".to_string()
    } else if direct {
        "  (direct route)".to_string()
    } else {
        skipped.map(|r| format!("  (skipped: {r})")).unwrap_or_default()
    }
}

fn ipv4_table(leases: &[LeaseStatus]) -> String {
    let mut out = format!(
        "{:<18} {:<15} {:<17} {:<13} {:<8} {:<8} {:<8}\n",
        "SUBNET", "PUBLIC IP", "VTEP MAC", "EXPIRES", "ROUTE", "ARP", "FDB"
    );
    // An IPv6-only lease has no row here: nothing of it is on the IPv4 device.
    for (l, subnet) in leases.iter().filter_map(|l| l.subnet.map(|subnet| (l, subnet))) {
        let expires = match (l.reservation, l.expires_in_seconds) {
            (true, _) => "reservation".to_string(),
            (false, Some(s)) => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
            (false, None) => "expired".to_string(),
        };
        out += &format!(
            "{:<18} {:<15} {:<17} {:<13} {:<8} {:<8} {:<8}{}\n",
            subnet.to_string(),
            l.public_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            l.vtep_mac.as_deref().unwrap_or("-"),
            expires,
            word(l.route),
            word(l.arp),
            word(l.fdb),
            note(l.this_host, l.direct, l.skipped.as_ref()),
        );
    }
    out
}

/// The IPv6 part of every lease that has one (or a broken one), named by the lease's IPv4
/// subnet too, since that is the lease's name among the others (`-` for an IPv6-only lease).
fn ipv6_table(leases: &[LeaseStatus]) -> String {
    let mut out = format!(
        "{:<24} {:<18} {:<24} {:<17} {:<8} {:<8} {:<8}\n",
        "IPV6 SUBNET", "OF LEASE", "PUBLIC IPV6", "VTEP MAC", "ROUTE", "NEIGH", "FDB"
    );
    let none = || "-".to_string();
    for (lease, v6) in leases.iter().filter_map(|l| l.ipv6.as_ref().map(|v6| (l, v6))) {
        if v6.subnet.is_none() && v6.skipped.is_none() {
            continue; // an IPv4-only lease: nothing to show here
        }
        out += &format!(
            "{:<24} {:<18} {:<24} {:<17} {:<8} {:<8} {:<8}{}\n",
            v6.subnet.map_or_else(none, |s| s.to_string()),
            lease.subnet.map_or_else(none, |s| s.to_string()),
            v6.public_ip.map_or_else(none, |ip| ip.to_string()),
            v6.vtep_mac.clone().unwrap_or_else(none),
            word(v6.route),
            word(v6.neighbour),
            word(v6.fdb),
            note(lease.this_host, v6.direct, v6.skipped.as_ref()),
        );
    }
    out
}

/// Per-family peer counts, and what is wrong with the IPv6 side as a whole.
fn ipv6_summary(status: &Status, v6: &Ipv6Status) -> String {
    let v4_checked: Vec<&LeaseStatus> =
        status.leases.iter().filter(|l| l.subnet.is_some() && !l.this_host && l.skipped.is_none()).collect();
    let v4_ok =
        v4_checked.iter().filter(|l| [l.route, l.arp, l.fdb].iter().all(|c| matches!(c, Check::Ok | Check::NotApplicable)));
    let v4_skipped = status.leases.iter().filter(|l| l.skipped.is_some()).count();
    let ipv4 = match status.network {
        Some(_) => format!("ipv4 {} of {} ok, {v4_skipped} skipped; ", v4_ok.count(), v4_checked.len()),
        None => String::new(),
    };
    let mut out = format!("peers      {ipv4}ipv6 {} of {} ok, {} skipped\n", v6.peers_ok, v6.peers, v6.skipped);
    if !v6.device_present {
        out += &format!("{} does not exist\n", v6.device);
    }
    if v6.unexplained > 0 {
        out += &format!("{} entries on {} are not explained by any lease\n", v6.unexplained, v6.device);
    }
    out
}
