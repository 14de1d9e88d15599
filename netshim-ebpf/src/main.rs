//! netshim's datapath: one TC classifier attached to the ingress of both sides of an endpoint.
//!
//! A packet arriving on a device with an entry in `peers` is redirected to the egress of the
//! peer device (or, when the entry says so, straight into the ingress of that veth's peer in
//! another netns with `bpf_redirect_peer`) and counted in its per-CPU counter slot. A packet
//! on a device without an entry is counted in `unmatched` and passed on (`TC_ACT_UNSPEC`: the
//! next TCX program or the stack gets it), never dropped. No logging per packet.
//!
//! Version skew guard: an entry whose `flags` has a bit outside `PEER_KNOWN_FLAGS` was
//! written by a different netshim (a newer userspace after a partial upgrade, say) and is not
//! understood here. Its packets are not redirected: each is counted in the entry slot's
//! `redirect_errors`, recorded in that slot's `errors` entry (a `DatapathEvent` naming the
//! ifindex and the flags, which `netshim logs` turns into a warning), and passed on
//! (`TC_ACT_UNSPEC`). That needs a bad map entry, never normal traffic; the normal
//! path pays one AND and one branch for it.
//!
//! MTU: every packet is checked against the MTU of the device it is redirected to, in both
//! directions and for both helpers, with `bpf_check_mtu` (ifindex = that device). The check
//! is the kernel's own forwarding rule (`is_skb_forwardable`, which a veth's xmit applies to
//! mirred's and `bpf_redirect`'s packets but `bpf_redirect_peer` skips): a frame may be up
//! to MTU + Ethernet header + one VLAN tag (`len_diff` = -4); a GSO packet is checked per
//! segment instead (`BPF_MTU_CHK_SEGS`). A packet that does not fit is dropped
//! (`TC_ACT_SHOT`) and counted in its slot's `drops_v2.mtu` (an atomic add: one value for
//! all CPUs). A helper error (target device
//! gone) is not a drop here: the redirect goes ahead and the kernel decides, as before.
//!
//! GSO: `bpf_redirect_peer` hands a packet straight to the peer's stack, skipping the
//! target's `validate_xmit_skb`, where the kernel re-segments a GSO packet whose metadata it
//! cannot trust (tun marks every GSO packet from the VM `SKB_GSO_DODGY`) and drops one whose
//! gso_type does not fit its headers (`tcp4_gso_segment` on a `SKB_GSO_UDP_L4` packet, ...).
//! So a GSO packet (`gso_size` != 0) always takes plain `bpf_redirect`, the veth's xmit path
//! that mirred's egress redirect takes too; non-GSO packets keep `bpf_redirect_peer`.
//!
//! Source guard: a `peers` entry with `PEER_GUARD` (set only on the tap's entry, the VM → pod
//! direction, while the endpoint's guard is on) runs the checks of [`guard`] before the MTU
//! check; what they refuse is counted in `guard_drops_v2` and dropped (enforce) or delivered
//! (log). Every other packet pays one AND and one branch for it.
//!
//! The helpers only check their flags: with flags 0 they return `TC_ACT_REDIRECT` whatever
//! the ifindex, and the kernel looks the device up (and drops the packet if it is gone) after
//! the program has returned. So besides the skew guard, `redirect_errors` and the second
//! `errors` record count helper refusals only, which need a bug; a stale `peers` entry is prevented
//! in userspace (detach, disconnect and watch's unplug remove the entries with the devices).
//!
//! No aya-log: its formatting code was most of the program's instructions (and a 128 KiB
//! ring per load); a fixed record in a pinned array costs a few stores on the error paths.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod guard;

