//! How the eBPF classifier is hooked to a device: a TCX link or a cls_bpf filter.

use aya::util::KernelVersion;
use netshim_common::{ATTACH_CLS_BPF, ATTACH_TCX};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the classifier is hooked to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// bpf_link on the TCX ingress hook, pinned in bpffs.
    Tcx,
    /// cls_bpf direct-action filter under a clsact qdisc (kernels before 6.6).
    ClsBpf,
}

impl AttachMode {
    /// TCX when the running kernel has it.
    pub fn for_running_kernel() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::ClsBpf,
        }
    }

    pub(super) fn from_record(mode: u32) -> Self {
        if mode == ATTACH_CLS_BPF {
            Self::ClsBpf
        } else {
            Self::Tcx
        }
    }

    pub(super) fn to_record(self) -> u32 {
        match self {
            Self::Tcx => ATTACH_TCX,
            Self::ClsBpf => ATTACH_CLS_BPF,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::ClsBpf => "cls_bpf",
        }
    }
}
