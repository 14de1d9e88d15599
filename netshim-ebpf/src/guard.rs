//! The source guard: what a VM may send into its tap (the VM → pod direction only).
//!
//! Runs for a `peers` entry with `PEER_GUARD`, against endpoint `slot / 2`'s `GuardConfig`:
//! - Ethernet source = the guest MAC (a multicast source can never equal it);
//! - ethertype IPv4, ARP, IPv6, or one of the endpoint's allowed ethertypes; anything else
//!   (802.1Q/QinQ tags, LLDP, STP and other 802.3 length frames, PAUSE) is `ethertype`; a
//!   VLAN tag is seen in the skb's metadata (the stack strips the outer tag before TC
//!   ingress, so the bytes show only the inner ethertype);
//! - IPv4: source = one of the endpoint's addresses (inline), or in its allowed CIDRs (the
//!   `guard_v4` trie, looked up only when no inline address matched and the endpoint has
//!   CIDRs); 0.0.0.0 only for DHCP client traffic (UDP 68 → 67) with `GUARD_ALLOW_DHCP`;
//!   UDP 67 → 68 (a DHCP server) is `dhcp_server` whatever the source, and so is a DHCPv6
//!   server reply (UDP 547 → 546);
//! - ARP: sender MAC = the guest MAC, sender IP = an endpoint address (0.0.0.0: a probe);
//! - IPv6: source = an endpoint address, its EUI-64 link-local, an allowed CIDR, or `::`
//!   for DAD (NS) and MLD only. Up to [`MAX_EXT_HEADERS`] extension headers are walked to
//!   the upper-layer header, so an RA behind a hop-by-hop or destination options header
//!   (RFC 7113 evasion) is still found; a chain longer than that, and an ICMPv6 first
//!   fragment (ND must not be fragmented, RFC 6980), are dropped as `ra`. A non-first
//!   fragment carries no upper-layer header; its source is checked and it passes (its
//!   first fragment was inspected, and without it nothing reassembles).
//!   ICMPv6 RA (134) and redirect (137) are `ra`; an NA (136) must be for the endpoint's
//!   own address with a target link-layer option (if any) = the guest MAC, an NS (135) or
//!   RS (133) source link-layer option = the guest MAC, else `nd`; an ND message with more
//!   options than the guard reads ([`MAX_ND_OPTIONS`]) is `nd` too.
//!
//! The headers are read with `bpf_skb_load_bytes`, which works whatever part of the packet
//! is linear (a GSO packet from the VM may have only `hdr_len` bytes there, and the guest
//! chooses that). A packet too short for a header it claims is refused under that check's
//! reason. Each refusal counts in `guard_drops_v2` (`dropped` in enforce mode, `flagged` in log
//! mode, where the packet is then delivered) and writes at most one fixed-size
//! `GuardEvent` per second per endpoint and reason into that slot of `guard_last`, then
//! the time into `guard_log` (which the log followers poll): a few stores, nothing for the
//! verifier to walk through, unlike a formatted aya-log record.
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie},
    programs::TcContext,
};
use core::ptr::read_unaligned;

use netshim_common::{
    GuardConfig, GuardDrops, GuardEvent, GuardV4Key, GuardV6Key, GUARD_ALLOW_DHCP, GUARD_ARP,
    GUARD_DHCP_SERVER, GUARD_ETHERTYPE, GUARD_ETHERTYPE_SLOTS, GUARD_EVENT_ETHERTYPE,
    GUARD_EVENT_V4, GUARD_EVENT_V6, GUARD_HAS_V4_CIDRS, GUARD_HAS_V6_CIDRS, GUARD_MAX_CIDRS,
    GUARD_MODE_ENFORCE, GUARD_MODE_OFF, GUARD_ND, GUARD_RA, GUARD_REASONS, GUARD_SOURCE_IP,
    GUARD_SOURCE_MAC, GUARD_V4_SLOTS, GUARD_V6_SLOTS, MAX_ENDPOINTS,
};

#[map(name = "guard")]
static GUARD: Array<GuardConfig> = Array::pinned(MAX_ENDPOINTS, 0);

// By endpoint index, one value for all CPUs (atomic adds; see `drops_v2`).
#[map(name = "guard_drops_v2")]
static GUARD_DROPS: Array<GuardDrops> = Array::pinned(MAX_ENDPOINTS, 0);

