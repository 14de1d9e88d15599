//! Where a sandbox path's time goes towards the VM, step by step: UDP 64 B at a fixed rate
//! every path carries ([`RATE_PPS`]), `perf record -a -g` (cpu-clock, a fixed period of
//! [`PERIOD_NS`]) over a window inside the run, and each kernel step's inclusive samples
//! turned into ns per frame taken into the VMM's queue in that window. At a fixed rate the
//! client, the stand-in and the guest do the same work on every path, so the steps differ
//! only where the datapaths do. Skipped (with a note) where `perf` is not installed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::measure::{iperf, Endpoints, IperfTest};
use super::paths::{self, Device};
use super::vm_queue;

/// The offered load: every sandbox path delivers it without loss on this kind of machine.
pub const RATE_PPS: u32 = 100_000;
/// One cpu-clock sample per 250 µs of CPU time.
pub const PERIOD_NS: u64 = 250_000;

/// A step of the path towards the VM: the kernel function (or BPF program, by name) whose
/// inclusive time it is, the key its ns per frame is stored under, and its label.
pub struct Step {
    pub symbol: Symbol,
    pub key: &'static str,
    pub label: &'static str,
}

/// The steps, outermost first. `process_backlog` is the whole receive in the sandbox netns
/// (the client's frames arrive through the veth's backlog): the datapath's cost per frame.
/// How a step's symbol appears in `perf report`.
#[derive(Clone, Copy)]
pub enum Symbol {
    /// A kernel function (a `.constprop.0`-style suffix is ignored).
    Kernel(&'static str),
    /// A BPF program: `bpf_prog_<tag>_<name>`.
    Prog(&'static str),
}

impl Symbol {
    fn matches(self, sym: &str) -> bool {
        let base = sym.split('.').next().unwrap_or(sym);
        match self {
            Symbol::Kernel(name) => base == name,
            Symbol::Prog(name) => base
                .strip_prefix("bpf_prog_")
                .and_then(|rest| rest.strip_suffix(name))
                .is_some_and(|tag| tag.ends_with('_')),
        }
    }
}

pub const STEPS: [Step; 8] = [
    Step {
        symbol: Symbol::Kernel("process_backlog"),
        key: "profile_receive_ns",
        label: "sandbox receive, all of it (`process_backlog`)",
    },
    Step {
        symbol: Symbol::Kernel("tc_run"),
        key: "profile_tc_ns",
        label: "TC ingress hook and its programs (`tc_run`)",
    },
    Step {
        symbol: Symbol::Prog("netshim_redirect"),
        key: "profile_prog_ns",
        label: "netshim's program (`bpf_prog_…_netshim_redirect`)",
    },
    Step {
        symbol: Symbol::Kernel("__bpf_redirect"),
        key: "profile_redirect_ns",
        label: "redirect: `dev_queue_xmit` on the tap (`__bpf_redirect`)",
    },
    Step {
        symbol: Symbol::Kernel("sch_direct_xmit"),
        key: "profile_qdisc_xmit_ns",
        label: "the tap's qdisc handing the frame to the driver (`sch_direct_xmit`)",
    },
    Step {
        symbol: Symbol::Kernel("tun_net_xmit"),
        key: "profile_tun_xmit_ns",
        label: "into the tap's ring (`tun_net_xmit`)",
    },
    Step {
        symbol: Symbol::Kernel("macvlan_handle_frame"),
        key: "profile_macvlan_ns",
        label: "macvtap's rx_handler (`macvlan_handle_frame`)",
    },
    Step {
        symbol: Symbol::Kernel("tap_handle_frame"),
        key: "profile_macvtap_ring_ns",
        label: "into the macvtap's ring (`tap_handle_frame`)",
    },
];

/// Whether `perf` can be run here.
pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Profile `seconds` (at least 1) of the paced run towards the VM; ns per frame into the
/// VMM's queue for every step that had samples.
pub fn profile(ep: &Endpoints, queue: &Device, seconds: u32) -> Result<Vec<(&'static str, f64)>> {
    let window = seconds.max(1);
    let data = perf_data_path();
    let _remove = RemoveOnDrop(data.clone());
    let (frames, load) = std::thread::scope(|s| {
        // The load starts first and ends after the window.
        let load = s.spawn(|| iperf(ep, IperfTest::Udp64Paced { pps: RATE_PPS }, window + 2));
        std::thread::sleep(Duration::from_secs(1));
        let frames = (|| {
            let before = vm_queue::read(queue)?;
            record(&data, window)?;
            Ok::<_, anyhow::Error>(vm_queue::read(queue)?.since(before).delivered)
        })();
        let load = load
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("iperf3 thread panicked")));
        (frames, load)
    });
    load.context("paced UDP 64 B load")?;
    let frames = frames?;
    ensure!(frames > 0, "no frame reached the VMM's queue in the window");
    let total = samples(&data)?;
    let report = perf(&[
        "report",
        "-i",
        &data.display().to_string(),
        "--children",
        "--sort",
        "sym",
        "--stdio",
        "-q",
        "-g",
        "none",
    ])?;
    Ok(ns_per_frame(&report, total, frames))
}

