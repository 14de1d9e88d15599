//! Types shared by the eBPF datapath (`netshim-ebpf`) and userspace (`netshim`).
//!
//! Everything here is `#[repr(C)]` plain data: the same bytes are written by one side and read
//! by the other through BPF maps. With the `user` feature the types implement `aya::Pod`.
#![no_std]

/// Most endpoints one sandbox (one network namespace) can have.
pub const MAX_ENDPOINTS: u32 = 32;
/// Two counter slots per endpoint: one per direction.
pub const COUNTER_SLOTS: u32 = MAX_ENDPOINTS * 2;
/// Most devices that can have a redirect entry (two per endpoint, headroom for `connect`).
pub const MAX_PEERS: u32 = COUNTER_SLOTS * 2;

/// Names of the maps in the eBPF object; these are also the file names of their bpffs pins.
pub mod map_names {
    /// `HashMap<u32 ifindex, PeerEntry>`: where a packet arriving on `ifindex` goes.
    pub const PEERS: &str = "peers";
    /// `PerCpuArray<Counters>` indexed by counter slot.
    pub const COUNTERS: &str = "counters";
    /// `PerCpuArray<Counters>` with one entry: packets seen on a device with no peer entry.
    pub const UNMATCHED: &str = "unmatched";
    /// `Array<EndpointRecord>` indexed by endpoint index: who the slots belong to.
    pub const ENDPOINTS: &str = "endpoints";
    /// `Array<SandboxRecord>` with one entry: which netns this pin directory serves.
    pub const SANDBOX: &str = "sandbox";
    /// `PerCpuArray<Drops>` indexed by counter slot: packets the datapath itself dropped,
    /// by reason. Added after the first release: a sandbox attached by an older netshim has
    /// no such pin until `netshim upgrade` creates it (readers then say "not counted").
    /// Written by the datapaths before issue 13 only; since, see [`DROPS_V2`]. Readers add
    /// the two, so counts carry on across the upgrade that creates `drops_v2`.
    pub const DROPS: &str = "drops";
    /// `Array<Drops>` indexed by counter slot, one value for all CPUs (atomic adds): what
    /// `drops` counted, without a copy per possible CPU (drops are the rare path; a per-CPU
    /// map costs 64 slots x its value x every CPU of the node). Issue 13.
    pub const DROPS_V2: &str = "drops_v2";
    /// `Array<GuardConfig>` indexed by endpoint index: the source guard of the traffic from
    /// the VM (see [`GuardConfig`]). Added with the guard (issue 11), like the four below:
    /// `netshim upgrade` creates them in a sandbox attached before.
    pub const GUARD: &str = "guard";
    /// `PerCpuArray<GuardDrops>` indexed by counter slot: packets the guard refused.
    /// Written by the datapaths before issue 13 only; since, see [`GUARD_DROPS_V2`] (readers
    /// add the two).
    pub const GUARD_DROPS: &str = "guard_drops";
    /// `Array<GuardDrops>` indexed by endpoint index (the guard only counts the VM → pod
    /// direction), one value for all CPUs (atomic adds). Issue 13.
    pub const GUARD_DROPS_V2: &str = "guard_drops_v2";
    /// `LpmTrie<GuardV4Key, u8>`: the endpoints' allowed IPv4 CIDRs (`allowed_addresses`).
    pub const GUARD_V4: &str = "guard_v4";
    /// `LpmTrie<GuardV6Key, u8>`: the endpoints' allowed IPv6 CIDRs.
    pub const GUARD_V6: &str = "guard_v6";
    /// `Array<u64>` by endpoint index × reason: when the guard last logged (ns, rate limit).
    pub const GUARD_LOG: &str = "guard_log";
    /// `RingBuf` of [`GuardEvent`](crate::GuardEvent) records: what the guard refused, at
    /// most one record per second per endpoint and reason (`netshim logs` decodes them).
    /// The datapaths before `guard_last` wrote it; their sandboxes keep it and the log
    /// followers still read it.
    pub const GUARD_EVENTS: &str = "guard_events";
    /// `Array<GuardEvent>` by endpoint index × reason (the slots of `guard_log`): the last
    /// refusal of that endpoint and reason, written at most once per second per slot, just
    /// before `guard_log` takes its time; the log followers poll it. It replaces the
    /// `guard_events` ring: a ring is at least one page plus its header pages (16 KiB of
    /// kernel memory per sandbox), the array is 32 B per slot.
    pub const GUARD_LAST: &str = "guard_last";
    /// `Array<DatapathEvent>` indexed by counter slot: the last packet of that slot the
    /// datapath did not redirect although its device has a `peers` entry (version skew or a
    /// helper refusal), written only on those paths. Added in issue 13 (it replaces
    /// aya-log's `AYA_LOGS` ring): `netshim upgrade` creates it in a sandbox attached before,
    /// and the log followers poll it (see `netshim::ebpf_log`).
    pub const ERRORS: &str = "errors";
}

