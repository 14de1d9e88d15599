//! kata's internetworking models (`internetworking_model` in configuration.toml) and
//! `SetModel`'s parsing rules: `default` means tcfilter; anything else is `Unknown type <x>`.
//!
//! Each model is one [`Model`]: it plugs endpoints in (gives each pod device its VM side),
//! unplugs one whose pod device is gone, and describes the datapath its endpoints get.
//! attach, hotplug (watch) and the rollback of a failed step go through it:
//! - [`tcfilter`]: a `tap<N>_kata` per endpoint, connected by a datapath of
//!   [`crate::datapath`] (eBPF or kata's mirred);
//! - [`macvtap`]: a macvtap in bridge mode on the pod device (`macvtap_model` is its
//!   [`Model`]);
//! - [`none`]: the taps alone.
//!
//! Endpoints the VMM takes as they are (physical, vhost-user, a macvtap found in the netns)
//! have no model: see [`handover`].

pub mod guard_policy;
pub mod macvtap;
mod macvtap_model;
pub(crate) mod none;
mod plugged;
pub mod report;
pub(crate) mod tcfilter;
pub(crate) mod undo;

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use guard_policy::GuardUnavailable;
pub use plugged::{AttachmentKind, EndpointDatapath};
pub(crate) use plugged::{Plug, Plugged, TapDatapath, VmSide};

use crate::{
    datapath::{AttachMode, DatapathKind, FastPath, TcBackend},
    endpoint::{Classified, EndpointKind},
    guard::GuardSettings,
    interfaces::Interface,
    netns::Netns,
    Result,
};
use report::MacvtapReport;
use undo::Undo;

/// How an endpoint in the sandbox netns is connected to the VM's tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
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

/// The attach options that concern the VM side of an endpoint.
#[derive(Debug, Clone)]
pub(crate) struct PlugOptions {
    pub backend: TcBackend,
    pub ebpf_attach: Option<AttachMode>,
    /// The eBPF object of a new sandbox's datapath; `None` = the one built in.
    pub ebpf_object: Option<crate::datapath::ebpf::EbpfObject>,
    pub fast_path: FastPath,
    /// Queues per tap (and macvtap): 0 or 1 = single queue, more = IFF_MULTI_QUEUE.
    pub queues: u32,
    pub tap_owner: Option<u32>,
    pub tap_group: Option<u32>,
    pub txqueuelen: Option<u32>,
    /// Tap names in place of `tap<N>_kata`: pod device name → tap name.
    pub tap_names: BTreeMap<String, String>,
    /// The source guard of the taps on the eBPF datapath, else why there is none.
    pub guard: std::result::Result<GuardSettings, String>,
}

/// Where a model plugs endpoints in: inside `netns`, through its netlink socket `handle`.
pub(crate) struct PlugContext<'a> {
    pub handle: &'a rtnetlink::Handle,
    pub netns: &'a Netns,
    pub options: &'a PlugOptions,
    /// A new sandbox's datapath, loading since attach began (taken by the first use).
    pub preload: Option<&'a std::sync::Mutex<Option<crate::datapath::preload::Preload>>>,
}

/// What [`Model::plug`] made: each endpoint's VM side (in the order given) and the datapath
/// that connects them.
pub(crate) struct Plugs {
    pub endpoints: Vec<Plug>,
    pub backend: Option<TcBackend>,
    pub datapath: DatapathKind,
    /// The bpffs pin directory (eBPF datapath).
    pub pin_dir: Option<PathBuf>,
}

impl Plugs {
    fn without_datapath(endpoints: Vec<Plug>, datapath: DatapathKind) -> Self {
        Plugs {
            endpoints,
            backend: None,
            datapath,
            pin_dir: None,
        }
    }
}

/// One internetworking model: how an endpoint that goes through a model (veth, macvlan,
/// ipvlan, tap-mode tuntap; see [`EndpointKind::uses_model`]) reaches the VM.
pub(crate) trait Model {
    /// The datapath its endpoints get with tc backend `backend` (what watch reports and
    /// compares).
    fn describe(&self, backend: TcBackend) -> EndpointDatapath;

    /// Gives each endpoint (index, pod device) its VM side and connects it. Every change is
    /// registered in `undo` before it is made; the caller runs `undo` on failure.
    async fn plug(
        &self,
        cx: &PlugContext<'_>,
        endpoints: &[(u32, &Interface)],
        undo: &mut Undo,
    ) -> Result<Plugs>;

    /// Takes back what `plug` made for `plugged`, whose pod device is gone. Parts already
    /// gone are fine.
    async fn unplug(
        &self,
        handle: &rtnetlink::Handle,
        netns: &Netns,
        plugged: &Plugged,
    ) -> Result<()>;
}

impl InternetworkingModel {
    /// See [`Model::describe`].
    pub(crate) fn describe(self, backend: TcBackend) -> EndpointDatapath {
        match self {
            Self::TcFilter => tcfilter::TcFilter.describe(backend),
            Self::MacVtap => macvtap_model::MacvtapModel.describe(backend),
            Self::None => none::NoModel.describe(backend),
        }
    }

    /// See [`Model::plug`].
    pub(crate) async fn plug(
        self,
        cx: &PlugContext<'_>,
        endpoints: &[(u32, &Interface)],
        undo: &mut Undo,
    ) -> Result<Plugs> {
        match self {
            Self::TcFilter => tcfilter::TcFilter.plug(cx, endpoints, undo).await,
            Self::MacVtap => macvtap_model::MacvtapModel.plug(cx, endpoints, undo).await,
            Self::None => none::NoModel.plug(cx, endpoints, undo).await,
        }
    }
}

/// Takes back what was made for `plugged` (by whichever model made it; nothing for an
/// endpoint handed over as it is). See [`Model::unplug`].
pub(crate) async fn unplug(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    plugged: &Plugged,
) -> Result<()> {
    match &plugged.vm {
        VmSide::Tap {
            datapath: TapDatapath::None,
            ..
        } => none::NoModel.unplug(handle, netns, plugged).await,
        VmSide::Tap { .. } => tcfilter::TcFilter.unplug(handle, netns, plugged).await,
        VmSide::Macvtap { .. } => {
            macvtap_model::MacvtapModel
                .unplug(handle, netns, plugged)
                .await
        }
        VmSide::Handover { .. } => Ok(()),
    }
}

/// An endpoint the VMM takes as it is (no model): a macvtap found in the netns, a
/// vhost-user socket, a physical device. `queues` is what the VMM opens a macvtap with.
pub(crate) fn handover(index: u32, iface: &Interface, class: &Classified, queues: u32) -> Plug {
    let (kind, device, macvtap) = match class.kind {
        EndpointKind::Macvtap => {
            let device = macvtap::device_path(iface.ifindex);
            let report = MacvtapReport {
                name: iface.name.clone(),
                ifindex: iface.ifindex,
                device: device.clone(),
                queues: queues.max(1),
                created: false,
            };
            (
                AttachmentKind::Macvtap,
                Some(device.display().to_string()),
                Some(report),
            )
        }
        EndpointKind::VhostUser => (
            AttachmentKind::VhostUser,
            class
                .vhost_user_socket
                .as_ref()
                .map(|s| s.display().to_string()),
            None,
        ),
        _ => (
            AttachmentKind::Physical,
            class.pci_address.as_ref().map(|p| format!("pci {p}")),
            None,
        ),
    };
    Plug {
        plugged: Plugged {
            pod: crate::datapath::Dev::of(iface),
            index,
            vm: VmSide::Handover { kind, device },
        },
        tap: None,
        macvtap,
        redirect: None,
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
