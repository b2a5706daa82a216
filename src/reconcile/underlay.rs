//! Following the underlay while the daemon runs: look it up again when a link or address
//! changed (or the resync is due), keep the interface in use when it stops matching, and ask the
//! lease keeper to advertise a new PublicIP or PublicIPv6.

use std::mem::Discriminant;
use std::net::{Ipv4Addr, Ipv6Addr};

use tokio::sync::watch;

use crate::lease::{Lease, LeaseAttrs, MacAddr};
use crate::netlink::Kernel;
use crate::underlay::{self, Families, Underlay, UnderlayChoice, UnderlayError};

/// The underlay as last looked up, and how its lookup last failed.
#[derive(Debug)]
pub struct UnderlayFollower {
    /// How the underlay was chosen at start (`--iface` and friends), applied again each lookup.
    choice: UnderlayChoice,
    /// The families the underlay carries (the network config's).
    families: Families,
    /// The underlay as last looked up.
    current: Underlay,
    /// How the last lookup of the underlay failed (the error's kind, and whether the interface
    /// in use was kept), logged once until it changes or the lookup succeeds again; not the
    /// error's text, which lists every interface and changes with any address.
    problem: Option<(Discriminant<UnderlayError>, bool)>,
    /// Whether the underlay must be looked up again before the next pass (the last lookup
    /// failed, or the periodic resync is due).
    lookup_due: bool,
}

impl UnderlayFollower {
    /// Starts from the underlay chosen at start-up by `choice` for `families`.
    pub fn new(choice: UnderlayChoice, families: Families, current: Underlay) -> Self {
        UnderlayFollower { choice, families, current, problem: None, lookup_due: false }
    }

    /// The underlay to build on.
    pub fn current(&self) -> &Underlay {
        &self.current
    }

    /// Asks for a lookup before the next pass, even without a link or address change.
    pub fn resync(&mut self) {
        self.lookup_due = true;
    }

    /// Looks the underlay up again when `changed` (a link or address changed) or a lookup is
    /// due, the way it was chosen at start. Returns whether there is an underlay to build on.
    /// When none matches any more but the one in use is still there with its address (an
    /// interface chosen by `--iface <name>` was renamed), the overlay stays on it: tearing down
    /// a working datapath would help nobody, and a restart is what would move it.
    pub async fn follow(&mut self, kernel: &Kernel, changed: bool) -> bool {
        if !(changed || self.lookup_due) {
            return true;
        }
        let problem = match underlay::find(kernel, &self.choice, self.families).await {
            Ok(found) => {
                self.found(found);
                return true;
            }
            Err(e) => e,
        };
        self.lookup_due = true;
        let kept = underlay::by_index(kernel, &self.current).await.ok().flatten();
        let kind = (std::mem::discriminant(&problem), kept.is_some());
        if self.problem != Some(kind) {
            match &kept {
                Some(kept) => {
                    tracing::warn!(error = %problem, iface = %kept.name, index = kept.index, "the underlay no longer matches how it was chosen; keeping the interface in use")
                }
                None => tracing::error!(error = %problem, "the underlay is gone; the overlay waits for it to come back"),
            }
            self.problem = Some(kind);
        }
        match kept {
            Some(kept) => {
                self.current = kept;
                true
            }
            None => false,
        }
    }

    /// Takes a successful lookup's result, logging a move and a recovery.
    fn found(&mut self, found: Underlay) {
        if found != self.current {
            let (from, to) = (&self.current, &found);
            tracing::info!(iface = %to.name, index = to.index, local_ip = to.ip.map(tracing::field::display), local_ipv6 = ?to.ipv6, mtu = to.mtu, was_iface = %from.name, was_index = from.index, was_ip = from.ip.map(tracing::field::display), was_ipv6 = ?from.ipv6, "underlay changed; following it");
        }
        self.current = found;
        self.lookup_due = false;
        if self.problem.take().is_some() {
            tracing::info!(iface = %self.current.name, "underlay found again");
        }
    }
}

/// Asks the lease keeper (through `attrs`) to advertise `public_ip` (the underlay was
/// readdressed; `None` under an IPv6-only config, whose lease keeps PublicIP 0.0.0.0) if our
/// lease says otherwise; with `ipv6` (the underlay's public IPv6 and the IPv6 device's MAC),
/// also that PublicIPv6, and a BackendV6Data if our lease has none (it keeps the MAC it
/// advertises: the device is set back to that one).
pub fn advertise(attrs: &watch::Sender<LeaseAttrs>, public_ip: Option<Ipv4Addr>, ipv6: Option<(Ipv6Addr, MacAddr)>, own: &Lease) {
    let public_ip = public_ip.unwrap_or(own.attrs.public_ip);
    let mut wanted = LeaseAttrs { public_ip, ..own.attrs.clone() };
    if let Some((public_ipv6, mac)) = ipv6 {
        let mac = own.attrs.backend_v6_data.as_ref().map_or(mac, |data| data.vtep_mac);
        wanted = wanted.with_ipv6(public_ipv6, mac);
    }
    if own.attrs != wanted {
        attrs.send_if_modified(|current| {
            let modified = *current != wanted;
            *current = wanted;
            modified
        });
    }
}
