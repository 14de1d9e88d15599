//! The datapath's error records (the pinned `errors` array of a sandbox), polled and turned
//! into the same `tracing` warnings aya-log records gave before issue 13.
//!
//! The program overwrites a slot's [`DatapathEvent`] for each packet it counts in
//! `redirect_errors`; a follower reads the whole array every [`super::RESCAN`] and emits one
//! WARN event (target [`super::TARGET`]) for each record written since it last looked and
//! since the follower started (records older than that were someone else's to report).

use std::{collections::BTreeMap, path::Path};

use aya::maps::{Array, Map, MapData};
use netshim_common::{
    map_names, DatapathEvent, COUNTER_SLOTS, DATAPATH_EVENT_REDIRECT, DATAPATH_EVENT_SKEW,
};

use super::TARGET;

/// The warning a record stands for (the text aya-log printed for the same path).
pub fn message(ev: &DatapathEvent) -> Option<String> {
    match ev.kind {
        DATAPATH_EVENT_SKEW => Some(format!(
            "netshim: peers entry of ifindex {} has flags 0x{:x} unknown to this datapath \
             (known 0x{:x}; written by another netshim version?): packet passed to the stack, \
             not redirected",
            ev.ifindex, ev.detail, ev.known_flags
        )),
        DATAPATH_EVENT_REDIRECT => Some(format!(
            "netshim: bpf_redirect to ifindex {} returned {}",
            ev.peer_ifindex, ev.detail as i32
        )),
        _ => None,
    }
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The pinned `errors` map of the sandbox in `dir` (`None`: a datapath from before issue
/// 13, which logs with aya-log instead).
pub fn pinned(dir: &Path) -> std::io::Result<Option<Array<MapData, DatapathEvent>>> {
    let path = dir.join(map_names::ERRORS);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(std::io::Error::other)?;
    let array = Array::try_from(Map::Array(data)).map_err(std::io::Error::other)?;
    Ok(Some(array))
}

/// One sandbox's `errors` array and the time of the newest record reported per slot.
pub struct Errors {
    array: Array<MapData, DatapathEvent>,
    seen: BTreeMap<u32, u64>,
    since: u64,
}

impl Errors {
    /// Follows `array`, reporting records written after `since` (monotonic ns).
    pub fn new(array: Array<MapData, DatapathEvent>, since: u64) -> Self {
        Self {
            array,
            seen: BTreeMap::new(),
            since,
        }
    }

    /// The records written since the last call (and since `since`), by slot.
    pub fn poll(&mut self) -> Result<Vec<(u32, DatapathEvent)>, aya::maps::MapError> {
        let mut out = Vec::new();
        for slot in 0..COUNTER_SLOTS.min(self.array.len()) {
            let ev = self.array.get(&slot, 0)?;
            let last = self.seen.get(&slot).copied().unwrap_or(self.since);
            if ev.time_ns > last {
                self.seen.insert(slot, ev.time_ns);
                out.push((slot, ev));
            }
        }
        Ok(out)
    }

    /// [`Self::poll`], each new record emitted as a WARN event of `netns`.
    pub fn report(&mut self, netns: &str) -> Result<usize, aya::maps::MapError> {
        let new = self.poll()?;
        for (slot, ev) in &new {
            if let Some(message) = message(ev) {
                tracing::warn!(target: TARGET, netns, slot, "{message}");
            }
        }
        Ok(new.len())
    }
}
