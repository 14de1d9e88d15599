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

use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use futures::{StreamExt, TryStreamExt};
use nix::errno::Errno;
use rtnetlink::{
    packet_core::{
        Emitable, NetlinkMessage, NetlinkPayload, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
        NLM_F_EXCL, NLM_F_REQUEST,
    },
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo},
        link::{LinkAttribute, LinkMessage, MacVtapMode},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
        route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags,
            RouteProtocol,
        },
        AddressFamily, RouteNetlinkMessage,
    },
    Handle, LinkMacVtap, LinkUnspec,
};
use serde::{Deserialize, Serialize};

use crate::interfaces::{Interface, Mac};

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
/// `IFNAMSIZ - 1`.
const MAX_IFNAME_LEN: usize = 15;
/// `INFINITY_LIFE_TIME`.
const FOREVER: u32 = u32::MAX;

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
        if let Some(state) = read_state(&state_path(state_dir, ifindex))? {
            out.push((state.macvtap.name, ifindex));
        }
    }
    out.sort_by_key(|(_, ifindex)| *ifindex);
    Ok(out)
}

/// kata's macvtap model for `pod` (a veth/macvlan with addresses), see the module docs: saves
/// the pod interface's MAC, MTU, up-state, addresses (IPv4 and IPv6, link-local included),
/// routes and permanent neighbours into the state file before changing anything; creates the
/// macvtap `name` in bridge mode on it with its MAC and MTU, up; gives the pod interface a
/// random locally administered MAC; removes its addresses. Returns the endpoint (the VMM opens
/// `device` once per queue).
///
/// Refused when the state file already exists (connected; [`disconnect`] first). On any
/// failure, what was done is undone (best effort) and the error returned.
///
/// Must run on a thread inside the netns `handle` was opened in (the char device check reads
/// sysfs for that netns).
pub async fn connect(
    handle: &Handle,
    pod: &Interface,
    name: &str,
    queues: u32,
    state_dir: &Path,
) -> Result<MacvtapEndpoint, MacvtapError> {
    check_name(name)?;
    if queues == 0 || queues > MAX_QUEUES {
        return Err(MacvtapError::InvalidQueues {
            name: name.to_owned(),
            queues,
            max: MAX_QUEUES,
        });
    }
    let path = state_path(state_dir, pod.ifindex);
    let already = |path: PathBuf| MacvtapError::AlreadyConnected {
        dev: pod.name.clone(),
        ifindex: pod.ifindex,
        path,
    };
    if path.exists() {
        return Err(already(path));
    }
    let query = |op| {
        let (dev, ifindex) = (pod.name.clone(), pod.ifindex);
        move |source| MacvtapError::Query {
            op,
            dev,
            ifindex,
            source: Box::new(source),
        }
    };
    let link = get_link(handle, pod.ifindex)
        .await
        .map_err(query("RTM_GETLINK"))?
        .ok_or_else(|| MacvtapError::PodNotFound {
            dev: pod.name.clone(),
            ifindex: pod.ifindex,
        })?;
    let link = LinkState::from_message(&link);
    let mac = link.iface.mac.ok_or_else(|| MacvtapError::NoMac {
        dev: link.iface.name.clone(),
        ifindex: link.iface.ifindex,
    })?;
    if get_link_by_name(handle, name)
        .await
        .map_err(query("RTM_GETLINK by name"))?
        .is_some()
    {
        return Err(MacvtapError::NameTaken {
            name: name.to_owned(),
            dev: link.iface.name.clone(),
            ifindex: link.iface.ifindex,
        });
    }
    let addresses = dump_addresses(handle, pod.ifindex)
        .await
        .map_err(query("RTM_GETADDR dump"))?;
    let routes = dump_routes(handle, pod.ifindex)
        .await
        .map_err(query("RTM_GETROUTE dump"))?;
    let neighbours = dump_neighbours(handle, pod.ifindex)
        .await
        .map_err(query("RTM_GETNEIGH dump"))?;

    let mut state = State {
        version: STATE_VERSION,
        pod: PodState {
            name: link.iface.name.clone(),
            ifindex: link.iface.ifindex,
            mac,
            mtu: link.iface.mtu,
            up: link.iface.up,
            txqlen: link.txqlen,
        },
        addresses: addresses.iter().map(SavedAddress::from_message).collect(),
        routes: routes.iter().map(SavedMessage::route).collect(),
        neighbours: neighbours.iter().map(SavedMessage::neighbour).collect(),
        macvtap: MacvtapState {
            name: name.to_owned(),
            ifindex: None,
            device: None,
            dev: None,
            device_node_created: false,
            queues,
        },
    };
    // Exclusive: of two connects racing for one pod device, one gets AlreadyConnected.
    match write_state(&path, &state, true) {
        Err(MacvtapError::StateIo {
            op: "link into",
            source,
            ..
        }) if source.kind() == io::ErrorKind::AlreadyExists => return Err(already(path)),
        other => other?,
    }

    match connect_steps(handle, &mut state, &addresses, &path).await {
        Ok(endpoint) => Ok(endpoint),
        Err(e) => {
            rollback(handle, &state, &path).await;
            Err(e)
        }
    }
}

/// Undoes [`connect`]: deletes the macvtap, removes a device node netshim made, restores the
/// pod interface's MAC, MTU, addresses, routes, neighbours and up-state from the state file,
/// removes the file.
///
/// Idempotent: no state file and no macvtap is Ok; a missing pod device is Ok (nothing to
/// restore). A macvtap `name` without a state file for `pod_ifindex` (or recorded under
/// another name) was not made by this model: it is left alone. If restoring fails, the state
/// file stays, so a later call can finish the job.
pub async fn disconnect(
    handle: &Handle,
    name: &str,
    pod_ifindex: u32,
    state_dir: &Path,
) -> Result<(), MacvtapError> {
    let path = state_path(state_dir, pod_ifindex);
    let Some(state) = read_state(&path)? else {
        if is_connected(handle, name, pod_ifindex).await? {
            tracing::info!(
                "macvtap {name} on ifindex {pod_ifindex} has no state file {}: not made by \
                 netshim's macvtap model, left alone",
                path.display()
            );
        }
        return Ok(());
    };
    if state.macvtap.name != name {
        tracing::info!(
            "state file {} belongs to macvtap {}, not {name}: {name} left alone",
            path.display(),
            state.macvtap.name
        );
        return Ok(());
    }
    let existing = get_link_by_name(handle, name)
        .await
        .map_err(|source| MacvtapError::Query {
            op: "RTM_GETLINK by name",
            dev: name.to_owned(),
            ifindex: state.macvtap.ifindex.unwrap_or(0),
            source: Box::new(source),
        })?
        .map(|m| LinkState::from_message(&m));
    if let Some(link) = existing {
        let recorded = state
            .macvtap
            .ifindex
            .is_none_or(|i| i == link.iface.ifindex);
        if link.is_macvtap_on(pod_ifindex) && recorded {
            delete_link(handle, name, link.iface.ifindex).await?;
        } else {
            tracing::warn!(
                "{name} (ifindex {}) is not the macvtap recorded in {}: left alone",
                link.iface.ifindex,
                path.display()
            );
        }
    }
    remove_device_node(&state.macvtap)?;
    restore_pod(handle, &state).await?;
    remove_state(&path)
}

