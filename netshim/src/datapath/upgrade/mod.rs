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
//!
//! 4. [`repin_program`]: the sandbox's program pin ([`pins::program_pin`], which later
//!    connects attach) is moved to the new program, so that an endpoint added after the
//!    upgrade runs what the others run.
//!
//! Layout: `object.rs` (steps 1 and 2: the object, its maps, the load), `tcx.rs` and
//! `cls_bpf.rs` (step 3 for each kind of hook).

mod cls_bpf;
mod object;
mod tcx;

use std::path::PathBuf;

use netshim_common::{map_names, PROGRAM_NAME};

use super::ebpf;
use crate::pins;

pub use cls_bpf::swap_cls_bpf_filters;
pub use object::{load_against, Loaded, Object, STAGING_PREFIX};
pub use tcx::swap_tcx_links;

/// The maps the datapath and netshim's later processes use; a replacement object must
/// declare all of them, pinned by name.
pub const DATAPATH_MAPS: [&str; 5] = [
    map_names::PEERS,
    map_names::COUNTERS,
    map_names::UNMATCHED,
    map_names::ENDPOINTS,
    map_names::SANDBOX,
];

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
    #[error("BPF_OBJ_PIN of the new {PROGRAM_NAME} at {path}: {source}")]
    PinProgram {
        path: PathBuf,
        source: Box<aya::pin::PinError>,
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
    HostFile(#[from] pins::HostFileError),
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

/// Points the sandbox's program pin at the loaded program: pinned next to it under a
/// temporary name, then renamed over it (bpffs renames atomically), so a later connect finds
/// either the old program or the new one, never none. A sandbox of a release without the pin
/// gets one. The temporary name has no dot: bpffs refuses names with one (EPERM, "reserved").
pub fn repin_program(dir: &std::path::Path, loaded: &mut Loaded) -> Result<(), UpgradeError> {
    let pin = pins::program_pin(dir);
    let staged = dir.join(format!("{}_new", pins::PROGRAM_PIN));
    let _ = std::fs::remove_file(&staged);
    loaded
        .program()
        .pin(&staged)
        .map_err(|source| UpgradeError::PinProgram {
            path: staged.clone(),
            source: Box::new(source),
        })?;
    std::fs::rename(&staged, &pin).map_err(|source| {
        let _ = std::fs::remove_file(&staged);
        UpgradeError::HostFile(pins::HostFileError::Io {
            op: "rename",
            path: staged.clone(),
            source,
        })
    })
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

#[cfg(test)]
mod tests {
    use super::object::{compare, MapDef};
    use super::*;
    use std::path::Path;

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
            name: "unmatched".into(),
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
        // A per-endpoint map's size is the sandbox's capacity, not a difference.
        let counters = MapDef {
            name: "counters".into(),
            ..declared.clone()
        };
        let smaller = MapDef {
            max_entries: 16,
            ..counters.clone()
        };
        assert_eq!(compare(&counters, &smaller), None);
        assert_eq!(
            compare(
                &counters,
                &MapDef {
                    value_size: 24,
                    ..smaller
                }
            )
            .as_deref(),
            Some("value size pinned 24, object 32")
        );
    }
}
