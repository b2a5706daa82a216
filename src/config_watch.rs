//! Says once when the network config in etcd no longer matches the one weftd runs with: the
//! config is read at start only (changing the Network or VNI under running hosts would renumber
//! them), so an operator who edits it must learn that a restart applies it.

use std::time::Duration;

use crate::config::NetworkConfig;
use crate::etcd::Registry;
use crate::logtext;

/// How the config in etcd compares with the loaded one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigDrift {
    /// The same config (or the same once parsed): nothing to say.
    Same,
    /// A valid config other than the loaded one.
    Changed(Box<NetworkConfig>),
    /// Text that is not a valid network config; the reason.
    Invalid(String),
    /// No config key at all.
    Deleted,
}

impl ConfigDrift {
    /// Compares the config text in etcd (`None`: no key) with the loaded config.
    pub fn of(loaded: &NetworkConfig, text: Option<&str>) -> Self {
        match text.map(NetworkConfig::parse) {
            None => Self::Deleted,
            Some(Ok(config)) if config == *loaded => Self::Same,
            Some(Ok(config)) => Self::Changed(Box::new(config)),
            Some(Err(e)) => Self::Invalid(e.to_string()),
        }
    }
}

/// Remembers what was last said, so each distinct state is logged once.
#[derive(Debug, Default)]
pub struct DriftNotices {
    /// A fingerprint of the last state logged; `None` while etcd matches the loaded config.
    last: Option<u64>,
}

impl DriftNotices {
    /// Whether `drift` should be logged: it differs from the last state logged, and from Same.
    pub fn first(&mut self, drift: &ConfigDrift) -> bool {
        let now = (*drift != ConfigDrift::Same).then(|| logtext::fingerprint(&format!("{drift:?}")));
        let new = now.is_some() && now != self.last;
        self.last = now;
        new
    }
}

/// An address family a new config turns on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toggle {
    /// `"IPv4"` or `"IPv6"`.
    pub family: &'static str,
    pub on: bool,
}

/// The family `config` turns on or off against `loaded`, if it differs in that and in nothing
/// else a restart would renumber (the other family and the VNI stay): the change an operator
/// rolls out host by host, each host keeping its subnet of the other family.
pub fn family_toggled(loaded: &NetworkConfig, config: &NetworkConfig) -> Option<Toggle> {
    if config.backend.vni != loaded.backend.vni {
        return None;
    }
    match (config.ipv4 == loaded.ipv4, config.ipv6 == loaded.ipv6) {
        (true, false) if config.ipv4.is_some() && config.ipv6.is_some() != loaded.ipv6.is_some() => {
            Some(Toggle { family: "IPv6", on: config.ipv6.is_some() })
        }
        (false, true) if config.ipv6.is_some() && config.ipv4.is_some() != loaded.ipv4.is_some() => {
            Some(Toggle { family: "IPv4", on: config.ipv4.is_some() })
        }
        _ => None,
    }
}

/// Follows `<prefix>/config` for as long as the daemon runs, logging each new difference from
/// `loaded` once. etcd failures are retried quietly: the lease follower reports outages.
pub async fn follow(registry: Registry, loaded: NetworkConfig) {
    let mut notices = DriftNotices::default();
    loop {
        let result = registry
            .follow_config(|text| {
                let drift = ConfigDrift::of(&loaded, text.as_deref());
                if notices.first(&drift) {
                    log(&loaded, &drift);
                }
            })
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, "network config watch failed; watching again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn log(loaded: &NetworkConfig, drift: &ConfigDrift) {
    match drift {
        ConfigDrift::Same => {}
        ConfigDrift::Changed(config) if family_toggled(loaded, config).is_some() => {
            let Toggle { family, on } = family_toggled(loaded, config).expect("matched");
            let kept = if family == "IPv6" { "IPv4" } else { "IPv6" };
            tracing::warn!(
                network = config.ipv4.map(|v4| v4.network.to_string()),
                ipv6_network = config.ipv6.map(|v6| v6.network.to_string()),
                "network config in etcd turns {family} {}; weftd keeps running with the config it started with: restart the hosts one at a time, each keeps its {kept} subnet and its key {} an {family} subnet",
                if on { "on" } else { "off" },
                if on { "gains" } else { "loses" },
            )
        }
        ConfigDrift::Changed(config) => tracing::warn!(
            network = config.ipv4.map(|v4| v4.network.to_string()),
            subnet_len = config.ipv4.map(|v4| v4.subnet_len),
            ipv6_network = config.ipv6.map(|v6| v6.network.to_string()),
            vni = config.backend.vni,
            "network config in etcd changed; weftd keeps running with the config it started with, and a restart applies the new one"
        ),
        ConfigDrift::Invalid(error) => tracing::error!(
            error = %logtext::clip(error),
            "network config in etcd is invalid; weftd keeps running with the config it started with, but a restart will fail until the config is fixed"
        ),
        ConfigDrift::Deleted => tracing::warn!(
            "network config was deleted from etcd; weftd keeps running with the config it started with, and a restart waits until it is written again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOADED: &str = r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#;

    fn drift(text: Option<&str>) -> ConfigDrift {
        ConfigDrift::of(&NetworkConfig::parse(LOADED).unwrap(), text)
    }

    #[test]
    fn the_same_config_written_differently_is_no_change() {
        assert_eq!(drift(Some(r#"{ "network": "10.5.0.0/16", "backend": {"type": "vxlan", "VNI": 1} }"#)), ConfigDrift::Same);
    }

    #[test]
    fn changed_invalid_and_deleted_configs_are_told_apart() {
        assert!(
            matches!(drift(Some(r#"{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}"#)), ConfigDrift::Changed(c) if c.ipv4.is_some_and(|v4| v4.network.to_string() == "10.6.0.0/16"))
        );
        assert!(matches!(drift(Some("not json")), ConfigDrift::Invalid(_)));
        assert_eq!(drift(None), ConfigDrift::Deleted);
    }

    #[test]
    fn turning_a_family_on_or_off_is_told_from_renumbering() {
        let parse = |text: &str| NetworkConfig::parse(text).unwrap();
        let loaded = parse(LOADED);
        let dual = parse(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48"}"#);
        let other = parse(r#"{"Network":"10.6.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48"}"#);
        let ipv6_only = parse(r#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48"}"#);
        let toggle = |family, on| Some(Toggle { family, on });
        assert_eq!(
            (family_toggled(&loaded, &dual), family_toggled(&dual, &loaded)),
            (toggle("IPv6", true), toggle("IPv6", false))
        );
        assert_eq!(
            (family_toggled(&dual, &ipv6_only), family_toggled(&ipv6_only, &dual)),
            (toggle("IPv4", false), toggle("IPv4", true))
        );
        assert_eq!(family_toggled(&loaded, &other), None, "a new Network renumbers every host");
        assert_eq!(family_toggled(&loaded, &ipv6_only), None, "both families change: every host renumbers");
        assert_eq!(family_toggled(&loaded, &loaded), None);
    }

    #[test]
    fn each_new_difference_is_logged_once() {
        let mut notices = DriftNotices::default();
        let changed = drift(Some(r#"{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}"#));
        assert!(!notices.first(&ConfigDrift::Same));
        assert!(notices.first(&changed));
        assert!(!notices.first(&changed), "a re-list or the same value written again says nothing");
        assert!(notices.first(&drift(Some("not json"))));
        assert!(!notices.first(&ConfigDrift::Same));
        assert!(notices.first(&changed), "changed again after going back");
    }
}