/// Whether `name` exists and is a macvtap on `pod_ifindex`.
pub async fn is_connected(
    handle: &Handle,
    name: &str,
    pod_ifindex: u32,
) -> Result<bool, MacvtapError> {
    let link = get_link_by_name(handle, name)
        .await
        .map_err(|source| MacvtapError::Query {
            op: "RTM_GETLINK by name",
            dev: name.to_owned(),
            ifindex: 0,
            source: Box::new(source),
        })?;
    Ok(link.is_some_and(|m| LinkState::from_message(&m).is_macvtap_on(pod_ifindex)))
}

// ---- connect steps --------------------------------------------------------------------------

async fn connect_steps(
    handle: &Handle,
    state: &mut State,
    addresses: &[AddressMessage],
    path: &Path,
) -> Result<MacvtapEndpoint, MacvtapError> {
    let pod = state.pod.clone();
    let name = state.macvtap.name.clone();

    let made = create_macvtap(handle, &pod, &name).await?;
    state.macvtap.ifindex = Some(made.ifindex);
    state.macvtap.device = Some(made.device.clone());
    state.macvtap.dev = Some(made.dev);
    state.macvtap.device_node_created = made.node_created;
    write_state(path, state, false)?;

    // Secondaries are dumped after their primary; removing them first keeps the kernel from
    // dropping (or promoting) them when their primary goes.
    for msg in addresses.iter().rev() {
        del_address(handle, &pod, msg).await?;
    }

    let random = random_mac(&pod.mac)?;
    let mut set = LinkUnspec::new_with_index(pod.ifindex).address(random.0.to_vec());
    let mut what = format!("address {random}");
    if !pod.up {
        set = set.up();
        what.push_str(" up");
    }
    set_link(handle, &pod.name, pod.ifindex, what, set.build()).await?;

    set_link(
        handle,
        &name,
        made.ifindex,
        "up".to_owned(),
        LinkUnspec::new_with_index(made.ifindex).up().build(),
    )
    .await?;

    Ok(MacvtapEndpoint {
        name,
        ifindex: made.ifindex,
        device: made.device,
        mac: pod.mac,
        mtu: pod.mtu,
        queues: state.macvtap.queues,
    })
}

struct Made {
    ifindex: u32,
    device: PathBuf,
    dev: DevNumber,
    node_created: bool,
}

/// RTM_NEWLINK macvtap at a random ifindex (kata's range), down, with the pod's MAC/MTU/qlen;
/// addrgenmode none; char device checked. Retries another ifindex when this one is taken in
/// the netns or its `/dev/tap<ifindex>` belongs to someone else. Leaves nothing behind on error.
async fn create_macvtap(handle: &Handle, pod: &PodState, name: &str) -> Result<Made, MacvtapError> {
    let txqlen = if pod.txqlen == 0 {
        DEFAULT_TXQLEN
    } else {
        pod.txqlen
    };
    for _ in 0..MACVTAP_IFINDEX_TRIES {
        let ifindex = MACVTAP_IFINDEX_BASE + (random_u32()? & MACVTAP_IFINDEX_MASK);
        let device = device_path(ifindex);
        if fs::symlink_metadata(&device).is_ok() {
            // A macvtap of another netns (or a stale node) has this name in /dev.
            continue;
        }
        let msg = LinkMacVtap::new(name, pod.ifindex, MacVtapMode::Bridge)
            .index(ifindex)
            .address(pod.mac.0.to_vec())
            .mtu(pod.mtu)
            .txqueuelen(txqlen)
            .build();
        if let Err(source) = handle.link().add(msg).execute().await {
            // A taken ifindex is EEXIST, as is a taken name: tell them apart by the name.
            if errno(&source) == Some(Errno::EEXIST)
                && !matches!(get_link_by_name(handle, name).await, Ok(Some(_)))
            {
                continue;
            }
            return Err(MacvtapError::AddMacvtap {
                name: name.to_owned(),
                dev: pod.name.clone(),
                ifindex: pod.ifindex,
                macvtap_ifindex: ifindex,
                source: Box::new(source),
            });
        }
        match finish_macvtap(handle, name, ifindex, &device).await {
            Ok(Some((dev, node_created))) => {
                return Ok(Made {
                    ifindex,
                    device,
                    dev,
                    node_created,
                })
            }
            Ok(None) => {
                tracing::info!(
                    "{} belongs to another macvtap; trying another ifindex for {name}",
                    device.display()
                );
                delete_link(handle, name, ifindex).await?;
            }
            Err(e) => {
                if let Err(del) = delete_link(handle, name, ifindex).await {
                    tracing::warn!("undo: {del}");
                }
                return Err(e);
            }
        }
    }
    Err(MacvtapError::NoFreeIfindex {
        name: name.to_owned(),
        dev: pod.name.clone(),
        ifindex: pod.ifindex,
        tries: MACVTAP_IFINDEX_TRIES,
    })
}

/// addrgenmode none, then the char device: `Some((dev, created))` when `/dev/tap<ifindex>` is
/// (now) this macvtap's, `None` when it is another device's.
async fn finish_macvtap(
    handle: &Handle,
    name: &str,
    ifindex: u32,
    device: &Path,
) -> Result<Option<(DevNumber, bool)>, MacvtapError> {
    crate::interfaces::disable_ipv6_addrconf(handle, ifindex)
        .await
        .map_err(|source| MacvtapError::SetLink {
            what: "addrgenmode none".into(),
            dev: name.to_owned(),
            ifindex,
            source: Box::new(source),
        })?;
    let dev = read_dev_number(name, ifindex)?;
    let node_err = |op, source| MacvtapError::DeviceNode {
        op,
        path: device.to_owned(),
        name: name.to_owned(),
        ifindex,
        source,
    };
    match node_status(device, dev).map_err(|e| node_err("stat", e))? {
        NodeStatus::Ours => Ok(Some((dev, false))),
        NodeStatus::Foreign => Ok(None),
        NodeStatus::Missing => {
            make_node(device, dev).map_err(|e| node_err("mknod", e))?;
            Ok(Some((dev, true)))
        }
    }
}

