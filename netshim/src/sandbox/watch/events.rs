//! What watch reports: each change it made or saw.

use crate::{
    model::{EndpointDatapath, Plugged},
    sandbox::{AttachReport, EndpointReport},
};

/// One change the watcher made or saw, as reported to the `on_change` callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    pub netns: String,
    #[serde(flatten)]
    pub event: WatchEvent,
}

/// An endpoint as the watcher keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WatchedEndpoint {
    /// The pod device.
    pub name: String,
    pub ifindex: u32,
    /// Endpoint index: `tap<index>_kata`, `eth<index>` in the guest.
    pub index: u32,
    /// What the VMM opens: the tap, the macvtap, a vhost-user socket, a PCI address.
    pub vm_device: Option<String>,
    /// `tcfilter/ebpf`, `tcfilter/mirred`, `macvtap`, `none`, or `<kind> (handed over)`.
    pub datapath: EndpointDatapath,
}

impl WatchedEndpoint {
    pub(super) fn of(p: &Plugged) -> Self {
        Self {
            name: p.pod.name.clone(),
            ifindex: p.pod.ifindex,
            index: p.index,
            vm_device: p.vm_device(),
            datapath: p.datapath(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum WatchEvent {
    /// Watching has started. `attached`: the report of the attach this run made (none when
    /// the netns was attached already, or had no endpoint yet).
    Watching {
        attached: Option<Box<AttachReport>>,
        endpoints: Vec<WatchedEndpoint>,
    },
    /// An endpoint appeared and was handed to the VM; `report` is what attach reports for
    /// an endpoint (tap, MAC, addresses, routes, neighbours).
    Added {
        #[serde(flatten)]
        endpoint: WatchedEndpoint,
        report: Box<EndpointReport>,
    },
    /// An endpoint's pod device disappeared; what was made for it is gone.
    Removed {
        #[serde(flatten)]
        endpoint: WatchedEndpoint,
    },
    /// An interface kata would refuse appeared (`--skip-unsupported`).
    Skipped {
        name: String,
        ifindex: u32,
        detail: Option<String>,
    },
    /// Handing an endpoint to the VM, or taking it back, failed; watching goes on.
    Failed {
        name: String,
        ifindex: u32,
        error: String,
    },
    /// The addresses of an endpoint's pod device changed: its source guard now allows
    /// `addresses` (read back from the maps) instead of the old ones.
    GuardAddresses {
        name: String,
        ifindex: u32,
        index: u32,
        addresses: Vec<std::net::IpAddr>,
    },
    /// Watching has stopped; the datapath stays as it is.
    Stopped,
}