#[map(name = "guard_v4")]
static GUARD_V4: LpmTrie<GuardV4Key, u8> = LpmTrie::pinned(GUARD_MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "guard_v6")]
static GUARD_V6: LpmTrie<GuardV6Key, u8> = LpmTrie::pinned(GUARD_MAX_CIDRS, BPF_F_NO_PREALLOC);

#[map(name = "guard_log")]
static GUARD_LOG: Array<u64> = Array::pinned(MAX_ENDPOINTS * GUARD_REASONS.len() as u32, 0);

#[map(name = "guard_last")]
static GUARD_LAST: Array<GuardEvent> = Array::pinned(MAX_ENDPOINTS * GUARD_REASONS.len() as u32, 0);

/// Extension headers walked before the upper-layer header must show up.
const MAX_EXT_HEADERS: usize = 6;
/// NDP options looked at for the link-layer address one.
const MAX_ND_OPTIONS: usize = 3;
/// One log record per endpoint and reason per this many ns.
const LOG_INTERVAL_NS: u64 = 1_000_000_000;

const ETH_HLEN: usize = 14;
// Ethertypes and protocol numbers in network order as `load::<u16>` reads them.
const ETH_P_IP: u16 = 0x0800u16.to_be();
const ETH_P_ARP: u16 = 0x0806u16.to_be();
const ETH_P_IPV6: u16 = 0x86ddu16.to_be();
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
const DHCP_SERVER_PORT: u16 = 67u16.to_be();
const DHCP_CLIENT_PORT: u16 = 68u16.to_be();
const DHCP6_SERVER_PORT: u16 = 547u16.to_be();
const DHCP6_CLIENT_PORT: u16 = 546u16.to_be();

/// Why a packet was refused, and the address to name in the log record.
struct Refusal {
    reason: u32,
    addr: Addr,
}

#[derive(Clone, Copy)]
enum Addr {
    None,
    V4([u8; 4]),
    V6([u8; 16]),
    Ethertype(u16),
}

fn refuse(reason: u32, addr: Addr) -> Result<(), Refusal> {
    Err(Refusal { reason, addr })
}

/// Whether the packet may go on: the guard of endpoint `index` passes
/// it, or is in log mode. A refusal is counted and (rate-limited) logged.
#[inline(always)]
pub fn allows(ctx: &TcContext, index: u32) -> bool {
    let Some(cfg) = GUARD.get(index) else {
        return true;
    };
    if cfg.mode == GUARD_MODE_OFF || fast_accept(ctx, cfg) {
        return true;
    }
    match check(ctx, index, cfg) {
        Ok(()) => true,
        Err(r) => refused(ctx, index, cfg, r),
    }
}

/// Counts and logs a refusal; returns whether the packet is delivered anyway (log mode).
/// Inlined (it has one caller): passed by value to a BPF-to-BPF call, `Refusal`'s enum was
/// spilled with its undefined bytes taken from whatever register LLVM liked, once a map
/// value pointer shifted into place, which the verifier refuses ("pointer arithmetic with
/// >>= operator prohibited").
#[inline(always)]
fn refused(ctx: &TcContext, index: u32, cfg: &GuardConfig, r: Refusal) -> bool {
    let reason = r.reason.min(GUARD_REASONS.len() as u32 - 1) as usize;
    let enforce = cfg.mode == GUARD_MODE_ENFORCE;
    if let Some(d) = GUARD_DROPS.get_ptr_mut(index) {
        // SAFETY: a valid, aligned map value for the program's run; `reason` is in bounds.
        unsafe {
            let counts = if enforce {
                &raw mut (*d).dropped
            } else {
                &raw mut (*d).flagged
            };
            crate::add_one(counts.cast::<u64>().add(reason));
        }
    }
    let log_slot = index * GUARD_REASONS.len() as u32 + reason as u32;
    if let Some(last) = GUARD_LOG.get_ptr_mut(log_slot) {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: an array value; a race between CPUs costs at most one more record.
        unsafe {
            if *last == 0 || now.wrapping_sub(*last) >= LOG_INTERVAL_NS {
                // The record first: a follower that sees the new time reads the new record.
                record(ctx, log_slot, index, reason as u8, cfg.mode as u8, r.addr);
                *last = now;
            }
        }
    }
    !enforce
}

