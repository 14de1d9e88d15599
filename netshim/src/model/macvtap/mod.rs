//! kata's macvtap internetworking model, through rtnetlink only (no `ip`, no shelling out).
//!
//! [`connect`] puts a macvtap in bridge mode on the pod interface (the veth or macvlan the CNI
//! plugin left in the sandbox netns). The macvtap takes over the pod interface's MAC and MTU,
//! so the guest (whose virtio-net device the VMM backs with `/dev/tap<ifindex>`) is what the
//! CNI network expects; the pod interface gets a random MAC and loses its addresses, because
//! the guest owns the IP now and the sandbox's own stack must not answer ARP/ND for it.
//! [`disconnect`] takes that back from a state file written before anything was changed.
//!
//! Steps of [`connect`], in this order:
//! 1. read the pod interface fresh (RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNEIGH) and
//!    write the state file (below): MAC, MTU, up-state, every IPv4/IPv6 address (link-local
//!    included), the routes through the device and its permanent neighbours;
//! 2. RTM_NEWLINK macvtap `name`, mode bridge, on the pod interface, with the pod's MAC, MTU and
//!    txqueuelen (kata: the veth's, 1500 when 0), at an ifindex picked like kata does
//!    ([`MACVTAP_IFINDEX_BASE`] + random & [`MACVTAP_IFINDEX_MASK`], [`MACVTAP_IFINDEX_TRIES`]
//!    tries), created down; IPv6 address generation off on it (`addrgenmode none`); its char
//!    device checked (see below);
//! 3. the pod's addresses removed (RTM_DELADDR, secondaries first);
//! 4. the pod gets a random locally administered unicast MAC (and is brought up, as kata does);
//! 5. the macvtap is brought up.
//!
//! On a failure after step 1, everything done so far is taken back (best effort) and the state
//! file removed; the error of the failed step is returned.
//!
//! What was measured on Linux 6.18 (and why the steps look like this):
//! - A macvtap cannot be brought up while its lower device has the same MAC (`EADDRINUSE`,
//!   macvlan's address-busy check), so the macvtap is created *down* with the pod's MAC and
//!   brought up only after the pod's MAC has changed (kata does the same: create, MACs, up).
//! - The addresses go before the MAC changes, so the sandbox stack never answers ARP for the
//!   pod IP with the random MAC in between.
//! - Deleting the pod's last IPv4 address flushes every IPv4 route through the device
//!   (`fib_disable_ip`), and changing its MAC flushes its neighbours, `permanent` ones included
//!   (`neigh_changeaddr`). kata loses both; netshim saves them and puts them back on
//!   [`disconnect`] (a failure there is logged, not fatal: kata's contract covers MAC, MTU,
//!   up-state and addresses).
//! - The macvtap would otherwise get an IPv6 link-local address made from the pod's (now the
//!   guest's) MAC: the very address the guest configures, so the guest's DAD would fail.
//!   `IFLA_INET6_ADDR_GEN_MODE` none on the macvtap prevents that.
//! - With devtmpfs, `/dev/tap<ifindex>` appears in the host's /dev as soon as the macvtap is
//!   registered, even though the macvtap lives in another netns (it did here, synchronously).
//!   But ifindexes are per netns and /dev is not: a second macvtap with the same ifindex in
//!   another netns gets no node (`/dev/tap<N>` keeps pointing at the first one's char device,
//!   so opening it would hand one sandbox's traffic to another VMM), and deleting either
//!   macvtap removes the node. That is why kata picks ifindexes from a large random range.
//!   netshim in addition skips ifindexes whose `/dev/tap<N>` exists, and after creation
//!   compares the node's device number with the macvtap's own; a mismatch deletes the macvtap
//!   and tries another ifindex; a missing node (no devtmpfs) is created with mknod (0600).
//! - The macvtap's device number is in `/sys/class/net/<name>/macvtap/tap<ifindex>/dev`, but
//!   sysfs shows the netns of whoever mounted it: the host's /sys (mounted in the root netns)
//!   has neither `/sys/class/net/<name>` nor `/sys/devices/virtual/net/<name>` for a device in
//!   another netns. netshim reads it from a fresh sysfs mounted in a private mount namespace on
//!   a short-lived thread that inherits the caller's (sandbox) netns, like `ip netns exec` does.
//! - A macvtap fd comes with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` set (a 10-byte
//!   `virtio_net_hdr` in front of every frame), as a VMM wants it.
//!
//! # State file
//!
//! `<state_dir>/macvtap-<pod ifindex>.json` (the caller passes `/run/netshim/netns-<cookie>`),
//! mode 0600 in a 0700 directory, written to a temporary file in the same directory, fsynced
//! and renamed over. Schema (version 1; a reader refuses other versions):
//!
//! ```json
//! {
//!   "version": 1,
//!   "pod": { "name": "eth0", "ifindex": 2, "mac": "c2:62:15:1b:51:27", "mtu": 1500,
//!            "up": true, "txqlen": 1000 },
//!   "addresses": [
//!     { "address": "10.123.0.2", "prefix_len": 24, "peer": null,
//!       "broadcast": "10.123.0.255", "label": "eth0", "scope": 0, "flags": 128,
//!       "valid_lft": null, "preferred_lft": null }
//!   ],
//!   "routes": [ { "summary": "default via 10.123.0.1 table 254 proto boot",
//!                 "netlink": "<hex RTM_NEWROUTE payload>" } ],
//!   "neighbours": [ { "summary": "10.123.0.9 lladdr 02:00:00:00:00:09 permanent",
//!                     "netlink": "<hex RTM_NEWNEIGH payload>" } ],
//!   "macvtap": { "name": "tap0_kata", "ifindex": 40321, "device": "/dev/tap40321",
//!                "dev": "246:1", "device_node_created": false, "queues": 1 }
//! }
//! ```
//!
//! - `addresses`, in dump order (primaries before their secondaries): `address` is the local
//!   address (`IFA_LOCAL`, or `IFA_ADDRESS` for IPv6), `peer` the point-to-point peer if any,
//!   `flags` the `IFA_F_*` bits as dumped, `valid_lft`/`preferred_lft` in seconds (`null` =
//!   forever).
//! - `routes`: every IPv4/IPv6 route through the pod device (`RTA_OIF` or a multipath hop),
//!   except kernel-made ones (proto kernel or ra, the local table, cached clones). `neighbours`:
//!   the device's `permanent` IPv4/IPv6 entries. Both keep the exact netlink message to send
//!   back (attributes the kernel refuses on input, such as cache info and the DEAD/LINKDOWN
//!   flags, stripped); `summary` is for humans only.
//! - `macvtap`: `name` is known before creation; `ifindex`, `device`, `dev` (major:minor) and
//!   `device_node_created` (netshim made the node with mknod, so [`disconnect`] removes it) are
//!   filled in once the macvtap exists (`null` until then).
//!
//! # Layout
//!
//! - `connect.rs`: [`connect`], [`disconnect`], [`is_connected`] and their steps;
//! - `link.rs`: the model's netlink requests (links, addresses, routes, neighbours) over
//!   [`crate::netlink`];
//! - `state.rs`: the state file and what it saves ([`State`](state::State), `SavedAddress`,
//!   `SavedMessage`);
//! - `devnode.rs`: the char device ([`DevNumber`], sysfs in a private mount namespace, mknod).

