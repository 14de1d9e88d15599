//! The CNI error result: `{"cniVersion", "code", "msg", "details"}` on stdout, non-zero exit.
//!
//! Codes 1-99 are the spec's well-known ones; 100 and up are netshim's own.

use crate::{netns::NetnsError, Error};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist (its netns is gone).
pub const CONTAINER_UNKNOWN: u32 = 3;
/// Invalid necessary environment variables (missing, empty, or not usable).
pub const INVALID_ENV: u32 = 4;
/// I/O failure (reading stdin).
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content (stdin is not JSON, or too large).
pub const DECODING_FAILURE: u32 = 6;
/// Invalid network configuration (a value netshim cannot use).
pub const INVALID_CONFIG: u32 = 7;
/// Try again later (the spec's transient error; netshim waits for its lock instead).
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin is not available (no bpffs, no /dev/net/tun).
pub const NOT_AVAILABLE: u32 = 50;
/// netshim: an operation on the system failed (netlink, bpf, tap ioctl, bpffs).
pub const OPERATION_FAILED: u32 = 100;
/// netshim: the netns is attached with another model or tc backend, a device's ingress
/// belongs to someone else (DEL first), or a device netshim did not make has a tap's name.
pub const CONFLICT: u32 = 101;
/// netshim: an interface of the netns is one kata refuses, or CNI_IFNAME has no tap.
pub const INTERFACE_REFUSED: u32 = 102;
/// netshim: CHECK found the netns not attached as recorded.
pub const CHECK_FAILED: u32 = 103;

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    /// The JSON the runtime reads from stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if let Some(details) = &self.details {
            v["details"] = details.clone().into();
        }
        v
    }

    /// A library error in CNI terms: `msg` says which step failed, `details` the whole
    /// error (which names the interface and netns).
    pub fn from_netshim(step: &str, e: &Error) -> Self {
        let code = match e {
            Error::Netns(n) if n.is_gone() => CONTAINER_UNKNOWN,
            Error::Netns(
                NetnsError::Open { .. }
                | NetnsError::NotNetns { .. }
                | NetnsError::BadArgument { .. },
            ) => INVALID_ENV,
            Error::InvalidOptions(_)
            | Error::UnknownModel(_)
            | Error::UnknownBackend(_)
            | Error::Config(_) => INVALID_CONFIG,
            Error::UnsupportedInterface { .. }
            | Error::NoUsableInterface { .. }
            | Error::NoTapFor { .. }
            | Error::TooManyEndpoints { .. } => INTERFACE_REFUSED,
            Error::AlreadyAttached { .. }
            | Error::IngressQdiscTaken { .. }
            | Error::DamagedState { .. }
            | Error::TapNameTaken { .. } => CONFLICT,
            _ => OPERATION_FAILED,
        };
        CniError::new(code, format!("netshim {step} failed")).with_details(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(DECODING_FAILURE, "bad").with_details("line 1");
        assert_eq!(
            e.to_json("1.1.0"),
            serde_json::json!({"cniVersion": "1.1.0", "code": 6, "msg": "bad", "details": "line 1"})
        );
        let v = CniError::new(INVALID_ENV, "x").to_json("1.0.0");
        assert!(v.get("details").is_none(), "{v}");
    }

    #[test]
    fn netshim_errors_map_to_cni_codes() {
        let gone = Error::Netns(NetnsError::Open {
            arg: "/run/netns/x".into(),
            path: "/run/netns/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(CniError::from_netshim("ADD", &gone).code, CONTAINER_UNKNOWN);
        let bad = Error::Netns(NetnsError::NotNetns {
            path: "/tmp".into(),
            detail: "d".into(),
        });
        assert_eq!(CniError::from_netshim("ADD", &bad).code, INVALID_ENV);
        let conflict = Error::AlreadyAttached {
            netns: "n".into(),
            detail: "mirred".into(),
        };
        let e = CniError::from_netshim("ADD", &conflict);
        assert_eq!(e.code, CONFLICT);
        assert!(e.details.unwrap().contains("netns n"));
        assert_eq!(
            CniError::from_netshim("ADD", &Error::InvalidOptions("x".into())).code,
            INVALID_CONFIG
        );
    }
}
