//! Live upgrade of a sandbox's eBPF datapath: a new `netshim_redirect` takes over every hook
//! of the sandbox without a packet ever meeting a missing program, and with the pinned maps
//! (peers, counters, endpoints, …) kept as they are.
//!
//! 1. [`Object`]: the eBPF object (the one built into this binary, or a file) is parsed first,
//!    and must declare the program and every map the datapath uses, pinned by name.
//! 2. [`load_against`]: every map the object pins by name is opened from the sandbox
//!    directory and compared with the object's definition (type, key and value size, max
//!    entries, flags); any difference fails, naming the map, before anything is loaded. A
//!    map the object declares that the sandbox has not pinned (one added after the
//!    sandbox's datapath version, like `drops`) is created by the load and pinned into the
//!    sandbox directory once the program has loaded ([`Loaded::created_maps`]; removed again
//!    by [`Loaded::discard_created`] when the swap fails); the maps of [`DATAPATH_MAPS`]
//!    must all be there. The
//!    opened maps are then pinned again in a private staging directory, and the object is
//!    loaded with `default_map_pin_directory(staging)`, so aya reuses exactly those maps and
//!    can never create or pin anything in the sandbox directory (aya 0.14 creates and pins a
//!    map it does not find, and does not compare definitions). The staging directory goes
//!    when the load is done.
//! 3. The program takes over each hook atomically:
//!    - TCX ([`swap_tcx_links`]): `BPF_LINK_UPDATE` of each pinned link, with the old
//!      program's fd and `BPF_F_REPLACE`, so a link someone else changed in between is refused
//!      (`EPERM`) rather than overwritten. The link keeps its place among the device's TCX
//!      programs. Every link is opened and checked before the first one is changed; a failed
//!      update puts the links already changed back on their old program.
//!    - cls_bpf ([`swap_cls_bpf_filters`]): the kernel's in-place filter change (what
//!      `tc filter replace` does): `RTM_NEWTFILTER` without `NLM_F_CREATE` at the filter's
//!      own priority and handle. `cls_bpf_change` swaps the program under RCU
//!      (`list_replace_rcu`), so there is neither a gap nor a moment with two netshim
//!      filters, and the filter keeps its priority among foreign filters. (Make-before-break
//!      at a second priority would do the same job with a window of two filters, and would
//!      move ours one priority per upgrade.)

use std::{
    borrow::Cow,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::MapData,
    programs::{
        tc::{SchedClassifierLink, TcHandle as AyaTcHandle},
        SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use aya_obj::maps::PinningType;
use futures::StreamExt;
use netshim_common::{from_fixed, map_names, PROGRAM_NAME};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST},
    packet_route::{
        tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption},
        RouteNetlinkMessage,
    },
};

use super::{bpf_sys, ebpf};
use crate::pins;

/// The maps the datapath and netshim's later processes use; a replacement object must
/// declare all of them, pinned by name.
pub const DATAPATH_MAPS: [&str; 5] = [
    map_names::PEERS,
    map_names::COUNTERS,
    map_names::UNMATCHED,
    map_names::ENDPOINTS,
    map_names::SANDBOX,
];

