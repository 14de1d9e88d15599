//! Per-endpoint counters, read back from the pinned maps by any later process.

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use netshim_common::{
    from_fixed, map_names, Counters, Direction, Drops, EndpointRecord, GuardConfig, GuardDrops,
    PeerEntry, SandboxRecord, GUARD_REASONS, PEER_GUARD,
};

use crate::{datapath::TcBackend, guard::GuardMode, interfaces::Interface};

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

/// Packets of one direction that were not delivered, by reason (serialized as one object,
/// a reason that does not apply left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The eBPF datapath: larger than the target device's MTU (`drops` map).
    pub mtu: DropCount,
    /// The eBPF datapath, from_vm: refused by the source guard, by reason in
    /// [`GUARD_REASONS`] order (`guard_drops` map, enforce mode; not in `packets`).
    pub guard: [DropCount; GUARD_REASONS.len()],
    /// to_vm: the tap's `tx_dropped` (no VMM reading the tap, or its ring full).
    pub tap_tx_dropped: DropCount,
    /// from_vm: the pod device's `tx_dropped` (its xmit refused the frame: MTU, peer down).
    pub pod_tx_dropped: DropCount,
    /// mirred: the action's own drops (its target down or without carrier, i.e. no VMM on
    /// the tap; a full queue) and the errors its target's xmit returned. mirred's `packets`
    /// include them.
    pub mirred_action: DropCount,
    /// The device's drops are in `mirred_action` too: mirred's target is a veth without a
    /// qdisc, whose xmit returns its drop (and counts it in `tx_dropped`) to the action. Set
    /// for mirred's from_vm direction; there `delivered` subtracts `mirred_action` only.
    pub device_drops_in_action: bool,
}

impl serde::Serialize for Dropped {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let reasons = self.reasons();
        let applicable = reasons.iter().filter(|(_, c)| !c.is_not_applicable());
        let mut map = s.serialize_map(Some(applicable.clone().count()))?;
        for (reason, count) in applicable {
            map.serialize_entry(reason, count)?;
        }
        map.end()
    }
}

/// The source guard of one endpoint (from_vm), as the pinned maps hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct GuardStats {
    /// As the datapath runs it: also `off` while the tap's `peers` entry does not ask for the
    /// guard, whatever the `guard` map holds.
    pub mode: GuardMode,
    /// Log mode: refused by the guard and delivered anyway, by reason.
    #[serde(serialize_with = "serialize_by_guard_reason")]
    #[schemars(with = "std::collections::BTreeMap<String, u64>")]
    pub flagged: [u64; GUARD_REASONS.len()],
}

