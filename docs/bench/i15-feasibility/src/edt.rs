//! Feasibility-study TC classifiers for per-endpoint rate limits (netshim issue 15).
//!
//! `to_tap`   on the sandbox eth0 ingress: pod -> VM (the "rx" limit), bpf_redirect to the tap
//!            egress; rx_mode 0 = plain, 1 = EDT via bpf_skb_set_tstamp(MONO) (fq on the tap
//!            honours it), 2 = EDT by writing skb->tstamp directly (expected to be lost).
//! `from_tap` on tap0_kata ingress: VM -> pod (the "tx" limit); tx_mode 0 = plain bpf_redirect
//!            to eth0 egress, 1 = EDT + bpf_redirect (fq on eth0), 2 = token-bucket policer +
//!            bpf_redirect_peer, 3 = plain bpf_redirect_peer.
//!            rx_mode 3 = token-bucket policer + bpf_redirect (no qdisc needed).
//! `probe_tap` / `probe_eth` (optional, TC egress of tap0_kata / eth0): count how many skbs
//!            still carry a (mono, future) delivery time when they reach the device's egress.
//! Shared (not per-CPU) state, plain volatile loads/stores (racy like Cilium's EDT map).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_redirect_peer, bpf_skb_set_tstamp},
    macros::{classifier, map},
    maps::{Array, PerCpuArray},
    programs::TcContext,
};

// CFG: 0 tap ifindex, 1 eth0 ifindex, 2 rx rate bps, 3 tx rate bps, 4 tx_mode,
//      5 horizon ns, 6 policer burst bytes, 7 rx_mode
#[map(name = "CFG")]
static CFG: Array<u64> = Array::with_max_entries(8, 0);
// STATE: 0 rx t_last, 1 tx t_last, 2/3 tx policer tokens (bits*1e9) / t_last, 4/5 rx policer
#[map(name = "STATE")]
static STATE: Array<u64> = Array::with_max_entries(6, 0);
// PROBE (per CPU), base 0 tap egress, 8 eth0 egress: +0 pkts, +1 tstamp != 0, +2 tstamp_type
// MONO, +3 tstamp > now, +4 sum (tstamp - now) ns of those, +5 tstamp_type other
#[map(name = "PROBE")]
static PROBE: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);
// STATS (per CPU): 0 rx pkts, 1 rx bytes, 2 rx drops, 3 tx pkts, 4 tx bytes, 5 tx drops,
//                  6 set_tstamp errors, 7 delayed (t_next > now) pkts
#[map(name = "STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(8, 0);

#[inline(always)]
fn cfg(i: u32) -> u64 {
    match CFG.get(i) {
        Some(v) => *v,
        None => 0,
    }
}

#[inline(always)]
fn bump(i: u32, by: u64) {
    if let Some(p) = STATS.get_ptr_mut(i) {
        unsafe { *p += by };
    }
}

/// BPF_SKB_TSTAMP_DELIVERY_MONO (aya-ebpf-bindings 0.2.0: _bindgen_ty_28::BPF_SKB_TSTAMP_DELIVERY_MONO).
const BPF_SKB_TSTAMP_DELIVERY_MONO: u32 = 1;
const OK: i32 = 0;
const DROP: i32 = 1;

/// EDT: t_next = max(now, t_last) + len*8e9/rate; drop beyond the horizon.
#[inline(always)]
fn edt(ctx: &TcContext, rate: u64, slot: u32, direct: bool) -> i32 {
    let len = ctx.len() as u64;
    let now = unsafe { bpf_ktime_get_ns() };
    let delay = len * 8_000_000_000 / rate;
    let p = match STATE.get_ptr_mut(slot) {
        Some(p) => p,
        None => return OK,
    };
    let last = unsafe { core::ptr::read_volatile(p) };
    let base = if last > now { last } else { now };
    let t_next = base + delay;
    let mut horizon = cfg(5);
    if horizon == 0 {
        horizon = 2_000_000_000;
    }
    if t_next - now > horizon {
        return DROP;
    }
    unsafe { core::ptr::write_volatile(p, t_next) };
    if last > now {
        bump(7, 1);
    }
    if direct {
        unsafe { (*ctx.skb.skb).tstamp = t_next };
    } else if unsafe { bpf_skb_set_tstamp(ctx.skb.skb, t_next, BPF_SKB_TSTAMP_DELIVERY_MONO) } != 0 {
        bump(6, 1);
    }
    OK
}