/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: clsact's ingress hook, `ffff:fff2`.
const CLSACT_INGRESS: u32 = 0xffff_fff2;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("reading the eBPF object {path}: {source}")]
    ReadObject {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing the eBPF object {object}: {source}")]
    ParseObject {
        object: String,
        source: Box<aya_obj::ParseError>,
    },
    #[error("the eBPF object {object} has no program {PROGRAM_NAME}")]
    MissingProgram { object: String },
    #[error(
        "the eBPF object {object} does not declare map {map} pinned by name, which the \
         datapath uses; nothing changed"
    )]
    ObjectLacksMap { object: String, map: &'static str },
    #[error(
        "map {map}: the eBPF object {object} pins it by name, but the sandbox has no such \
         pin in {dir}; nothing changed"
    )]
    MapNotPinned {
        object: String,
        map: String,
        dir: PathBuf,
    },
    #[error(
        "map {map} pinned in {dir} does not match the eBPF object {object}: {detail}; \
         nothing changed"
    )]
    MapMismatch {
        object: String,
        map: String,
        dir: PathBuf,
        detail: String,
    },
    #[error("{op} of map {map} (pinned in {dir}): {source}")]
    Map {
        op: &'static str,
        map: String,
        dir: PathBuf,
        source: Box<aya::maps::MapError>,
    },
    #[error("BPF_OBJ_PIN of the new map {map} in the sandbox directory {dir}: {source}")]
    PinNew {
        map: String,
        dir: PathBuf,
        source: Box<aya::pin::PinError>,
    },
    #[error("BPF_OBJ_PIN of map {map} in the staging directory {dir}: {source}")]
    Stage {
        map: String,
        dir: PathBuf,
        source: Box<aya::pin::PinError>,
    },
    #[error("loading the eBPF object {object} with the maps of {dir}: {source}")]
    Load {
        object: String,
        dir: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("BPF_PROG_LOAD {PROGRAM_NAME} from {object}: {source}")]
    ProgramLoad {
        object: String,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("{call} on the link pinned at {path}: {source}")]
    Link {
        call: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the link pinned at {path} is of bpf_link_type {link_type}, not TCX; nothing changed")]
    NotTcx { path: PathBuf, link_type: u32 },
    #[error(
        "BPF_LINK_UPDATE with BPF_F_REPLACE of the link on {dev} ({path}): it no longer runs \
         program {old_prog_id}, someone else changed it meanwhile (EPERM){rollback}"
    )]
    LinkChanged {
        dev: String,
        path: PathBuf,
        old_prog_id: u32,
        rollback: String,
    },
    #[error(
        "BPF_LINK_UPDATE of the link on {dev} ({path}) from program {old_prog_id} to \
         {new_prog_id}: {source}{rollback}"
    )]
    Update {
        dev: String,
        path: PathBuf,
        old_prog_id: u32,
        new_prog_id: u32,
        source: std::io::Error,
        rollback: String,
    },
    #[error("the link on {dev} ({path}) runs program {found} after BPF_LINK_UPDATE to {expected}")]
    NotUpdated {
        dev: String,
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("RTM_GETTFILTER dump of clsact ingress on {dev} (ifindex {ifindex}): {source}")]
    FilterDump {
        dev: String,
        ifindex: u32,
        source: Box<rtnetlink::Error>,
    },
    #[error(
        "replacing the cls_bpf filter pref {prio} handle {handle:#x} on the ingress of {dev} \
         (RTM_NEWTFILTER without NLM_F_CREATE): {source}"
    )]
    FilterReplace {
        dev: String,
        prio: u16,
        handle: u32,
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "the cls_bpf filter pref {prio} handle {handle:#x} on {dev} runs program {found:?} after \
         the replace to {expected}"
    )]
    FilterNotReplaced {
        dev: String,
        prio: u16,
        handle: u32,
        expected: u32,
        found: Option<u32>,
    },
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    #[error(transparent)]
    Pins(#[from] pins::PinError),
}

impl UpgradeError {
    /// The object does not fit (bad file, missing program or map, different map
    /// definitions): invalid input, not a failed operation.
    pub fn is_incompatible_object(&self) -> bool {
        matches!(
            self,
            Self::ReadObject { .. }
                | Self::ParseObject { .. }
                | Self::MissingProgram { .. }
                | Self::ObjectLacksMap { .. }
                | Self::MapNotPinned { .. }
                | Self::MapMismatch { .. }
        )
    }

    /// Someone else changed a hook in between.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::LinkChanged { .. })
    }
}

/// A map definition as the object declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MapDef {
    name: String,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
}

/// The eBPF object an upgrade loads.
#[derive(Debug, Clone)]
pub struct Object {
    /// `embedded` or the file's path.
    pub name: String,
    bytes: Cow<'static, [u8]>,
    pinned_maps: Vec<MapDef>,
}