mod connect;
mod devnode;
mod link;
mod state;
#[cfg(test)]
mod tests;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::interfaces::Mac;

pub use connect::{connect, disconnect, is_connected};
pub use devnode::DevNumber;

/// The state file format this version writes and reads.
pub const STATE_VERSION: u32 = 1;
/// kata's `hostLinkOffset`: macvtap ifindexes start here, above any host interface.
pub const MACVTAP_IFINDEX_BASE: u32 = 8192;
/// kata's `linkRange`: the random part of a macvtap ifindex.
pub const MACVTAP_IFINDEX_MASK: u32 = 0xFFFF;
/// kata's `linkRetries`: how many ifindexes are tried.
pub const MACVTAP_IFINDEX_TRIES: u32 = 128;
/// kata's `defaultQlen`: the macvtap's txqueuelen when the pod device reports 0.
pub const DEFAULT_TXQLEN: u32 = 1500;
/// `MAX_TAP_QUEUES`: how many times a macvtap's char device can be open at once.
pub const MAX_QUEUES: u32 = 256;

/// What the VMM needs to use the macvtap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MacvtapEndpoint {
    pub name: String,
    pub ifindex: u32,
    /// `/dev/tap<ifindex>`: the VMM opens it once per queue.
    pub device: PathBuf,
    /// The pod interface's original MAC, now the macvtap's: the guest must use it.
    pub mac: Mac,
    pub mtu: u32,
    pub queues: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MacvtapError {
    #[error("macvtap {name}: {queues} queues requested; a macvtap supports 1 to {max}")]
    InvalidQueues { name: String, queues: u32, max: u32 },
    #[error("invalid macvtap name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(
        "{dev} (ifindex {ifindex}) is already connected by the macvtap model: state file \
         {path} exists (disconnect first)"
    )]
    AlreadyConnected {
        dev: String,
        ifindex: u32,
        path: PathBuf,
    },
    #[error("RTM_NEWLINK macvtap {name} on {dev} (ifindex {ifindex}): a link named {name} already exists")]
    NameTaken {
        name: String,
        dev: String,
        ifindex: u32,
    },
    #[error("RTM_GETLINK {dev} (ifindex {ifindex}): no such device")]
    PodNotFound { dev: String, ifindex: u32 },
    #[error("{dev} (ifindex {ifindex}) has no Ethernet MAC address; the macvtap model needs one")]
    NoMac { dev: String, ifindex: u32 },
    #[error("{op} for {dev} (ifindex {ifindex}): {source}")]
    Query {
        op: &'static str,
        dev: String,
        ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error(
        "RTM_NEWLINK macvtap {name} mode bridge on {dev} (ifindex {ifindex}) at ifindex \
         {macvtap_ifindex}: {source}"
    )]
    AddMacvtap {
        name: String,
        dev: String,
        ifindex: u32,
        macvtap_ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error(
        "RTM_NEWLINK macvtap {name} on {dev} (ifindex {ifindex}): no usable ifindex in {tries} \
         tries (taken in this netns, or /dev/tap<ifindex> held by a macvtap of another netns)"
    )]
    NoFreeIfindex {
        name: String,
        dev: String,
        ifindex: u32,
        tries: u32,
    },
    #[error("RTM_SETLINK {what} on {dev} (ifindex {ifindex}): {source}")]
    SetLink {
        what: String,
        dev: String,
        ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("RTM_DELLINK macvtap {name} (ifindex {ifindex}): {source}")]
    DelMacvtap {
        name: String,
        ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("RTM_DELADDR {address} on {dev} (ifindex {ifindex}): {source}")]
    DelAddress {
        address: String,
        dev: String,
        ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("RTM_NEWADDR {address} on {dev} (ifindex {ifindex}): {source}")]
    AddAddress {
        address: String,
        dev: String,
        ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error("char device number of macvtap {name} (ifindex {ifindex}): {step}: {source}")]
    DevNumber {
        name: String,
        ifindex: u32,
        step: String,
        source: io::Error,
    },
    #[error("{op} {path} for macvtap {name} (ifindex {ifindex}): {source}")]
    DeviceNode {
        op: &'static str,
        path: PathBuf,
        name: String,
        ifindex: u32,
        source: io::Error,
    },
    #[error("{op} macvtap state file {path}: {source}")]
    StateIo {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("macvtap state file {path}: {source}")]
    StateParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "macvtap state file {path} has version {version}; this netshim reads version {supported}"
    )]
    StateVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    #[error("getrandom: {source}")]
    Random { source: io::Error },
}