/// Takes back what [`connect`] did, best effort; failures are logged. The state file is
/// removed only if the pod device could be restored.
async fn rollback(handle: &Handle, state: &State, path: &Path) {
    if let Some(ifindex) = state.macvtap.ifindex {
        if let Err(e) = delete_link(handle, &state.macvtap.name, ifindex).await {
            tracing::warn!("undo: {e}");
        }
    }
    if let Err(e) = remove_device_node(&state.macvtap) {
        tracing::warn!("undo: {e}");
    }
    match restore_pod(handle, state).await {
        Ok(()) => {
            if let Err(e) = remove_state(path) {
                tracing::warn!("undo: {e}");
            }
        }
        Err(e) => tracing::warn!("undo: {e} (state kept in {})", path.display()),
    }
}

/// Puts the pod device back as the state file describes it. Only what differs is changed (a
/// MAC set to the same value would still flush the neighbour table). A device at the recorded
/// ifindex with another name is not the pod device any more: nothing is restored.
async fn restore_pod(handle: &Handle, state: &State) -> Result<(), MacvtapError> {
    let pod = &state.pod;
    let current = get_link(handle, pod.ifindex)
        .await
        .map_err(|source| MacvtapError::Query {
            op: "RTM_GETLINK",
            dev: pod.name.clone(),
            ifindex: pod.ifindex,
            source: Box::new(source),
        })?;
    let Some(current) = current.map(|m| LinkState::from_message(&m)) else {
        return Ok(());
    };
    let cur = &current.iface;
    if cur.name != pod.name {
        tracing::warn!(
            "ifindex {} is {} now, not {}: pod device not restored",
            pod.ifindex,
            cur.name,
            pod.name
        );
        return Ok(());
    }
    let mut errors = Vec::new();
    if cur.mac != Some(pod.mac) {
        let msg = LinkUnspec::new_with_index(pod.ifindex)
            .address(pod.mac.0.to_vec())
            .build();
        let what = format!("address {}", pod.mac);
        errors.extend(
            set_link(handle, &pod.name, pod.ifindex, what, msg)
                .await
                .err(),
        );
    }
    if cur.mtu != pod.mtu {
        let msg = LinkUnspec::new_with_index(pod.ifindex).mtu(pod.mtu).build();
        let what = format!("mtu {}", pod.mtu);
        errors.extend(
            set_link(handle, &pod.name, pod.ifindex, what, msg)
                .await
                .err(),
        );
    }
    if pod.up && !cur.up {
        let msg = LinkUnspec::new_with_index(pod.ifindex).up().build();
        errors.extend(
            set_link(handle, &pod.name, pod.ifindex, "up".into(), msg)
                .await
                .err(),
        );
    }
    for a in &state.addresses {
        errors.extend(add_address(handle, pod, a).await.err());
    }
    for r in &state.routes {
        if let Err(e) = restore_raw(handle, r, Kind::Route).await {
            tracing::warn!(
                "RTM_NEWROUTE {} on {} (ifindex {}): {e}",
                r.summary,
                pod.name,
                pod.ifindex
            );
        }
    }
    for n in &state.neighbours {
        if let Err(e) = restore_raw(handle, n, Kind::Neighbour).await {
            tracing::warn!(
                "RTM_NEWNEIGH {} on {} (ifindex {}): {e}",
                n.summary,
                pod.name,
                pod.ifindex
            );
        }
    }
    if !pod.up && cur.up {
        let msg = LinkUnspec::new_with_index(pod.ifindex).down().build();
        errors.extend(
            set_link(handle, &pod.name, pod.ifindex, "down".into(), msg)
                .await
                .err(),
        );
    }
    for e in errors.iter().skip(1) {
        tracing::warn!("restoring {}: {e}", pod.name);
    }
    errors.into_iter().next().map_or(Ok(()), Err)
}

// ---- netlink --------------------------------------------------------------------------------

/// A link as the model needs it: [`Interface`] plus `IFLA_LINK` and txqueuelen.
struct LinkState {
    iface: Interface,
    link: Option<u32>,
    txqlen: u32,
}

impl LinkState {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut state = LinkState {
            iface: Interface::from_link_message(msg),
            link: None,
            txqlen: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Link(l) => state.link = Some(*l),
                LinkAttribute::TxQueueLen(q) => state.txqlen = *q,
                _ => {}
            }
        }
        state
    }

    fn is_macvtap_on(&self, pod_ifindex: u32) -> bool {
        self.iface.kind == Some(rtnetlink::packet_route::link::InfoKind::MacVtap)
            && self.link == Some(pod_ifindex)
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

async fn get_link(handle: &Handle, ifindex: u32) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    match links.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn get_link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn set_link(
    handle: &Handle,
    dev: &str,
    ifindex: u32,
    what: String,
    msg: LinkMessage,
) -> Result<(), MacvtapError> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|source| MacvtapError::SetLink {
            what,
            dev: dev.to_owned(),
            ifindex,
            source: Box::new(source),
        })
}

/// RTM_DELLINK by ifindex; a link that is already gone is fine.
async fn delete_link(handle: &Handle, name: &str, ifindex: u32) -> Result<(), MacvtapError> {
    match handle.link().del(ifindex).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(()),
        Err(source) => Err(MacvtapError::DelMacvtap {
            name: name.to_owned(),
            ifindex,
            source: Box::new(source),
        }),
    }
}

/// A dump request; every reply message, or the first error the kernel reported.
async fn dump(
    handle: &Handle,
    request: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, rtnetlink::Error> {
    let mut req = NetlinkMessage::from(request);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut replies = handle.clone().request(req)?;
    let mut out = Vec::new();
    let mut failed = None;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(m) => out.push(m),
            NetlinkPayload::Error(e) if e.code.is_some() => failed = failed.or(Some(e)),
            _ => {}
        }
    }
    match failed {
        Some(e) => Err(rtnetlink::Error::NetlinkError(e)),
        None => Ok(out),
    }
}

/// A request answered by an ACK.
async fn request_ack(
    handle: &Handle,
    request: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(request);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut replies = handle.clone().request(req)?;
    let mut failed = None;
    while let Some(reply) = replies.next().await {
        if let NetlinkPayload::Error(e) = reply.payload {
            if e.code.is_some() {
                failed = failed.or(Some(e));
            }
        }
    }
    failed.map_or(Ok(()), |e| Err(rtnetlink::Error::NetlinkError(e)))
}

