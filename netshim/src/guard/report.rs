//! The guard of an endpoint as reports show it.

use std::{net::IpAddr, path::Path};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{maps, GuardEntry, GuardMapError, GuardMode, GuardSettings};
use crate::interfaces::Mac;

/// `attach`, `status` and `netshim guard` per endpoint: the guard's settings with the guest
/// MAC and the addresses it allows (read from the maps: what the datapath enforces), or
/// `{"mode": "off", "reason": ...}` where the datapath has no guard. The commit file keeps
/// the settings only (the addresses are the endpoint's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GuardReport {
    /// No guard can run here (mirred, macvtap, none; a sandbox without guard maps).
    Unavailable { mode: GuardMode, reason: String },
    Guard {
        #[serde(flatten)]
        settings: GuardSettings,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<Mac>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addresses: Option<Vec<IpAddr>>,
    },
}

impl GuardReport {
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            mode: GuardMode::Off,
            reason: reason.into(),
        }
    }

    /// What the maps hold.
    pub fn from_entry(entry: &GuardEntry) -> Self {
        Self::Guard {
            settings: entry.settings(),
            mac: Some(entry.mac()),
            addresses: Some(entry.addresses()),
        }
    }

    /// Endpoint `index`'s guard read back from the pins in `dir` (`Unavailable` when the
    /// sandbox has no guard maps).
    pub fn read(dir: &Path, index: u32) -> Result<Self, GuardMapError> {
        Ok(match maps::read(dir, index)? {
            Some(entry) => Self::from_entry(&entry),
            None => Self::unavailable(
                "the sandbox has no guard maps (attached before the guard existed): \
                 `netshim upgrade` adds them",
            ),
        })
    }

    /// The guard the datapath applies to what arrives on the tap `tap_ifindex` of endpoint
    /// `index`: the maps' guard, unless the tap's `peers` entry lacks `PEER_GUARD` while the
    /// maps say enforce or log (a sandbox attached before the guard: the program never runs
    /// the checks there).
    pub fn applied(dir: &Path, index: u32, tap_ifindex: u32) -> Result<Self, GuardMapError> {
        let report = Self::read(dir, index)?;
        if report.mode().is_on() && maps::peer_guard(dir, tap_ifindex)? != Some(true) {
            return Ok(Self::unavailable(format!(
                "the guard maps say {}, but the tap's peers entry does not ask for the guard                  (attached before the guard existed): `netshim upgrade` turns it on",
                report.mode()
            )));
        }
        Ok(report)
    }

    /// As the commit file records it: the settings only.
    pub fn settings_only(&self) -> Self {
        match self {
            Self::Guard { settings, .. } => Self::Guard {
                settings: settings.clone(),
                mac: None,
                addresses: None,
            },
            other => other.clone(),
        }
    }

    pub fn mode(&self) -> GuardMode {
        match self {
            Self::Unavailable { mode, .. } => *mode,
            Self::Guard { settings, .. } => settings.mode,
        }
    }

    pub fn settings(&self) -> Option<&GuardSettings> {
        match self {
            Self::Guard { settings, .. } => Some(settings),
            Self::Unavailable { .. } => None,
        }
    }

    /// One line for the tables: `guard: enforce, mac .., addresses .., allowed ..`.
    pub fn line(&self) -> String {
        match self {
            Self::Unavailable { mode, reason } => format!("guard: {mode} ({reason})"),
            Self::Guard {
                settings,
                mac,
                addresses,
            } => {
                let mut parts = vec![settings.mode.to_string()];
                if let Some(mac) = mac {
                    parts.push(format!("mac {mac}"));
                }
                if let Some(a) = addresses {
                    let list: Vec<String> = a.iter().map(|a| a.to_string()).collect();
                    parts.push(format!("addresses {}", list.join(" ")));
                }
                if !settings.allowed_addresses.is_empty() {
                    let list: Vec<String> = settings
                        .allowed_addresses
                        .iter()
                        .map(|n| n.to_string())
                        .collect();
                    parts.push(format!("allowed {}", list.join(" ")));
                }
                if settings.allow_dhcp {
                    parts.push("dhcp allowed".into());
                }
                if !settings.allowed_ethertypes.is_empty() {
                    let list: Vec<String> = settings
                        .allowed_ethertypes
                        .iter()
                        .map(|&t| super::settings::format_ethertype(t))
                        .collect();
                    parts.push(format!("ethertypes {}", list.join(" ")));
                }
                format!("guard: {}", parts.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_the_specs() {
        let entry = GuardEntry::build(
            Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
            &["10.99.0.2".parse().unwrap()],
            &GuardSettings {
                allowed_addresses: vec!["10.0.0.5/32".parse().unwrap()],
                allowed_ethertypes: vec![0x88b5],
                ..GuardSettings::default()
            },
        );
        let report = GuardReport::from_entry(&entry);
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "mode": "enforce",
                "mac": "aa:bb:cc:dd:ee:ff",
                "addresses": ["10.99.0.2", "fe80::a8bb:ccff:fedd:eeff"],
                "allowed_addresses": ["10.0.0.5/32"],
                "allow_dhcp": false,
                "allowed_ethertypes": ["0x88b5"],
            })
        );
        assert_eq!(serde_json::from_value::<GuardReport>(v).unwrap(), report);
        let commit = serde_json::to_value(report.settings_only()).unwrap();
        assert!(commit.get("mac").is_none() && commit.get("addresses").is_none());
        assert_eq!(
            serde_json::from_value::<GuardReport>(commit).unwrap(),
            report.settings_only()
        );
        let off = GuardReport::unavailable("the mirred tc backend has no source guard");
        let v = serde_json::to_value(&off).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"mode": "off", "reason": "the mirred tc backend has no source guard"})
        );
        assert_eq!(serde_json::from_value::<GuardReport>(v).unwrap(), off);
        assert!(report
            .line()
            .starts_with("guard: enforce, mac aa:bb:cc:dd:ee:ff"));
    }
}