/// Writes one [`GuardEvent`] into `guard_last` slot `log_slot`.
#[inline(always)]
fn record(ctx: &TcContext, log_slot: u32, index: u32, reason: u8, mode: u8, addr: Addr) {
    let mut ev = GuardEvent {
        index,
        reason,
        mode,
        ..GuardEvent::default()
    };
    if let Ok(mac) = ctx.load::<[u8; 6]>(6) {
        ev.mac = mac;
    }
    match addr {
        Addr::None => {}
        Addr::V4(ip) => {
            ev.kind = GUARD_EVENT_V4;
            ev.addr[..4].copy_from_slice(&ip);
        }
        Addr::V6(ip) => {
            ev.kind = GUARD_EVENT_V6;
            ev.addr = ip;
        }
        Addr::Ethertype(t) => {
            ev.kind = GUARD_EVENT_ETHERTYPE;
            ev.ethertype = t;
        }
    }
    if let Some(slot) = GUARD_LAST.get_ptr_mut(log_slot) {
        // SAFETY: an array value; a concurrent writer can at worst tear the record.
        unsafe { *slot = ev };
    }
}

/// The common case, without a helper call: an untagged IPv4 packet (no IP options) or an
/// IPv6 TCP/UDP packet (no extension headers) from the guest MAC and one of the
/// endpoint's inline addresses (or its link-local), not from a DHCP server port, with its
/// headers in the linear part. `false` only means "not sure": [`check`] then decides, so
/// the two must agree on everything this accepts (the spoof tests run both).
#[inline(always)]
fn fast_accept(ctx: &TcContext, cfg: &GuardConfig) -> bool {
    // SAFETY: reads of a field of the program's own context.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return false;
    }
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN + 20 + 4 > end {
        return false;
    }
    let p = data as *const u8;
    // SAFETY: the 38 bytes read here are within [data, data_end) (checked above; the
    // verifier checks it again); unaligned reads of plain integers.
    let (mac_hi, mac_lo, proto) = unsafe {
        (
            read_unaligned(p.add(6) as *const u32),
            read_unaligned(p.add(10) as *const u16),
            read_unaligned(p.add(12) as *const u16),
        )
    };
    let m = cfg.mac;
    if mac_hi != u32::from_ne_bytes([m[0], m[1], m[2], m[3]])
        || mac_lo != u16::from_ne_bytes([m[4], m[5]])
    {
        return false;
    }
    if proto == ETH_P_IP {
        // SAFETY: as above (offsets 14..38).
        let (ver_ihl, l4, sport, src) = unsafe {
            (
                *p.add(14),
                *p.add(23),
                read_unaligned(p.add(34) as *const u16),
                read_unaligned(p.add(26) as *const u32),
            )
        };
        // For a later fragment `sport` is payload: at worst the slow path decides.
        if ver_ihl != 0x45 || (l4 == IPPROTO_UDP && sport == DHCP_SERVER_PORT) {
            return false;
        }
        let mut i = 0;
        while i < GUARD_V4_SLOTS {
            if i < cfg.v4_count as usize && cfg.v4[i] == src {
                return true;
            }
            i += 1;
        }
        false
    } else if proto == ETH_P_IPV6 {
        if data + ETH_HLEN + 40 + 4 > end {
            return false;
        }
        // SAFETY: as above (offsets 14..58, checked against data_end just now).
        let (ver, next, sport, src) = unsafe {
            (
                *p.add(14) >> 4,
                *p.add(20),
                read_unaligned(p.add(54) as *const u16),
                [
                    read_unaligned(p.add(22) as *const u64),
                    read_unaligned(p.add(30) as *const u64),
                ],
            )
        };
        if ver != 6
            || !(next == IPPROTO_TCP || next == IPPROTO_UDP)
            || (next == IPPROTO_UDP && sport == DHCP6_SERVER_PORT)
        {
            return false;
        }
        if cfg.link_local == src {
            return true;
        }
        let mut i = 0;
        while i < GUARD_V6_SLOTS {
            if i < cfg.v6_count as usize && cfg.v6[i] == src {
                return true;
            }
            i += 1;
        }
        false
    } else {
        false
    }
}