/// The device's IPv4 and IPv6 addresses, in dump order.
async fn dump_addresses(
    handle: &Handle,
    ifindex: u32,
) -> Result<Vec<AddressMessage>, rtnetlink::Error> {
    let msgs = dump(handle, RouteNetlinkMessage::GetAddress(Default::default())).await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a)
                if a.header.index == ifindex
                    && matches!(a.header.family, AddressFamily::Inet | AddressFamily::Inet6) =>
            {
                Some(a)
            }
            _ => None,
        })
        .collect())
}

/// The routes through the device that the kernel would not make again by itself.
async fn dump_routes(handle: &Handle, ifindex: u32) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let msgs = dump(handle, RouteNetlinkMessage::GetRoute(Default::default())).await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) if route_to_save(&r, ifindex) => {
                Some(sanitize_route(r))
            }
            _ => None,
        })
        .collect())
}

/// The device's permanent IPv4/IPv6 neighbours.
async fn dump_neighbours(
    handle: &Handle,
    ifindex: u32,
) -> Result<Vec<NeighbourMessage>, rtnetlink::Error> {
    let msgs = dump(
        handle,
        RouteNetlinkMessage::GetNeighbour(Default::default()),
    )
    .await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if neighbour_to_save(&n, ifindex) => {
                Some(sanitize_neighbour(n))
            }
            _ => None,
        })
        .collect())
}

const RT_TABLE_LOCAL: u32 = 255;

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_to_save(r: &RouteMessage, ifindex: u32) -> bool {
    if !matches!(
        r.header.address_family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) || matches!(r.header.protocol, RouteProtocol::Kernel | RouteProtocol::Ra)
        || r.header.flags.contains(RouteFlags::Cloned)
        || route_table(r) == RT_TABLE_LOCAL
    {
        return false;
    }
    r.attributes.iter().any(|a| match a {
        RouteAttribute::Oif(o) => *o == ifindex,
        RouteAttribute::MultiPath(hops) => hops.iter().any(|h| h.interface_index == ifindex),
        _ => false,
    })
}

/// Drops what RTM_NEWROUTE refuses or ignores: DEAD/LINKDOWN and the other status flags
/// (only ONLINK and PERVASIVE are requests), cache info and expiry.
fn sanitize_route(mut r: RouteMessage) -> RouteMessage {
    r.header.flags &= RouteFlags::Onlink | RouteFlags::Pervasive;
    r.attributes.retain(|a| {
        !matches!(
            a,
            RouteAttribute::CacheInfo(_)
                | RouteAttribute::Expires(_)
                | RouteAttribute::MulticastExpires(_)
        )
    });
    for a in &mut r.attributes {
        if let RouteAttribute::MultiPath(hops) = a {
            for h in hops {
                h.flags &= RouteNextHopFlags::Onlink | RouteNextHopFlags::Pervasive;
            }
        }
    }
    r
}

fn neighbour_to_save(n: &NeighbourMessage, ifindex: u32) -> bool {
    n.header.ifindex == ifindex
        && matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6)
        && n.header.state == NeighbourState::Permanent
        && !n.header.flags.contains(NeighbourFlags::Proxy)
}

fn sanitize_neighbour(mut n: NeighbourMessage) -> NeighbourMessage {
    n.attributes.retain(|a| {
        !matches!(
            a,
            NeighbourAttribute::CacheInfo(_) | NeighbourAttribute::Probes(_)
        )
    });
    n
}

/// RTM_DELADDR of a dumped address; one that is gone already (a secondary removed with its
/// primary) is fine.
async fn del_address(
    handle: &Handle,
    pod: &PodState,
    msg: &AddressMessage,
) -> Result<(), MacvtapError> {
    match handle.address().del(msg.clone()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::EADDRNOTAVAIL) => Ok(()),
        Err(source) => Err(MacvtapError::DelAddress {
            address: SavedAddress::from_message(msg).to_string(),
            dev: pod.name.clone(),
            ifindex: pod.ifindex,
            source: Box::new(source),
        }),
    }
}

/// RTM_NEWADDR (create, exclusive); an address that is there already is fine.
async fn add_address(
    handle: &Handle,
    pod: &PodState,
    a: &SavedAddress,
) -> Result<(), MacvtapError> {
    let msg = a.to_message(pod.ifindex);
    match request_ack(
        handle,
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(()),
        Err(source) => Err(MacvtapError::AddAddress {
            address: a.to_string(),
            dev: pod.name.clone(),
            ifindex: pod.ifindex,
            source: Box::new(source),
        }),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Route,
    Neighbour,
}

/// Sends a saved RTM_NEWROUTE / RTM_NEWNEIGH again (create, exclusive); one that exists is
/// fine.
async fn restore_raw(handle: &Handle, saved: &SavedMessage, kind: Kind) -> Result<(), String> {
    let bytes = from_hex(&saved.netlink).ok_or("bad hex in state file")?;
    let msg = match kind {
        Kind::Route => RouteNetlinkMessage::NewRoute(
            RouteMessage::parse(&bytes[..]).map_err(|e| e.to_string())?,
        ),
        Kind::Neighbour => RouteNetlinkMessage::NewNeighbour(
            NeighbourMessage::parse(&bytes[..]).map_err(|e| e.to_string())?,
        ),
    };
    match request_ack(handle, msg, NLM_F_CREATE | NLM_F_EXCL).await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

// ---- the char device ------------------------------------------------------------------------

/// A char device number, `major:minor` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNumber {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for DevNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for DevNumber {
    type Err = String;

    /// Parses sysfs' `dev` attribute: `major:minor`, trailing newline allowed.
    fn from_str(s: &str) -> Result<Self, String> {
        let (major, minor) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not major:minor"))?;
        let num = |x: &str| x.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
        Ok(DevNumber {
            major: num(major)?,
            minor: num(minor)?,
        })
    }
}

impl DevNumber {
    fn rdev(self) -> u64 {
        libc::makedev(self.major, self.minor)
    }
}

impl Serialize for DevNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DevNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Reads `class/net/<name>/macvtap/tap<ifindex>/dev` from a sysfs mounted for the caller's
/// netns: on a new thread (it inherits the calling thread's netns), in a private mount
/// namespace (unshare CLONE_NEWNS, `/` made rslave so nothing propagates back), where a fresh
/// sysfs is mounted over /sys. The thread's mount namespace, and the mount, die with it.
fn read_dev_number(name: &str, ifindex: u32) -> Result<DevNumber, MacvtapError> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};

    let attr = format!("/sys/class/net/{name}/macvtap/tap{ifindex}/dev");
    let err = |step: String, source: io::Error| MacvtapError::DevNumber {
        name: name.to_owned(),
        ifindex,
        step,
        source,
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| err("unshare(CLONE_NEWNS)".into(), e.into()))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .map_err(|e| err("mount --make-rslave /".into(), e.into()))?;
            mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| err("mount -t sysfs (private) /sys".into(), e.into()))?;
            let text = fs::read_to_string(&attr).map_err(|e| err(format!("read {attr}"), e))?;
            text.parse::<DevNumber>().map_err(|e| {
                err(
                    format!("parse {attr}"),
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(err(
                "sysfs reader thread".into(),
                io::Error::other("panicked"),
            ))
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeStatus {
    /// A char device node with this device number.
    Ours,
    /// Nothing at the path.
    Missing,
    /// Something else (another device's node, or not a char device).
    Foreign,
}

fn node_status(path: &Path, dev: DevNumber) -> io::Result<NodeStatus> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() && meta.rdev() == dev.rdev() => {
            Ok(NodeStatus::Ours)
        }
        Ok(_) => Ok(NodeStatus::Foreign),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeStatus::Missing),
        Err(e) => Err(e),
    }
}

