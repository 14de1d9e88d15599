//! What a user configures of the guard, and where it can run at all.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use ipnet::IpNet;
use netshim_common::GUARD_ETHERTYPE_SLOTS;

use super::GuardMode;

/// The guard of an endpoint as configured (`--guard*` flags, the `[netshim]` TOML keys, the
/// CNI keys, `netshim guard`). The endpoint's own addresses are not here: they come from
/// the pod device (and follow it under `watch`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuardSettings {
    pub mode: GuardMode,
    /// DHCP client traffic from 0.0.0.0 (UDP 68 → 67) is let through.
    #[serde(default)]
    pub allow_dhcp: bool,
    /// Sources allowed besides the endpoint's addresses (Neutron's allowed-address-pairs:
    /// VRRP, secondary IPs), as CIDRs; a bare address is a /32 or /128.
    #[serde(default, with = "cidr_list")]
    #[schemars(with = "Vec<String>")]
    pub allowed_addresses: Vec<IpNet>,
    /// Ethertypes allowed besides IPv4, ARP and IPv6 (host order; "0x88b5" in files).
    #[serde(default, with = "ethertype_list")]
    #[schemars(with = "Vec<String>")]
    pub allowed_ethertypes: Vec<u16>,
}

/// A guard setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardSettingsError {
    #[error("{0:?} is not a CIDR or an IP address (allowed address)")]
    BadCidr(String),
    #[error("{0:?} is not an ethertype (0xNNNN, or a number)")]
    BadEthertype(String),
    #[error(
        "ethertype 0x{0:04x} cannot be allowed: values below 0x0600 are 802.3 lengths, not \
         ethertypes"
    )]
    EthertypeIsLength(u16),
    #[error(
        "ethertype 0x{0:04x} cannot be allowed: IPv4, ARP and IPv6 are always checked by the \
         guard, not opened by the allow list"
    )]
    EthertypeChecked(u16),
    #[error("at most {GUARD_ETHERTYPE_SLOTS} ethertypes can be allowed, not {0}")]
    TooManyEthertypes(usize),
}

impl GuardSettings {
    /// Refuses ethertypes the guard cannot allow (lengths, the checked three), more than
    /// there are slots for, and duplicates are dropped; CIDRs are truncated to their network
    /// (10.0.0.5/24 → 10.0.0.0/24), sorted (as the maps read back) and deduplicated.
    pub fn validate(mut self) -> Result<Self, GuardSettingsError> {
        for &t in &self.allowed_ethertypes {
            check_ethertype(t)?;
        }
        dedup(&mut self.allowed_ethertypes);
        if self.allowed_ethertypes.len() > GUARD_ETHERTYPE_SLOTS {
            return Err(GuardSettingsError::TooManyEthertypes(
                self.allowed_ethertypes.len(),
            ));
        }
        for net in &mut self.allowed_addresses {
            *net = net.trunc();
        }
        self.allowed_addresses.sort();
        self.allowed_addresses.dedup();
        Ok(self)
    }
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(v.len());
    v.retain(|x| {
        let new = !seen.contains(x);
        if new {
            seen.push(x.clone());
        }
        new
    });
}

/// An ethertype the allow list may open: >= 0x0600, and not IPv4, ARP or IPv6.
pub fn check_ethertype(t: u16) -> Result<u16, GuardSettingsError> {
    match t {
        t if t < 0x0600 => Err(GuardSettingsError::EthertypeIsLength(t)),
        0x0800 | 0x0806 | 0x86dd => Err(GuardSettingsError::EthertypeChecked(t)),
        t => Ok(t),
    }
}

/// `0x88b5` or `34997`, as the flags and files take it (validated).
pub fn parse_ethertype(s: &str) -> Result<u16, GuardSettingsError> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => s.parse(),
    };
    check_ethertype(parsed.map_err(|_| GuardSettingsError::BadEthertype(s.to_owned()))?)
}

/// How an ethertype is written in reports and files.
pub fn format_ethertype(t: u16) -> String {
    format!("0x{t:04x}")
}

/// A CIDR (`10.0.0.0/24`, `fd00::/64`) or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet, GuardSettingsError> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| GuardSettingsError::BadCidr(s.to_owned()))
}

