//! One endpoint's guard in a sandbox's pinned maps: written, removed, read back.
//!
//! A change is made so that no packet the old or the new guard allows is refused on the
//! way: new trie entries first, then the `guard` value (which turns the trie lookups on),
//! then the stale trie entries go.

use std::path::{Path, PathBuf};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, MapError,
};
use netshim_common::{map_names, GuardConfig, GuardV4Key, GuardV6Key, PeerEntry, PEER_GUARD};

use super::{
    config_map::{V4Entry, V6Entry},
    GuardEntry,
};

#[derive(Debug, thiserror::Error)]
#[error("{op} on map {map} (pinned in {}): {source}", dir.display())]
pub struct GuardMapError {
    pub op: &'static str,
    pub map: &'static str,
    pub dir: PathBuf,
    #[source]
    pub source: Box<MapError>,
}

fn err(op: &'static str, map: &'static str, dir: &Path) -> impl FnOnce(MapError) -> GuardMapError {
    let dir = dir.to_owned();
    move |source| GuardMapError {
        op,
        map,
        dir,
        source: Box::new(source),
    }
}

fn pinned(dir: &Path, name: &'static str) -> Result<Map, GuardMapError> {
    let data = MapData::from_pin(dir.join(name)).map_err(err("BPF_OBJ_GET", name, dir))?;
    Map::from_map_data(data).map_err(err("open", name, dir))
}

/// Whether the sandbox directory has every map of the guard pinned (a sandbox attached
/// before the guard existed has none until `netshim upgrade`).
pub fn has_guard_maps(dir: &Path) -> bool {
    netshim_common::has_guard_maps(|m| dir.join(m).exists())
}

type V4Trie = LpmTrie<MapData, GuardV4Key, u8>;
type V6Trie = LpmTrie<MapData, GuardV6Key, u8>;

fn tries(dir: &Path) -> Result<(V4Trie, V6Trie), GuardMapError> {
    let v4 = LpmTrie::try_from(pinned(dir, map_names::GUARD_V4)?).map_err(err(
        "open",
        map_names::GUARD_V4,
        dir,
    ))?;
    let v6 = LpmTrie::try_from(pinned(dir, map_names::GUARD_V6)?).map_err(err(
        "open",
        map_names::GUARD_V6,
        dir,
    ))?;
    Ok((v4, v6))
}

fn config_array(dir: &Path) -> Result<Array<MapData, GuardConfig>, GuardMapError> {
    Array::try_from(pinned(dir, map_names::GUARD)?).map_err(err("open", map_names::GUARD, dir))
}

/// The trie entries of endpoint `index` (prefix_len, address, value).
fn entries_of<K: aya::Pod, const N: usize>(
    trie: &LpmTrie<MapData, K, u8>,
    index: u32,
    addr: impl Fn(&K) -> ([u8; 4], [u8; N]),
    map: &'static str,
    dir: &Path,
) -> Result<Vec<(u32, [u8; N], u8)>, GuardMapError> {
    let mut out = Vec::new();
    for item in trie.iter() {
        let (key, value) = item.map_err(err("BPF_MAP_GET_NEXT_KEY", map, dir))?;
        let (i, a) = addr(&key.data());
        if u32::from_be_bytes(i) == index {
            out.push((key.prefix_len(), a, value));
        }
    }
    Ok(out)
}

fn v4_key(index: u32, prefix: u32, addr: [u8; 4]) -> Key<GuardV4Key> {
    Key::new(
        prefix,
        GuardV4Key {
            index: index.to_be_bytes(),
            addr,
        },
    )
}

fn v6_key(index: u32, prefix: u32, addr: [u8; 16]) -> Key<GuardV6Key> {
    Key::new(
        prefix,
        GuardV6Key {
            index: index.to_be_bytes(),
            addr,
        },
    )
}

/// Writes the guard of endpoint `index` (see the module docs for the order).
pub fn write(dir: &Path, index: u32, entry: &GuardEntry) -> Result<(), GuardMapError> {
    let (mut v4, mut v6) = tries(dir)?;
    let old = read_entries(dir, index, &v4, &v6)?;
    for &(prefix, addr, value) in &entry.v4 {
        v4.insert(&v4_key(index, prefix, addr), value, 0)
            .map_err(err("BPF_MAP_UPDATE_ELEM", map_names::GUARD_V4, dir))?;
    }
    for &(prefix, addr, value) in &entry.v6 {
        v6.insert(&v6_key(index, prefix, addr), value, 0)
            .map_err(err("BPF_MAP_UPDATE_ELEM", map_names::GUARD_V6, dir))?;
    }
    config_array(dir)?.set(index, entry.config, 0).map_err(err(
        "BPF_MAP_UPDATE_ELEM",
        map_names::GUARD,
        dir,
    ))?;
    prune(dir, index, (&mut v4, &mut v6), old, (&entry.v4, &entry.v6))
}