/// `mknod path c major minor`, mode 0600 (what devtmpfs gives a macvtap), root-owned.
fn make_node(path: &Path, dev: DevNumber) -> io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        dev.rdev(),
    )?;
    // mknod's mode is filtered by the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

/// Removes the node [`make_node`] made, if it is still that device's.
fn remove_device_node(m: &MacvtapState) -> Result<(), MacvtapError> {
    let (true, Some(device), Some(dev)) = (m.device_node_created, &m.device, m.dev) else {
        return Ok(());
    };
    let err = |op, source| MacvtapError::DeviceNode {
        op,
        path: device.clone(),
        name: m.name.clone(),
        ifindex: m.ifindex.unwrap_or(0),
        source,
    };
    if node_status(device, dev).map_err(|e| err("stat", e))? != NodeStatus::Ours {
        return Ok(());
    }
    match fs::remove_file(device) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("unlink", e)),
    }
}

// ---- state file -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u32,
    pod: PodState,
    addresses: Vec<SavedAddress>,
    routes: Vec<SavedMessage>,
    neighbours: Vec<SavedMessage>,
    macvtap: MacvtapState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PodState {
    name: String,
    ifindex: u32,
    #[serde(with = "mac_text")]
    mac: Mac,
    mtu: u32,
    up: bool,
    txqlen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MacvtapState {
    name: String,
    ifindex: Option<u32>,
    device: Option<PathBuf>,
    dev: Option<DevNumber>,
    device_node_created: bool,
    queues: u32,
}

/// One address as `ip addr` would show it, enough to add it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedAddress {
    address: IpAddr,
    prefix_len: u8,
    peer: Option<IpAddr>,
    broadcast: Option<Ipv4Addr>,
    label: Option<String>,
    scope: u8,
    flags: u32,
    valid_lft: Option<u32>,
    preferred_lft: Option<u32>,
}

impl std::fmt::Display for SavedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(peer) = self.peer {
            write!(f, " peer {peer}")?;
        }
        write!(f, "/{}", self.prefix_len)
    }
}

/// The `IFA_F_*` flags RTM_NEWADDR takes as requests (the rest is state the kernel keeps).
fn settable_address_flags() -> AddressFlags {
    AddressFlags::Nodad
        | AddressFlags::Homeaddress
        | AddressFlags::Managetempaddr
        | AddressFlags::Noprefixroute
        | AddressFlags::Mcautojoin
}

impl SavedAddress {
    fn from_message(msg: &AddressMessage) -> Self {
        let mut address = None;
        let mut local = None;
        let mut saved = SavedAddress {
            address: IpAddr::from([0, 0, 0, 0]),
            prefix_len: msg.header.prefix_len,
            peer: None,
            broadcast: None,
            label: None,
            scope: msg.header.scope.into(),
            flags: u32::from(msg.header.flags.bits()),
            valid_lft: None,
            preferred_lft: None,
        };
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Broadcast(b) => saved.broadcast = Some(*b),
                AddressAttribute::Label(l) => saved.label = Some(l.clone()),
                AddressAttribute::Flags(f) => saved.flags = f.bits(),
                AddressAttribute::CacheInfo(ci) => {
                    saved.valid_lft = (ci.ifa_valid != FOREVER).then_some(ci.ifa_valid);
                    saved.preferred_lft = (ci.ifa_preferred != FOREVER).then_some(ci.ifa_preferred);
                }
                _ => {}
            }
        }
        // IPv4: IFA_LOCAL is the address, IFA_ADDRESS the peer (the same when there is none).
        // IPv6: IFA_ADDRESS is the address; IFA_LOCAL appears only with a peer.
        match (local, address) {
            (Some(l), Some(a)) => {
                saved.address = l;
                saved.peer = (a != l).then_some(a);
            }
            (Some(x), None) | (None, Some(x)) => saved.address = x,
            (None, None) => {}
        }
        saved
    }

    fn to_message(&self, ifindex: u32) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = match self.address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = self.prefix_len;
        msg.header.scope = self.scope.into();
        msg.header.index = ifindex;
        let flags = AddressFlags::from_bits_retain(self.flags) & settable_address_flags();
        msg.header.flags = AddressHeaderFlags::from_bits_retain(flags.bits() as u8);
        let attrs = &mut msg.attributes;
        match (self.address, self.peer) {
            (IpAddr::V4(_), peer) => {
                attrs.push(AddressAttribute::Local(self.address));
                attrs.push(AddressAttribute::Address(peer.unwrap_or(self.address)));
            }
            (IpAddr::V6(_), Some(peer)) => {
                attrs.push(AddressAttribute::Local(self.address));
                attrs.push(AddressAttribute::Address(peer));
            }
            (IpAddr::V6(_), None) => attrs.push(AddressAttribute::Address(self.address)),
        }
        if let Some(b) = self.broadcast {
            attrs.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = &self.label {
            attrs.push(AddressAttribute::Label(l.clone()));
        }
        attrs.push(AddressAttribute::Flags(flags));
        if self.valid_lft.is_some() || self.preferred_lft.is_some() {
            let mut ci = CacheInfo::default();
            ci.ifa_valid = self.valid_lft.unwrap_or(FOREVER);
            ci.ifa_preferred = self.preferred_lft.unwrap_or(FOREVER);
            attrs.push(AddressAttribute::CacheInfo(ci));
        }
        msg
    }
}

