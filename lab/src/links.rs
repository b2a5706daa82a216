//! Lab helpers for any link (`flannel-v6.1` beside `flannel.1`): its details as `ip -d` shows
//! them, waiting for them, and a host's sysctl values.

use std::time::Duration;

use crate::{poll, Host};

impl Host {
    /// `ip -d -j link show <name>`: the link's details, or `None` while there is no such link.
    pub fn link_details(&self, name: &str) -> Option<serde_json::Value> {
        self.try_ip_json(&["-d", "link", "show", name]).ok()?.get(0).cloned()
    }

    /// [`Host::link_details`] of `name` once `ok` holds for them; panics after `timeout`.
    pub fn wait_link(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll(&format!("{what} on {}", self.ns), timeout, || self.link_details(name).filter(|link| ok(link)))
    }

    /// The value of `/proc/sys/<key>` (e.g. `net/ipv6/conf/flannel-v6.1/accept_ra`) in the
    /// host's namespace, trimmed; `None` when it cannot be read.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        let out = self.exec(&["cat", &format!("/proc/sys/{key}")]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}