impl Object {
    /// The object built into this binary ([`crate::EBPF_OBJECT`]).
    /// Whether the object has the source guard (declares every guard map), i.e. its
    /// program knows `PEER_GUARD`.
    pub fn has_guard(&self) -> bool {
        netshim_common::GUARD_MAPS
            .iter()
            .all(|m| self.pinned_maps.iter().any(|d| d.name == *m))
    }

    pub fn embedded() -> Result<Self, UpgradeError> {
        Self::parse("embedded".into(), Cow::Borrowed(crate::EBPF_OBJECT))
    }

    /// An object file (`--object PATH`).
    pub fn from_file(path: &Path) -> Result<Self, UpgradeError> {
        let bytes = std::fs::read(path).map_err(|source| UpgradeError::ReadObject {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path.display().to_string(), Cow::Owned(bytes))
    }

    fn parse(name: String, bytes: Cow<'static, [u8]>) -> Result<Self, UpgradeError> {
        let obj = aya_obj::Object::parse(&bytes).map_err(|source| UpgradeError::ParseObject {
            object: name.clone(),
            source: Box::new(source),
        })?;
        if !obj.programs.contains_key(PROGRAM_NAME) {
            return Err(UpgradeError::MissingProgram { object: name });
        }
        let mut pinned_maps: Vec<MapDef> = obj
            .maps
            .iter()
            .filter(|(_, m)| m.pinning() == PinningType::ByName)
            .map(|(n, m)| MapDef {
                name: n.clone(),
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                flags: m.map_flags(),
            })
            .collect();
        pinned_maps.sort_by(|a, b| a.name.cmp(&b.name));
        for map in DATAPATH_MAPS {
            if !pinned_maps.iter().any(|d| d.name == map) {
                return Err(UpgradeError::ObjectLacksMap { object: name, map });
            }
        }
        Ok(Self {
            name,
            bytes,
            pinned_maps,
        })
    }
}

/// The new program, loaded against one sandbox's pinned maps.
pub struct Loaded {
    ebpf: Ebpf,
    /// The new program's id.
    pub prog_id: u32,
    /// Maps the sandbox did not have, created by this load and pinned into its directory.
    pub created_maps: Vec<String>,
    dir: PathBuf,
}

impl Loaded {
    /// Unpins the maps this load created in the sandbox directory (the swap failed: the
    /// old program, which does not use them, stays, so their pins would only mislead).
    pub fn discard_created(&self) {
        for name in &self.created_maps {
            if let Err(e) = std::fs::remove_file(self.dir.join(name)) {
                tracing::warn!(
                    "removing the new map pin {name} in {}: {e}",
                    self.dir.display()
                );
            }
        }
    }

    fn program(&mut self) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut SchedClassifier>::try_from(p).ok())
            .expect("load_against checked the program")
    }
}