/// From `perf report --children --sort sym -g none` text: each step's inclusive share of
/// `total` samples, as ns of CPU per frame.
pub fn ns_per_frame(report: &str, total: u64, frames: u64) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for step in &STEPS {
        let pct = report.lines().find_map(|line| {
            let mut cols = line.split_whitespace();
            let children = cols.next()?.strip_suffix('%')?.parse::<f64>().ok()?;
            let sym = cols.last()?;
            step.symbol.matches(sym).then_some(children)
        });
        if let Some(pct) = pct {
            let ns = pct / 100.0 * total as f64 * PERIOD_NS as f64 / frames as f64;
            out.push((step.key, ns));
        }
    }
    out
}

fn record(data: &std::path::Path, seconds: u32) -> Result<()> {
    let period = PERIOD_NS.to_string();
    let secs = seconds.to_string();
    let out = data.display().to_string();
    perf(&[
        "record",
        "-q",
        "-a",
        "-g",
        "-e",
        "cpu-clock",
        "-c",
        &period,
        "-o",
        &out,
        "--",
        "sleep",
        &secs,
    ])
    .map(|_| ())
}

/// Samples in the recording (one line each from `perf script -F cpu`).
fn samples(data: &std::path::Path) -> Result<u64> {
    let text = perf(&["script", "-i", &data.display().to_string(), "-F", "cpu"])?;
    let n = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    ensure!(n > 0, "perf recorded no sample");
    Ok(n)
}

/// `perf ARGS`, bounded, its stdout (the bench's runner: fails with stderr on a non-zero exit).
fn perf(args: &[&str]) -> Result<String> {
    paths::quiet(Command::new("perf").args(args))
}

fn perf_data_path() -> PathBuf {
    std::env::temp_dir().join(format!("netshim-bench-perf-{}.data", std::process::id()))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("data.old"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "    12.27%     0.80%  [k] __dev_queue_xmit
     7.32%     0.18%  [k] process_backlog
     6.28%     0.54%  [k] __netif_receive_skb_core.constprop.0
     4.20%     0.25%  [k] __bpf_redirect
     2.33%     0.52%  [k] tun_net_xmit
     1.40%     0.10%  [k] tc_run
     0.71%     0.19%  [k] bpf_prog_8026d520c847a8c4_netshim_redirect
";

    #[test]
    fn steps_become_ns_per_frame() {
        // 16,000 samples of 250 µs over 400,000 frames: 1% = 100 ns per frame.
        let got = ns_per_frame(REPORT, 16_000, 400_000);
        let get = |k: &str| got.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        assert!((get("profile_receive_ns").unwrap() - 732.0).abs() < 0.01);
        assert!((get("profile_redirect_ns").unwrap() - 420.0).abs() < 0.01);
        assert!((get("profile_prog_ns").unwrap() - 71.0).abs() < 0.01);
        assert!((get("profile_tc_ns").unwrap() - 140.0).abs() < 0.01);
        assert_eq!(get("profile_macvlan_ns"), None, "no samples, no figure");
        assert_eq!(get("profile_qdisc_xmit_ns"), None);
    }
}
