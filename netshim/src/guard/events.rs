//! Forwarding the source guard's refusal records (the pinned `guard_last` array of a
//! sandbox, or the `guard_events` ring buffer of a datapath from before it) into `tracing`.
//!
//! `guard_last` holds the last refusal per endpoint and reason, and `guard_log` the time it
//! was written (at most once a second per slot): a follower polls both at each refresh and
//! reports each slot whose time changed, starting with what is there when it starts (as a
//! ring gave its unread records to its first reader). Every follower sees every record.
//!
//! The datapath writes one fixed-size [`GuardEvent`] per second at most per endpoint and
//! reason (it rate-limits; the counters in `guard_drops` count every packet). Each becomes a
//! WARN event with target [`TARGET`] naming the endpoint (from the sandbox's `endpoints`
//! map), the reason and the offending address, with those as fields too. The ring buffer
//! belongs to the sandbox (its maps outlive an `upgrade`), so it is found by its pin and
//! followed by the map's id. A ring buffer has one consumer position: two followers of one
//! sandbox (`watch` and `logs` at once) each see part of the records.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, RingBuf};
use netshim_common::{
    from_fixed, map_names, EndpointRecord, GuardEvent, GUARD_EVENT_ETHERTYPE, GUARD_EVENT_V4,
    GUARD_EVENT_V6, GUARD_MODE_LOG, GUARD_REASONS, GUARD_SOURCE_MAC,
};

/// The `tracing` target of the guard's records.
pub const TARGET: &str = "netshim::guard";

/// Decodes one ring buffer record (`None`: not a [`GuardEvent`], e.g. written by another
/// datapath version).
pub fn decode(bytes: &[u8]) -> Option<GuardEvent> {
    if bytes.len() != std::mem::size_of::<GuardEvent>() {
        return None;
    }
    // SAFETY: the length is checked; GuardEvent is repr(C) of integers and byte arrays, valid
    // for any bytes; read_unaligned does not need the ring buffer's alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<GuardEvent>()) })
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    crate::interfaces::Mac(*mac).to_string()
}

/// A refusal as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: u32,
    /// The pod device and the tap of the endpoint (`?` when the `endpoints` map no longer
    /// has it).
    pub endpoint: String,
    pub tap: String,
    pub reason: &'static str,
    /// Whether the packet was delivered anyway (log mode).
    pub delivered: bool,
    /// The offending address: the source IPv4/IPv6 address (ARP: the sender's), the
    /// ethertype (`0x8100`), the source MAC for `source_mac`, or `-` when the header was
    /// too short to name one.
    pub address: String,
    /// The frame's Ethernet source.
    pub mac: String,
}

impl Refusal {
    pub fn new(ev: &GuardEvent, endpoint: Option<&EndpointRecord>) -> Self {
        let name = |f: fn(&EndpointRecord) -> &[u8; 16]| {
            endpoint.map_or_else(
                || "?".to_owned(),
                |e| String::from_utf8_lossy(from_fixed(f(e))).into_owned(),
            )
        };
        let mac = mac_string(&ev.mac);
        let address = match ev.kind {
            GUARD_EVENT_V4 => {
                Ipv4Addr::from(<[u8; 4]>::try_from(&ev.addr[..4]).unwrap_or_default()).to_string()
            }
            GUARD_EVENT_V6 => Ipv6Addr::from(ev.addr).to_string(),
            GUARD_EVENT_ETHERTYPE => format!("0x{:04x}", u16::from_be(ev.ethertype)),
            _ if u32::from(ev.reason) == GUARD_SOURCE_MAC => mac.clone(),
            _ => "-".to_owned(),
        };
        Self {
            index: ev.index,
            endpoint: name(|e| &e.pod_name),
            tap: name(|e| &e.tap_name),
            reason: GUARD_REASONS
                .get(usize::from(ev.reason))
                .copied()
                .unwrap_or("unknown"),
            delivered: u32::from(ev.mode) == GUARD_MODE_LOG,
            address,
            mac,
        }
    }

    /// `guard: endpoint 0 (eth0 / tap0_kata) dropped a packet from the VM: source_ip
    /// 192.0.2.66, source MAC aa:bb:cc:dd:ee:ff`.
    pub fn message(&self) -> String {
        let what = if self.delivered {
            "flagged (log mode, delivered)"
        } else {
            "dropped"
        };
        let detail = if self.address == self.mac {
            format!("{} {}", self.reason, self.address)
        } else if self.address == "-" {
            format!(
                "{} (header too short to name an address), source MAC {}",
                self.reason, self.mac
            )
        } else {
            format!("{} {}, source MAC {}", self.reason, self.address, self.mac)
        };
        format!(
            "guard: endpoint {} ({} / {}) {what} a packet from the VM: {detail}",
            self.index, self.endpoint, self.tap
        )
    }