use aya_ebpf::{
    bindings::{
        bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, BPF_F_NO_PREALLOC, TC_ACT_REDIRECT, TC_ACT_SHOT,
        TC_ACT_UNSPEC,
    },
    helpers::{bpf_check_mtu, bpf_ktime_get_ns, bpf_redirect, bpf_redirect_peer},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use netshim_common::{
    Counters, DatapathEvent, Drops, EndpointRecord, PeerEntry, SandboxRecord, COUNTER_SLOTS,
    DATAPATH_EVENT_REDIRECT, DATAPATH_EVENT_SKEW, MAX_ENDPOINTS, MAX_PEERS, PEER_GUARD,
    PEER_KNOWN_FLAGS, PEER_REDIRECT_PEER,
};

// Not preallocated: a sandbox has a few entries of the 128 (two per endpoint), and the
// kernel charges a preallocated hash for all of them.
#[map(name = "peers")]
static PEERS: HashMap<u32, PeerEntry> = HashMap::pinned(MAX_PEERS, BPF_F_NO_PREALLOC);

#[map(name = "counters")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::pinned(COUNTER_SLOTS, 0);

// One value for all CPUs, added to atomically: drops are the rare path, and a per-CPU
// array costs its 64 slots once per possible CPU of the node.
#[map(name = "drops_v2")]
static DROPS: Array<Drops> = Array::pinned(COUNTER_SLOTS, 0);

#[map(name = "errors")]
static ERRORS: Array<DatapathEvent> = Array::pinned(COUNTER_SLOTS, 0);

#[map(name = "unmatched")]
static UNMATCHED: PerCpuArray<Counters> = PerCpuArray::pinned(1, 0);

// Read and written by userspace only; declared here so they are created and pinned with the
// rest and a later process finds the whole sandbox in one directory.
#[map(name = "endpoints")]
static ENDPOINTS: Array<EndpointRecord> = Array::pinned(MAX_ENDPOINTS, 0);

#[map(name = "sandbox")]
static SANDBOX: Array<SandboxRecord> = Array::pinned(1, 0);

#[classifier]
pub fn netshim_redirect(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the duration of the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let len = u64::from(ctx.len());
    // SAFETY: the value is copied out before any other map operation.
    let Some(entry) = (unsafe { PEERS.get(ifindex) }).copied() else {
        count(&UNMATCHED, 0, len, true);
        return TC_ACT_UNSPEC;
    };
    // Version skew guard (see the module docs): the only cost on the normal path.
    if entry.flags & !PEER_KNOWN_FLAGS != 0 {
        count(&COUNTERS, entry.slot, len, false);
        record(DATAPATH_EVENT_SKEW, ifindex, &entry, entry.flags);
        return TC_ACT_UNSPEC;
    }
    // Source guard of the VM's traffic (see the module docs).
    if entry.flags & PEER_GUARD != 0 && !guard::allows(&ctx, entry.slot >> 1) {
        return TC_ACT_SHOT as i32;
    }
    // MTU of the target device (see the module docs): the veth's forwarding rule for a
    // frame, per segment for a GSO packet.
    // SAFETY: the context pointer is valid for the duration of the program.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    let (len_diff, mtu_flags) = if gso {
        (0, u64::from(BPF_MTU_CHK_SEGS))
    } else {
        (-VLAN_HLEN, 0)
    };
    let mut mtu_len: u32 = 0;
    // SAFETY: plain helper call on the program's own context; mtu_len is a valid u32.
    let fits = unsafe {
        bpf_check_mtu(
            ctx.skb.skb.cast(),
            entry.peer_ifindex,
            &mut mtu_len,
            len_diff,
            mtu_flags,
        )
    };
    if fits > 0 {
        if let Some(d) = DROPS.get_ptr_mut(entry.slot) {
            // SAFETY: a valid, aligned map value for the program's run.
            unsafe { add_one(&raw mut (*d).mtu) };
        }
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: plain helper calls. bpf_redirect with flags 0: egress of the target device.
    // bpf_redirect_peer: ingress of the target veth's peer (userspace only sets the flag
    // when the target is a veth whose peer is in another netns), for non-GSO packets only.
    let verdict = if entry.flags & PEER_REDIRECT_PEER != 0 && !gso {
        unsafe { bpf_redirect_peer(entry.peer_ifindex, 0) }
    } else {
        unsafe { bpf_redirect(entry.peer_ifindex, 0) }
    } as i32;
    let redirected = verdict == TC_ACT_REDIRECT as i32;
    count(&COUNTERS, entry.slot, len, redirected);
    if !redirected {
        record(DATAPATH_EVENT_REDIRECT, ifindex, &entry, verdict as u32);
    }
    verdict
}

/// Adds 1 to a counter that every CPU may add to at once (one BPF atomic add).
///
/// # Safety
/// `p` points into a map value, valid and 8-byte aligned for the program's run.
#[inline(always)]
pub unsafe fn add_one(p: *mut u64) {
    // SAFETY: the caller's. `AtomicU64::fetch_add` does not exist for the BPF target (no
    // compare-and-swap in core's view of it), but the add itself is one BPF instruction.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
}

/// The VLAN tag a frame may carry beyond MTU + Ethernet header (`is_skb_forwardable`).
const VLAN_HLEN: i32 = 4;

#[inline(always)]
fn count(map: &PerCpuArray<Counters>, slot: u32, len: u64, ok: bool) {
    if let Some(c) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU value; TC programs run with migration disabled.
        let c = unsafe { &mut *c };
        if ok {
            c.packets += 1;
            c.bytes += len;
        } else {
            c.redirect_errors += 1;
        }
    }
}

/// Overwrites the slot's `errors` record (error paths only; see `DatapathEvent`).
#[inline(always)]
fn record(kind: u32, ifindex: u32, entry: &PeerEntry, detail: u32) {
    if let Some(e) = ERRORS.get_ptr_mut(entry.slot) {
        // SAFETY: plain helper call.
        let time_ns = unsafe { bpf_ktime_get_ns() };
        // SAFETY: an array value; a concurrent writer can at worst tear the record.
        unsafe {
            *e = DatapathEvent {
                kind,
                ifindex,
                detail,
                peer_ifindex: entry.peer_ifindex,
                known_flags: PEER_KNOWN_FLAGS,
                _pad: 0,
                time_ns,
            }
        };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