/// A netlink message kept verbatim (hex), with a summary for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedMessage {
    summary: String,
    netlink: String,
}

impl SavedMessage {
    fn route(r: &RouteMessage) -> Self {
        SavedMessage {
            summary: route_summary(r),
            netlink: to_hex(&emit(r)),
        }
    }

    fn neighbour(n: &NeighbourMessage) -> Self {
        SavedMessage {
            summary: neighbour_summary(n),
            netlink: to_hex(&emit(n)),
        }
    }
}

fn emit<T: Emitable>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

fn route_address(a: &RouteAddress) -> String {
    match a {
        RouteAddress::Inet(v4) => v4.to_string(),
        RouteAddress::Inet6(v6) => v6.to_string(),
        other => format!("{other:?}"),
    }
}

/// `ip route`-like: `10.124.0.0/24 via 10.123.0.1 table 254 proto boot`.
fn route_summary(r: &RouteMessage) -> String {
    let mut dst = None;
    let (mut via, mut rest) = (Vec::new(), Vec::new());
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = Some(route_address(d)),
            RouteAttribute::Gateway(g) => via.push(format!("via {}", route_address(g))),
            RouteAttribute::MultiPath(hops) => via.push(format!("{} nexthops", hops.len())),
            RouteAttribute::PrefSource(s) => rest.push(format!("src {}", route_address(s))),
            RouteAttribute::Priority(p) => rest.push(format!("metric {p}")),
            _ => {}
        }
    }
    let dst = match dst {
        Some(d) => format!("{d}/{}", r.header.destination_prefix_length),
        None => "default".to_owned(),
    };
    via.append(&mut rest);
    via.push(format!("table {}", route_table(r)));
    via.push(format!("proto {}", r.header.protocol));
    format!("{dst} {}", via.join(" "))
}

fn neighbour_summary(n: &NeighbourMessage) -> String {
    let mut dst = String::from("?");
    let mut lladdr = String::new();
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = ip.to_string(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => dst = ip.to_string(),
            NeighbourAttribute::Destination(other) => dst = format!("{other:?}"),
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                lladdr = format!(" lladdr {}", Mac(m));
            }
            _ => {}
        }
    }
    format!("{dst}{lladdr} permanent")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

mod mac_text {
    use super::Mac;

    pub fn serialize<S: serde::Serializer>(mac: &Mac, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        super::parse_mac(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("bad MAC address {text:?}")))
    }
}

fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(mac))
}

/// Writes the state atomically: temporary file (0600) in the same directory, fsync, then
/// rename over `path` (or, when `exclusive`, link to `path`, which fails with `AlreadyExists`
/// if it is there), fsync of the directory. The directory is created 0700 if missing.
fn write_state(path: &Path, state: &State, exclusive: bool) -> Result<(), MacvtapError> {
    let io_err = |op, p: &Path| {
        let p = p.to_owned();
        move |source| MacvtapError::StateIo {
            op,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("mkdir", dir))?;
    let mut json = serde_json::to_vec_pretty(state).map_err(|source| MacvtapError::StateParse {
        path: path.to_owned(),
        source,
    })?;
    json.push(b'\n');
    let placement = if exclusive {
        crate::state::Placement::Exclusive
    } else {
        crate::state::Placement::Replace
    };
    crate::state::place_file(path, &json, placement).map_err(|e| match e {
        crate::pins::PinError::Io { op, path, source } => {
            MacvtapError::StateIo { op, path, source }
        }
        other => MacvtapError::StateIo {
            op: "write",
            path: path.to_owned(),
            source: io::Error::other(other.to_string()),
        },
    })
}

/// The state file, `None` if there is none.
fn read_state(path: &Path) -> Result<Option<State>, MacvtapError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MacvtapError::StateIo {
                op: "read",
                path: path.to_owned(),
                source,
            })
        }
    };
    parse_state(path, &bytes).map(Some)
}

