//! xdp-loader OBJ DEV TAP [skb|drv]: run inside the sandbox netns. Loads the XDP object,
//! puts TAP's ifindex in TAPMAP[0], attaches xdp_to_tap to DEV (driver mode by default),
//! prints `attached prog_id=..`, then waits for EOF on stdin or SIGTERM/SIGINT; on exit it
//! prints the per-CPU counters summed and detaches (the link goes with the process; no pins).
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{DevMap, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf,
};

static STOP: AtomicBool = AtomicBool::new(false);
extern "C" fn on_sig(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(anyhow!("no interface {name}"));
    }
    Ok(i)
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        return Err(anyhow!("usage: xdp-loader OBJ DEV TAP [skb|drv]"));
    }
    let mode = match a.get(4).map(String::as_str) {
        Some("skb") => XdpMode::Skb,
        Some("default") => XdpMode::Default,
        _ => XdpMode::Driver,
    };
    let data = std::fs::read(&a[1]).with_context(|| a[1].clone())?;
    let mut ebpf = Ebpf::load(&data).context("load object")?;
    let tap = ifindex(&a[3])?;
    {
        let mut m: DevMap<_> = DevMap::try_from(ebpf.map_mut("TAPMAP").context("TAPMAP")?)?;
        m.set(0, tap, None, 0).context("devmap set")?;
    }
    let prog: &mut Xdp = ebpf
        .program_mut("xdp_to_tap")
        .context("program xdp_to_tap")?
        .try_into()?;
    prog.load().context("prog load")?;
    let id = prog.info().map(|i| i.id()).unwrap_or(0);
    let link = prog.attach(&a[2], mode).context("xdp attach")?;
    println!("attached prog_id={id} dev={} tap={}({tap}) mode={mode:?}", a[2], a[3]);
    unsafe {
        libc::signal(libc::SIGTERM, on_sig as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_sig as libc::sighandler_t);
    }
    // Wait: EOF on stdin (a thread) or a signal.
    std::thread::spawn(|| {
        let mut b = [0u8; 64];
        while let Ok(n) = std::io::stdin().read(&mut b) {
            if n == 0 {
                break;
            }
        }
        STOP.store(true, Ordering::SeqCst);
    });
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    prog.detach(link).context("detach")?;
    let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("XCOUNT").context("XCOUNT")?)?;
    let sum = |k: u32| -> u64 { counts.get(&k, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    println!("xdp_counts redirect={} pass={}", sum(0), sum(1));
    println!("detached");
    Ok(())
}
