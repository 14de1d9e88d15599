//! An endpoint plugged in: its pod device, its index, and what reaches the VM (the one
//! type attach, hotplug, watch and unplug share).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::report::{MacvtapReport, TapReport};
use crate::datapath::{Dev, Redirects, TcBackend};

/// How the VMM gets an endpoint (`attachment` in the reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttachmentKind {
    Tap,
    Macvtap,
    VhostUser,
    Physical,
}

impl AttachmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tap => "tap",
            Self::Macvtap => "macvtap",
            Self::VhostUser => "vhost-user",
            Self::Physical => "physical",
        }
    }
}

impl fmt::Display for AttachmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What connects a `tap<N>_kata` to its pod device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TapDatapath {
    Ebpf,
    Mirred,
    /// The `none` model: the tap alone.
    None,
}

/// How an endpoint reaches the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VmSide {
    /// A `tap<N>_kata` tun device.
    Tap { tap: Dev, datapath: TapDatapath },
    /// A macvtap made by the macvtap model on the pod device.
    Macvtap { macvtap: Dev },
    /// Nothing made: the VMM takes the endpoint as it is. `device` is what it opens.
    Handover {
        kind: AttachmentKind,
        device: Option<String>,
    },
}

/// An endpoint handed to the VM, and what was made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plugged {
    pub pod: Dev,
    /// The endpoint index: `tap<index>_kata`, counter slots, `eth<index>` in the guest.
    pub index: u32,
    pub vm: VmSide,
}

impl Plugged {
    /// The device the VMM opens (`tap1_kata`, `/dev/tap<ifindex>`, a socket, a PCI address).
    pub fn vm_device(&self) -> Option<String> {
        match &self.vm {
            VmSide::Tap { tap, .. } => Some(tap.name.clone()),
            VmSide::Macvtap { macvtap } => Some(macvtap.name.clone()),
            VmSide::Handover { device, .. } => device.clone(),
        }
    }

    /// What connects it (see [`EndpointDatapath`]).
    pub fn datapath(&self) -> EndpointDatapath {
        match &self.vm {
            VmSide::Tap { datapath, .. } => match datapath {
                TapDatapath::Ebpf => EndpointDatapath::TcFilter(TcBackend::Ebpf),
                TapDatapath::Mirred => EndpointDatapath::TcFilter(TcBackend::Mirred),
                TapDatapath::None => EndpointDatapath::None,
            },
            VmSide::Macvtap { .. } => EndpointDatapath::Macvtap,
            VmSide::Handover { kind, .. } => EndpointDatapath::HandedOver(*kind),
        }
    }

    /// How the VMM gets it.
    pub fn attachment(&self) -> AttachmentKind {
        match &self.vm {
            VmSide::Tap { .. } => AttachmentKind::Tap,
            VmSide::Macvtap { .. } => AttachmentKind::Macvtap,
            VmSide::Handover { kind, .. } => *kind,
        }
    }
}

/// A fresh plug: the endpoint, and what the reports tell the VMM of what was made.
#[derive(Debug, Clone)]
pub(crate) struct Plug {
    pub plugged: Plugged,
    pub tap: Option<TapReport>,
    pub macvtap: Option<MacvtapReport>,
    /// eBPF datapath: how each direction is redirected.
    pub redirect: Option<Redirects>,
}

/// What connects an endpoint, as watch reports it: `tcfilter/ebpf`, `tcfilter/mirred`,
/// `macvtap`, `none`, or `<kind> (handed over)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointDatapath {
    TcFilter(TcBackend),
    Macvtap,
    None,
    HandedOver(AttachmentKind),
}

impl fmt::Display for EndpointDatapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TcFilter(backend) => write!(f, "tcfilter/{backend}"),
            Self::Macvtap => f.write_str("macvtap"),
            Self::None => f.write_str("none"),
            Self::HandedOver(kind) => write!(f, "{kind} (handed over)"),
        }
    }
}

impl serde::Serialize for EndpointDatapath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugged(vm: VmSide) -> Plugged {
        Plugged {
            pod: Dev {
                name: "eth1".into(),
                ifindex: 7,
            },
            index: 1,
            vm,
        }
    }

    #[test]
    fn labels_name_model_and_backend() {
        let tap = Dev {
            name: "tap1_kata".into(),
            ifindex: 9,
        };
        let p = plugged(VmSide::Tap {
            tap: tap.clone(),
            datapath: TapDatapath::Ebpf,
        });
        assert_eq!(p.datapath().to_string(), "tcfilter/ebpf");
        assert_eq!(p.vm_device().as_deref(), Some("tap1_kata"));
        let p = plugged(VmSide::Tap {
            tap,
            datapath: TapDatapath::Mirred,
        });
        assert_eq!(p.datapath().to_string(), "tcfilter/mirred");
        let p = plugged(VmSide::Handover {
            kind: AttachmentKind::Physical,
            device: Some("pci 0000:00:03.0".into()),
        });
        assert_eq!(p.datapath().to_string(), "physical (handed over)");
        assert_eq!(p.vm_device().as_deref(), Some("pci 0000:00:03.0"));
        assert_eq!(
            serde_json::to_value(p.datapath()).unwrap(),
            "physical (handed over)"
        );
        assert_eq!(
            serde_json::to_value(AttachmentKind::VhostUser).unwrap(),
            "vhost-user"
        );
    }
}