/// Every map of the source guard this datapath declares.
pub const GUARD_MAPS: [&str; 6] = [
    map_names::GUARD,
    map_names::GUARD_DROPS_V2,
    map_names::GUARD_V4,
    map_names::GUARD_V6,
    map_names::GUARD_LOG,
    map_names::GUARD_LAST,
];

/// Whether a set of maps (`has(name)`: a sandbox's pins, an object's declarations) has the
/// source guard: every map of [`GUARD_MAPS`], where the per-CPU `guard_drops` of a datapath
/// from before issue 13 stands for `guard_drops_v2`, and the `guard_events` ring of one from
/// before `guard_last` for that.
pub fn has_guard_maps(has: impl Fn(&str) -> bool) -> bool {
    GUARD_MAPS.iter().all(|m| {
        has(m)
            || (*m == map_names::GUARD_DROPS_V2 && has(map_names::GUARD_DROPS))
            || (*m == map_names::GUARD_LAST && has(map_names::GUARD_EVENTS))
    })
}

/// Name of the TC classifier program in the eBPF object.
pub const PROGRAM_NAME: &str = "netshim_redirect";

/// Direction of traffic through an endpoint, seen from the VM.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Arrives at the pod-side device (veth) ingress, leaves through the tap to the VM.
    ToVm = 0,
    /// Arrives at the tap ingress (written by the VMM), leaves through the pod-side device.
    FromVm = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ToVm, Direction::FromVm];

    /// Counter slot of this direction of endpoint `index`.
    pub const fn slot(self, index: u32) -> u32 {
        index * 2 + self as u32
    }
}

/// Value of the `peers` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEntry {
    /// Device that receives packets arriving on the key device: its egress, or with
    /// [`PEER_REDIRECT_PEER`] the ingress of its veth peer in another netns.
    pub peer_ifindex: u32,
    /// Counter slot (see [`Direction::slot`]).
    pub slot: u32,
    /// [`PEER_REDIRECT_PEER`] or 0. A bit outside [`PEER_KNOWN_FLAGS`] makes the datapath
    /// pass the packet to the stack instead of redirecting it (version skew guard).
    pub flags: u32,
    pub _pad: u32,
}

/// [`PeerEntry::flags`]: use `bpf_redirect_peer` (the target is a veth whose peer is in
/// another netns; the packet enters the peer's ingress without the per-CPU backlog round).
pub const PEER_REDIRECT_PEER: u32 = 1;

/// [`PeerEntry::flags`]: packets arriving on the key device (a tap: the VM's traffic) pass
/// the source guard of endpoint `slot / 2` first (its [`GuardConfig`] in the `guard` map).
/// Set only on the VM → pod entry, and only while the guard is on (enforce or log), so that
/// the other direction and a guard that is off cost one AND and one branch.
pub const PEER_GUARD: u32 = 2;

