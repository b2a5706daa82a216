//! Lab helpers for hostile-lease tests: what a host's VXLAN device holds, and warnings per key.

use std::collections::BTreeSet;

use crate::{poll, Host, Weftd};

impl Host {
    /// Every route, neighbour, FDB entry and nexthop on `flannel.1`, one line each as `ip -j -4 route` (every table),
    /// `ip -j neigh`, `bridge -j fdb` and `ip -j nexthop` report them (e.g. `fdb 02:ee:00:00:00:01 dst 198.18.0.99`).
    pub fn flannel_entries(&self) -> BTreeSet<String> {
        let rows = |v: serde_json::Value| v.as_array().cloned().unwrap_or_default();
        let text = |row: &serde_json::Value, key: &str| row[key].as_str().unwrap_or("-").to_string();
        let routes = rows(self.ip_json(&["-4", "route", "show", "table", "all", "dev", "flannel.1"]))
            .into_iter()
            .map(|r| format!("route {} via {}", text(&r, "dst"), text(&r, "gateway")));
        let neighbours = rows(self.ip_json(&["neigh", "show", "dev", "flannel.1"]))
            .into_iter()
            .map(|n| format!("neigh {} lladdr {}", text(&n, "dst"), text(&n, "lladdr")));
        let fdb = rows(self.bridge_json(&["fdb", "show", "dev", "flannel.1"]))
            .into_iter()
            .map(|f| format!("fdb {} dst {}", text(&f, "mac"), text(&f, "dst")));
        let nexthops = rows(self.ip_json(&["nexthop", "show", "dev", "flannel.1"]))
            .into_iter()
            .map(|n| format!("nexthop {} via {}", n["id"], text(&n, "gateway")));
        routes.chain(neighbours).chain(fdb).chain(nexthops).collect()
    }
}

impl Weftd {
    /// Waits (up to `timeout`) until the log shows `more` reconcile passes beyond those so far:
    /// each a whole look at the leases, so what a pass would do has been done.
    pub fn wait_passes(&self, more: usize, timeout: std::time::Duration) {
        let passes = self.log().matches("reconcile pass").count();
        poll(&format!("{more} more reconcile passes"), timeout, || {
            (self.log().matches("reconcile pass").count() >= passes + more).then_some(())
        });
    }

    /// How many warnings name the lease key `name` (`10.5.3.2-32`), as a `key=` field or at
    /// the end of a full key path: WARN lines, and the DEBUG lines of skipped leases weftd's
    /// warning budget held back (past 8 of a kind a minute; the lab logs at debug level).
    pub fn warnings_naming(&self, name: &str) -> usize {
        let names = |line: &str| line.split(|c: char| c.is_whitespace() || matches!(c, '=' | '/' | '"')).any(|t| t == name);
        let warning = |line: &str| line.contains(" WARN ") || (line.contains(" DEBUG ") && line.contains(": skipping "));
        self.log().lines().filter(|line| warning(line) && names(line)).count()
    }
}