    /// Emits the WARN event.
    pub fn emit(&self, netns: &str) {
        tracing::warn!(
            target: TARGET,
            netns,
            endpoint = %self.endpoint,
            tap = %self.tap,
            index = self.index,
            reason = self.reason,
            address = %self.address,
            mac = %self.mac,
            delivered = self.delivered,
            "{}",
            self.message()
        );
    }
}

/// The pinned `guard_events` map of the sandbox pinned at `dir` and its map id; `None`
/// when its datapath version has none. (Only [`pump`] maps its pages.)
pub fn pinned(dir: &Path) -> Result<Option<(MapData, u32)>, aya::maps::MapError> {
    let path = dir.join(map_names::GUARD_EVENTS);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path)?;
    let id = data.info()?.id();
    Ok(Some((data, id)))
}

/// A sandbox's pinned `endpoints` array, to name the endpoint of a record (`None`: not
/// pinned or not readable, every endpoint is `?`).
pub struct Endpoints(Option<Array<MapData, EndpointRecord>>);

impl Endpoints {
    /// The `endpoints` array of the sandbox pinned at `dir`.
    pub fn pinned(dir: &Path) -> Self {
        let array = MapData::from_pin(dir.join(map_names::ENDPOINTS))
            .ok()
            .and_then(|data| Array::try_from(Map::Array(data)).ok());
        Self(array)
    }

    /// The endpoint in slot `index`, if one is there.
    pub fn get(&self, index: u32) -> Option<EndpointRecord> {
        let record = self.0.as_ref()?.get(&index, 0).ok()?;
        (record.in_use != 0).then_some(record)
    }

    /// `ev` with its endpoint's names.
    pub fn refusal(&self, ev: &GuardEvent) -> Refusal {
        Refusal::new(ev, self.get(ev.index).as_ref())
    }
}

/// A sandbox's `guard_last` records and their `guard_log` times, and the time of each
/// slot's record reported last.
pub struct LastRefusals {
    last: Array<MapData, GuardEvent>,
    times: Array<MapData, u64>,
    endpoints: Endpoints,
    seen: BTreeMap<u32, u64>,
}

impl LastRefusals {
    /// The pinned `guard_last` (with `guard_log`) of the sandbox pinned at `dir`; `None`
    /// when its datapath has none (it has the ring, if any).
    pub fn pinned(dir: &Path) -> Result<Option<Self>, aya::maps::MapError> {
        let path = dir.join(map_names::GUARD_LAST);
        if !path.exists() {
            return Ok(None);
        }
        let last = Array::try_from(Map::Array(MapData::from_pin(&path)?))?;
        let times = MapData::from_pin(dir.join(map_names::GUARD_LOG))?;
        let times = Array::try_from(Map::Array(times))?;
        Ok(Some(Self {
            last,
            times,
            endpoints: Endpoints::pinned(dir),
            seen: BTreeMap::new(),
        }))
    }

    /// The records written since the last call (all of them at the first), by slot.
    pub fn poll(&mut self) -> Result<Vec<(u32, GuardEvent)>, aya::maps::MapError> {
        let mut out = Vec::new();
        for slot in 0..self.last.len().min(self.times.len()) {
            let time = self.times.get(&slot, 0)?;
            if time == 0 || self.seen.get(&slot) == Some(&time) {
                continue;
            }
            self.seen.insert(slot, time);
            out.push((slot, self.last.get(&slot, 0)?));
        }
        Ok(out)
    }

    /// [`Self::poll`], each new record emitted as a WARN event of `netns`.
    pub fn report(&mut self, netns: &str) -> Result<usize, aya::maps::MapError> {
        let new = self.poll()?;
        for (_, ev) in &new {
            self.endpoints.refusal(ev).emit(netns);
        }
        Ok(new.len())
    }
}

fn forward_all(ring: &mut RingBuf<MapData>, endpoints: &Endpoints, netns: &str) {
    while let Some(item) = ring.next() {
        let Some(ev) = decode(&item) else {
            tracing::debug!(
                netns,
                len = item.len(),
                "guard_events record of an unknown size skipped"
            );
            continue;
        };
        endpoints.refusal(&ev).emit(netns);
    }
}

/// Forwards the records of the `guard_events` ring buffer `map` (of the sandbox pinned at
/// `dir`) whenever it is readable, until aborted; first those written before.
pub async fn pump(map: MapData, dir: PathBuf, netns: String) {
    let what = format!("the guard_events ring buffer of {netns}");
    let ring = match RingBuf::try_from(Map::RingBuf(map)) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot read {what}: {e}");
            return;
        }
    };
    let endpoints = Endpoints::pinned(&dir);
    // SAFETY: the fd is the ring buffer map's, owned by `ring` (its `MapData`).
    unsafe {
        crate::ring_drain::drain_when_readable(ring, &what, |r| forward_all(r, &endpoints, &netns))
    }
    .await;
}