/// Every [`PeerEntry::flags`] bit this version of netshim knows. The datapath refuses an
/// entry with any other bit set: it was written by a different netshim (say, a newer
/// userspace whose datapath has not been upgraded yet) and redirecting on a misunderstood
/// entry could send the packet somewhere it must not go. Such a packet is counted in the
/// entry's `redirect_errors`, recorded in the `errors` map (a [`DatapathEvent`] of kind
/// [`DATAPATH_EVENT_SKEW`], which `netshim logs` turns into a warning) and passed to the
/// stack (`TC_ACT_UNSPEC`). A new flag must be added here in the same change that teaches
/// the datapath its meaning.
pub const PEER_KNOWN_FLAGS: u32 = PEER_REDIRECT_PEER | PEER_GUARD;

/// Value of the per-CPU `counters` and `unmatched` maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets handed to `bpf_redirect` successfully.
    pub packets: u64,
    /// Bytes of those packets (L2 frame length as seen at TC ingress).
    pub bytes: u64,
    /// Packets not redirected although their device has a `peers` entry: the entry has flags
    /// outside [`PEER_KNOWN_FLAGS`] (written by another netshim version; the packet was
    /// passed to the stack), or `bpf_redirect`/`bpf_redirect_peer` did not return
    /// `TC_ACT_REDIRECT` (a helper refusal, which needs a bug; a missing target device is
    /// only found by the kernel after the program returns and is not counted here).
    pub redirect_errors: u64,
}

impl Counters {
    /// Adds another CPU's (or slot's) values.
    pub fn add(&mut self, other: &Counters) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.redirect_errors = self.redirect_errors.wrapping_add(other.redirect_errors);
    }
}

/// Value of the `drops_v2` map (and of the per-CPU `drops` of older datapaths; one per
/// counter slot): packets the datapath dropped itself (`TC_ACT_SHOT`), by reason. Dropped packets are not in [`Counters`].
///
/// The layout of a pinned map is frozen: `netshim upgrade` refuses an object whose map has
/// another value size than the sandbox's pin, so a sandbox attached by an older netshim keeps
/// working. A new reason (issue 11's source `guard`) is therefore never a new field here: it
/// comes as a new struct in a new map (`drops_v2` holding `DropsV2 { mtu, guard }`, say),
/// which `netshim upgrade` creates in sandboxes that lack it, and readers take the newest
/// version a sandbox has pinned (see [`DROP_REASONS`] for the names they report).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Larger than the MTU of the device it was to be redirected to (`bpf_check_mtu`;
    /// a GSO packet is checked per segment, `BPF_MTU_CHK_SEGS`).
    pub mtu: u64,
}

impl Drops {
    /// Adds another CPU's values.
    pub fn add(&mut self, other: &Drops) {
        self.mtu = self.mtu.wrapping_add(other.mtu);
    }