/// Serde of the allowed CIDRs: text, a bare address taken as a host route.
pub(crate) mod cidr_list {
    use ipnet::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| super::parse_cidr(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Serde of the allowed ethertypes: `"0x88b5"` out; strings (hex with 0x, or decimal) or
/// integers in.
pub(crate) mod ethertype_list {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &[u16], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&t| super::format_ethertype(t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
        Vec::<Given>::deserialize(d)?
            .into_iter()
            .map(|g| match g {
                Given::Number(n) => u16::try_from(n)
                    .map_err(|_| super::GuardSettingsError::BadEthertype(n.to_string()))
                    .and_then(super::check_ethertype),
                Given::Text(s) => super::parse_ethertype(&s),
            })
            .map(|r| r.map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethertypes_are_checked() {
        assert_eq!(parse_ethertype("0x88b5"), Ok(0x88b5));
        assert_eq!(parse_ethertype("0X88B5"), Ok(0x88b5));
        assert_eq!(parse_ethertype("34997"), Ok(0x88b5));
        assert_eq!(
            parse_ethertype("0x05dc"),
            Err(GuardSettingsError::EthertypeIsLength(0x05dc))
        );
        for t in ["0x0800", "0x0806", "0x86dd"] {
            assert!(matches!(
                parse_ethertype(t),
                Err(GuardSettingsError::EthertypeChecked(_))
            ));
        }
        assert!(parse_ethertype("0x1ffff").is_err());
        assert!(parse_ethertype("vlan").is_err());
        assert_eq!(format_ethertype(0x88b5), "0x88b5");
    }

    #[test]
    fn validation_dedups_truncates_and_counts_slots() {
        let s = GuardSettings {
            allowed_addresses: vec![
                "10.0.0.5/24".parse().unwrap(),
                "10.0.0.0/24".parse().unwrap(),
            ],
            allowed_ethertypes: vec![0x88b5, 0x88b5, 0x88b6],
            ..GuardSettings::default()
        }
        .validate()
        .unwrap();
        assert_eq!(s.allowed_addresses, vec!["10.0.0.0/24".parse().unwrap()]);
        assert_eq!(s.allowed_ethertypes, vec![0x88b5, 0x88b6]);
        let too_many = GuardSettings {
            allowed_ethertypes: vec![0x88b5, 0x88b6, 0x88b7, 0x88b8, 0x88b9],
            ..GuardSettings::default()
        };
        assert_eq!(
            too_many.validate(),
            Err(GuardSettingsError::TooManyEthertypes(5))
        );
        let checked = GuardSettings {
            allowed_ethertypes: vec![0x86dd],
            ..GuardSettings::default()
        };
        assert!(checked.validate().is_err());
    }

    #[test]
    fn bare_addresses_are_host_routes() {
        assert_eq!(parse_cidr("10.0.0.5"), Ok("10.0.0.5/32".parse().unwrap()));
        assert_eq!(parse_cidr("fd00::5"), Ok("fd00::5/128".parse().unwrap()));
        assert_eq!(parse_cidr("fd00::/64"), Ok("fd00::/64".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("host").is_err());
    }

    #[test]
    fn settings_serde_as_the_files_write_them() {
        let s: GuardSettings = serde_json::from_value(serde_json::json!({
            "mode": "log",
            "allow_dhcp": true,
            "allowed_addresses": ["10.0.0.5", "fd00::/64"],
            "allowed_ethertypes": ["0x88b5", 35000],
        }))
        .unwrap();
        assert_eq!(s.mode, GuardMode::Log);
        assert!(s.allow_dhcp);
        assert_eq!(s.allowed_addresses[0], "10.0.0.5/32".parse().unwrap());
        assert_eq!(s.allowed_ethertypes, vec![0x88b5, 35000]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["allowed_ethertypes"],
            serde_json::json!(["0x88b5", "0x88b8"])
        );
        assert_eq!(
            v["allowed_addresses"],
            serde_json::json!(["10.0.0.5/32", "fd00::/64"])
        );
        // An older commit file's endpoint: only the mode.
        let old: GuardSettings = serde_json::from_str(r#"{"mode":"enforce"}"#).unwrap();
        assert_eq!(old, GuardSettings::default());
        assert!(serde_json::from_value::<GuardSettings>(
            serde_json::json!({"mode": "enforce", "allowed_ethertypes": ["0x0806"]})
        )
        .is_err());
    }
}
