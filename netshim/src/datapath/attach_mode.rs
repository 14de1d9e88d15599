//! How the eBPF classifier is hooked to a device: a TCX link or a cls_bpf filter.

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
    /// What `--ebpf-attach auto` chooses: cls_bpf, on every kernel. Measured on 6.18 (2 vCPU,
    /// issue 13): a TCX link costs a synchronize_rcu() per device while holding rtnl_lock
    /// (`tcx_entry_sync()`, on attach and again when the link is released), ~7-20 ms each and
    /// serialised node-wide, so an endpoint's two links cost 15-40 ms and 8 attaches at a
    /// time queue behind each other (40 sandboxes: 1.8 s TCX vs 1.0 s cls_bpf to attach,
    /// 1.1 s vs 0.4 s to detach; one watch hot-plug ~36 ms vs ~10 ms). A cls_bpf filter
    /// under clsact waits for no grace period (~0.3 ms per device). Both keep forwarding
    /// without a process, both are upgraded in place, and a TCX program another tool adds
    /// runs before ours either way (TCX runs before the clsact filters). TCX stays
    /// available with `--ebpf-attach tcx`.
    pub fn auto() -> Self {
        Self::ClsBpf
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
