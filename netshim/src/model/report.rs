//! What the reports say of the devices a model made for the VMM.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tap::qdisc::TapQdisc;

/// The tap made for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TapReport {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    pub queues: u32,
    pub multi_queue: bool,
    /// Always on: the VMM reads and writes frames with a virtio-net header, and may turn on
    /// offloads (TUNSETOFFLOAD) on its queue fds.
    pub vnet_hdr: bool,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub txqueuelen: Option<u32>,
    /// The tap's root qdisc (`noqueue` on the eBPF datapath); sandboxes attached by a
    /// netshim before issue 14 have the kernel's default.
    #[serde(default)]
    pub qdisc: TapQdisc,
}

/// A macvtap the VMM opens (`device`, once per queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MacvtapReport {
    pub name: String,
    pub ifindex: u32,
    pub device: PathBuf,
    pub queues: u32,
    /// Made by netshim's macvtap model (and removed by detach), or found in the netns.
    pub created: bool,
}
