//! Steps 1 and 2 of an upgrade: the eBPF object, its maps compared with the sandbox's pins,
//! and the load against them (see [`super`]).

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
};

use aya::{maps::MapData, programs::SchedClassifier, Ebpf};
use aya_obj::maps::PinningType;
use netshim_common::PROGRAM_NAME;

use super::{UpgradeError, DATAPATH_MAPS};
use crate::pins;

/// A map definition as the object declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MapDef {
    pub(super) name: String,
    pub(super) map_type: u32,
    pub(super) key_size: u32,
    pub(super) value_size: u32,
    pub(super) max_entries: u32,
    pub(super) flags: u32,
}

/// The eBPF object an upgrade loads.
#[derive(Debug, Clone)]
pub struct Object {
    /// `embedded` or the file's path.
    pub name: String,
    pub(super) bytes: Cow<'static, [u8]>,
    pub(super) pinned_maps: Vec<MapDef>,
}

impl Object {
    /// The object built into this binary ([`crate::EBPF_OBJECT`]).
    /// Whether the object has the source guard (declares every guard map), i.e. its
    /// program knows `PEER_GUARD`.
    pub fn has_guard(&self) -> bool {
        netshim_common::has_guard_maps(|m| self.pinned_maps.iter().any(|d| d.name == m))
    }

    pub fn embedded() -> Result<Self, UpgradeError> {
        Self::parse("embedded".into(), Cow::Borrowed(crate::EBPF_OBJECT))
    }

    /// The object's bytes (as read from its file, or the embedded ones).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
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
    pub(super) ebpf: Ebpf,
    /// The new program's id.
    pub prog_id: u32,
    /// Maps the sandbox did not have, created by this load and pinned into its directory.
    pub created_maps: Vec<String>,
    pub(super) dir: PathBuf,
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

    pub(super) fn program(&mut self) -> &mut SchedClassifier {
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

/// `BPF_MAP_TYPE_RINGBUF`: its `max_entries` is the ring's size in bytes.
const MAP_TYPE_RINGBUF: u32 = aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32;
/// `BPF_F_NO_PREALLOC`: whether a hash map's elements are allocated up front.
const NO_PREALLOC: u32 = aya_obj::generated::BPF_F_NO_PREALLOC;

/// What is different between a pinned map and the object's definition, if anything the
/// program cares about. It does not care whether a hash map is preallocated
/// (`BPF_F_NO_PREALLOC`, e.g. `peers` since issue 13) nor how large a ring buffer is (it
/// reserves fixed records and counts what does not fit), nor how many endpoints a
/// per-endpoint map has room for (see [`crate::datapath::capacity`]: every index is
/// bounded by the map it is looked up in), so a sandbox attached with the older
/// definitions keeps its maps across an upgrade, and its counters with them.
pub(super) fn compare(declared: &MapDef, pinned: &MapDef) -> Option<String> {
    let ring = declared.map_type == MAP_TYPE_RINGBUF && pinned.map_type == MAP_TYPE_RINGBUF;
    let sized = crate::datapath::capacity::is_sized(&declared.name);
    let pairs = [
        ("map type", pinned.map_type, declared.map_type, true),
        ("key size", pinned.key_size, declared.key_size, true),
        ("value size", pinned.value_size, declared.value_size, true),
        (
            "max entries",
            pinned.max_entries,
            declared.max_entries,
            !ring && !sized,
        ),
        (
            "flags",
            pinned.flags & !NO_PREALLOC,
            declared.flags & !NO_PREALLOC,
            true,
        ),
    ];
    let diffs: Vec<String> = pairs
        .iter()
        .filter(|(_, pinned, declared, matters)| *matters && pinned != declared)
        .map(|(what, pinned, declared, _)| format!("{what} pinned {pinned}, object {declared}"))
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// A private bpffs directory the sandbox's maps are pinned in again for one load; removed
/// (with its pins) on drop.
pub(super) struct Staging {
    pub(super) dir: PathBuf,
}

/// Prefix of an upgrade's staging directory at the root of bpffs.
pub const STAGING_PREFIX: &str = "netshim-upgrade-";

impl Staging {
    fn new() -> Result<Self, UpgradeError> {
        Ok(Self {
            dir: pins::create_process_dir(STAGING_PREFIX)?,
        })
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
    // No kernel BTF: the program needs no CO-RE relocation, and reading and parsing
    // /sys/kernel/btf/vmlinux (~2 MB) was most of a load's user time.
    let mut loader = crate::datapath::loader::without_kernel_btf();
    // A per-endpoint map the sandbox lacks is made for as many endpoints as it has room for.
    if let Ok(capacity) = crate::datapath::capacity::of_dir(dir) {
        crate::datapath::capacity::apply(&mut loader, capacity);
    }
    let mut ebpf = loader
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

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, map_type: u32, max_entries: u32, flags: u32) -> MapDef {
        MapDef {
            name: name.into(),
            map_type,
            key_size: 4,
            value_size: 16,
            max_entries,
            flags,
        }
    }

    #[test]
    fn preallocation_ring_size_and_capacity_are_not_differences_the_program_sees() {
        const HASH: u32 = aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_HASH as u32;
        // peers of cc25fd2 (preallocated) against the object's (BPF_F_NO_PREALLOC).
        let declared = def("peers", HASH, 128, NO_PREALLOC);
        assert_eq!(compare(&declared, &def("peers", HASH, 128, 0)), None);
        // The 64 KiB guard_events ring of cc25fd2 against a smaller one.
        let ring = def("guard_events", MAP_TYPE_RINGBUF, 4096, 0);
        assert_eq!(
            compare(&ring, &def("guard_events", MAP_TYPE_RINGBUF, 65536, 0)),
            None
        );
        // A per-endpoint map made for fewer endpoints (a sandbox's capacity).
        assert_eq!(compare(&declared, &def("peers", HASH, 32, 0)), None);
        // Anything else still counts: another size of a map that is not per endpoint,
        // another flag, another type.
        let trie = def("guard_v4", HASH, 1024, NO_PREALLOC);
        assert_eq!(
            compare(&trie, &def("guard_v4", HASH, 64, NO_PREALLOC)).as_deref(),
            Some("max entries pinned 64, object 1024")
        );
        assert_eq!(
            compare(&declared, &def("peers", HASH, 128, 8 | NO_PREALLOC)).as_deref(),
            Some("flags pinned 8, object 0")
        );
        assert_eq!(
            compare(&ring, &def("guard_events", HASH, 65536, 0)).as_deref(),
            Some("map type pinned 1, object 27, max entries pinned 65536, object 4096")
        );
    }
}
