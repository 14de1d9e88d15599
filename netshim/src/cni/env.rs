//! The CNI_* environment variables a runtime sets for each call.

use super::error::{CniError, INVALID_ENV};

/// The variable whose presence makes the `netshim` binary a CNI plugin.
pub const COMMAND_VAR: &str = "CNI_COMMAND";

/// The plugin's environment. Unset and empty variables are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl CniEnv {
    /// Reads the process environment. A variable that is not UTF-8 counts as unset (and is
    /// then refused as missing where it is needed).
    pub fn from_process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the environment from any lookup (tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        Self {
            command: get(COMMAND_VAR).unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    /// CNI_IFNAME, which must be set and be a Linux interface name (code 4 otherwise, as
    /// the reference plugins' skel refuses it), checked before anything is changed.
    pub fn require_ifname(&self) -> Result<&str, CniError> {
        let name = self.require("CNI_IFNAME", &self.ifname)?;
        match crate::tap::validate_name(name) {
            Ok(()) => Ok(name),
            Err(crate::tap::TapError::InvalidName { reason, .. }) => {
                let shown: String = name.chars().take(32).collect();
                let cut = if shown.len() < name.len() { "..." } else { "" };
                Err(CniError::new(
                    INVALID_ENV,
                    format!("CNI_IFNAME {shown:?}{cut} is not a Linux interface name"),
                )
                .with_details(format!("{reason} ({} bytes)", name.len())))
            }
            Err(e) => Err(CniError::new(INVALID_ENV, format!("CNI_IFNAME: {e}"))),
        }
    }

    /// A variable the command cannot do without (code 4 when missing).
    pub fn require<'a>(&self, name: &str, value: &'a Option<String>) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(INVALID_ENV, format!("{name} is not set"))
                .with_details(format!("CNI_COMMAND={} needs {name}", self.command))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_variables_are_missing() {
        let env = CniEnv::from_lookup(|n| match n {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_NETNS" => Some(String::new()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        });
        assert_eq!(env.command, "ADD");
        assert_eq!(env.netns, None);
        assert_eq!(env.require("CNI_IFNAME", &env.ifname).unwrap(), "eth0");
        let e = env.require("CNI_NETNS", &env.netns).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.contains("CNI_NETNS"), "{e}");
    }

    #[test]
    fn cni_ifname_must_be_an_interface_name() {
        let env = |name: &str| CniEnv {
            command: "ADD".into(),
            ifname: Some(name.to_owned()),
            ..CniEnv::default()
        };
        assert_eq!(env("eth0").require_ifname().unwrap(), "eth0");
        for bad in ["a/b", "..", "eth 0", "x234567890abcdef", &"e".repeat(300)] {
            let e = env(bad).require_ifname().unwrap_err();
            assert_eq!(e.code, INVALID_ENV, "{bad}");
            assert!(e.msg.contains("is not a Linux interface name"), "{e}");
            assert!(e.msg.len() < 100, "the name is cut: {e}");
        }
        let unset = CniEnv::default().require_ifname().unwrap_err();
        assert!(unset.msg.contains("CNI_IFNAME is not set"), "{unset}");
    }
}
