//! [`connect`] and [`disconnect`] of the macvtap model, step by step (see the module docs of
//! [`super`] for the order and why).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use nix::errno::Errno;
use rtnetlink::{
    packet_route::{address::AddressMessage, link::MacVtapMode},
    Handle, LinkMacVtap, LinkUnspec,
};

use super::{
    check_name, device_path,
    devnode::{make_node, node_status, read_dev_number, DevNumber, NodeStatus},
    link::{
        add_address, del_address, delete_link, dump_addresses, dump_neighbours, dump_routes,
        get_link, get_link_by_name, restore_raw, set_link, Kind, LinkState,
    },
    state::{
        read_state, remove_state, write_state, MacvtapState, PodState, SavedAddress, SavedMessage,
        State,
    },
    state_path, MacvtapEndpoint, MacvtapError, DEFAULT_TXQLEN, MACVTAP_IFINDEX_BASE,
    MACVTAP_IFINDEX_MASK, MACVTAP_IFINDEX_TRIES, MAX_QUEUES, STATE_VERSION,
};
use crate::{
    interfaces::{Interface, Mac},
    netlink,
};

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

pub(super) async fn connect_steps(
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

pub(super) struct Made {
    pub(super) ifindex: u32,
    pub(super) device: PathBuf,
    pub(super) dev: DevNumber,
    pub(super) node_created: bool,
}

/// RTM_NEWLINK macvtap at a random ifindex (kata's range), down, with the pod's MAC/MTU/qlen;
/// addrgenmode none; char device checked. Retries another ifindex when this one is taken in
/// the netns or its `/dev/tap<ifindex>` belongs to someone else. Leaves nothing behind on error.
pub(super) async fn create_macvtap(
    handle: &Handle,
    pod: &PodState,
    name: &str,
) -> Result<Made, MacvtapError> {
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
            if netlink::errno(&source) == Some(Errno::EEXIST)
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
pub(super) async fn finish_macvtap(
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
pub(super) async fn rollback(handle: &Handle, state: &State, path: &Path) {
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
pub(super) async fn restore_pod(handle: &Handle, state: &State) -> Result<(), MacvtapError> {
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

// ---- random ifindexes and MACs ----------------------------------------------------------------

pub(super) fn random_u32() -> Result<u32, MacvtapError> {
    getrandom::u32().map_err(random_failed)
}

/// A random locally administered unicast MAC that differs from `old`.
pub(super) fn random_mac(old: &Mac) -> Result<Mac, MacvtapError> {
    loop {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(random_failed)?;
        let mac = local_unicast(b);
        if mac != *old {
            return Ok(mac);
        }
    }
}

/// Clears the multicast bit and sets the locally administered bit.
pub(super) fn local_unicast(mut b: [u8; 6]) -> Mac {
    b[0] = (b[0] & 0xfe) | 0x02;
    Mac(b)
}
fn random_failed(e: getrandom::Error) -> MacvtapError {
    MacvtapError::Random { source: e.into() }
}

/// Removes the node [`make_node`](super::devnode::make_node) made, if it is still that device's.
pub(super) fn remove_device_node(m: &MacvtapState) -> Result<(), MacvtapError> {
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