impl MapDef {
    fn of_pinned(name: &str, info: &aya::maps::MapInfo) -> Self {
        Self {
            name: name.to_owned(),
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }
}

/// What is different between a pinned map and the object's definition, if anything.
fn compare(declared: &MapDef, pinned: &MapDef) -> Option<String> {
    let pairs = [
        ("map type", pinned.map_type, declared.map_type),
        ("key size", pinned.key_size, declared.key_size),
        ("value size", pinned.value_size, declared.value_size),
        ("max entries", pinned.max_entries, declared.max_entries),
        ("flags", pinned.flags, declared.flags),
    ];
    let diffs: Vec<String> = pairs
        .iter()
        .filter(|(_, pinned, declared)| pinned != declared)
        .map(|(what, pinned, declared)| format!("{what} pinned {pinned}, object {declared}"))
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// A private bpffs directory the sandbox's maps are pinned in again for one load; removed
/// (with its pins) on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new() -> Result<Self, UpgradeError> {
        pins::ensure_bpffs()?;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = Path::new(pins::BPFFS).join(format!(
            "netshim-upgrade-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        // A dead run of ours with the same pid left it: its pins are stale.
        pins::remove_sandbox_dir(&dir)?;
        remove_stale_staging();
        pins::create_private_dirs(&[&dir])?;
        Ok(Self { dir })
    }
}

/// Removes the staging directories of upgrades that died before removing their own (best
/// effort: their pins only hold maps that the sandboxes' own pins hold anyway).
fn remove_stale_staging() {
    let Ok(entries) = std::fs::read_dir(pins::BPFFS) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("netshim-upgrade-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .map_or_else(|e| e != nix::errno::Errno::ESRCH, |()| true);
        if !alive {
            let _ = pins::remove_sandbox_dir(&entry.path());
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = pins::remove_sandbox_dir(&self.dir) {
            tracing::warn!("removing the upgrade staging directory: {e}");
        }
    }
}

/// Checks the object's maps against the ones pinned in `dir` and loads the object and its
/// program with them. Nothing in `dir` is written. See the module documentation.
pub fn load_against(dir: &Path, object: &Object) -> Result<Loaded, UpgradeError> {
    let mut opened = Vec::new();
    let mut created = Vec::new();
    for def in &object.pinned_maps {
        let path = dir.join(&def.name);
        if !path.exists() && !DATAPATH_MAPS.contains(&def.name.as_str()) {
            // Newer than the sandbox's datapath: the load creates it.
            created.push(def.name.clone());
            continue;
        }
        if !path.exists() {
            return Err(UpgradeError::MapNotPinned {
                object: object.name.clone(),
                map: def.name.clone(),
                dir: dir.to_owned(),
            });
        }
        let map_err = |op| {
            let (map, dir) = (def.name.clone(), dir.to_owned());
            move |source| UpgradeError::Map {
                op,
                map,
                dir,
                source: Box::new(source),
            }
        };
        let data = MapData::from_pin(&path).map_err(map_err("BPF_OBJ_GET"))?;
        let info = data.info().map_err(map_err("BPF_OBJ_GET_INFO_BY_FD"))?;
        if let Some(detail) = compare(def, &MapDef::of_pinned(&def.name, &info)) {
            return Err(UpgradeError::MapMismatch {
                object: object.name.clone(),
                map: def.name.clone(),
                dir: dir.to_owned(),
                detail,
            });
        }
        opened.push((def.name.clone(), data));
    }
    let staging = Staging::new()?;
    for (name, data) in &opened {
        data.pin(staging.dir.join(name))
            .map_err(|source| UpgradeError::Stage {
                map: name.clone(),
                dir: staging.dir.clone(),
                source: Box::new(source),
            })?;
    }
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&staging.dir)
        .load(&object.bytes)
        .map_err(|source| UpgradeError::Load {
            object: object.name.clone(),
            dir: dir.to_owned(),
            source: Box::new(source),
        })?;
    drop(staging);
    let prog_err = |source| UpgradeError::ProgramLoad {
        object: object.name.clone(),
        source: Box::new(source),
    };
    let program: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| UpgradeError::MissingProgram {
            object: object.name.clone(),
        })?
        .try_into()
        .map_err(prog_err)?;
    program.load().map_err(prog_err)?;
    let prog_id = program.info().map_err(prog_err)?.id();
    let mut loaded = Loaded {
        ebpf,
        prog_id,
        created_maps: Vec::new(),
        dir: dir.to_owned(),
    };
    for name in created {
        let pinned = match loaded.ebpf.map(&name) {
            Some(map) => map.pin(dir.join(&name)),
            None => continue,
        };
        if let Err(source) = pinned {
            loaded.discard_created();
            return Err(UpgradeError::PinNew {
                map: name,
                dir: dir.to_owned(),
                source: Box::new(source),
            });
        }
        loaded.created_maps.push(name);
    }
    Ok(loaded)
}

/// One hook that now runs the new program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HookSwap {
    pub device: String,
    /// TCX: the link's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_id: Option<u32>,
    /// cls_bpf: the filter's preference and handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prio: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u32>,
    pub old_prog_id: u32,
    pub new_prog_id: u32,
}

