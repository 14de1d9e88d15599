//! The eBPF datapath: `netshim_redirect` on the ingress of both devices of an endpoint.
//!
//! One copy of the program and its maps per sandbox netns, pinned under
//! [`crate::pins::sandbox_dir`]. On kernels with TCX (>= 6.6) each attachment is a bpf_link
//! pinned next to the maps, so the datapath keeps forwarding after this process exits and
//! removing the pin detaches it; the link goes after any other TCX program already on the
//! device (`LinkOrder::last()`, see `sandbox/coexist.rs`). Older kernels get a clsact qdisc
//! and a cls_bpf filter in direct-action mode, which the kernel keeps without a process.
//!
//! Everything that attaches must run on a thread inside the sandbox netns (see
//! [`crate::netns::Netns::run`]): interface names and ifindexes are per netns.

use std::{
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapData},
    programs::{
        links::FdLink,
        tc::{self, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf,
};
use netshim_common::{
    from_fixed, map_names, to_fixed, Direction, EndpointRecord, PeerEntry, SandboxRecord,
    ENDPOINT_POD_CLSACT, ENDPOINT_TAP_CLSACT, MAX_ENDPOINTS, PEER_GUARD, PEER_REDIRECT_PEER,
    PROGRAM_NAME,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle};

use super::{AttachMode, Dev, RedirectMode};
use crate::{
    guard::{self, GuardEntry},
    netlink,
    netns::Netns,
    pins,
};

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the eBPF object with maps pinned in {dir}: {source}")]
    Load {
        dir: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no program {PROGRAM_NAME}")]
    MissingProgram,
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("BPF_PROG_LOAD {PROGRAM_NAME}: {0}")]
    ProgramLoad(Box<aya::programs::ProgramError>),
    #[error("attaching {PROGRAM_NAME} to the ingress of {dev} ({mode}): {source}")]
    Attach {
        dev: String,
        mode: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("adding a clsact qdisc to {dev}: {source}")]
    Clsact {
        dev: String,
        source: Box<aya::programs::tc::TcError>,
    },
    #[error("adding the cls_bpf filter {PROGRAM_NAME} to the clsact ingress of {dev}: {source}")]
    Filter {
        dev: String,
        source: Box<netlink::NetlinkError>,
    },
    #[error("removing {PROGRAM_NAME} from the ingress of {dev}: {source}")]
    Detach {
        dev: String,
        source: Box<aya::programs::tc::TcError>,
    },
    #[error("RTM_DELQDISC clsact on {dev}: {source}")]
    DeleteClsact {
        dev: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("BPF_OBJ_PIN of {PROGRAM_NAME} at {path}: {source}")]
    PinProgram {
        path: PathBuf,
        source: Box<aya::pin::PinError>,
    },
    #[error("BPF_OBJ_PIN of the link on {dev} at {path}: {source}")]
    PinLink {
        dev: String,
        path: PathBuf,
        source: Box<aya::pin::PinError>,
    },
    #[error("converting the link on {dev} to an fd link: {source}")]
    Link {
        dev: String,
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("{op} on map {map} (pinned in {dir}): {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        dir: PathBuf,
        source: Box<aya::maps::MapError>,
    },
    #[error(
        "endpoint index {index} is out of range: this sandbox's maps have room for {capacity} \
         endpoints (sized when it was first attached: {default} or as many as that attach \
         connected, at most {MAX_ENDPOINTS}); detach it and attach it with all its \
         endpoints present to make room for more",
        default = super::capacity::DEFAULT_CAPACITY
    )]
    IndexOutOfRange { index: u32, capacity: u32 },
    #[error(transparent)]
    HostFile(#[from] pins::HostFileError),
    #[error("the source guard of endpoint {index}: {source}")]
    Guard {
        index: u32,
        source: Box<crate::guard::GuardMapError>,
    },
    #[error(transparent)]
    NetnsAnchor(#[from] super::netns_anchor::AnchorError),
}

fn map_err(
    op: &'static str,
    map: &'static str,
    dir: &Path,
) -> impl FnOnce(aya::maps::MapError) -> EbpfError {
    let dir = dir.to_owned();
    move |source| EbpfError::Map {
        op,
        map,
        dir,
        source: Box::new(source),
    }
}

/// An eBPF object other than the one built into this binary (`attach --object`), read once.
#[derive(Clone)]
pub struct EbpfObject {
    pub path: PathBuf,
    pub bytes: std::sync::Arc<[u8]>,
}

impl EbpfObject {
    /// Reads the object file `path` with the checks `upgrade --object` makes (an ELF eBPF
    /// object with the `netshim_redirect` program), so that a file that is not one is
    /// refused before anything is changed.
    pub fn read(path: &Path) -> Result<Self, super::upgrade::UpgradeError> {
        let object = super::upgrade::Object::from_file(path)?;
        Ok(Self {
            path: path.to_owned(),
            bytes: object.bytes().into(),
        })
    }
}

impl std::fmt::Debug for EbpfObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.path.display(), self.bytes.len())
    }
}