/// Removes endpoint `index`'s trie entries of `old` that are not in `keep`.
fn prune(
    dir: &Path,
    index: u32,
    (v4, v6): (&mut V4Trie, &mut V6Trie),
    (old_v4, old_v6): Entries,
    (keep_v4, keep_v6): (&[V4Entry], &[V6Entry]),
) -> Result<(), GuardMapError> {
    for (prefix, addr, _) in old_v4 {
        if !keep_v4.iter().any(|(p, a, _)| *p == prefix && *a == addr) {
            remove_key(v4, &v4_key(index, prefix, addr), map_names::GUARD_V4, dir)?;
        }
    }
    for (prefix, addr, _) in old_v6 {
        if !keep_v6.iter().any(|(p, a, _)| *p == prefix && *a == addr) {
            remove_key(v6, &v6_key(index, prefix, addr), map_names::GUARD_V6, dir)?;
        }
    }
    Ok(())
}

fn remove_key<K: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, u8>,
    key: &Key<K>,
    map: &'static str,
    dir: &Path,
) -> Result<(), GuardMapError> {
    match trie.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(err("BPF_MAP_DELETE_ELEM", map, dir)(e)),
    }
}

type Entries = (Vec<V4Entry>, Vec<V6Entry>);

fn read_entries(
    dir: &Path,
    index: u32,
    v4: &V4Trie,
    v6: &V6Trie,
) -> Result<Entries, GuardMapError> {
    Ok((
        entries_of(v4, index, |k| (k.index, k.addr), map_names::GUARD_V4, dir)?,
        entries_of(v6, index, |k| (k.index, k.addr), map_names::GUARD_V6, dir)?,
    ))
}

/// Takes the guard of endpoint `index` away: mode off, no trie entries. Without guard
/// maps there is nothing to remove.
pub fn remove(dir: &Path, index: u32) -> Result<(), GuardMapError> {
    if !has_guard_maps(dir) {
        return Ok(());
    }
    config_array(dir)?
        .set(index, GuardConfig::default(), 0)
        .map_err(err("BPF_MAP_UPDATE_ELEM", map_names::GUARD, dir))?;
    let (mut v4, mut v6) = tries(dir)?;
    let old = read_entries(dir, index, &v4, &v6)?;
    prune(dir, index, (&mut v4, &mut v6), old, (&[], &[]))
}

/// The guard of endpoint `index` as the maps hold it; `None` without guard maps.
pub fn read(dir: &Path, index: u32) -> Result<Option<GuardEntry>, GuardMapError> {
    if !has_guard_maps(dir) {
        return Ok(None);
    }
    let config = config_array(dir)?.get(&index, 0).map_err(err(
        "BPF_MAP_LOOKUP_ELEM",
        map_names::GUARD,
        dir,
    ))?;
    let (v4t, v6t) = tries(dir)?;
    let (v4, v6) = read_entries(dir, index, &v4t, &v6t)?;
    Ok(Some(GuardEntry { config, v4, v6 }))
}

/// Sets or clears `PEER_GUARD` on the `peers` entry of `tap_ifindex` (the VM → pod
/// direction). Returns whether the entry was there.
pub fn set_peer_guard(dir: &Path, tap_ifindex: u32, on: bool) -> Result<bool, GuardMapError> {
    let mut peers: HashMap<MapData, u32, PeerEntry> = HashMap::try_from(pinned(
        dir,
        map_names::PEERS,
    )?)
    .map_err(err("open", map_names::PEERS, dir))?;
    let mut entry = match peers.get(&tap_ifindex, 0) {
        Ok(e) => e,
        Err(MapError::KeyNotFound) => return Ok(false),
        Err(e) => return Err(err("BPF_MAP_LOOKUP_ELEM", map_names::PEERS, dir)(e)),
    };
    let flags = match on {
        true => entry.flags | PEER_GUARD,
        false => entry.flags & !PEER_GUARD,
    };
    if flags != entry.flags {
        entry.flags = flags;
        peers.insert(tap_ifindex, entry, 0).map_err(err(
            "BPF_MAP_UPDATE_ELEM",
            map_names::PEERS,
            dir,
        ))?;
    }
    Ok(true)
}

/// Whether the `peers` entry of `tap_ifindex` has `PEER_GUARD` (`None`: no entry).
pub fn peer_guard(dir: &Path, tap_ifindex: u32) -> Result<Option<bool>, GuardMapError> {
    let peers: HashMap<MapData, u32, PeerEntry> = HashMap::try_from(pinned(dir, map_names::PEERS)?)
        .map_err(err("open", map_names::PEERS, dir))?;
    match peers.get(&tap_ifindex, 0) {
        Ok(e) => Ok(Some(e.flags & PEER_GUARD != 0)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(err("BPF_MAP_LOOKUP_ELEM", map_names::PEERS, dir)(e)),
    }
}
