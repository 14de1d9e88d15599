//! Datapaths that connect an endpoint's pod-side device to its tap.
//!
//! - [`ebpf`]: a TC classifier on both ingresses that `bpf_redirect`s to the other device,
//!   attached with TCX links pinned in bpffs (clsact + cls_bpf on kernels before 6.6).
//! - [`mirred`]: kata's tcfilter as it is (ingress qdisc, u32 match-all, mirred egress
//!   redirect), through netlink; the baseline and the fallback for kernels without BPF.
//! - [`loader`]: aya's loader without the kernel's BTF (the datapath needs no CO-RE).
//! - [`upgrade`]: a new program for an attached eBPF datapath, without a gap (with
//!   [`bpf_sys`], the bpf(2) commands aya 0.14 does not expose).

mod attach_mode;
pub mod bpf_sys;
pub mod capacity;
pub mod ebpf;
pub mod loader;
pub mod mirred;
pub mod netns_anchor;
pub mod preload;
pub mod upgrade;

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use attach_mode::AttachMode;

/// A device in the netns being worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dev {
    pub name: String,
    pub ifindex: u32,
}

impl Dev {
    pub fn of(iface: &crate::interfaces::Interface) -> Self {
        Dev {
            name: iface.name.clone(),
            ifindex: iface.ifindex,
        }
    }
}

/// One pair of devices to connect, and how each direction is redirected: `a` is the pod
/// side, `b` the tap (or device B of `netshim connect`).
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    pub index: u32,
    pub a: Dev,
    pub b: Dev,
    /// How packets reach `b` (A → B) and `a` (B → A).
    pub a_to_b: RedirectMode,
    pub b_to_a: RedirectMode,
    /// The source guard of what arrives on `b` (the tap: the VM's traffic), eBPF only.
    pub guard: Option<crate::guard::GuardEntry>,
}

impl Pair {
    pub fn new(
        index: u32,
        a: &crate::interfaces::Interface,
        b: &crate::interfaces::Interface,
        fast_path: FastPath,
    ) -> Self {
        Pair {
            index,
            a: Dev::of(a),
            b: Dev::of(b),
            a_to_b: RedirectMode::towards(b, fast_path),
            b_to_a: RedirectMode::towards(a, fast_path),
            guard: None,
        }
    }

    /// With the source guard `settings` on what `b` receives, for a VM whose MAC is `mac`
    /// and whose addresses are `addresses`.
    pub fn guarded(
        mut self,
        mac: crate::interfaces::Mac,
        addresses: &[std::net::IpAddr],
        settings: &crate::guard::GuardSettings,
    ) -> Self {
        self.guard = Some(crate::guard::GuardEntry::build(mac, addresses, settings));
        self
    }

    /// How the eBPF datapath redirects the pair, as the reports say it.
    pub fn redirects(&self) -> Redirects {
        Redirects {
            to_vm: self.a_to_b,
            from_vm: self.b_to_a,
        }
    }
}

/// How the eBPF datapath redirects each direction of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Redirects {
    /// pod device ingress → tap: always `redirect` (a tap has no peer).
    pub to_vm: RedirectMode,
    /// tap ingress → pod device: `redirect_peer` when the pod device is a veth whose peer is
    /// in another netns and the fast path is on.
    pub from_vm: RedirectMode,
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (ifindex {})", self.name, self.ifindex)
    }
}

/// `--fast-path`: whether the eBPF datapath may use `bpf_redirect_peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
        let peer_elsewhere = target.kind == Some(rtnetlink::packet_route::link::InfoKind::Veth)
            && target.link_netnsid.is_some();
        if fast_path == FastPath::Auto && peer_elsewhere {
            Self::RedirectPeer
        } else {
            Self::Redirect
        }
    }
}

/// Which traffic-control datapath connects endpoint and tap (`--tc-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
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

/// What carries a sandbox's traffic, as reports name it (`datapath`): the eBPF datapath's
/// attach mode, kata's mirred, or the models without a tc datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatapathKind {
    Tcx,
    ClsBpf,
    Mirred,
    /// The macvtap model: the kernel's macvtap, no tc datapath.
    Macvtap,
    /// The `none` model, or tcfilter with no endpoint to connect.
    None,
}

impl DatapathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::ClsBpf => "cls_bpf",
            Self::Mirred => "mirred",
            Self::Macvtap => "macvtap",
            Self::None => "none",
        }
    }
}

impl From<AttachMode> for DatapathKind {
    fn from(mode: AttachMode) -> Self {
        match mode {
            AttachMode::Tcx => Self::Tcx,
            AttachMode::ClsBpf => Self::ClsBpf,
        }
    }
}

impl fmt::Display for DatapathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
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

    #[test]
    fn datapath_kinds_serialize_as_their_names() {
        use DatapathKind::*;
        for kind in [Tcx, ClsBpf, Mirred, Macvtap, None] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<DatapathKind>(&json).unwrap(), kind);
        }
        assert_eq!(DatapathKind::from(AttachMode::ClsBpf).as_str(), "cls_bpf");
    }
}