    /// The counts by reason name, in [`DROP_REASONS`] order.
    pub fn by_reason(&self) -> [(&'static str, u64); 1] {
        [(DROP_REASONS[0], self.mtu)]
    }
}

/// The reasons the datapath counts in [`Drops`], as readers name them.
pub const DROP_REASONS: [&str; 1] = ["mtu"];

/// [`GuardConfig::mode`]: no checks (the `peers` entry has no [`PEER_GUARD`] either).
pub const GUARD_MODE_OFF: u32 = 0;
/// [`GuardConfig::mode`]: a packet that fails a check is dropped and counted.
pub const GUARD_MODE_ENFORCE: u32 = 1;
/// [`GuardConfig::mode`]: a packet that fails a check is counted (and logged) but delivered.
pub const GUARD_MODE_LOG: u32 = 2;

/// [`GuardConfig::flags`]: DHCP client traffic from 0.0.0.0 (UDP 68 → 67) is allowed.
pub const GUARD_ALLOW_DHCP: u32 = 1;
/// [`GuardConfig::flags`]: the endpoint has IPv4 CIDRs in `guard_v4`.
pub const GUARD_HAS_V4_CIDRS: u32 = 2;
/// [`GuardConfig::flags`]: the endpoint has IPv6 CIDRs in `guard_v6`.
pub const GUARD_HAS_V6_CIDRS: u32 = 4;

/// IPv4 addresses of an endpoint held inline in its [`GuardConfig`].
pub const GUARD_V4_SLOTS: usize = 4;
/// IPv6 addresses (besides the link-local one) held inline.
pub const GUARD_V6_SLOTS: usize = 4;
/// Extra ethertypes an endpoint may send (`guard_allowed_ethertypes`).
pub const GUARD_ETHERTYPE_SLOTS: usize = 4;
/// Most allowed CIDRs per address family in one sandbox (all endpoints together).
pub const GUARD_MAX_CIDRS: u32 = 1024;

/// Value of the `guard` map (one per endpoint index): what the VM behind the endpoint's tap
/// may send. Addresses are held as the raw network-order bytes reinterpreted in native
/// order (`u32::from_ne_bytes(octets)`), so the program compares them with a packet's bytes
/// loaded the same way. Unused slots are beyond `v4_count` / `v6_count`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// [`GUARD_MODE_OFF`], [`GUARD_MODE_ENFORCE`] or [`GUARD_MODE_LOG`].
    pub mode: u32,
    /// [`GUARD_ALLOW_DHCP`] | [`GUARD_HAS_V4_CIDRS`] | [`GUARD_HAS_V6_CIDRS`].
    pub flags: u32,
    /// The guest MAC: the only Ethernet (and ARP, and ND link-layer option) source allowed.
    pub mac: [u8; 6],
    pub v4_count: u8,
    pub v6_count: u8,
    /// Extra ethertypes allowed (network order), 0 = unused.
    pub ethertypes: [u16; GUARD_ETHERTYPE_SLOTS],
    pub v4: [u32; GUARD_V4_SLOTS],
    /// fe80::/64 + the EUI-64 of `mac`.
    pub link_local: [u64; 2],
    pub v6: [[u64; 2]; GUARD_V6_SLOTS],
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            mode: GUARD_MODE_OFF,
            flags: 0,
            mac: [0; 6],
            v4_count: 0,
            v6_count: 0,
            ethertypes: [0; GUARD_ETHERTYPE_SLOTS],
            v4: [0; GUARD_V4_SLOTS],
            link_local: [0; 2],
            v6: [[0; 2]; GUARD_V6_SLOTS],
        }
    }
}

/// The data of a `guard_v4` key (after the LPM trie's `prefix_len`, which counts the 32 bits
/// of `index` too: an endpoint's /24 is prefix_len 56).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardV4Key {
    /// Endpoint index, big-endian bytes.
    pub index: [u8; 4],
    pub addr: [u8; 4],
}

/// The data of a `guard_v6` key (prefix_len counts `index`'s 32 bits too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardV6Key {
    pub index: [u8; 4],
    pub addr: [u8; 16],
}

/// The guard's drop reasons, in [`GuardDrops`] field order (the `reason` of stats and
/// metrics, and the index of the `guard_log` slot within an endpoint's).
pub const GUARD_REASONS: [&str; 7] = [
    "source_mac",
    "source_ip",
    "arp",
    "nd",
    "ra",
    "dhcp_server",
    "ethertype",
];
/// Index of a reason in [`GUARD_REASONS`].
pub const GUARD_SOURCE_MAC: u32 = 0;
pub const GUARD_SOURCE_IP: u32 = 1;
pub const GUARD_ARP: u32 = 2;
pub const GUARD_ND: u32 = 3;
pub const GUARD_RA: u32 = 4;
pub const GUARD_DHCP_SERVER: u32 = 5;
pub const GUARD_ETHERTYPE: u32 = 6;

/// Value of the `guard_drops_v2` map (by endpoint index), and of the per-CPU `guard_drops`
/// of older datapaths (by counter slot; the guard only runs from the VM, so only odd slots
/// count): packets the guard refused, by reason. A new map, so `drops` keeps its layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardDrops {
    /// Enforce mode: dropped, by reason in [`GUARD_REASONS`] order.
    pub dropped: [u64; GUARD_REASONS.len()],
    /// Log mode: would have been dropped, and were delivered.
    pub flagged: [u64; GUARD_REASONS.len()],
}