fn serialize_by_guard_reason<S: serde::Serializer>(
    counts: &[u64; GUARD_REASONS.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(GUARD_REASONS.iter().zip(counts.iter()))
}

impl Dropped {
    /// Every reason with its Prometheus/table name, in output order.
    pub fn reasons(&self) -> [(&'static str, DropCount); 4 + GUARD_REASONS.len()] {
        let g = |i: usize| (GUARD_REASONS[i], self.guard[i]);
        [
            ("mtu", self.mtu),
            g(0),
            g(1),
            g(2),
            g(3),
            g(4),
            g(5),
            g(6),
            ("tap_tx_dropped", self.tap_tx_dropped),
            ("pod_tx_dropped", self.pod_tx_dropped),
            ("mirred_action", self.mirred_action),
        ]
    }

    /// Whether `reason` is one of the source guard's.
    pub fn is_guard_reason(reason: &str) -> bool {
        GUARD_REASONS.contains(&reason)
    }

    /// What was dropped after it was counted in `packets`: by the devices, and by the mirred
    /// action (whose packet count includes its drops; the eBPF datapath's `mtu` and guard
    /// drops are not in its `packets`). `NotCounted` when one of them is unknown.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
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
    /// from_vm of the eBPF datapath: the source guard's mode and what it flagged (`None`:
    /// the sandbox's datapath version has no guard maps, or the direction has no guard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardStats>,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct EndpointStats {
    pub index: u32,
    /// The pod-side device (the CNI's veth).
    pub pod: String,
    pub tap: String,
    /// pod ingress → tap (towards the VM).
    pub to_vm: DirectionStats,
    /// tap ingress → pod device (from the VM).
    pub from_vm: DirectionStats,
    /// The rate limit towards the VM (kata's rx) and its shaper's counters; absent:
    /// unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_limit: Option<crate::limit::apply::LiveShaper>,
    /// The rate limit from the VM (kata's tx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_limit: Option<crate::limit::apply::LiveShaper>,
}

/// Counters of one sandbox netns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct SandboxStats {
    pub netns: String,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    pub backend: crate::datapath::TcBackend,
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
    pub health: crate::state::Health,
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
            health: crate::state::Health::of(&problems),
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

/// A drop counter of a sandbox: the per-CPU map of the datapaths before issue 13 (by
/// counter slot), the shared `_v2` map since (by `v2_index`), or both after an upgrade (the
/// old one keeps what the old program counted): their sum, `None` when neither is pinned.
struct DropMaps<T: aya::Pod> {
    per_cpu: Option<PerCpuArray<MapData, T>>,
    shared: Option<Array<MapData, T>>,
    names: (&'static str, &'static str),
}

impl<T: aya::Pod + Default> DropMaps<T> {
    fn open(dir: &Path, per_cpu: &'static str, shared: &'static str) -> Result<Self, StatsError> {
        Ok(Self {
            per_cpu: open_optional(dir, per_cpu)?,
            shared: open_optional(dir, shared)?,
            names: (per_cpu, shared),
        })
    }

    fn is_pinned(&self) -> bool {
        self.per_cpu.is_some() || self.shared.is_some()
    }

    /// The sum at `slot` of the per-CPU map and `v2_index` of the shared one.
    fn read(
        &self,
        dir: &Path,
        slot: u32,
        v2_index: u32,
        add: impl Fn(&mut T, &T),
    ) -> Result<T, StatsError> {
        let mut total = T::default();
        if let Some(map) = &self.per_cpu {
            let values = map.get(&slot, 0).map_err(lookup_err(dir, self.names.0))?;
            for v in values.iter() {
                add(&mut total, v);
            }
        }
        if let Some(map) = &self.shared {
            let v = map
                .get(&v2_index, 0)
                .map_err(lookup_err(dir, self.names.1))?;
            add(&mut total, &v);
        }
        Ok(total)
    }
}

/// The note for a sandbox whose datapath predates the `drops` map.
pub const NO_DROPS_MAP_NOTE: &str = "mtu drops are not counted by this sandbox's datapath \
     version (no `drops`/`drops_v2` map: attached by an older netshim; `netshim upgrade` \
     adds it)";

/// The note for a sandbox whose datapath predates the source guard's maps.
pub const NO_GUARD_MAPS_NOTE: &str = "source guard drops (source_mac, source_ip, arp, nd, ra, \
     dhcp_server, ethertype) are not counted by this sandbox's datapath version (no \
     `guard_drops`/`guard` maps: attached by an older netshim; `netshim upgrade` adds them)";

/// The pinned map `name` of `dir` as `M`, `None` when the sandbox's datapath version has
/// no such map.
fn open_optional<M>(dir: &Path, name: &'static str) -> Result<Option<M>, StatsError>
where
    M: TryFrom<Map, Error = aya::maps::MapError>,
{
    if !dir.join(name).exists() {
        return Ok(None);
    }
    let map = open_pinned(dir, name)?;
    M::try_from(map).map(Some).map_err(lookup_err(dir, name))
}

/// The source guard's maps of a sandbox (those a datapath version with the guard pins).
struct GuardMaps {
    config: Array<MapData, GuardConfig>,
    drops: DropMaps<GuardDrops>,
    /// `Err` (why) when the `peers` pin cannot be read (a sandbox being taken down, whose
    /// pins go one by one, or a damaged one): the mode is then the `guard` map's, and the
    /// notes say so.
    peers: Result<HashMap<MapData, u32, PeerEntry>, String>,
}

impl GuardMaps {
    fn open(dir: &Path) -> Result<Option<Self>, StatsError> {
        let config = open_optional(dir, map_names::GUARD)?;
        let drops = DropMaps::open(dir, map_names::GUARD_DROPS, map_names::GUARD_DROPS_V2)?;
        let Some(config) = config.filter(|_| drops.is_pinned()) else {
            return Ok(None);
        };
        let peers = match open_optional(dir, map_names::PEERS) {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(format!(
                "{} is not pinned",
                dir.join(map_names::PEERS).display()
            )),
            Err(e) => Err(e.to_string()),
        };
        Ok(Some(Self {
            config,
            drops,
            peers,
        }))
    }

    /// What the guard of endpoint `index` refused (summed over the CPUs), and its mode as the
    /// datapath runs it: `off` unless the tap's `peers` entry has `PEER_GUARD`.
    fn read(
        &self,
        dir: &Path,
        index: u32,
        ep: &EndpointRecord,
    ) -> Result<(GuardDrops, GuardMode), StatsError> {
        let slot = Direction::FromVm.slot(index);
        let total = self.drops.read(dir, slot, index, GuardDrops::add)?;
        let config = self
            .config
            .get(&index, 0)
            .map_err(lookup_err(dir, map_names::GUARD))?;
        let guarded = match self.peers.as_ref().map(|p| p.get(&ep.tap_ifindex, 0)) {
            Err(_) => true,
            Ok(Ok(p)) => p.flags & PEER_GUARD != 0,
            Ok(Err(aya::maps::MapError::KeyNotFound)) => false,
            Ok(Err(e)) => return Err(lookup_err(dir, map_names::PEERS)(e)),
        };
        let mode = match guarded {
            true => GuardMode::from_map(config.mode),
            false => GuardMode::Off,
        };
        Ok((total, mode))
    }
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

    // Added after the first release: an older datapath has none (not counted, not zero).
    let drops = DropMaps::<Drops>::open(dir, map_names::DROPS, map_names::DROPS_V2)?;
    let guard = GuardMaps::open(dir)?;

    let record = sandbox
        .get(&0, 0)
        .map_err(lookup_err(dir, map_names::SANDBOX))?;
    let mut out = SandboxStats {
        netns: String::from_utf8_lossy(from_fixed(&record.netns_path)).into_owned(),
        netns_inode: record.netns_inode,
        netns_cookie: record.netns_cookie,
        backend: crate::datapath::TcBackend::Ebpf,
        endpoints: Vec::new(),
        unmatched: sum_slot(&unmatched, 0)
            .map_err(lookup_err(dir, map_names::UNMATCHED))?
            .into(),
        notes: Vec::new(),
        health: crate::state::Health::Ok,
        problems: Vec::new(),
    };
    if !drops.is_pinned() {
        out.notes.push(NO_DROPS_MAP_NOTE.into());
    }
    match &guard {
        None => out.notes.push(NO_GUARD_MAPS_NOTE.into()),
        Some(GuardMaps {
            peers: Err(why), ..
        }) => out.notes.push(format!(
            "the guard's mode is the guard map's, not checked against the taps' peers \
             entries: {why}"
        )),
        Some(_) => {}
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
            let slot = d.slot(index);
            stats.dropped.mtu = match drops.is_pinned() {
                true => DropCount::Counted(drops.read(dir, slot, slot, Drops::add)?.mtu),
                false => DropCount::NotCounted,
            };
            Ok(stats)
        };
        let mut from_vm = direction(Direction::FromVm)?;
        match &guard {
            Some(maps) => {
                let (refused, mode) = maps.read(dir, index, &ep)?;
                from_vm.dropped.guard = refused.dropped.map(DropCount::Counted);
                from_vm.guard = Some(GuardStats {
                    mode,
                    flagged: refused.flagged,
                });
            }
            None => from_vm.dropped.guard = [DropCount::NotCounted; GUARD_REASONS.len()],
        }
        out.endpoints.push(EndpointStats {
            index,
            pod: String::from_utf8_lossy(from_fixed(&ep.pod_name)).into_owned(),
            tap: String::from_utf8_lossy(from_fixed(&ep.tap_name)).into_owned(),
            to_vm: direction(Direction::ToVm)?,
            from_vm,
            rx_limit: None,
            tx_limit: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_vm_with_guard() -> DirectionStats {
        let mut d = DirectionStats {
            packets: 10,
            dropped: Dropped {
                mtu: DropCount::Counted(0),
                guard: [2, 1000, 0, 0, 0, 0, 5].map(DropCount::Counted),
                pod_tx_dropped: DropCount::Counted(1),
                ..Dropped::default()
            },
            guard: Some(GuardStats {
                mode: GuardMode::Log,
                flagged: [0, 3, 0, 0, 0, 0, 0],
            }),
            ..DirectionStats::default()
        };
        d.settle();
        d
    }

    #[test]
    fn from_vm_json_has_the_guard_reasons_and_the_guard() {
        let v = serde_json::to_value(from_vm_with_guard()).unwrap();
        assert_eq!(
            v["dropped"],
            serde_json::json!({
                "mtu": 0, "source_mac": 2, "source_ip": 1000, "arp": 0, "nd": 0, "ra": 0,
                "dhcp_server": 0, "ethertype": 5, "pod_tx_dropped": 1
            })
        );
        assert_eq!(
            v["guard"],
            serde_json::json!({
                "mode": "log",
                "flagged": {"source_mac": 0, "source_ip": 3, "arp": 0, "nd": 0, "ra": 0,
                    "dhcp_server": 0, "ethertype": 0}
            })
        );
        // Guard drops never reached `packets`: only the device's drop is subtracted.
        assert_eq!(v["delivered"], 9);
    }

    #[test]
    fn guard_reasons_not_counted_are_null_and_not_applicable_ones_absent() {
        let mut d = from_vm_with_guard();
        d.dropped.guard = [DropCount::NotCounted; GUARD_REASONS.len()];
        d.guard = None;
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(v["dropped"]["source_ip"], serde_json::Value::Null);
        assert!(v["dropped"].as_object().unwrap().contains_key("ra"));
        assert!(v.get("guard").is_none(), "{v}");
        // to_vm: the guard does not apply.
        let to_vm = DirectionStats {
            dropped: Dropped {
                mtu: DropCount::Counted(0),
                ..Dropped::default()
            },
            ..DirectionStats::default()
        };
        let v = serde_json::to_value(to_vm).unwrap();
        assert_eq!(v["dropped"], serde_json::json!({"mtu": 0}));
    }
}
