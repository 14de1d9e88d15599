//! Per-endpoint counters, read back from the pinned maps by any later process.

use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use netshim_common::{
    from_fixed, map_names, Counters, Direction, Drops, EndpointRecord, SandboxRecord,
};

use crate::{backend::TcBackend, interfaces::Interface};

/// One drop reason's count in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DropCount {
    /// The reason does not apply to this direction or datapath (not in the output).
    #[default]
    NotApplicable,
    /// It applies, but nothing counted it: a datapath version without the counter, or a
    /// device whose statistics could not be read (JSON `null`; the sandbox's `notes` say
    /// why).
    NotCounted,
    Counted(u64),
}

impl DropCount {
    pub fn is_not_applicable(&self) -> bool {
        *self == Self::NotApplicable
    }

    /// The count, if there is one.
    pub fn value(self) -> Option<u64> {
        match self {
            Self::Counted(n) => Some(n),
            _ => None,
        }
    }
}

impl serde::Serialize for DropCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Counted(n) => s.serialize_u64(*n),
            _ => s.serialize_none(),
        }
    }
}

/// Packets of one direction that were not delivered, by reason. New reasons (issue 11's
/// source `guard`) are new fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Dropped {
    /// The eBPF datapath: larger than the target device's MTU (`drops` map).
    #[serde(skip_serializing_if = "DropCount::is_not_applicable")]
    pub mtu: DropCount,
    /// to_vm: the tap's `tx_dropped` (no VMM reading the tap, or its ring full).
    #[serde(skip_serializing_if = "DropCount::is_not_applicable")]
    pub tap_tx_dropped: DropCount,
    /// from_vm: the pod device's `tx_dropped` (its xmit refused the frame: MTU, peer down).
    #[serde(skip_serializing_if = "DropCount::is_not_applicable")]
    pub pod_tx_dropped: DropCount,
    /// mirred: the action's own drops (its target down or without carrier, i.e. no VMM on
    /// the tap; a full queue) and the errors its target's xmit returned. mirred's `packets`
    /// include them.
    #[serde(skip_serializing_if = "DropCount::is_not_applicable")]
    pub mirred_action: DropCount,
    /// The device's drops are in `mirred_action` too: mirred's target is a veth without a
    /// qdisc, whose xmit returns its drop (and counts it in `tx_dropped`) to the action. Set
    /// for mirred's from_vm direction; there `delivered` subtracts `mirred_action` only.
    #[serde(skip)]
    pub device_drops_in_action: bool,
}

impl Dropped {
    /// Every reason with its Prometheus/table name, in output order.
    pub fn reasons(&self) -> [(&'static str, DropCount); 4] {
        [
            ("mtu", self.mtu),
            ("tap_tx_dropped", self.tap_tx_dropped),
            ("pod_tx_dropped", self.pod_tx_dropped),
            ("mirred_action", self.mirred_action),
        ]
    }

    /// What was dropped after it was counted in `packets`: by the devices, and by the mirred
    /// action (whose packet count includes its drops; the eBPF datapath's `mtu` drops are not
    /// in its `packets`). `NotCounted` when one of them is unknown.
    fn after_forwarding(&self) -> DropCount {
        let mut total = 0u64;
        let device = if self.device_drops_in_action {
            DropCount::NotApplicable
        } else {
            self.pod_tx_dropped
        };
        for c in [self.tap_tx_dropped, device, self.mirred_action] {
            match c {
                DropCount::Counted(n) => total = total.saturating_add(n),
                DropCount::NotCounted => return DropCount::NotCounted,
                DropCount::NotApplicable => {}
            }
        }
        DropCount::Counted(total)
    }

    fn is_empty(&self) -> bool {
        self.reasons().iter().all(|(_, c)| c.is_not_applicable())
    }
}

/// Counters of one direction of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectionStats {
    /// Forwarded: packets the datapath handed to the kernel (eBPF: redirected; mirred: the
    /// action's packets).
    pub packets: u64,
    pub bytes: u64,
    /// eBPF: packets not redirected (a `peers` entry with unknown flags, or a helper refusal;
    /// see `Counters::redirect_errors`); mirred: drops reported by the action.
    pub errors: u64,
    /// Not delivered, by reason (see [`Dropped`]).
    #[serde(skip_serializing_if = "Dropped::is_empty")]
    pub dropped: Dropped,
    /// Forwarded minus what the kernel dropped afterwards (saturating; frames still queued
    /// count as delivered). `None` when the kernel's drops could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
}

impl From<Counters> for DirectionStats {
    fn from(c: Counters) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
            errors: c.redirect_errors,
            ..Self::default()
        }
    }
}