impl GuardDrops {
    /// Adds another CPU's values.
    pub fn add(&mut self, other: &GuardDrops) {
        for (a, b) in self.dropped.iter_mut().zip(other.dropped.iter()) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.flagged.iter_mut().zip(other.flagged.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}

/// Size of the `guard_events` ring buffer (a power-of-2 multiple of the page size): one
/// page, the smallest a ring can be. It holds 102 records (32 B + the ring's 8 B header):
/// a whole second of refusals (at most one per endpoint and reason) of 14 endpoints each
/// refused for all 7 reasons at once; a follower drains it as records come (each wakes
/// it), so it never needs to hold more than what arrives while the follower runs. Memlock:
/// 16,728 B (the kernel adds the ring's control pages), against 78,408 B for the 64 KiB of
/// cc25fd2; an older sandbox keeps its larger ring across `upgrade` (the program does not
/// care about the size).
pub const GUARD_EVENTS_BYTES: u32 = 4096;

/// [`GuardEvent::kind`]: no address to name (a short or malformed header).
pub const GUARD_EVENT_NONE: u8 = 0;
/// [`GuardEvent::kind`]: `addr[..4]` is an IPv4 address.
pub const GUARD_EVENT_V4: u8 = 4;
/// [`GuardEvent::kind`]: `addr` is an IPv6 address.
pub const GUARD_EVENT_V6: u8 = 6;
/// [`GuardEvent::kind`]: `ethertype` is the refused ethertype (or 802.3 length).
pub const GUARD_EVENT_ETHERTYPE: u8 = 1;

/// A record of `guard_last` (and of the `guard_events` ring buffer before it): one refusal
/// (rate-limited per endpoint and reason). Fixed-size and written with one helper call, so that logging costs the
/// verifier next to nothing; userspace names the endpoint from the `endpoints` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardEvent {
    /// Endpoint index.
    pub index: u32,
    /// Index in [`GUARD_REASONS`].
    pub reason: u8,
    /// [`GUARD_MODE_ENFORCE`] (dropped) or [`GUARD_MODE_LOG`] (delivered).
    pub mode: u8,
    /// What `addr` / `ethertype` hold: `GUARD_EVENT_*`.
    pub kind: u8,
    pub _pad: u8,
    /// The frame's source MAC.
    pub mac: [u8; 6],
    /// Network order.
    pub ethertype: u16,
    /// The offending address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
}

/// [`DatapathEvent::kind`]: a free slot (never written).
pub const DATAPATH_EVENT_NONE: u32 = 0;
/// [`DatapathEvent::kind`]: a `peers` entry with flags outside the program's known flags
/// (`detail` = the entry's flags, `known_flags` = the program's); the packet was passed on.
pub const DATAPATH_EVENT_SKEW: u32 = 1;
/// [`DatapathEvent::kind`]: `bpf_redirect`/`bpf_redirect_peer` did not return
/// `TC_ACT_REDIRECT` (`detail` = the verdict it returned, as `i32` bits).
pub const DATAPATH_EVENT_REDIRECT: u32 = 2;

/// Value of the `errors` map (one per counter slot): the last packet of the slot that the
/// datapath counted in `redirect_errors`. Written in place on those paths only (a plain
/// store, no helper but `bpf_ktime_get_ns`), so the verifier sees a handful of
/// instructions where aya-log's formatting was hundreds; userspace polls the map and
/// reports a record whose `time_ns` changed (so at most one warning per slot per poll; the
/// counter counts every packet). Two CPUs writing one slot at once may tear a record; both
/// paths need a bug or a skewed upgrade, never normal traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathEvent {
    /// `DATAPATH_EVENT_*`.
    pub kind: u32,
    /// The device the packet arrived on (the `peers` key).
    pub ifindex: u32,
    /// The entry's flags ([`DATAPATH_EVENT_SKEW`]) or the helper's verdict
    /// ([`DATAPATH_EVENT_REDIRECT`], `i32` bits).
    pub detail: u32,
    /// The entry's target device.
    pub peer_ifindex: u32,
    /// The [`PEER_KNOWN_FLAGS`] of the program that wrote the record.
    pub known_flags: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when it was written; 0 = never.
    pub time_ns: u64,
}