/// Token bucket policer in bits*1e9 units (refill = elapsed_ns * rate_bps).
#[inline(always)]
fn police(ctx: &TcContext, rate: u64, tslot: u32, lslot: u32) -> i32 {
    let len = ctx.len() as u64;
    let now = unsafe { bpf_ktime_get_ns() };
    let (tp, lp) = match (STATE.get_ptr_mut(tslot), STATE.get_ptr_mut(lslot)) {
        (Some(a), Some(b)) => (a, b),
        _ => return OK,
    };
    let burst = cfg(6) * 8_000_000_000;
    let mut tokens = unsafe { core::ptr::read_volatile(tp) };
    let last = unsafe { core::ptr::read_volatile(lp) };
    let mut el = now.wrapping_sub(last);
    if el > 1_000_000_000 {
        el = 1_000_000_000;
    }
    tokens += el * rate;
    if tokens > burst {
        tokens = burst;
    }
    unsafe { core::ptr::write_volatile(lp, now) };
    let cost = len * 8_000_000_000;
    if tokens < cost {
        unsafe { core::ptr::write_volatile(tp, tokens) };
        return DROP;
    }
    unsafe { core::ptr::write_volatile(tp, tokens - cost) };
    OK
}

#[classifier]
pub fn to_tap(ctx: TcContext) -> i32 {
    let rate = cfg(2);
    let mode = cfg(7);
    let r = if rate == 0 {
        OK
    } else if mode == 3 {
        police(&ctx, rate, 4, 5)
    } else if mode != 0 {
        edt(&ctx, rate, 0, mode == 2)
    } else {
        OK
    };
    if r == DROP {
        bump(2, 1);
        return TC_ACT_SHOT as i32;
    }
    bump(0, 1);
    bump(1, ctx.len() as u64);
    unsafe { bpf_redirect(cfg(0) as u32, 0) as i32 }
}

#[classifier]
pub fn from_tap(ctx: TcContext) -> i32 {
    let rate = cfg(3);
    let mode = cfg(4);
    let eth0 = cfg(1) as u32;
    if rate != 0 {
        let r = match mode {
            1 => edt(&ctx, rate, 1, false),
            2 => police(&ctx, rate, 2, 3),
            _ => OK,
        };
        if r == DROP {
            bump(5, 1);
            return TC_ACT_SHOT as i32;
        }
    }
    bump(3, 1);
    bump(4, ctx.len() as u64);
    if mode >= 2 {
        unsafe { bpf_redirect_peer(eth0, 0) as i32 }
    } else {
        unsafe { bpf_redirect(eth0, 0) as i32 }
    }
}

#[inline(always)]
fn pbump(i: u32, by: u64) {
    if let Some(p) = PROBE.get_ptr_mut(i) {
        unsafe { *p += by };
    }
}

#[inline(always)]
fn probe(ctx: &TcContext, base: u32) -> i32 {
    let (ts, ty) = unsafe { ((*ctx.skb.skb).tstamp, (*ctx.skb.skb).tstamp_type) };
    let now = unsafe { bpf_ktime_get_ns() };
    pbump(base, 1);
    if ts != 0 {
        pbump(base + 1, 1);
    }
    if ty == 1 {
        pbump(base + 2, 1);
    } else if ty != 0 {
        pbump(base + 5, 1);
    }
    if ts > now {
        pbump(base + 3, 1);
        pbump(base + 4, ts - now);
    }
    0
}

#[classifier]
pub fn probe_tap(ctx: TcContext) -> i32 {
    probe(&ctx, 0)
}

#[classifier]
pub fn probe_eth(ctx: TcContext) -> i32 {
    probe(&ctx, 8)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