/// A hook left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedHook {
    pub device: String,
    pub reason: String,
}

/// What one sandbox's upgrade did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Swapped {
    pub swapped: Vec<HookSwap>,
    pub skipped: Vec<SkippedHook>,
}

/// A pinned TCX link, opened and checked.
struct OpenLink {
    device: String,
    path: PathBuf,
    fd: OwnedFd,
    link_id: u32,
    old_prog_id: u32,
    old_prog: OwnedFd,
}

/// Moves every TCX link pinned in `dir` to the loaded program. No netns needed: the links
/// are reached through their pins.
pub fn swap_tcx_links(dir: &Path, loaded: &mut Loaded) -> Result<Swapped, UpgradeError> {
    let mut out = Swapped::default();
    let mut links = Vec::new();
    for (device, path) in pins::link_pins(dir)? {
        let link_err = |call| {
            let path = path.clone();
            move |source| UpgradeError::Link { call, path, source }
        };
        let fd = match bpf_sys::obj_get(&path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.skipped.push(SkippedHook {
                    device,
                    reason: "the link pin was removed meanwhile".into(),
                });
                continue;
            }
            Err(e) => return Err(link_err("BPF_OBJ_GET")(e)),
        };
        let info = bpf_sys::link_info(fd.as_fd()).map_err(link_err("BPF_OBJ_GET_INFO_BY_FD"))?;
        if info.link_type != bpf_sys::BPF_LINK_TYPE_TCX {
            return Err(UpgradeError::NotTcx {
                path,
                link_type: info.link_type,
            });
        }
        if info.tcx_ifindex == 0 {
            out.skipped.push(SkippedHook {
                device,
                reason: format!(
                    "link {} is defunct: its device is gone (detach removes the pin)",
                    info.id
                ),
            });
            continue;
        }
        let old_prog =
            bpf_sys::prog_fd_by_id(info.prog_id).map_err(link_err("BPF_PROG_GET_FD_BY_ID"))?;
        links.push(OpenLink {
            device,
            path,
            fd,
            link_id: info.id,
            old_prog_id: info.prog_id,
            old_prog,
        });
    }
    let new_prog_id = loaded.prog_id;
    let program = loaded.program();
    let new_prog = program
        .fd()
        .map_err(|source| UpgradeError::ProgramLoad {
            object: PROGRAM_NAME.into(),
            source: Box::new(source),
        })?
        .as_fd();
    for (i, link) in links.iter().enumerate() {
        if let Err(source) =
            bpf_sys::link_update(link.fd.as_fd(), new_prog, Some(link.old_prog.as_fd()))
        {
            let rollback = roll_back(&links[..i], new_prog);
            return Err(if source.raw_os_error() == Some(libc::EPERM) {
                UpgradeError::LinkChanged {
                    dev: link.device.clone(),
                    path: link.path.clone(),
                    old_prog_id: link.old_prog_id,
                    rollback,
                }
            } else {
                UpgradeError::Update {
                    dev: link.device.clone(),
                    path: link.path.clone(),
                    old_prog_id: link.old_prog_id,
                    new_prog_id,
                    source,
                    rollback,
                }
            });
        }
    }
    for link in &links {
        let info = bpf_sys::link_info(link.fd.as_fd()).map_err(|source| UpgradeError::Link {
            call: "BPF_OBJ_GET_INFO_BY_FD",
            path: link.path.clone(),
            source,
        })?;
        if info.prog_id != new_prog_id {
            return Err(UpgradeError::NotUpdated {
                dev: link.device.clone(),
                path: link.path.clone(),
                expected: new_prog_id,
                found: info.prog_id,
            });
        }
        out.swapped.push(HookSwap {
            device: link.device.clone(),
            link_id: Some(link.link_id),
            prio: None,
            handle: None,
            old_prog_id: link.old_prog_id,
            new_prog_id,
        });
    }
    Ok(out)
}