#[cfg(test)]
mod tests {
    use netshim_common::{
        to_fixed, GUARD_ARP, GUARD_ETHERTYPE, GUARD_EVENT_NONE, GUARD_MODE_ENFORCE, GUARD_SOURCE_IP,
    };

    use super::*;

    fn endpoint() -> EndpointRecord {
        EndpointRecord {
            in_use: 1,
            pod_name: to_fixed(b"eth0"),
            tap_name: to_fixed(b"tap0_kata"),
            ..EndpointRecord::default()
        }
    }

    fn event(reason: u32, mode: u32, kind: u8) -> GuardEvent {
        GuardEvent {
            index: 0,
            reason: reason as u8,
            mode: mode as u8,
            kind,
            mac: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
            ..GuardEvent::default()
        }
    }

    fn bytes(ev: &GuardEvent) -> Vec<u8> {
        // SAFETY: a repr(C) value without padding, read as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const GuardEvent).cast::<u8>(),
                std::mem::size_of::<GuardEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn records_decode_from_their_bytes_and_nothing_else() {
        let mut ev = event(GUARD_SOURCE_IP, GUARD_MODE_ENFORCE, GUARD_EVENT_V4);
        ev.index = 3;
        ev.addr[..4].copy_from_slice(&[192, 0, 2, 66]);
        let b = bytes(&ev);
        assert_eq!(decode(&b), Some(ev));
        // At an odd offset (a ring buffer gives no alignment promise to a reader's type).
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&b);
        assert_eq!(decode(&shifted[1..]), Some(ev));
        assert_eq!(decode(&b[..31]), None);
        assert_eq!(decode(&[0u8; 40]), None);
    }

    #[test]
    fn an_ipv4_refusal_names_endpoint_reason_address_and_mac() {
        let mut ev = event(GUARD_SOURCE_IP, GUARD_MODE_ENFORCE, GUARD_EVENT_V4);
        ev.addr[..4].copy_from_slice(&[192, 0, 2, 66]);
        let r = Refusal::new(&ev, Some(&endpoint()));
        assert_eq!(
            r.message(),
            "guard: endpoint 0 (eth0 / tap0_kata) dropped a packet from the VM: source_ip \
             192.0.2.66, source MAC aa:bb:cc:dd:ee:ff"
        );
        assert_eq!(r.address, "192.0.2.66");
        assert!(!r.delivered);
    }

    #[test]
    fn log_mode_ipv6_ethertype_mac_and_unnamed_addresses() {
        let mut ev = event(GUARD_SOURCE_IP, GUARD_MODE_LOG, GUARD_EVENT_V6);
        ev.addr = "2001:db8::66".parse::<Ipv6Addr>().unwrap().octets();
        let r = Refusal::new(&ev, Some(&endpoint()));
        assert!(r.delivered);
        assert_eq!(
            r.message(),
            "guard: endpoint 0 (eth0 / tap0_kata) flagged (log mode, delivered) a packet from \
             the VM: source_ip 2001:db8::66, source MAC aa:bb:cc:dd:ee:ff"
        );

        let mut ev = event(GUARD_ETHERTYPE, GUARD_MODE_ENFORCE, GUARD_EVENT_ETHERTYPE);
        ev.ethertype = 0x8100u16.to_be();
        let r = Refusal::new(&ev, Some(&endpoint()));
        assert_eq!((r.reason, r.address.as_str()), ("ethertype", "0x8100"));

        let r = Refusal::new(
            &event(GUARD_SOURCE_MAC, GUARD_MODE_ENFORCE, GUARD_EVENT_NONE),
            Some(&endpoint()),
        );
        assert_eq!(r.address, "aa:bb:cc:dd:ee:ff");
        assert!(
            r.message()
                .ends_with("from the VM: source_mac aa:bb:cc:dd:ee:ff"),
            "{}",
            r.message()
        );

        // A short ARP header, and an endpoint slot no longer in the map.
        let r = Refusal::new(
            &event(GUARD_ARP, GUARD_MODE_ENFORCE, GUARD_EVENT_NONE),
            None,
        );
        assert_eq!((r.address.as_str(), r.endpoint.as_str()), ("-", "?"));
        assert!(
            r.message().contains("endpoint 0 (? / ?)"),
            "{}",
            r.message()
        );
        assert!(
            r.message().contains("arp (header too short"),
            "{}",
            r.message()
        );
    }

    #[test]
    fn an_unknown_reason_is_named_so() {
        let r = Refusal::new(&event(99, GUARD_MODE_ENFORCE, GUARD_EVENT_NONE), None);
        assert_eq!(r.reason, "unknown");
    }
}