fn parse_state(path: &Path, bytes: &[u8]) -> Result<State, MacvtapError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let parse_err = |source| MacvtapError::StateParse {
        path: path.to_owned(),
        source,
    };
    let v: Version = serde_json::from_slice(bytes).map_err(parse_err)?;
    if v.version != STATE_VERSION {
        return Err(MacvtapError::StateVersion {
            path: path.to_owned(),
            version: v.version,
            supported: STATE_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(parse_err)
}

fn remove_state(path: &Path) -> Result<(), MacvtapError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MacvtapError::StateIo {
            op: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

// ---- small helpers --------------------------------------------------------------------------

fn check_name(name: &str) -> Result<(), MacvtapError> {
    let bad = |reason| {
        Err(MacvtapError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad("longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return bad("not an interface name");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return bad("contains '/', ':', whitespace or NUL");
    }
    Ok(())
}

fn random_bytes(buf: &mut [u8]) -> Result<(), MacvtapError> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(MacvtapError::Random { source: e });
        }
        filled += n as usize;
    }
    Ok(())
}

fn random_u32() -> Result<u32, MacvtapError> {
    let mut b = [0u8; 4];
    random_bytes(&mut b)?;
    Ok(u32::from_ne_bytes(b))
}

/// A random locally administered unicast MAC that differs from `old`.
fn random_mac(old: &Mac) -> Result<Mac, MacvtapError> {
    loop {
        let mut b = [0u8; 6];
        random_bytes(&mut b)?;
        let mac = local_unicast(b);
        if mac != *old {
            return Ok(mac);
        }
    }
}

/// Clears the multicast bit and sets the locally administered bit.
fn local_unicast(mut b: [u8; 6]) -> Mac {
    b[0] = (b[0] & 0xfe) | 0x02;
    Mac(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::{RouteNextHop, RouteType};
    use std::net::Ipv6Addr;

    fn sample_state() -> State {
        State {
            version: STATE_VERSION,
            pod: PodState {
                name: "eth0".into(),
                ifindex: 2,
                mac: Mac([0xc2, 0x62, 0x15, 0x1b, 0x51, 0x27]),
                mtu: 1450,
                up: true,
                txqlen: 1000,
            },
            addresses: vec![SavedAddress {
                address: "10.123.0.2".parse().unwrap(),
                prefix_len: 24,
                peer: None,
                broadcast: Some("10.123.0.255".parse().unwrap()),
                label: Some("eth0".into()),
                scope: 0,
                flags: 0x80,
                valid_lft: None,
                preferred_lft: None,
            }],
            routes: vec![],
            neighbours: vec![],
            macvtap: MacvtapState {
                name: "tap0_kata".into(),
                ifindex: Some(40321),
                device: Some(device_path(40321)),
                dev: Some(DevNumber {
                    major: 246,
                    minor: 1,
                }),
                device_node_created: false,
                queues: 2,
            },
        }
    }

    #[test]
    fn state_round_trips_through_json_with_readable_fields() {
        let state = sample_state();
        let json = serde_json::to_string_pretty(&state).unwrap();
        assert!(json.contains("\"version\": 1"), "{json}");
        assert!(json.contains("\"mac\": \"c2:62:15:1b:51:27\""), "{json}");
        assert!(json.contains("\"dev\": \"246:1\""), "{json}");
        assert!(json.contains("\"device\": \"/dev/tap40321\""), "{json}");
        assert!(json.contains("\"address\": \"10.123.0.2\""), "{json}");
        let back = parse_state(Path::new("x"), json.as_bytes()).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn other_state_versions_are_refused() {
        let json = serde_json::to_string(&sample_state())
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        let err = parse_state(Path::new("/run/x.json"), json.as_bytes()).unwrap_err();
        assert!(
            matches!(err, MacvtapError::StateVersion { version: 2, .. }),
            "{err}"
        );
        let err = parse_state(Path::new("/run/x.json"), b"{\"version\":1}").unwrap_err();
        assert!(matches!(err, MacvtapError::StateParse { .. }), "{err}");
    }

    #[test]
    fn state_file_is_written_0600_in_a_0700_dir_and_replaced_atomically() {
        let base = std::env::temp_dir().join(format!(
            "netshim-macvtap-unit-{}-{}",
            std::process::id(),
            random_u32().unwrap()
        ));
        let dir = base.join("netns-1");
        let path = state_path(&dir, 2);
        assert_eq!(path, dir.join("macvtap-2.json"));
        let mut state = sample_state();
        write_state(&path, &state, true).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        state.macvtap.ifindex = Some(9000);
        let err = write_state(&path, &state, true).unwrap_err();
        assert!(
            matches!(&err, MacvtapError::StateIo { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        write_state(&path, &state, false).unwrap();
        assert_eq!(read_state(&path).unwrap(), Some(state));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("macvtap-2.json")]);
        remove_state(&path).unwrap();
        remove_state(&path).unwrap();
        assert_eq!(read_state(&path).unwrap(), None);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn dev_numbers_parse_from_sysfs_text() {
        assert_eq!(
            "246:1\n".parse::<DevNumber>(),
            Ok(DevNumber {
                major: 246,
                minor: 1
            })
        );
        assert!("246".parse::<DevNumber>().is_err());
        assert!("a:1".parse::<DevNumber>().is_err());
        let d = DevNumber {
            major: 246,
            minor: 3,
        };
        assert_eq!(d.to_string(), "246:3");
        assert_eq!(libc::major(d.rdev()), 246);
        assert_eq!(libc::minor(d.rdev()), 3);
    }

    #[test]
    fn random_macs_are_local_unicast_and_new() {
        assert_eq!(local_unicast([0xff; 6]).0[0], 0xfe);
        assert_eq!(local_unicast([0; 6]).0[0], 0x02);
        let old = Mac([0x02, 0, 0, 0, 0, 1]);
        for _ in 0..64 {
            let m = random_mac(&old).unwrap();
            assert_ne!(m, old);
            assert_eq!(m.0[0] & 0x01, 0, "unicast");
            assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
        }
        let idx = MACVTAP_IFINDEX_BASE + (random_u32().unwrap() & MACVTAP_IFINDEX_MASK);
        assert!((8192..=8192 + 0xffff).contains(&idx));
    }

    #[test]
    fn mac_text_parses_what_display_prints() {
        let m = Mac([0x02, 0xab, 0, 1, 0x10, 0xff]);
        assert_eq!(parse_mac(&m.to_string()), Some(m));
        assert_eq!(parse_mac("02:ab:00:01:10"), None);
        assert_eq!(parse_mac("02:ab:00:01:10:ff:00"), None);
        assert_eq!(parse_mac("2:ab:00:01:10:ff"), None);
    }

    #[test]
    fn hex_round_trips() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&b), "0001abff");
        assert_eq!(from_hex("0001abff"), Some(b));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn names_are_checked() {
        for ok in ["macvtap0", "tap0_kata", "a"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "a:b", ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ipv4_address_is_saved_and_rebuilt() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 24;
        msg.header.index = 2;
        msg.header.flags = AddressHeaderFlags::Permanent;
        let ip: IpAddr = "10.123.0.2".parse().unwrap();
        let mut ci = CacheInfo::default();
        ci.ifa_valid = FOREVER;
        ci.ifa_preferred = FOREVER;
        msg.attributes = vec![
            AddressAttribute::Address(ip),
            AddressAttribute::Local(ip),
            AddressAttribute::Broadcast("10.123.0.255".parse().unwrap()),
            AddressAttribute::Label("eth0".into()),
            AddressAttribute::Flags(AddressFlags::Permanent | AddressFlags::Noprefixroute),
            AddressAttribute::CacheInfo(ci),
        ];
        let saved = SavedAddress::from_message(&msg);
        assert_eq!(saved.address, ip);
        assert_eq!(saved.peer, None);
        assert_eq!(saved.label.as_deref(), Some("eth0"));
        assert_eq!(saved.valid_lft, None);
        assert_eq!(saved.to_string(), "10.123.0.2/24");
        let again = saved.to_message(7);
        assert_eq!(again.header.index, 7);
        assert_eq!(again.header.prefix_len, 24);
        assert!(again.attributes.contains(&AddressAttribute::Local(ip)));
        assert!(again.attributes.contains(&AddressAttribute::Address(ip)));
        // Permanent is the kernel's business; noprefixroute is a request and is kept.
        assert!(again
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Noprefixroute)));
        assert!(!again
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::CacheInfo(_))));
    }

    #[test]
    fn ipv6_address_with_lifetime_and_peer() {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = 64;
        msg.header.scope = 253u8.into();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let mut ci = CacheInfo::default();
        ci.ifa_valid = 300;
        ci.ifa_preferred = 100;
        msg.attributes = vec![
            AddressAttribute::Address(ll),
            AddressAttribute::CacheInfo(ci),
        ];
        let saved = SavedAddress::from_message(&msg);
        assert_eq!((saved.address, saved.scope), (ll, 253));
        assert_eq!(
            (saved.valid_lft, saved.preferred_lft),
            (Some(300), Some(100))
        );
        let again = saved.to_message(2);
        assert_eq!(again.header.family, AddressFamily::Inet6);
        assert!(again.attributes.contains(&AddressAttribute::Address(ll)));
        assert!(!again
            .attributes
            .iter()
            .any(|a| matches!(a, AddressAttribute::Local(_))));

        let peer: IpAddr = "fd00::2".parse().unwrap();
        let local: IpAddr = "fd00::1".parse().unwrap();
        msg.attributes = vec![
            AddressAttribute::Local(local),
            AddressAttribute::Address(peer),
        ];
        let saved = SavedAddress::from_message(&msg);
        assert_eq!((saved.address, saved.peer), (local, Some(peer)));
        assert_eq!(saved.to_string(), "fd00::1 peer fd00::2/64");
    }

    fn route(oif: u32, proto: RouteProtocol, table: u8) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.table = table;
        r.header.protocol = proto;
        r.header.kind = RouteType::Unicast;
        r.header.flags = RouteFlags::Linkdown | RouteFlags::Onlink;
        r.attributes = vec![
            RouteAttribute::Table(u32::from(table)),
            RouteAttribute::Gateway(RouteAddress::Inet("10.123.0.1".parse().unwrap())),
            RouteAttribute::Oif(oif),
        ];
        r
    }

    #[test]
    fn only_user_routes_through_the_device_are_saved() {
        assert!(route_to_save(&route(2, RouteProtocol::Boot, 254), 2));
        assert!(route_to_save(&route(2, RouteProtocol::Static, 100), 2));
        assert!(!route_to_save(&route(3, RouteProtocol::Boot, 254), 2));
        assert!(!route_to_save(&route(2, RouteProtocol::Kernel, 254), 2));
        assert!(!route_to_save(&route(2, RouteProtocol::Ra, 254), 2));
        assert!(!route_to_save(&route(2, RouteProtocol::Boot, 255), 2));
        let mut mp = route(3, RouteProtocol::Boot, 254);
        mp.attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let mut hop = RouteNextHop::default();
        hop.interface_index = 2;
        hop.flags = RouteNextHopFlags::Dead;
        mp.attributes.push(RouteAttribute::MultiPath(vec![hop]));
        assert!(route_to_save(&mp, 2));
        let clean = sanitize_route(mp);
        assert_eq!(clean.header.flags, RouteFlags::Onlink);
        let hops = clean.attributes.iter().find_map(|a| match a {
            RouteAttribute::MultiPath(h) => Some(h),
            _ => None,
        });
        assert!(hops.unwrap()[0].flags.is_empty());
    }

    #[test]
    fn saved_routes_and_neighbours_parse_back() {
        let r = sanitize_route(route(2, RouteProtocol::Boot, 254));
        let saved = SavedMessage::route(&r);
        assert_eq!(saved.summary, "default via 10.123.0.1 table 254 proto boot");
        let back = RouteMessage::parse(&from_hex(&saved.netlink).unwrap()[..]).unwrap();
        assert_eq!(back, r);

        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet6;
        n.header.ifindex = 2;
        n.header.state = NeighbourState::Permanent;
        n.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(Ipv6Addr::LOCALHOST)),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
            NeighbourAttribute::Probes(0),
        ];
        assert!(neighbour_to_save(&n, 2));
        assert!(!neighbour_to_save(&n, 3));
        let clean = sanitize_neighbour(n.clone());
        assert_eq!(clean.attributes.len(), 2);
        let saved = SavedMessage::neighbour(&clean);
        assert!(
            saved
                .summary
                .ends_with("lladdr 02:00:00:00:00:09 permanent"),
            "{}",
            saved.summary
        );
        let back = NeighbourMessage::parse(&from_hex(&saved.netlink).unwrap()[..]).unwrap();
        assert_eq!(back, clean);
        n.header.state = NeighbourState::Reachable;
        assert!(!neighbour_to_save(&n, 2));
    }

    #[test]
    fn device_node_status_and_mknod() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping device_node_status_and_mknod: needs root (mknod)");
            return;
        }
        let null = fs::metadata("/dev/null").unwrap().rdev();
        let dev = DevNumber {
            major: libc::major(null),
            minor: libc::minor(null),
        };
        let dir = std::env::temp_dir().join(format!(
            "netshim-macvtap-node-{}-{}",
            std::process::id(),
            random_u32().unwrap()
        ));
        fs::create_dir(&dir).unwrap();
        let node = dir.join("tap9999");
        assert_eq!(node_status(&node, dev).unwrap(), NodeStatus::Missing);
        make_node(&node, dev).unwrap();
        assert_eq!(node_status(&node, dev).unwrap(), NodeStatus::Ours);
        let meta = fs::metadata(&node).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let other = DevNumber {
            major: dev.major,
            minor: dev.minor + 1,
        };
        assert_eq!(node_status(&node, other).unwrap(), NodeStatus::Foreign);

        let mut m = sample_state().macvtap;
        m.device = Some(node.clone());
        m.dev = Some(other);
        m.device_node_created = true;
        remove_device_node(&m).unwrap();
        assert!(node.exists(), "another device's node is left alone");
        m.dev = Some(dev);
        m.device_node_created = false;
        remove_device_node(&m).unwrap();
        assert!(node.exists(), "a node netshim did not make is left alone");
        m.device_node_created = true;
        remove_device_node(&m).unwrap();
        assert!(!node.exists());
        remove_device_node(&m).unwrap();
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn error_texts_name_the_request_and_device() {
        let e = MacvtapError::NameTaken {
            name: "eth1".into(),
            dev: "eth0".into(),
            ifindex: 2,
        };
        assert_eq!(
            e.to_string(),
            "RTM_NEWLINK macvtap eth1 on eth0 (ifindex 2): a link named eth1 already exists"
        );
        let e = MacvtapError::AlreadyConnected {
            dev: "eth0".into(),
            ifindex: 2,
            path: "/run/netshim/netns-1/macvtap-2.json".into(),
        };
        assert!(
            e.to_string()
                .contains("/run/netshim/netns-1/macvtap-2.json"),
            "{e}"
        );
        let e = MacvtapError::InvalidQueues {
            name: "tap0_kata".into(),
            queues: 0,
            max: MAX_QUEUES,
        };
        assert!(e.to_string().contains("1 to 256"), "{e}");
        assert_eq!(device_path(8200), PathBuf::from("/dev/tap8200"));
    }
}