#[inline(always)]
fn check(ctx: &TcContext, index: u32, cfg: &GuardConfig) -> Result<(), Refusal> {
    // Source MAC and ethertype: bytes 6..14.
    let Ok(src) = ctx.load::<[u8; 6]>(6) else {
        return refuse(GUARD_SOURCE_MAC, Addr::None);
    };
    if src != cfg.mac {
        return refuse(GUARD_SOURCE_MAC, Addr::None);
    }
    // An 802.1Q/802.1ad tag: the stack moved the outer one into the skb's metadata before TC
    // ingress (`skb_vlan_untag` in `__netif_receive_skb_core`), so byte 12 holds the inner
    // ethertype, and the tag goes out again with the redirected packet.
    // SAFETY: reads of fields of the program's own context.
    let (vlan_present, vlan_proto) =
        unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).vlan_proto) };
    if vlan_present != 0 {
        // `vlan_proto` is the tag's TPID in network order, as `load::<u16>` reads one.
        return refuse(GUARD_ETHERTYPE, Addr::Ethertype(vlan_proto as u16));
    }
    let Ok(proto) = ctx.load::<u16>(12) else {
        return refuse(GUARD_ETHERTYPE, Addr::None);
    };
    if proto == ETH_P_IP {
        check_ipv4(ctx, index, cfg)
    } else if proto == ETH_P_IPV6 {
        check_ipv6(ctx, index, cfg)
    } else if proto == ETH_P_ARP {
        check_arp(ctx, index, cfg)
    } else {
        // An allowed ethertype (never an 802.3 length: userspace takes >= 0x0600 only).
        let mut i = 0;
        while i < GUARD_ETHERTYPE_SLOTS {
            if cfg.ethertypes[i] != 0 && cfg.ethertypes[i] == proto {
                return Ok(());
            }
            i += 1;
        }
        refuse(GUARD_ETHERTYPE, Addr::Ethertype(proto))
    }
}

#[inline(always)]
fn own_v4(index: u32, cfg: &GuardConfig, addr: u32) -> bool {
    let mut i = 0;
    while i < GUARD_V4_SLOTS {
        if i < cfg.v4_count as usize && cfg.v4[i] == addr {
            return true;
        }
        i += 1;
    }
    cfg.flags & GUARD_HAS_V4_CIDRS != 0 && {
        let key = Key::new(
            64,
            GuardV4Key {
                index: index.to_be_bytes(),
                addr: addr.to_ne_bytes(),
            },
        );
        GUARD_V4.get(&key).is_some()
    }
}

#[inline(always)]
fn own_v6(index: u32, cfg: &GuardConfig, addr: [u64; 2]) -> bool {
    if cfg.link_local == addr {
        return true;
    }
    let mut i = 0;
    while i < GUARD_V6_SLOTS {
        if i < cfg.v6_count as usize && cfg.v6[i] == addr {
            return true;
        }
        i += 1;
    }
    cfg.flags & GUARD_HAS_V6_CIDRS != 0 && {
        // SAFETY: [u64; 2] and [u8; 16] have the same size; any bytes are valid.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(addr) };
        let key = Key::new(
            160,
            GuardV6Key {
                index: index.to_be_bytes(),
                addr: bytes,
            },
        );
        GUARD_V6.get(&key).is_some()
    }
}

/// The 20-byte IPv4 header fields the guard reads.
#[repr(C)]
struct Ipv4Head {
    ver_ihl: u8,
    _tos: u8,
    _len: u16,
    _id: u16,
    frag: u16,
    _ttl: u8,
    proto: u8,
    _csum: u16,
    src: u32,
    _dst: u32,
}

