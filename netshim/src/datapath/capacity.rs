//! How many endpoints one sandbox's maps have room for.
//!
//! The eBPF object declares its per-endpoint maps for [`MAX_ENDPOINTS`] (32) endpoints, and
//! the kernel charges an array for every entry whether it is used or not. A sandbox has one
//! or two endpoints almost always, so a new sandbox's maps are created for
//! [`DEFAULT_CAPACITY`] endpoints (or for as many as its first attach connects, if more),
//! which about halves the kernel memory a sandbox costs. The program bounds every index by
//! the map it looks it up in, so it runs the same with any size; userspace reads a
//! sandbox's capacity back from its pinned `endpoints` map. Sandboxes attached before this
//! (32 entries) keep their maps as they are.

use std::path::Path;

use aya::maps::MapData;
use netshim_common::{map_names, GUARD_REASONS, MAX_ENDPOINTS};

/// Endpoints a new sandbox has room for unless its first attach connects more. An endpoint
/// hot-plugged beyond a sandbox's capacity is refused (an error naming the capacity).
pub const DEFAULT_CAPACITY: u32 = 8;

/// The capacity of a new sandbox whose first connect uses endpoint indices up to `highest`.
pub fn for_new_sandbox(highest: Option<u32>) -> u32 {
    highest
        .map_or(0, |i| i.saturating_add(1))
        .clamp(DEFAULT_CAPACITY, MAX_ENDPOINTS)
}

/// Each map whose size follows the capacity, with its `max_entries` for `capacity`
/// endpoints (the object's declaration is this for [`MAX_ENDPOINTS`]).
pub fn sized_maps(capacity: u32) -> [(&'static str, u32); 9] {
    let slots = capacity * 2;
    [
        (map_names::GUARD_LAST, capacity * GUARD_REASONS.len() as u32),
        (map_names::ENDPOINTS, capacity),
        (map_names::GUARD, capacity),
        (map_names::GUARD_DROPS_V2, capacity),
        (map_names::GUARD_LOG, capacity * GUARD_REASONS.len() as u32),
        (map_names::COUNTERS, slots),
        (map_names::DROPS_V2, slots),
        (map_names::ERRORS, slots),
        (map_names::PEERS, slots * 2),
    ]
}

/// Whether `name`'s size follows the capacity (an upgrade then does not compare it).
pub fn is_sized(name: &str) -> bool {
    sized_maps(1).iter().any(|(n, _)| *n == name)
}

/// Makes `loader` create the sized maps for `capacity` endpoints (maps it finds pinned
/// keep their size).
pub fn apply(loader: &mut aya::EbpfLoader<'_>, capacity: u32) {
    for (name, entries) in sized_maps(capacity) {
        loader.map_max_entries(name, entries);
    }
}

/// The capacity of the sandbox pinned in `dir`: its `endpoints` map's size.
pub fn of_dir(dir: &Path) -> Result<u32, aya::maps::MapError> {
    let data = MapData::from_pin(dir.join(map_names::ENDPOINTS))?;
    Ok(data.info()?.max_entries())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_sandbox_has_room_for_its_first_endpoints_and_at_least_the_default() {
        assert_eq!(for_new_sandbox(None), DEFAULT_CAPACITY);
        assert_eq!(for_new_sandbox(Some(0)), DEFAULT_CAPACITY);
        assert_eq!(for_new_sandbox(Some(8)), 9);
        assert_eq!(for_new_sandbox(Some(31)), MAX_ENDPOINTS);
        assert_eq!(for_new_sandbox(Some(u32::MAX)), MAX_ENDPOINTS);
    }

    /// At the full capacity the sizes are the object's own declarations, so the object and
    /// this module agree on which maps grow with the endpoints.
    #[test]
    fn the_full_capacity_is_what_the_object_declares() {
        let obj = aya_obj::Object::parse(crate::EBPF_OBJECT).expect("the embedded object");
        for (name, entries) in sized_maps(MAX_ENDPOINTS) {
            let declared = obj
                .maps
                .get(name)
                .unwrap_or_else(|| panic!("the object declares {name}"))
                .max_entries();
            assert_eq!(entries, declared, "{name}");
        }
    }
}
