//! kata's internetworking models (`internetworking_model` in configuration.toml) and
//! `SetModel`'s parsing rules: `default` means tcfilter; anything else is `Unknown type <x>`.

pub mod macvtap;

use std::{fmt, str::FromStr};

/// How an endpoint in the sandbox netns is connected to the VM's tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InternetworkingModel {
    /// Traffic control redirect between the pod interface and a tap (kata's default).
    #[default]
    TcFilter,
    /// A macvtap in bridge mode on the pod interface, handed to the VMM.
    MacVtap,
    /// Taps only; nothing connects them (the caller wires the network).
    None,
}

/// The names `--model` accepts, in kata's order.
pub const MODEL_NAMES: [&str; 4] = ["default", "macvtap", "tcfilter", "none"];

/// A model name kata would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unknown type {0} (valid internetworking models: default, macvtap, tcfilter, none)")]
pub struct UnknownModel(pub String);

impl FromStr for InternetworkingModel {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" | "tcfilter" => Ok(Self::TcFilter),
            "macvtap" => Ok(Self::MacVtap),
            "none" => Ok(Self::None),
            other => Err(UnknownModel(other.to_owned())),
        }
    }
}

impl InternetworkingModel {
    /// kata's name for the model.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TcFilter => "tcfilter",
            Self::MacVtap => "macvtap",
            Self::None => "none",
        }
    }
}

impl fmt::Display for InternetworkingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_means_tcfilter() {
        assert_eq!("default".parse(), Ok(InternetworkingModel::TcFilter));
        assert_eq!("tcfilter".parse(), Ok(InternetworkingModel::TcFilter));
        assert_eq!("macvtap".parse(), Ok(InternetworkingModel::MacVtap));
        assert_eq!("none".parse(), Ok(InternetworkingModel::None));
    }

    #[test]
    fn unknown_names_use_katas_wording() {
        let err = "bridged".parse::<InternetworkingModel>().unwrap_err();
        assert!(err.to_string().starts_with("Unknown type bridged"), "{err}");
        for name in MODEL_NAMES {
            assert!(err.to_string().contains(name));
        }
        // kata's parser is case-sensitive; so is ours.
        assert!("TCFilter".parse::<InternetworkingModel>().is_err());
        assert!("".parse::<InternetworkingModel>().is_err());
    }

    #[test]
    fn every_listed_name_parses_and_round_trips() {
        for name in MODEL_NAMES {
            let m: InternetworkingModel = name.parse().unwrap();
            let again: InternetworkingModel = m.as_str().parse().unwrap();
            assert_eq!(m, again);
        }
    }
}
