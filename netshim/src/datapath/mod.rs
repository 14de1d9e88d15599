//! Datapaths that connect an endpoint's pod-side device to its tap.
//!
//! - [`ebpf`]: a TC classifier on both ingresses that `bpf_redirect`s to the other device,
//!   attached with TCX links pinned in bpffs (clsact + cls_bpf on kernels before 6.6).
//! - [`mirred`]: kata's tcfilter as it is (ingress qdisc, u32 match-all, mirred egress
//!   redirect), through netlink; the baseline and the fallback for kernels without BPF.
//! - [`upgrade`]: a new program for an attached eBPF datapath, without a gap (with
//!   [`bpf_sys`], the bpf(2) commands aya 0.14 does not expose).

pub mod bpf_sys;
pub mod ebpf;
pub mod mirred;
pub mod upgrade;

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

/// `--fast-path`: whether the eBPF datapath may use `bpf_redirect_peer`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FastPath {
    /// `bpf_redirect_peer` wherever it is valid.
    #[default]
    Auto,
    /// Always plain `bpf_redirect`.
    Off,
}

impl FromStr for FastPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            other => Err(format!("unknown fast path {other} (valid: auto, off)")),
        }
    }
}

/// How the eBPF datapath hands a packet to the other device.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RedirectMode {
    /// `bpf_redirect`: to the target's egress.
    Redirect,
    /// `bpf_redirect_peer`: straight into the ingress of the target veth's peer in another
    /// netns, skipping the target's egress and the per-CPU backlog.
    RedirectPeer,
}

impl RedirectMode {
    /// `bpf_redirect_peer` is valid from TC ingress (where netshim always is) to a veth
    /// whose peer lives in another netns; anything else (a tap, a veth with both ends
    /// here) takes `bpf_redirect`.
    pub fn towards(target: &crate::interfaces::Interface, fast_path: FastPath) -> Self {
        let peer_elsewhere =
            target.kind.as_deref() == Some("veth") && target.link_netnsid.is_some();
        if fast_path == FastPath::Auto && peer_elsewhere {
            Self::RedirectPeer
        } else {
            Self::Redirect
        }
    }
}

/// Which traffic-control datapath connects endpoint and tap (`--tc-backend`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
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

    fn iface(kind: &str, netnsid: Option<i32>) -> crate::interfaces::Interface {
        crate::interfaces::Interface {
            link: Some(3),
            link_netnsid: netnsid,
            ..crate::interfaces::Interface::for_test("x", 2, Some(kind))
        }
    }

    #[test]
    fn redirect_peer_only_towards_a_veth_with_its_peer_elsewhere() {
        use RedirectMode::*;
        assert_eq!(
            RedirectMode::towards(&iface("veth", Some(0)), FastPath::Auto),
            RedirectPeer
        );
        assert_eq!(
            RedirectMode::towards(&iface("veth", Some(0)), FastPath::Off),
            Redirect
        );
        assert_eq!(
            RedirectMode::towards(&iface("veth", None), FastPath::Auto),
            Redirect
        );
        assert_eq!(
            RedirectMode::towards(&iface("tun", None), FastPath::Auto),
            Redirect
        );
        assert_eq!(
            RedirectMode::towards(&iface("macvlan", Some(0)), FastPath::Auto),
            Redirect
        );
        assert_eq!("off".parse(), Ok(FastPath::Off));
        assert!("on".parse::<FastPath>().is_err());
    }

    #[test]
    fn backends_parse() {
        assert_eq!("ebpf".parse(), Ok(TcBackend::Ebpf));
        assert_eq!("mirred".parse(), Ok(TcBackend::Mirred));
        assert!("u32".parse::<TcBackend>().is_err());
        assert_eq!(TcBackend::default(), TcBackend::Ebpf);
    }
}
