//! edt-loader OBJ ETH TAP [probe]: run inside the sandbox netns. Loads the edt-tc object, puts the
//! ifindexes in CFG, attaches `to_tap` to ETH ingress and `from_tap` to TAP ingress (TCX links,
//! owned by this process; no pins) and holds a BPF_ENABLE_STATS(RUN_TIME) fd while running.
//! With `probe`, also attaches probe_tap / probe_eth to TAP / ETH egress.
//! stdin commands, one per line:
//!   set IDX VAL   CFG[IDX] = VAL (2 rx bps, 3 tx bps, 4 tx_mode, 5 horizon ns, 6 burst B, 7 rx_mode)
//!   reset         STATE[*] = 0, STATS zeroed
//!   stats         prints `stats {json}` (STATS summed over CPUs, run_cnt/run_time_ns per prog)
//! EOF on stdin (or SIGTERM/SIGINT) detaches and exits.
use std::io::BufRead;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, PerCpuArray, PerCpuValues},
    programs::{tc::TcAttachType, SchedClassifier},
    util::nr_cpus,
    Ebpf,
};

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(anyhow!("no interface {name}"));
    }
    Ok(i)
}

fn set(ebpf: &mut Ebpf, map: &str, i: u32, v: u64) -> Result<()> {
    let mut m: Array<_, u64> = Array::try_from(ebpf.map_mut(map).context("map")?)?;
    m.set(i, v, 0)?;
    Ok(())
}

fn stats(ebpf: &Ebpf) -> Result<String> {
    let m: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("STATS").context("STATS")?)?;
    let mut s = Vec::new();
    for k in 0..8u32 {
        s.push(m.get(&k, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0));
    }
    let mut out = format!("{{\"stats\":{:?}", s);
    for p in ["to_tap", "from_tap"] {
        let prog: &SchedClassifier = ebpf.program(p).context("prog")?.try_into()?;
        let info = prog.info()?;
        out += &format!(
            ",\"{p}\":{{\"run_cnt\":{},\"run_time_ns\":{}}}",
            info.run_count(),
            info.run_time().as_nanos()
        );
    }
    let pm: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("PROBE").context("PROBE")?)?;
    let mut ps = Vec::new();
    for k in 0..16u32 {
        ps.push(pm.get(&k, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0));
    }
    out += &format!(",\"probe\":{:?}}}", ps);
    Ok(out)
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        return Err(anyhow!("usage: edt-loader OBJ ETH TAP"));
    }
    let data = std::fs::read(&a[1]).with_context(|| a[1].clone())?;
    let mut ebpf = Ebpf::load(&data).context("load object")?;
    let eth = ifindex(&a[2])?;
    let tap = ifindex(&a[3])?;
    set(&mut ebpf, "CFG", 0, tap as u64)?;
    set(&mut ebpf, "CFG", 1, eth as u64)?;
    set(&mut ebpf, "CFG", 5, 2_000_000_000)?;
    let _stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enable_stats")?;
    let mut links = Vec::new();
    let mut hooks = vec![
        ("to_tap", a[2].clone(), TcAttachType::Ingress),
        ("from_tap", a[3].clone(), TcAttachType::Ingress),
    ];
    if a.get(4).map(String::as_str) == Some("probe") {
        hooks.push(("probe_tap", a[3].clone(), TcAttachType::Egress));
        hooks.push(("probe_eth", a[2].clone(), TcAttachType::Egress));
    }
    for (p, dev, at) in hooks {
        let prog: &mut SchedClassifier = ebpf.program_mut(p).context("prog")?.try_into()?;
        prog.load().with_context(|| format!("load {p}"))?;
        let l = prog
            .attach(&dev, at)
            .with_context(|| format!("attach {p} {dev}"))?;
        links.push((p, l));
    }
    println!("attached eth={}({eth}) tap={}({tap})", a[2], a[3]);
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["set", i, v] => {
                set(&mut ebpf, "CFG", i.parse()?, v.parse()?)?;
                println!("ok set {i} {v}");
            }
            ["reset"] => {
                for i in 0..6 {
                    set(&mut ebpf, "STATE", i, 0)?;
                }
                let mut m: PerCpuArray<_, u64> =
                    PerCpuArray::try_from(ebpf.map_mut("STATS").context("STATS")?)?;
                let n = nr_cpus().map_err(|e| anyhow!("{e:?}"))?;
                for k in 0..8u32 {
                    m.set(k, PerCpuValues::try_from(vec![0u64; n])?, 0)?;
                }
                let mut pm: PerCpuArray<_, u64> =
                    PerCpuArray::try_from(ebpf.map_mut("PROBE").context("PROBE")?)?;
                for k in 0..16u32 {
                    pm.set(k, PerCpuValues::try_from(vec![0u64; n])?, 0)?;
                }
                println!("ok reset");
            }
            ["stats"] => println!("stats {}", stats(&ebpf)?),
            _ => println!("err {line}"),
        }
    }
    for (p, l) in links {
        let prog: &mut SchedClassifier = ebpf.program_mut(p).context("prog")?.try_into()?;
        prog.detach(l)?;
    }
    println!("detached");
    Ok(())
}
