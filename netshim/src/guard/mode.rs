//! The guard's modes.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use netshim_common::{GUARD_MODE_ENFORCE, GUARD_MODE_LOG, GUARD_MODE_OFF};

/// What the guard does with a packet that fails a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// Drop and count it (the default on the eBPF backend).
    #[default]
    Enforce,
    /// Count and log it, and deliver it.
    Log,
    /// No checks at all.
    Off,
}

impl GuardMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Log => "log",
            Self::Off => "off",
        }
    }

    /// `GuardConfig::mode`.
    pub fn to_map(self) -> u32 {
        match self {
            Self::Enforce => GUARD_MODE_ENFORCE,
            Self::Log => GUARD_MODE_LOG,
            Self::Off => GUARD_MODE_OFF,
        }
    }

    /// From `GuardConfig::mode`; an unknown value reads as `off` (the program runs no check
    /// for it either: only enforce drops).
    pub fn from_map(mode: u32) -> Self {
        match mode {
            GUARD_MODE_ENFORCE => Self::Enforce,
            GUARD_MODE_LOG => Self::Log,
            _ => Self::Off,
        }
    }

    /// Whether the datapath runs the checks (the tap's `peers` entry gets `PEER_GUARD`).
    pub fn is_on(self) -> bool {
        self != Self::Off
    }
}

impl fmt::Display for GuardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuardMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Self::Enforce),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "unknown guard mode {other:?} (valid: enforce, log, off)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_print_and_map() {
        for mode in [GuardMode::Enforce, GuardMode::Log, GuardMode::Off] {
            assert_eq!(mode.to_string().parse(), Ok(mode));
            assert_eq!(GuardMode::from_map(mode.to_map()), mode);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
            assert_eq!(serde_json::from_str::<GuardMode>(&json).unwrap(), mode);
        }
        assert!("on".parse::<GuardMode>().is_err());
        assert_eq!(GuardMode::from_map(7), GuardMode::Off);
        assert!(!GuardMode::Off.is_on() && GuardMode::Log.is_on());
    }
}
