//! Per-endpoint counters, read back from the pinned maps by any later process.

use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use netshim_common::{from_fixed, map_names, Counters, Direction, EndpointRecord, SandboxRecord};

use crate::pins;

/// Counters of one direction of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectionStats {
    pub packets: u64,
    pub bytes: u64,
    /// eBPF: packets not redirected (a `peers` entry with unknown flags, or a helper refusal;
    /// see `Counters::redirect_errors`); mirred: drops reported by the action.
    pub errors: u64,
}

impl From<Counters> for DirectionStats {
    fn from(c: Counters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
            errors: c.redirect_errors,
        }
    }
}

/// Counters of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStats {
    pub index: u32,
    /// The pod-side device (the CNI's veth).
    pub pod: String,
    pub tap: String,
    /// pod ingress → tap (towards the VM).
    pub to_vm: DirectionStats,
    /// tap ingress → pod device (from the VM).
    pub from_vm: DirectionStats,
}

/// Counters of one sandbox netns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxStats {
    pub netns: String,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    pub backend: crate::backend::TcBackend,
    pub endpoints: Vec<EndpointStats>,
    /// Packets that reached the classifier on a device without a peer entry (passed on).
    /// Always zero for mirred.
    pub unmatched: DirectionStats,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} on pinned map {path}: {source}")]
pub struct StatsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: Box<aya::maps::MapError>,
}

fn open_pinned(dir: &Path, name: &'static str) -> Result<Map, StatsError> {
    let path = dir.join(name);
    let err = |op| {
        let path = path.clone();
        move |source| StatsError {
            op,
            path,
            source: Box::new(source),
        }
    };
    let data = MapData::from_pin(&path).map_err(err("BPF_OBJ_GET"))?;
    Map::from_map_data(data).map_err(err("open"))
}

fn lookup_err(dir: &Path, name: &'static str) -> impl Fn(aya::maps::MapError) -> StatsError {
    let path = dir.join(name);
    move |source| StatsError {
        op: "BPF_MAP_LOOKUP_ELEM",
        path: path.clone(),
        source: Box::new(source),
    }
}

fn sum_slot(
    map: &PerCpuArray<MapData, Counters>,
    slot: u32,
) -> Result<Counters, aya::maps::MapError> {
    let mut total = Counters::default();
    for c in map.get(&slot, 0)?.iter() {
        total.add(c);
    }
    Ok(total)
}

/// Reads a sandbox's counters from its pin directory.
pub fn read_pinned(dir: &Path) -> Result<SandboxStats, StatsError> {
    let sandbox: Array<MapData, SandboxRecord> =
        Array::try_from(open_pinned(dir, map_names::SANDBOX)?)
            .map_err(lookup_err(dir, map_names::SANDBOX))?;
    let endpoints: Array<MapData, EndpointRecord> =
        Array::try_from(open_pinned(dir, map_names::ENDPOINTS)?)
            .map_err(lookup_err(dir, map_names::ENDPOINTS))?;
    let counters: PerCpuArray<MapData, Counters> =
        PerCpuArray::try_from(open_pinned(dir, map_names::COUNTERS)?)
            .map_err(lookup_err(dir, map_names::COUNTERS))?;
    let unmatched: PerCpuArray<MapData, Counters> =
        PerCpuArray::try_from(open_pinned(dir, map_names::UNMATCHED)?)
            .map_err(lookup_err(dir, map_names::UNMATCHED))?;

    let record = sandbox
        .get(&0, 0)
        .map_err(lookup_err(dir, map_names::SANDBOX))?;
    let mut out = SandboxStats {
        netns: String::from_utf8_lossy(from_fixed(&record.netns_path)).into_owned(),
        netns_inode: record.netns_inode,
        netns_cookie: record.netns_cookie,
        backend: crate::backend::TcBackend::Ebpf,
        endpoints: Vec::new(),
        unmatched: sum_slot(&unmatched, 0)
            .map_err(lookup_err(dir, map_names::UNMATCHED))?
            .into(),
    };
    for index in 0..endpoints.len() {
        let ep = endpoints
            .get(&index, 0)
            .map_err(lookup_err(dir, map_names::ENDPOINTS))?;
        if ep.in_use == 0 {
            continue;
        }
        let slot = |d: Direction| {
            sum_slot(&counters, d.slot(index)).map_err(lookup_err(dir, map_names::COUNTERS))
        };
        out.endpoints.push(EndpointStats {
            index,
            pod: String::from_utf8_lossy(from_fixed(&ep.pod_name)).into_owned(),
            tap: String::from_utf8_lossy(from_fixed(&ep.tap_name)).into_owned(),
            to_vm: slot(Direction::ToVm)?.into(),
            from_vm: slot(Direction::FromVm)?.into(),
        });
    }
    Ok(out)
}

/// Reads every pinned sandbox. Directories that cannot be read are returned as errors next
/// to the others rather than hiding them.
pub fn read_all_pinned() -> Result<Vec<Result<SandboxStats, StatsError>>, pins::PinError> {
    Ok(pins::sandbox_cookies()?
        .into_iter()
        .map(|cookie| read_pinned(&pins::sandbox_dir(cookie)))
        .collect())
}