impl DirectionStats {
    /// Recomputes `delivered` from `packets` and the kernel's drops.
    fn settle(&mut self) {
        self.delivered = match self.dropped.after_forwarding() {
            DropCount::Counted(n) => Some(self.packets.saturating_sub(n)),
            _ => None,
        };
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
    /// What the counters cannot say (a drop reason this datapath version does not count,
    /// device statistics that could not be read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `ok`, or `broken` when what the sandbox's commit file records is not there any
    /// more (see `problems`).
    pub health: crate::sandbox::Health,
    /// What is broken (empty when healthy); `netshim detach` repairs it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl SandboxStats {
    /// Fills the kernel's drops in from the devices' own statistics (`interfaces` of the
    /// sandbox netns): to_vm the tap's `tx_dropped`, from_vm the pod device's.
    pub fn add_device_drops(&mut self, interfaces: &[Interface]) {
        let tx_dropped = |name: &str| {
            interfaces
                .iter()
                .find(|i| i.name == name)
                .and_then(|i| i.tx_dropped)
                .map_or(DropCount::NotCounted, DropCount::Counted)
        };
        for e in &mut self.endpoints {
            e.to_vm.dropped.tap_tx_dropped = tx_dropped(&e.tap);
            e.from_vm.dropped.pod_tx_dropped = tx_dropped(&e.pod);
            e.to_vm.settle();
            e.from_vm.settle();
        }
    }

    /// The devices' statistics could not be read: the kernel's drops are not counted.
    pub fn device_drops_unknown(&mut self, why: String) {
        for e in &mut self.endpoints {
            e.to_vm.dropped.tap_tx_dropped = DropCount::NotCounted;
            e.from_vm.dropped.pod_tx_dropped = DropCount::NotCounted;
            e.to_vm.settle();
            e.from_vm.settle();
        }
        if !self.endpoints.is_empty() {
            self.notes.push(format!(
                "tap_tx_dropped and pod_tx_dropped are not counted: {why}"
            ));
        }
    }

    /// A sandbox without endpoints yet, with `problems` (a broken sandbox with nothing to
    /// count, or one whose counters are added next).
    pub fn new(netns: &crate::netns::Netns, backend: TcBackend, problems: Vec<String>) -> Self {
        Self {
            netns: netns.arg.clone(),
            netns_inode: netns.inode,
            netns_cookie: netns.cookie,
            backend,
            endpoints: Vec::new(),
            unmatched: DirectionStats::default(),
            notes: Vec::new(),
            health: crate::sandbox::Health::of(&problems),
            problems,
        }
    }
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

fn sum_drops(map: &PerCpuArray<MapData, Drops>, slot: u32) -> Result<Drops, aya::maps::MapError> {
    let mut total = Drops::default();
    for d in map.get(&slot, 0)?.iter() {
        total.add(d);
    }
    Ok(total)
}

/// The note for a sandbox whose datapath predates the `drops` map.
pub const NO_DROPS_MAP_NOTE: &str = "mtu drops are not counted by this sandbox's datapath \
     version (no `drops` map: attached by an older netshim; `netshim upgrade` adds it)";

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

    // Added after the first release: an older datapath has none (not counted, not zero).
    let drops: Option<PerCpuArray<MapData, Drops>> = if dir.join(map_names::DROPS).exists() {
        Some(
            PerCpuArray::try_from(open_pinned(dir, map_names::DROPS)?)
                .map_err(lookup_err(dir, map_names::DROPS))?,
        )
    } else {
        None
    };

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
        notes: Vec::new(),
        health: crate::sandbox::Health::Ok,
        problems: Vec::new(),
    };
    if drops.is_none() {
        out.notes.push(NO_DROPS_MAP_NOTE.into());
    }
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
        let direction = |d: Direction| -> Result<DirectionStats, StatsError> {
            let mut stats: DirectionStats = slot(d)?.into();
            stats.dropped.mtu = match &drops {
                Some(map) => DropCount::Counted(
                    sum_drops(map, d.slot(index))
                        .map_err(lookup_err(dir, map_names::DROPS))?
                        .mtu,
                ),
                None => DropCount::NotCounted,
            };
            Ok(stats)
        };
        out.endpoints.push(EndpointStats {
            index,
            pod: String::from_utf8_lossy(from_fixed(&ep.pod_name)).into_owned(),
            tap: String::from_utf8_lossy(from_fixed(&ep.tap_name)).into_owned(),
            to_vm: direction(Direction::ToVm)?,
            from_vm: direction(Direction::FromVm)?,
        });
    }
    Ok(out)
}
