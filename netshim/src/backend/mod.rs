//! Datapaths that connect an endpoint's pod-side device to its tap.
//!
//! - [`ebpf`]: a TC classifier on both ingresses that `bpf_redirect`s to the other device,
//!   attached with TCX links pinned in bpffs (clsact + cls_bpf on kernels before 6.6).
//! - [`mirred`]: kata's tcfilter as it is (ingress qdisc, u32 match-all, mirred egress
//!   redirect), through netlink; the baseline and the fallback for kernels without BPF.

pub mod ebpf;
pub mod mirred;

use std::{fmt, str::FromStr};

/// A device in the netns being worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev {
    pub name: String,
    pub ifindex: u32,
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ifindex {})", self.name, self.ifindex)
    }
}

/// Which traffic-control datapath connects endpoint and tap (`--tc-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcBackend {
    #[default]
    Ebpf,
    Mirred,
}

impl TcBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Mirred => "mirred",
        }
    }
}

impl fmt::Display for TcBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--tc-backend` value that is neither `ebpf` nor `mirred`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tc backend {0} (valid: ebpf, mirred)")]
pub struct UnknownBackend(pub String);

impl FromStr for TcBackend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ebpf" => Ok(Self::Ebpf),
            "mirred" => Ok(Self::Mirred),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse() {
        assert_eq!("ebpf".parse(), Ok(TcBackend::Ebpf));
        assert_eq!("mirred".parse(), Ok(TcBackend::Mirred));
        assert!("u32".parse::<TcBackend>().is_err());
        assert_eq!(TcBackend::default(), TcBackend::Ebpf);
    }
}