/// A loaded copy of the datapath whose maps live in one sandbox pin directory.
pub struct EbpfDatapath {
    program: Program,
    dir: PathBuf,
    mode: AttachMode,
    /// Endpoints the sandbox's maps have room for (see [`super::capacity`]).
    capacity: u32,
}

/// Where the program to attach comes from.
enum Program {
    /// The sandbox's program, pinned by an earlier connect (see [`pins::program_pin`]).
    Pinned(Box<SchedClassifier>),
    /// Loaded by this value from the object (and pinned for later connects).
    Object(Box<Ebpf>),
}

impl EbpfDatapath {
    /// Opens the datapath of the sandbox directory `dir`. The program is the one pinned in
    /// `dir` when there is one (no object is loaded at all: the maps are the pinned ones it
    /// uses). Otherwise the object is loaded: its maps are created (or the pinned ones
    /// reused) and pinned, its program is loaded (BPF_PROG_LOAD) and pinned for later
    /// connects. `object`: another object than the built-in one (`attach --object`).
    /// `capacity`: the endpoints the maps are created for when they are not pinned yet (a
    /// sandbox that has them keeps their size).
    pub fn load(
        dir: &Path,
        mode: AttachMode,
        object: Option<&EbpfObject>,
        capacity: u32,
    ) -> Result<Self, EbpfError> {
        let started = std::time::Instant::now();
        let pin = pins::program_pin(dir);
        let program = match SchedClassifier::from_pin(&pin) {
            Ok(program) => Program::Pinned(Box::new(program)),
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.kind() == std::io::ErrorKind::NotFound =>
            {
                Program::Object(Box::new(load_object(dir, object, &pin, capacity)?))
            }
            Err(e) => return Err(EbpfError::ProgramLoad(Box::new(e))),
        };
        tracing::debug!(
            elapsed = ?started.elapsed(),
            "program ready ({})",
            match program {
                Program::Pinned(_) => "the sandbox's pinned program",
                Program::Object(_) => "loaded from the object and pinned",
            }
        );
        let capacity = super::capacity::of_dir(dir).map_err(map_err(
            "BPF_OBJ_GET_INFO_BY_FD",
            map_names::ENDPOINTS,
            dir,
        ))?;
        Ok(Self {
            program,
            dir: dir.to_owned(),
            mode,
            capacity,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The directory holding this datapath's pins was renamed to `dir` (see
    /// [`super::preload`]).
    pub(super) fn moved_to(&mut self, dir: &Path) {
        self.dir = dir.to_owned();
    }

    /// A cls_bpf sandbox pins its netns anchor (once; see [`super::netns_anchor`]), so that
    /// gc can tell its netns alive when only a socket holds it. TCX sandboxes have their
    /// links for that. Must run inside the sandbox netns.
    pub fn anchor_netns(&self) -> Result<(), EbpfError> {
        if self.mode != AttachMode::ClsBpf {
            return Ok(());
        }
        let started = std::time::Instant::now();
        super::netns_anchor::ensure(&self.dir)?;
        tracing::debug!(elapsed = ?started.elapsed(), "netns anchor pinned");
        Ok(())
    }

    /// Writes which netns this sandbox directory serves (read by `status` and `stats`).
    pub fn record_sandbox(&mut self, netns: &Netns) -> Result<(), EbpfError> {
        let record = SandboxRecord {
            netns_inode: netns.inode,
            netns_cookie: netns.cookie,
            attach_mode: self.mode.to_record(),
            netns_path: to_fixed(netns.path.as_os_str().as_encoded_bytes()),
            ..SandboxRecord::default()
        };
        let dir = self.dir.clone();
        let mut map: Array<_, SandboxRecord> = Array::try_from(pinned_map(
            &dir,
            map_names::SANDBOX,
        )?)
        .map_err(map_err("open", map_names::SANDBOX, &dir))?;
        map.set(0, record, 0)
            .map_err(map_err("BPF_MAP_UPDATE_ELEM", map_names::SANDBOX, &dir))
    }

    /// Connects endpoint `index`: `pod` ingress → `tap` egress and back. The map entries are
    /// written before the programs are attached, so no packet meets a half-made endpoint.
    /// `to_vm` is how packets reach `tap`, `from_vm` how they reach `pod` (see
    /// [`RedirectMode::towards`]). `guard`: the source guard of what arrives on `tap`,
    /// written into the guard maps before the `peers` entries, so that the tap's entry
    /// carries `PEER_GUARD` (while the guard is on) from the first packet.
    pub async fn connect(
        &mut self,
        handle: &rtnetlink::Handle,
        index: u32,
        pod: &Dev,
        tap: &Dev,
        (to_vm, from_vm): (RedirectMode, RedirectMode),
        guard: Option<&GuardEntry>,
    ) -> Result<(), EbpfError> {
        if index >= self.capacity {
            return Err(EbpfError::IndexOutOfRange {
                index,
                capacity: self.capacity,
            });
        }
        let dir = self.dir.clone();
        let guard_err = |source| EbpfError::Guard {
            index,
            source: Box::new(source),
        };
        match guard {
            Some(entry) => guard::maps::write(&dir, index, entry).map_err(guard_err)?,
            // A reused index keeps nothing of an earlier endpoint's guard.
            None => guard::maps::remove(&dir, index).map_err(guard_err)?,
        }
        let guarded = guard.is_some_and(|g| g.mode().is_on());
        {
            let mut peers: HashMap<_, u32, PeerEntry> = HashMap::try_from(pinned_map(
                &dir,
                map_names::PEERS,
            )?)
            .map_err(map_err("open", map_names::PEERS, &dir))?;
            for (from, to, direction, mode) in [
                (pod, tap, Direction::ToVm, to_vm),
                (tap, pod, Direction::FromVm, from_vm),
            ] {
                let entry = PeerEntry {
                    peer_ifindex: to.ifindex,
                    slot: direction.slot(index),
                    flags: match mode {
                        RedirectMode::RedirectPeer => PEER_REDIRECT_PEER,
                        RedirectMode::Redirect => 0,
                    } | match direction {
                        Direction::FromVm if guarded => PEER_GUARD,
                        _ => 0,
                    },
                    _pad: 0,
                };
                peers.insert(from.ifindex, entry, 0).map_err(map_err(
                    "BPF_MAP_UPDATE_ELEM",
                    map_names::PEERS,
                    &dir,
                ))?;
            }
        }
        crate::crash::crash_point("peers-written");
        let mut record = EndpointRecord {
            in_use: 1,
            pod_ifindex: pod.ifindex,
            tap_ifindex: tap.ifindex,
            pod_name: to_fixed(pod.name.as_bytes()),
            tap_name: to_fixed(tap.name.as_bytes()),
            ..EndpointRecord::default()
        };
        // Recorded before attaching, so that a failed attach can be undone from the record.
        self.write_endpoint(index, &record)?;
        for (dev, flag, step) in [
            (pod, ENDPOINT_POD_CLSACT, "pod-link-pinned"),
            (tap, ENDPOINT_TAP_CLSACT, "tap-link-pinned"),
        ] {
            let started = std::time::Instant::now();
            let added = self.attach_ingress(handle, dev).await?;
            tracing::debug!(elapsed = ?started.elapsed(), "{} ingress hooked ({})", dev.name, self.mode.as_str());
            if added == AddedClsact::Yes {
                record.flags |= flag;
                self.write_endpoint(index, &record)?;
            }
            crate::crash::crash_point(step);
        }
        Ok(())
    }

    fn write_endpoint(&mut self, index: u32, record: &EndpointRecord) -> Result<(), EbpfError> {
        let dir = self.dir.clone();
        let mut endpoints: Array<_, EndpointRecord> = Array::try_from(pinned_map(
            &dir,
            map_names::ENDPOINTS,
        )?)
        .map_err(map_err("open", map_names::ENDPOINTS, &dir))?;
        endpoints.set(index, record, 0).map_err(map_err(
            "BPF_MAP_UPDATE_ELEM",
            map_names::ENDPOINTS,
            &dir,
        ))
    }

    fn program(&mut self) -> Result<&mut SchedClassifier, EbpfError> {
        match &mut self.program {
            Program::Pinned(program) => Ok(program),
            Program::Object(ebpf) => object_program(ebpf),
        }
    }

    async fn attach_ingress(
        &mut self,
        handle: &rtnetlink::Handle,
        dev: &Dev,
    ) -> Result<AddedClsact, EbpfError> {
        let mode = self.mode;
        let pin = pins::link_pin(&self.dir, &dev.name);
        let attach_err = |source| EbpfError::Attach {
            dev: dev.to_string(),
            mode: mode.as_str(),
            source: Box::new(source),
        };
        match mode {
            AttachMode::Tcx => {
                let program = self.program()?;
                // Last, explicitly: other TCX programs on the device (another tool's policy
                // program) run first and see every packet; ours redirects, which ends the
                // chain, so nothing placed after it would see the packets it takes. See
                // sandbox/coexist.rs.
                let id = program
                    .attach_with_options(
                        &dev.name,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::last()),
                    )
                    .map_err(attach_err)?;
                let link = program.take_link(id).map_err(attach_err)?;
                let link: FdLink = link.try_into().map_err(|source| EbpfError::Link {
                    dev: dev.to_string(),
                    source: Box::new(source),
                })?;
                // Dropping the returned PinnedLink closes our fd; the pin keeps the link.
                link.pin(&pin).map_err(|source| EbpfError::PinLink {
                    dev: dev.to_string(),
                    path: pin.clone(),
                    source: Box::new(source),
                })?;
                Ok(AddedClsact::No)
            }
            AttachMode::ClsBpf => {
                let added = match tc::qdisc_add_clsact(&dev.name) {
                    Ok(()) => AddedClsact::Yes,
                    Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                        AddedClsact::No
                    }
                    Err(source) => {
                        return Err(EbpfError::Clsact {
                            dev: dev.to_string(),
                            source: Box::new(source),
                        })
                    }
                };
                let fd = self.program()?.fd().map_err(attach_err)?;
                add_cls_bpf_filter(handle, dev, fd.as_fd().as_raw_fd())
                    .await
                    .map_err(|source| EbpfError::Filter {
                        dev: dev.to_string(),
                        source: Box::new(source),
                    })?;
                Ok(added)
            }
        }
    }
}

/// RTM_NEWTFILTER of a direct-action cls_bpf filter running `prog_fd` under the clsact
/// ingress of `dev`, protocol all, at the priority the kernel picks (what aya's netlink
/// attach sends). Made here rather than by aya because aya names the filter after the
/// program's kernel name, which a pinned program has cut to 15 characters: the filter must
/// be named [`PROGRAM_NAME`] in full, as detach and upgrade find it by that name.
async fn add_cls_bpf_filter(
    handle: &rtnetlink::Handle,
    dev: &Dev,
    prog_fd: std::os::fd::RawFd,
) -> Result<(), netlink::NetlinkError> {
    use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
    use rtnetlink::packet_route::{
        tc::{TcBpfFlags, TcFilterBpfOption, TcMessage, TcOption},
        RouteNetlinkMessage,
    };
    let mut msg = TcMessage::with_index(dev.ifindex as i32);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    // Priority 0 (the kernel picks one), protocol ETH_P_ALL in network order.
    msg.header.info = u32::from((libc::ETH_P_ALL as u16).to_be());
    msg.attributes.push(TcAttribute::Kind("bpf".into()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(PROGRAM_NAME.into())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    netlink::request_ack(
        handle,
        RouteNetlinkMessage::NewTrafficFilter(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
}

/// Loads `object` (else the built-in one) with its maps pinned in `dir` (created where
/// missing, for `capacity` endpoints), loads its program and pins it at `pin`.
fn load_object(
    dir: &Path,
    object: Option<&EbpfObject>,
    pin: &Path,
    capacity: u32,
) -> Result<Ebpf, EbpfError> {
    let object = object.map_or(crate::EBPF_OBJECT, |o| &o.bytes[..]);
    let started = std::time::Instant::now();
    // No CO-RE relocation in the program: the kernel's BTF is neither read nor parsed.
    let mut loader = super::loader::without_kernel_btf();
    super::capacity::apply(&mut loader, capacity);
    let mut ebpf = loader
        .default_map_pin_directory(dir)
        .load(object)
        .map_err(|source| EbpfError::Load {
            dir: dir.to_owned(),
            source: Box::new(source),
        })?;
    tracing::debug!(elapsed = ?started.elapsed(), "eBPF object parsed, maps pinned");
    let program = object_program(&mut ebpf)?;
    program
        .load()
        .map_err(|e| EbpfError::ProgramLoad(Box::new(e)))?;
    program.pin(pin).map_err(|source| EbpfError::PinProgram {
        path: pin.to_owned(),
        source: Box::new(source),
    })?;
    Ok(ebpf)
}

/// The prefix of the private bpffs directory of [`check_loadable`] (its maps are pinned
/// by name: without a directory of its own aya would pin them at the root of bpffs).
pub const CHECK_PREFIX: &str = "netshim-check-";

/// Loads the datapath program of `object` (the built-in one when `None`) into the kernel
/// and unloads it again: whether this kernel's verifier takes it (the agent's readiness).
/// Nothing is attached; the maps live in a private directory ([`CHECK_PREFIX`]) removed
/// again before this returns. Returns how long the load took and the program's tag (the
/// kernel's hash of its instructions, map references left out: the same for every sandbox
/// running this program).
pub fn check_loadable(
    object: Option<&EbpfObject>,
) -> Result<(std::time::Duration, u64), EbpfError> {
    let dir = pins::create_process_dir(CHECK_PREFIX)?;
    let checked = load_and_tag(&dir, object);
    let _ = pins::remove_sandbox_dir(&dir);
    checked
}

fn load_and_tag(
    dir: &Path,
    object: Option<&EbpfObject>,
) -> Result<(std::time::Duration, u64), EbpfError> {
    let bytes = object.map_or(crate::EBPF_OBJECT, |o| &o.bytes[..]);
    let started = std::time::Instant::now();
    let mut ebpf = super::loader::without_kernel_btf()
        .default_map_pin_directory(dir)
        .load(bytes)
        .map_err(|source| EbpfError::Load {
            dir: dir.to_owned(),
            source: Box::new(source),
        })?;
    let program = object_program(&mut ebpf)?;
    program
        .load()
        .map_err(|e| EbpfError::ProgramLoad(Box::new(e)))?;
    let elapsed = started.elapsed();
    let tag = program
        .info()
        .map_err(|e| EbpfError::ProgramLoad(Box::new(e)))?
        .tag();
    Ok((elapsed, tag))
}

fn object_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, EbpfError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(EbpfError::MissingProgram)?
        .try_into()
        .map_err(|e| EbpfError::ProgramLoad(Box::new(e)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddedClsact {
    Yes,
    No,
}

fn pinned_map(dir: &Path, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    let data = MapData::from_pin(dir.join(name)).map_err(map_err("BPF_OBJ_GET", name, dir))?;
    aya::maps::Map::from_map_data(data).map_err(map_err("open", name, dir))
}

/// Reads the attach mode a sandbox directory was made with.
/// Sets or clears [`PEER_REDIRECT_PEER`] on the `peers` entry of `ifindex` (a tap: how the
/// VM's packets reach the pod device), effective on the next packet. `Ok(None)` when the
/// device has no entry, else whether the entry had the flag before.
pub fn set_redirect_peer(dir: &Path, ifindex: u32, on: bool) -> Result<Option<bool>, EbpfError> {
    let mut peers: HashMap<_, u32, PeerEntry> = HashMap::try_from(pinned_map(
        dir,
        map_names::PEERS,
    )?)
    .map_err(map_err("open", map_names::PEERS, dir))?;
    let mut entry = match peers.get(&ifindex, 0) {
        Ok(e) => e,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
        Err(e) => return Err(map_err("BPF_MAP_LOOKUP_ELEM", map_names::PEERS, dir)(e)),
    };
    let before = entry.flags & PEER_REDIRECT_PEER != 0;
    if before != on {
        entry.flags ^= PEER_REDIRECT_PEER;
        peers.insert(ifindex, entry, 0).map_err(map_err(
            "BPF_MAP_UPDATE_ELEM",
            map_names::PEERS,
            dir,
        ))?;
    }
    Ok(Some(before))
}

pub fn recorded_mode(dir: &Path) -> Result<AttachMode, EbpfError> {
    Ok(AttachMode::from_record(recorded_sandbox(dir)?.attach_mode))
}

/// Reads which netns a sandbox directory serves (all zero when the attach that made it died
/// before writing it).
pub fn recorded_sandbox(dir: &Path) -> Result<SandboxRecord, EbpfError> {
    let array: Array<_, SandboxRecord> = Array::try_from(pinned_map(dir, map_names::SANDBOX)?)
        .map_err(map_err("open", map_names::SANDBOX, dir))?;
    array
        .get(&0, 0)
        .map_err(map_err("BPF_MAP_LOOKUP_ELEM", map_names::SANDBOX, dir))
}

/// The endpoint records of a sandbox directory, by index.
pub fn recorded_endpoints(dir: &Path) -> Result<Vec<(u32, EndpointRecord)>, EbpfError> {
    let array: Array<_, EndpointRecord> = Array::try_from(pinned_map(dir, map_names::ENDPOINTS)?)
        .map_err(map_err("open", map_names::ENDPOINTS, dir))?;
    let mut out = Vec::new();
    for index in 0..array.len() {
        let record = array.get(&index, 0).map_err(map_err(
            "BPF_MAP_LOOKUP_ELEM",
            map_names::ENDPOINTS,
            dir,
        ))?;
        if record.in_use != 0 {
            out.push((index, record));
        }
    }
    Ok(out)
}

/// Takes the datapath of a sandbox down. With TCX, unpinning the links detaches them. With
/// cls_bpf, our filters are removed from both devices of every recorded endpoint, and the
/// clsact qdiscs netshim added are deleted. Then the maps' pins and the directory go. Must
/// run inside the sandbox netns; devices that no longer exist are fine.
pub async fn detach_sandbox(handle: &rtnetlink::Handle, dir: &Path) -> Result<(), EbpfError> {
    if !dir.exists() {
        return Ok(());
    }
    if recorded_mode(dir).unwrap_or(AttachMode::Tcx) == AttachMode::ClsBpf {
        for (_, record) in recorded_endpoints(dir)? {
            let devices = [
                (&record.pod_name, record.pod_ifindex, ENDPOINT_POD_CLSACT),
                (&record.tap_name, record.tap_ifindex, ENDPOINT_TAP_CLSACT),
            ];
            for (name, ifindex, flag) in devices {
                let name = String::from_utf8_lossy(from_fixed(name)).into_owned();
                detach_cls_bpf(handle, &name, ifindex, record.flags & flag != 0).await?;
            }
        }
    }
    pins::remove_sandbox_dir(dir)?;
    Ok(())
}

async fn detach_cls_bpf(
    handle: &rtnetlink::Handle,
    name: &str,
    ifindex: u32,
    delete_clsact: bool,
) -> Result<(), EbpfError> {
    match tc::qdisc_detach_program(name, TcAttachType::Ingress, PROGRAM_NAME) {
        Ok(()) => {}
        // The device is gone, or the filter is: nothing of ours left there.
        // (The name lookup of a device that is gone: ENODEV.)
        Err(tc::TcError::IoError(e))
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENODEV) =>
        {
            return Ok(())
        }
        Err(tc::TcError::NetlinkError(e)) if netlink::is_gone_raw(e.raw_os_error()) => {
            return Ok(())
        }
        Err(source) => {
            return Err(EbpfError::Detach {
                dev: name.to_owned(),
                source: Box::new(source),
            })
        }
    }
    if !delete_clsact {
        return Ok(());
    }
    let mut req = handle.qdisc().del(ifindex as i32);
    let msg = req.message_mut();
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = TcHandle::from(0xffff_0000u32);
    // With the kind, the kernel refuses rather than deletes a qdisc that is not a clsact.
    msg.attributes.push(TcAttribute::Kind("clsact".into()));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if netlink::is_hook_gone(&e) => Ok(()),
        Err(source) => Err(EbpfError::DeleteClsact {
            dev: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// Disconnects the recorded pair `a`/`b` (either order) of a sandbox directory: its links
/// (TCX: unpinned; cls_bpf: filters removed, clsact qdiscs netshim added deleted), its
/// peer entries and its endpoint record. The directory goes with its last pair. Returns
/// whether the pair was found. Must run inside the sandbox netns.
pub async fn disconnect_pair(
    handle: &rtnetlink::Handle,
    dir: &Path,
    a: &str,
    b: &str,
) -> Result<bool, EbpfError> {
    if !dir.exists() {
        return Ok(false);
    }
    let records = recorded_endpoints(dir)?;
    let name = |f: &[u8]| String::from_utf8_lossy(from_fixed(f)).into_owned();
    let Some((index, record)) = records.iter().copied().find(|(_, r)| {
        let (p, t) = (name(&r.pod_name), name(&r.tap_name));
        (p == a && t == b) || (p == b && t == a)
    }) else {
        return Ok(false);
    };
    if recorded_mode(dir).unwrap_or(AttachMode::Tcx) == AttachMode::ClsBpf {
        for (n, ifindex, flag) in [
            (&record.pod_name, record.pod_ifindex, ENDPOINT_POD_CLSACT),
            (&record.tap_name, record.tap_ifindex, ENDPOINT_TAP_CLSACT),
        ] {
            detach_cls_bpf(handle, &name(n), ifindex, record.flags & flag != 0).await?;
        }
    } else {
        for n in [&record.pod_name, &record.tap_name] {
            let pin = pins::link_pin(dir, &name(n));
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(EbpfError::HostFile(pins::HostFileError::Io {
                        op: "unlink",
                        path: pin,
                        source,
                    }))
                }
            }
        }
    }
    let mut peers: HashMap<_, u32, PeerEntry> = HashMap::try_from(pinned_map(
        dir,
        map_names::PEERS,
    )?)
    .map_err(map_err("open", map_names::PEERS, dir))?;
    for ifindex in [record.pod_ifindex, record.tap_ifindex] {
        match peers.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("BPF_MAP_DELETE_ELEM", map_names::PEERS, dir)(e)),
        }
    }
    let mut endpoints: Array<_, EndpointRecord> = Array::try_from(pinned_map(
        dir,
        map_names::ENDPOINTS,
    )?)
    .map_err(map_err("open", map_names::ENDPOINTS, dir))?;
    endpoints
        .set(index, EndpointRecord::default(), 0)
        .map_err(map_err("BPF_MAP_UPDATE_ELEM", map_names::ENDPOINTS, dir))?;
    guard::maps::remove(dir, index).map_err(|source| EbpfError::Guard {
        index,
        source: Box::new(source),
    })?;
    if records.len() == 1 {
        pins::remove_sandbox_dir(dir)?;
    }
    Ok(true)
}