/// Length of a Linux interface name buffer (IFNAMSIZ).
pub const IFNAMSIZ: usize = 16;
/// Room for a netns path in [`SandboxRecord`].
pub const NETNS_PATH_MAX: usize = 256;

/// [`EndpointRecord::flags`]: netshim added the clsact qdisc on the pod device.
pub const ENDPOINT_POD_CLSACT: u32 = 1;
/// [`EndpointRecord::flags`]: netshim added the clsact qdisc on the tap.
pub const ENDPOINT_TAP_CLSACT: u32 = 2;

/// Value of the `endpoints` map: which devices an endpoint index connects.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// 1 when this index is in use, 0 for a free slot.
    pub in_use: u32,
    pub pod_ifindex: u32,
    pub tap_ifindex: u32,
    /// [`ENDPOINT_POD_CLSACT`] | [`ENDPOINT_TAP_CLSACT`]: clsact qdiscs netshim added (cls_bpf
    /// mode) and must remove on detach.
    pub flags: u32,
    /// NUL-padded interface names.
    pub pod_name: [u8; IFNAMSIZ],
    pub tap_name: [u8; IFNAMSIZ],
}

impl Default for EndpointRecord {
    fn default() -> Self {
        Self {
            in_use: 0,
            pod_ifindex: 0,
            tap_ifindex: 0,
            flags: 0,
            pod_name: [0; IFNAMSIZ],
            tap_name: [0; IFNAMSIZ],
        }
    }
}

/// [`SandboxRecord::attach_mode`]: TCX links pinned in bpffs (kernel >= 6.6).
pub const ATTACH_TCX: u32 = 0;
/// [`SandboxRecord::attach_mode`]: cls_bpf direct-action filters under a clsact qdisc.
pub const ATTACH_CLS_BPF: u32 = 1;

/// Value of the `sandbox` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxRecord {
    /// Inode number of the network namespace.
    pub netns_inode: u64,
    /// `SO_NETNS_COOKIE` of the network namespace (never reused; names the pin directory).
    pub netns_cookie: u64,
    /// How the programs are attached: [`ATTACH_TCX`] or [`ATTACH_CLS_BPF`].
    pub attach_mode: u32,
    pub _pad: u32,
    /// NUL-padded path the namespace was attached by (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub netns_path: [u8; NETNS_PATH_MAX],
}

impl Default for SandboxRecord {
    fn default() -> Self {
        Self {
            netns_inode: 0,
            netns_cookie: 0,
            attach_mode: ATTACH_TCX,
            _pad: 0,
            netns_path: [0; NETNS_PATH_MAX],
        }
    }
}

/// Copies `s` into a NUL-padded fixed buffer, truncating to leave room for a NUL.
pub fn to_fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = if s.len() < N { s.len() } else { N - 1 };
    out[..n].copy_from_slice(&s[..n]);
    out
}