/// Puts `done` back on their old programs; says how that went, for the error message.
fn roll_back(done: &[OpenLink], new_prog: std::os::fd::BorrowedFd<'_>) -> String {
    if done.is_empty() {
        return "; no link was changed".into();
    }
    let mut failed = Vec::new();
    for link in done {
        if let Err(e) = bpf_sys::link_update(link.fd.as_fd(), link.old_prog.as_fd(), Some(new_prog))
        {
            failed.push(format!("{}: {e}", link.device));
        }
    }
    if failed.is_empty() {
        format!(
            "; the {} link(s) already changed were put back on their old program",
            done.len()
        )
    } else {
        format!(
            "; putting the changed links back failed on {} (they run the new program, \
             which uses the same maps)",
            failed.join(", ")
        )
    }
}

/// One of our cls_bpf filters, as the kernel dumps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BpfFilter {
    prio: u16,
    handle: u32,
    prog_id: u32,
}

/// Our filters (`netshim_redirect`) under the clsact ingress hook of `ifindex`. `None` when
/// the device or its clsact qdisc is gone.
async fn our_filters(
    handle: &rtnetlink::Handle,
    dev: &str,
    ifindex: u32,
) -> Result<Option<Vec<BpfFilter>>, UpgradeError> {
    let err = |source| UpgradeError::FilterDump {
        dev: dev.to_owned(),
        ifindex,
        source: Box::new(source),
    };
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = CLSACT_INGRESS.into();
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut replies = handle.clone().request(req).map_err(err)?;
    let mut out = Vec::new();
    let mut failed = None;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(m)) => {
                out.extend(parse_bpf_filter(&m))
            }
            NetlinkPayload::Error(e) => failed = failed.or(Some(e)),
            _ => {}
        }
    }
    match failed {
        Some(e) if [-libc::ENODEV, -libc::EINVAL, -libc::ENOENT].contains(&e.raw_code()) => {
            Ok(None)
        }
        Some(e) => Err(err(rtnetlink::Error::NetlinkError(e))),
        None => Ok(Some(out)),
    }
}

fn parse_bpf_filter(msg: &TcMessage) -> Option<BpfFilter> {
    let is_bpf = msg
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "bpf"));
    if !is_bpf {
        return None;
    }
    let opts = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => Some(o),
        _ => None,
    })?;
    let mut name = None;
    let mut prog_id = None;
    for o in opts {
        match o {
            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = Some(n.as_str()),
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => prog_id = Some(*id),
            _ => {}
        }
    }
    (name == Some(PROGRAM_NAME)).then_some(())?;
    Some(BpfFilter {
        prio: (msg.header.info >> 16) as u16,
        handle: u32::from(msg.header.handle),
        prog_id: prog_id?,
    })
}