#[inline(always)]
fn check_ipv4(ctx: &TcContext, index: u32, cfg: &GuardConfig) -> Result<(), Refusal> {
    let Ok(ip) = ctx.load::<Ipv4Head>(ETH_HLEN) else {
        return refuse(GUARD_SOURCE_IP, Addr::None);
    };
    if ip.ver_ihl >> 4 != 4 || ip.ver_ihl & 0x0f < 5 {
        return refuse(GUARD_SOURCE_IP, Addr::None);
    }
    // UDP ports, in the first fragment only (offset 0).
    let mut ports: Option<(u16, u16)> = None;
    if ip.proto == IPPROTO_UDP && u16::from_be(ip.frag) & 0x1fff == 0 {
        let l4 = ETH_HLEN + usize::from(ip.ver_ihl & 0x0f) * 4;
        if let Ok(p) = ctx.load::<[u16; 2]>(l4) {
            ports = Some((p[0], p[1]));
        }
    }
    if let Some((sport, dport)) = ports {
        if sport == DHCP_SERVER_PORT && dport == DHCP_CLIENT_PORT {
            return refuse(GUARD_DHCP_SERVER, Addr::V4(ip.src.to_ne_bytes()));
        }
    }
    if own_v4(index, cfg, ip.src) {
        return Ok(());
    }
    if ip.src == 0
        && cfg.flags & GUARD_ALLOW_DHCP != 0
        && ports == Some((DHCP_CLIENT_PORT, DHCP_SERVER_PORT))
    {
        return Ok(());
    }
    refuse(GUARD_SOURCE_IP, Addr::V4(ip.src.to_ne_bytes()))
}

/// An Ethernet/IPv4 ARP packet's fixed part.
#[repr(C)]
struct ArpHead {
    htype: u16,
    ptype: u16,
    hlen: u8,
    plen: u8,
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
}

#[inline(always)]
fn check_arp(ctx: &TcContext, index: u32, cfg: &GuardConfig) -> Result<(), Refusal> {
    let Ok(arp) = ctx.load::<ArpHead>(ETH_HLEN) else {
        return refuse(GUARD_ARP, Addr::None);
    };
    if arp.htype != 1u16.to_be() || arp.ptype != ETH_P_IP || arp.hlen != 6 || arp.plen != 4 {
        return refuse(GUARD_ARP, Addr::None);
    }
    let spa = u32::from_ne_bytes(arp.spa);
    if arp.sha != cfg.mac {
        return refuse(GUARD_ARP, Addr::V4(arp.spa));
    }
    // 0.0.0.0: an ARP probe (RFC 5227), a request only.
    if (spa == 0 && arp.op == 1u16.to_be()) || own_v4(index, cfg, spa) {
        return Ok(());
    }
    refuse(GUARD_ARP, Addr::V4(arp.spa))
}

/// The IPv6 header up to the source address.
#[repr(C)]
struct Ipv6Head {
    ver_tc_flow: u32,
    _len: u16,
    next: u8,
    _hops: u8,
    src: [u64; 2],
}

/// Where the source address stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source6 {
    /// The endpoint's own (an address, the link-local, an allowed CIDR).
    Own,
    /// `::`: DAD and MLD only.
    Unspecified,
}

/// Passes what comes from one of the endpoint's own addresses and refuses `::` (its DAD and
/// MLD, all it may send, are passed before this is asked).
#[inline(always)]
fn own_source_only(source: Source6, src_bytes: [u8; 16]) -> Result<(), Refusal> {
    match source {
        Source6::Own => Ok(()),
        Source6::Unspecified => refuse(GUARD_SOURCE_IP, Addr::V6(src_bytes)),
    }
}