/// The bytes of a NUL-padded fixed buffer up to the first NUL.
pub fn from_fixed(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], contain only integers and byte arrays, and have no padding
    // holes that are not explicit fields.
    unsafe impl aya::Pod for super::PeerEntry {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Drops {}
    unsafe impl aya::Pod for super::EndpointRecord {}
    unsafe impl aya::Pod for super::SandboxRecord {}
    unsafe impl aya::Pod for super::GuardConfig {}
    unsafe impl aya::Pod for super::GuardDrops {}
    unsafe impl aya::Pod for super::GuardV4Key {}
    unsafe impl aya::Pod for super::GuardV6Key {}
    unsafe impl aya::Pod for super::GuardEvent {}
    unsafe impl aya::Pod for super::DatapathEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap() {
        assert_eq!(Direction::ToVm.slot(0), 0);
        assert_eq!(Direction::FromVm.slot(0), 1);
        assert_eq!(Direction::ToVm.slot(3), 6);
        assert_eq!(Direction::FromVm.slot(MAX_ENDPOINTS - 1), COUNTER_SLOTS - 1);
    }

    #[test]
    fn known_peer_flags_include_every_flag_userspace_writes() {
        assert_eq!(PEER_REDIRECT_PEER & !PEER_KNOWN_FLAGS, 0);
        assert_eq!(PEER_GUARD & !PEER_KNOWN_FLAGS, 0);
        // The test of the skew guard (tests/tests/cli_tools.rs) sets 0x80: it must be unknown.
        assert_ne!(0x80 & !PEER_KNOWN_FLAGS, 0);
    }

    #[test]
    fn the_guard_is_there_with_either_version_of_its_drop_counters() {
        let with = |extra: &'static str| {
            move |m: &str| m == extra || (GUARD_MAPS.contains(&m) && m != map_names::GUARD_DROPS_V2)
        };
        assert!(has_guard_maps(with(map_names::GUARD_DROPS_V2)));
        assert!(
            has_guard_maps(with(map_names::GUARD_DROPS)),
            "a sandbox of cc25fd2"
        );
        assert!(!has_guard_maps(with(map_names::DROPS)));
        assert!(!has_guard_maps(|m| m != map_names::GUARD_LOG));
        let ring = |m: &str| {
            m == map_names::GUARD_EVENTS || (GUARD_MAPS.contains(&m) && m != map_names::GUARD_LAST)
        };
        assert!(has_guard_maps(ring), "a sandbox with the guard_events ring");
        assert!(!has_guard_maps(
            |m| GUARD_MAPS.contains(&m) && m != map_names::GUARD_LAST
        ));
    }

    #[test]
    fn fixed_buffers_round_trip_and_truncate() {
        let b: [u8; 4] = to_fixed(b"eth0");
        assert_eq!(from_fixed(&b), b"eth");
        let b: [u8; IFNAMSIZ] = to_fixed(b"tap0_kata");
        assert_eq!(from_fixed(&b), b"tap0_kata");
    }

    #[test]
    fn drops_add_and_name_their_reasons() {
        let mut a = Drops { mtu: 2 };
        a.add(&Drops { mtu: 3 });
        assert_eq!(a.by_reason(), [("mtu", 5)]);
        // The pinned value layout: changing it needs a new map version (see Drops).
        assert_eq!(core::mem::size_of::<Drops>(), 8);
    }

    #[test]
    fn guard_layouts_have_no_hidden_padding() {
        // Pinned value layouts (see Drops): a change needs a new map.
        assert_eq!(core::mem::size_of::<GuardConfig>(), 120);
        assert_eq!(core::mem::size_of::<GuardDrops>(), 16 * GUARD_REASONS.len());
        assert_eq!(core::mem::size_of::<GuardEvent>(), 32);
        assert_eq!(core::mem::size_of::<DatapathEvent>(), 32);
        assert_eq!(core::mem::size_of::<GuardV4Key>(), 8);
        assert_eq!(core::mem::size_of::<GuardV6Key>(), 20);
        assert_eq!(GUARD_REASONS[GUARD_ETHERTYPE as usize], "ethertype");
        assert_eq!(GUARD_REASONS[GUARD_DHCP_SERVER as usize], "dhcp_server");
    }

    #[test]
    fn counters_add_sums_fields() {
        let mut a = Counters {
            packets: 1,
            bytes: 10,
            redirect_errors: 0,
        };
        a.add(&Counters {
            packets: 2,
            bytes: 5,
            redirect_errors: 1,
        });
        assert_eq!(
            a,
            Counters {
                packets: 3,
                bytes: 15,
                redirect_errors: 1
            }
        );
    }
}
