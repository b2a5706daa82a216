//! Telling the host the overlay is ready: subnet.env written, systemd notified, `/readyz` true.

use std::path::PathBuf;

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::lease::Lease;
use crate::observe::health::Health;
use crate::subnet_env::{SubnetEnv, SubnetEnvError};

/// What the readiness signals need, and whether they were given.
#[derive(Clone)]
pub struct Readiness {
    /// Where subnet.env goes (`--subnet-file`).
    pub subnet_file: PathBuf,
    /// The overlay Network, for `FLANNEL_NETWORK`; `None` for an IPv6-only config.
    pub network: Option<Ipv4Network>,
    /// The IPv6 Network of a dual-stack or IPv6-only config, for `FLANNEL_IPV6_NETWORK`.
    pub ipv6_network: Option<Ipv6Network>,
    /// `--ip-masq`, for `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
    /// What /readyz reports.
    pub health: Health,
    /// Whether systemd has been told we are ready.
    pub notified: bool,
}

impl Readiness {
    /// Nothing signalled yet: subnet.env goes to `subnet_file`, with the config's networks and
    /// `--ip-masq` (`ip_masq`); `/readyz` is `health`'s.
    pub fn new(subnet_file: PathBuf, config: &crate::config::NetworkConfig, ip_masq: bool, health: Health) -> Self {
        let ipv6_network = config.ipv6.map(|v6| v6.network);
        let network = config.ipv4.map(|v4| v4.network);
        Self { subnet_file, network, ipv6_network, ip_masq, health, notified: false }
    }

    /// Writes subnet.env for `own` lease and the device's `mtu` (bytes), then tells systemd
    /// (`Type=notify`) we are ready: a unit ordered after weftd.service can rely on the file
    /// existing and the overlay being programmed.
    ///
    /// # Errors
    /// subnet.env cannot be written.
    pub fn signal(&mut self, own: &Lease, mtu: u32) -> Result<(), SubnetEnvError> {
        let (ipv4, ipv6) = (self.network.zip(own.subnet), self.ipv6_network.zip(own.ipv6_subnet));
        let env = SubnetEnv { ipv4, ipv6, mtu, ip_masq: self.ip_masq };
        if env.write_if_changed(&self.subnet_file)? {
            tracing::info!(path = %self.subnet_file.display(), subnet = %own.id(), "wrote subnet file");
        }
        if !self.notified {
            if let Err(error) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
                tracing::warn!(%error, "cannot notify systemd of readiness");
            }
            self.health.set_ready();
            self.notified = true;
        }
        Ok(())
    }
}