#[inline(always)]
fn check_ipv6(ctx: &TcContext, index: u32, cfg: &GuardConfig) -> Result<(), Refusal> {
    let Ok(ip) = ctx.load::<Ipv6Head>(ETH_HLEN) else {
        return refuse(GUARD_SOURCE_IP, Addr::None);
    };
    // SAFETY: same size, any bytes valid.
    let src_bytes: [u8; 16] = unsafe { core::mem::transmute(ip.src) };
    if u32::from_be(ip.ver_tc_flow) >> 28 != 6 {
        return refuse(GUARD_SOURCE_IP, Addr::V6(src_bytes));
    }
    let source = if ip.src == [0, 0] {
        Source6::Unspecified
    } else if own_v6(index, cfg, ip.src) {
        Source6::Own
    } else {
        return refuse(GUARD_SOURCE_IP, Addr::V6(src_bytes));
    };
    // Walk the extension headers to the upper-layer one.
    let mut next = ip.next;
    let mut off = ETH_HLEN + 40;
    let mut i = 0;
    while i < MAX_EXT_HEADERS {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT => {}
            _ => break,
        }
        let Ok(h) = ctx.load::<[u8; 4]>(off) else {
            return refuse(GUARD_RA, Addr::V6(src_bytes));
        };
        let len = match next {
            IPV6_FRAGMENT => {
                let frag_off = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
                if frag_off != 0 {
                    // A later fragment: no upper-layer header here (see the module docs).
                    return own_source_only(source, src_bytes);
                }
                if h[0] == IPPROTO_ICMPV6 {
                    // RFC 6980: ND is never fragmented; an RA split this way evades RA guards.
                    return refuse(GUARD_RA, Addr::V6(src_bytes));
                }
                8
            }
            IPV6_AH => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        next = h[0];
        off += len;
        i += 1;
    }
    match next {
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT => {
            // More extension headers than the guard walks: it cannot see what follows.
            return refuse(GUARD_RA, Addr::V6(src_bytes));
        }
        IPPROTO_ICMPV6 => {}
        IPPROTO_UDP => {
            // A DHCPv6 server (or relay) reply, UDP 547 -> 546, as Neutron's port security
            // drops it: the guest is no DHCPv6 server.
            if ctx.load::<[u16; 2]>(off) == Ok([DHCP6_SERVER_PORT, DHCP6_CLIENT_PORT]) {
                return refuse(GUARD_DHCP_SERVER, Addr::V6(src_bytes));
            }
            return own_source_only(source, src_bytes);
        }
        _ => return own_source_only(source, src_bytes),
    }
    let Ok(icmp) = ctx.load::<[u8; 4]>(off) else {
        return refuse(GUARD_ND, Addr::V6(src_bytes));
    };
    match icmp[0] {
        // Router advertisement, redirect: a VM is no router.
        134 | 137 => refuse(GUARD_RA, Addr::V6(src_bytes)),
        // Neighbour advertisement: for its own address, with its own MAC.
        136 => {
            let Ok(target) = ctx.load::<[u64; 2]>(off + 8) else {
                return refuse(GUARD_ND, Addr::V6(src_bytes));
            };
            // SAFETY: same size, any bytes valid.
            let target_bytes: [u8; 16] = unsafe { core::mem::transmute(target) };
            if source == Source6::Unspecified || !own_v6(index, cfg, target) {
                return refuse(GUARD_ND, Addr::V6(target_bytes));
            }
            link_layer_option_ok(ctx, off + 24, 2, cfg, target_bytes)
        }
        // Neighbour solicitation (from :: for DAD), router solicitation: their source
        // link-layer option, if any, is the guest MAC.
        135 => link_layer_option_ok(ctx, off + 24, 1, cfg, src_bytes),
        133 => match source {
            Source6::Own => link_layer_option_ok(ctx, off + 8, 1, cfg, src_bytes),
            Source6::Unspecified => refuse(GUARD_SOURCE_IP, Addr::V6(src_bytes)),
        },
        // MLD query, report, done, MLDv2 report: from :: (before DAD) or its own address.
        130 | 131 | 132 | 143 => Ok(()),
        _ => own_source_only(source, src_bytes),
    }
}

/// The NDP options from `off` on: a link-layer address option of `kind` (1 source, 2
/// target), if there is one among the first [`MAX_ND_OPTIONS`], must carry the guest MAC.
#[inline(always)]
fn link_layer_option_ok(
    ctx: &TcContext,
    mut off: usize,
    kind: u8,
    cfg: &GuardConfig,
    addr: [u8; 16],
) -> Result<(), Refusal> {
    let mut i = 0;
    while i < MAX_ND_OPTIONS {
        let Ok(opt) = ctx.load::<[u8; 8]>(off) else {
            // No (more) options.
            return Ok(());
        };
        if opt[1] == 0 {
            // A zero-length option is invalid (RFC 4861 4.6): the receiver drops it.
            return refuse(GUARD_ND, Addr::V6(addr));
        }
        if opt[0] == kind {
            let mac = [opt[2], opt[3], opt[4], opt[5], opt[6], opt[7]];
            if opt[1] != 1 || mac != cfg.mac {
                return refuse(GUARD_ND, Addr::V6(addr));
            }
            return Ok(());
        }
        off += usize::from(opt[1]) * 8;
        i += 1;
    }
    // More options than the guard reads: the receiver reads them all (RFC 4861 4.6), and a
    // link-layer one among the rest would go unchecked.
    if ctx.load::<[u8; 2]>(off).is_ok() {
        return refuse(GUARD_ND, Addr::V6(addr));
    }
    Ok(())
}