/// The char device a macvtap with `ifindex` gets: `/dev/tap<ifindex>`.
pub fn device_path(ifindex: u32) -> PathBuf {
    PathBuf::from(format!("/dev/tap{ifindex}"))
}

/// The state file of the pod interface `pod_ifindex`.
pub fn state_path(state_dir: &Path, pod_ifindex: u32) -> PathBuf {
    state_dir.join(format!("macvtap-{pod_ifindex}.json"))
}

/// The macvtaps the state files in `state_dir` describe, as (macvtap name, pod ifindex):
/// what [`disconnect`] takes. A state file is written before the model changes anything, so
/// this also finds a connect that was killed before its macvtap existed.
pub fn recorded(state_dir: &Path) -> Result<Vec<(String, u32)>, MacvtapError> {
    let entries = match fs::read_dir(state_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MacvtapError::StateIo {
                op: "readdir",
                path: state_dir.to_owned(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ifindex) = name
            .strip_prefix("macvtap-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|r| r.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(state) = state::read_state(&state_path(state_dir, ifindex))? {
            out.push((state.macvtap.name, ifindex));
        }
    }
    out.sort_by_key(|(_, ifindex)| *ifindex);
    Ok(out)
}

/// The macvtap's name follows the rules of the product's taps ([`crate::tap::validate_name`]:
/// an interface name, no `%` template).
fn check_name(name: &str) -> Result<(), MacvtapError> {
    crate::tap::validate_name(name).map_err(|e| match e {
        crate::tap::TapError::InvalidName { name, reason } => {
            MacvtapError::InvalidName { name, reason }
        }
        _ => MacvtapError::InvalidName {
            name: name.to_owned(),
            reason: "not an interface name",
        },
    })
}
