//! The bench's `setup` section (`--paths setup`): what starting and stopping a sandbox costs,
//! measured on the netshim binary the way a runtime calls it (one process per call, wall time
//! from spawn to exit), in throwaway pod namespaces ([`pod`]).
//!
//! - [`latency`]: attach/detach p50/p99 per mode (ebpf with each attach mode and with its
//!   default, mirred, macvtap, none), a fresh pod per sample, rounds interleaved with the
//!   order rotated each round.
//! - [`concurrent`]: N pods attached 8 at a time, then detached the same way: wall time and
//!   sandboxes/s (ebpf modes and mirred side by side).
//! - [`memory`]: kernel memory (`memlock` of each BPF object's fdinfo, via bpftool) per
//!   attached sandbox, objects used by several sandboxes counted once as "shared".
//! - [`hotplug`]: `netshim watch` on a pod, a second veth added: time from just before the
//!   link is added to the first probe frame read from the new tap.
//!
//! With `--compare-netshim` every variant also runs with the other binary, interleaved
//! (`<mode>@<label>`), and the report gives this build / other ratios.

mod concurrent;
mod hotplug;
mod latency;
mod memory;
mod pod;
mod report;

pub use report::SetupResults;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How the sandbox is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--tc-backend ebpf` with the binary's default attach mode (`auto`).
    Ebpf,
    EbpfTcx,
    EbpfClsBpf,
    Mirred,
    Macvtap,
    None,
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::Ebpf,
        Mode::EbpfTcx,
        Mode::EbpfClsBpf,
        Mode::Mirred,
        Mode::Macvtap,
        Mode::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::EbpfTcx => "ebpf-tcx",
            Mode::EbpfClsBpf => "ebpf-cls-bpf",
            Mode::Mirred => "mirred",
            Mode::Macvtap => "macvtap",
            Mode::None => "none",
        }
    }

    /// attach's (and watch's) flags for this mode.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Ebpf => &["--tc-backend", "ebpf"],
            Mode::EbpfTcx => &["--tc-backend", "ebpf", "--ebpf-attach", "tcx"],
            Mode::EbpfClsBpf => &["--tc-backend", "ebpf", "--ebpf-attach", "cls-bpf"],
            Mode::Mirred => &["--tc-backend", "mirred"],
            Mode::Macvtap => &["--model", "macvtap"],
            Mode::None => &["--model", "none"],
        }
    }

    pub fn is_ebpf(self) -> bool {
        matches!(self, Mode::Ebpf | Mode::EbpfTcx | Mode::EbpfClsBpf)
    }
}

/// A netshim binary under test: this build (label None) or `--compare-netshim`'s.
#[derive(Clone, Debug)]
pub struct Bin {
    pub path: PathBuf,
    pub label: Option<String>,
}

/// One thing measured: a mode with a binary.
#[derive(Clone, Debug)]
pub struct Variant {
    pub mode: Mode,
    pub bin: Bin,
}

impl Variant {
    /// `mode` or `mode@label`.
    pub fn id(&self) -> String {
        match &self.bin.label {
            Some(l) => format!("{}@{l}", self.mode.name()),
            None => self.mode.name().to_string(),
        }
    }
}

/// Every mode in `modes` with every binary, each other-binary twin right after its mode.
pub fn variants(modes: &[Mode], bins: &[Bin]) -> Vec<Variant> {
    modes
        .iter()
        .flat_map(|&mode| {
            bins.iter().map(move |bin| Variant {
                mode,
                bin: bin.clone(),
            })
        })
        .collect()
}

/// `items` rotated left by `round - 1` (round 1: as given): no variant always goes first.
pub fn rotated<T: Clone>(items: &[T], round: u32) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = (round as usize).saturating_sub(1) % v.len();
        v.rotate_left(k);
    }
    v
}

/// One variant's figures of one part of the section, and what failed.
pub struct Row<T> {
    pub id: String,
    pub mode: &'static str,
    /// Measured with `--compare-netshim`'s binary.
    pub other_binary: bool,
    pub errors: Vec<String>,
    pub data: T,
}

/// `rounds` rounds of `sample(variant, its figures)` over every variant, in the order
/// rotated by one each round; a failed sample is printed and kept in its row's errors.
pub fn interleaved<T: Default>(
    variants: &[Variant],
    rounds: u32,
    what: &str,
    mut sample: impl FnMut(&Variant, &mut T) -> Result<()>,
) -> Vec<Row<T>> {
    let mut rows: Vec<Row<T>> = variants
        .iter()
        .map(|v| Row {
            id: v.id(),
            mode: v.mode.name(),
            other_binary: v.bin.label.is_some(),
            errors: Vec::new(),
            data: T::default(),
        })
        .collect();
    let order: Vec<usize> = (0..variants.len()).collect();
    for round in 1..=rounds {
        for i in rotated(&order, round) {
            if let Err(e) = sample(&variants[i], &mut rows[i].data) {
                println!("setup: {} {what} round {round}: {e:#}", variants[i].id());
                rows[i].errors.push(format!("{what} round {round}: {e:#}"));
            }
        }
        if rounds > 1 {
            println!("setup: {what} round {round}/{rounds} done");
        }
    }
    rows
}

/// Sizes of the section.
#[derive(Clone, Copy, Debug)]
pub struct SetupConfig {
    /// Interleaved attach/detach rounds (one sample per variant per round).
    pub latency_rounds: u32,
    /// Sandboxes of the concurrent run, and how many at a time.
    pub concurrent: usize,
    pub concurrency: usize,
    pub concurrent_rounds: u32,
    /// Sandboxes attached per ebpf mode for the memory figure.
    pub memory_sandboxes: usize,
    pub hotplug_rounds: u32,
}

impl SetupConfig {
    pub fn new(quick: bool) -> SetupConfig {
        if quick {
            SetupConfig {
                latency_rounds: 3,
                concurrent: 20,
                concurrency: 8,
                concurrent_rounds: 1,
                memory_sandboxes: 3,
                hotplug_rounds: 2,
            }
        } else {
            SetupConfig {
                latency_rounds: 20,
                concurrent: 100,
                concurrency: 8,
                concurrent_rounds: 3,
                memory_sandboxes: 10,
                hotplug_rounds: 10,
            }
        }
    }

    /// Modes of the concurrent run: ebpf's default and mirred (each ebpf mode in full runs).
    fn concurrent_modes(&self) -> Vec<Mode> {
        if self.concurrent_rounds > 1 {
            vec![Mode::Ebpf, Mode::EbpfTcx, Mode::EbpfClsBpf, Mode::Mirred]
        } else {
            vec![Mode::Ebpf, Mode::Mirred]
        }
    }
}

/// One netshim call: wall time from spawn to exit, and its stdout; fails unless it exits 0.
pub fn timed(cmd: &mut Command) -> Result<(Duration, String)> {
    let start = Instant::now();
    let out = crate::cmd::capture(cmd)?;
    let took = start.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "`{}` failed ({}): {}",
        crate::cmd::display(cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `netshim attach --netns POD <mode flags> --json`.
pub fn attach_cmd(v: &Variant, netns: &str) -> Command {
    let mut c = Command::new(&v.bin.path);
    c.args(["attach", "--netns", netns])
        .args(v.mode.args())
        .arg("--json");
    c
}

/// `netshim detach --netns POD --json`.
pub fn detach_cmd(bin: &Path, netns: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(["detach", "--netns", netns, "--json"]);
    c
}

/// Run the whole section. `tag` names its namespaces; needs a live cleanup guard.
pub fn run(
    cfg: &SetupConfig,
    netshim: &Path,
    other: Option<(&Path, &str)>,
    tag: &str,
) -> Result<SetupResults> {
    let mut bins = vec![Bin {
        path: netshim.to_path_buf(),
        label: None,
    }];
    if let Some((path, label)) = other {
        bins.push(Bin {
            path: path.to_path_buf(),
            label: Some(label.to_string()),
        });
    }
    let node = pod::Node::create(&format!("{tag}-su")).context("setup: node netns")?;
    let mut results = SetupResults::new(*cfg, &bins);
    let started = Instant::now();
    let all = variants(&Mode::ALL, &bins);
    results.latency = crate::cmd::step("setup: attach/detach latency", || {
        Ok(latency::run(&node, &all, cfg.latency_rounds))
    })?;
    let conc = variants(&cfg.concurrent_modes(), &bins);
    results.concurrent = crate::cmd::step("setup: concurrent attach/detach", || {
        Ok(concurrent::run(&node, &conc, cfg))
    })?;
    let ebpf: Vec<Mode> = Mode::ALL.into_iter().filter(|m| m.is_ebpf()).collect();
    results.memory = crate::cmd::step("setup: kernel memory per sandbox", || {
        Ok(memory::run(
            &node,
            &variants(&ebpf, &bins),
            cfg.memory_sandboxes,
        ))
    })?;
    let hot = variants(&[Mode::Ebpf, Mode::Mirred], &bins);
    results.hotplug = crate::cmd::step("setup: watch hot-plug", || {
        Ok(hotplug::run(&node, &hot, cfg.hotplug_rounds))
    })?;
    results.seconds = started.elapsed().as_secs_f64();
    Ok(results)
}

/// p-th percentile (nearest rank) of `v` (sorted here); None when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 99.0), Some(20.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn rounds_rotate_the_order_and_twins_follow_their_mode() {
        let bins = [
            Bin {
                path: "/a".into(),
                label: None,
            },
            Bin {
                path: "/b".into(),
                label: Some("base".into()),
            },
        ];
        let v = variants(&[Mode::Ebpf, Mode::Mirred], &bins);
        let ids: Vec<String> = v.iter().map(Variant::id).collect();
        assert_eq!(ids, ["ebpf", "ebpf@base", "mirred", "mirred@base"]);
        let r2: Vec<String> = rotated(&v, 2).iter().map(Variant::id).collect();
        assert_eq!(r2, ["ebpf@base", "mirred", "mirred@base", "ebpf"]);
        assert_eq!(rotated(&v, 5).len(), 4);
        assert_eq!(rotated(&ids, 5), ids);
    }

    #[test]
    fn pod_addresses_are_distinct_30s() {
        assert_eq!(
            pod::pod_addrs(0),
            ("10.210.0.1/30".to_string(), "10.210.0.2/30".to_string())
        );
        assert_eq!(pod::pod_addrs(64).1, "10.210.1.2/30");
        assert_ne!(pod::pod_addrs(63), pod::pod_addrs(64));
    }
}
