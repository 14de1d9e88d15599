//! XDP on the sandbox eth0 (the veth end receiving from the pod side): every frame is
//! redirected through a one-slot DEVMAP to tap0_kata (tun's ndo_xdp_xmit: xdp_frame into the
//! tap ring, no skb, no TC, no qdisc). A failed map lookup falls back to XDP_PASS (then the
//! TC classifier handles the frame as before). Counts per CPU: [0] redirect verdicts, [1] pass.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{DevMap, PerCpuArray},
    programs::XdpContext,
};

#[map(name = "TAPMAP")]
static TAPMAP: DevMap = DevMap::with_max_entries(1, 0);

#[map(name = "XCOUNT")]
static XCOUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

#[xdp]
pub fn xdp_to_tap(_ctx: XdpContext) -> u32 {
    let verdict = TAPMAP
        .redirect(0, xdp_action::XDP_PASS as u64)
        .unwrap_or(xdp_action::XDP_PASS);
    let slot = if verdict == xdp_action::XDP_REDIRECT { 0 } else { 1 };
    if let Some(c) = XCOUNT.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, XDP runs with preemption disabled.
        unsafe { *c += 1 };
    }
    verdict
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