/// Replaces the program of every netshim cls_bpf filter on the devices recorded in `dir`.
/// Must run inside the sandbox netns.
pub async fn swap_cls_bpf_filters(
    handle: &rtnetlink::Handle,
    dir: &Path,
    loaded: &mut Loaded,
) -> Result<Swapped, UpgradeError> {
    let mut out = Swapped::default();
    let mut found = Vec::new();
    for (_, record) in ebpf::recorded_endpoints(dir)? {
        for (name, ifindex) in [
            (&record.pod_name, record.pod_ifindex),
            (&record.tap_name, record.tap_ifindex),
        ] {
            let dev = String::from_utf8_lossy(from_fixed(name)).into_owned();
            match crate::interfaces::by_name(handle, &dev).await {
                Ok(Some(i)) if i.ifindex == ifindex => {}
                Ok(_) => {
                    out.skipped.push(SkippedHook {
                        device: dev,
                        reason: format!("no device of that name with ifindex {ifindex}"),
                    });
                    continue;
                }
                Err(source) => {
                    return Err(UpgradeError::FilterDump {
                        dev,
                        ifindex,
                        source: Box::new(source),
                    })
                }
            }
            match our_filters(handle, &dev, ifindex).await? {
                Some(filters) if !filters.is_empty() => {
                    found.extend(filters.into_iter().map(|f| (dev.clone(), f)))
                }
                _ => out.skipped.push(SkippedHook {
                    device: dev,
                    reason: format!("no {PROGRAM_NAME} filter on its clsact ingress"),
                }),
            }
        }
    }
    let new_prog_id = loaded.prog_id;
    for (dev, f) in &found {
        let replace_err = |source| UpgradeError::FilterReplace {
            dev: dev.clone(),
            prio: f.prio,
            handle: f.handle,
            source: Box::new(source),
        };
        let link = SchedClassifierLink::attached(
            dev,
            TcAttachType::Ingress,
            f.prio,
            AyaTcHandle::from(f.handle),
            None,
        )
        .map_err(|e| replace_err(aya::programs::tc::TcError::IoError(e).into()))?;
        let program = loaded.program();
        // attach_to_link on a netlink link: RTM_NEWTFILTER at the same parent, priority and
        // handle, without NLM_F_CREATE | NLM_F_EXCL, i.e. a change of the existing filter.
        let id = program.attach_to_link(link).map_err(replace_err)?;
        let link = program.take_link(id).map_err(replace_err)?;
        // The filter lives in the qdisc; dropping the handle would delete it.
        std::mem::forget(link);
    }
    for (dev, f) in &found {
        let ifindex = current_ifindex(handle, dev).await;
        let now = match ifindex {
            Some(i) => our_filters(handle, dev, i).await?.unwrap_or_default(),
            None => Vec::new(),
        };
        let current = now
            .iter()
            .find(|n| n.prio == f.prio && n.handle == f.handle)
            .map(|n| n.prog_id);
        if current != Some(new_prog_id) {
            return Err(UpgradeError::FilterNotReplaced {
                dev: dev.clone(),
                prio: f.prio,
                handle: f.handle,
                expected: new_prog_id,
                found: current,
            });
        }
        out.swapped.push(HookSwap {
            device: dev.clone(),
            link_id: None,
            prio: Some(f.prio),
            handle: Some(f.handle),
            old_prog_id: f.prog_id,
            new_prog_id,
        });
    }
    Ok(out)
}

async fn current_ifindex(handle: &rtnetlink::Handle, dev: &str) -> Option<u32> {
    crate::interfaces::by_name(handle, dev)
        .await
        .ok()
        .flatten()
        .map(|i| i.ifindex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_object_declares_the_datapath() {
        let obj = Object::embedded().expect("embedded object parses");
        let names: Vec<&str> = obj.pinned_maps.iter().map(|m| m.name.as_str()).collect();
        for map in DATAPATH_MAPS {
            assert!(names.contains(&map), "{map} in {names:?}");
        }
    }

    #[test]
    fn an_unreadable_object_is_invalid_input() {
        let err = Object::from_file(Path::new("/nonexistent/netshim.o")).unwrap_err();
        assert!(err.is_incompatible_object());
        assert!(err.to_string().contains("/nonexistent/netshim.o"), "{err}");
        let junk = std::env::temp_dir().join(format!("netshim-junk-{}.o", std::process::id()));
        std::fs::write(&junk, b"not an ELF file").unwrap();
        let err = Object::from_file(&junk).unwrap_err();
        std::fs::remove_file(&junk).unwrap();
        assert!(matches!(err, UpgradeError::ParseObject { .. }), "{err}");
    }

    #[test]
    fn map_differences_are_named() {
        let declared = MapDef {
            name: "counters".into(),
            map_type: 6,
            key_size: 4,
            value_size: 32,
            max_entries: 64,
            flags: 0,
        };
        assert_eq!(compare(&declared, &declared.clone()), None);
        let pinned = MapDef {
            value_size: 24,
            max_entries: 128,
            ..declared.clone()
        };
        assert_eq!(
            compare(&declared, &pinned).as_deref(),
            Some("value size pinned 24, object 32, max entries pinned 128, object 64")
        );
    }
}
