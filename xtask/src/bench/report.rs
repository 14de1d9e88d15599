//! Medians, ratios, and the three outputs: results.json, results.md, chart.svg.

use crate::bench::paths::{PathSpec, Topo, OFFLOAD_FEATURES};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod markdown;
mod svg;
pub use markdown::{markdown, offload_markdown};
pub use svg::{esc, open as svg_open, svg};

/// A reported metric.
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub decimals: usize,
}

pub const TCP1: &str = "tcp1_gbps";
pub const TCP1_REVERSE: &str = "tcp1_rev_gbps";
pub const TCP4: &str = "tcp4_gbps";
pub const UDP64: &str = "udp64_kpps";
pub const UDP64_REVERSE: &str = "udp64_rev_kpps";
/// Extras of the sandbox paths' UDP 64 B run: frames into the VMM's queue and dropped at it,
/// per second (see `vm_queue.rs`).
pub const UDP64_VM_QUEUE: &str = "udp64_vm_queue_kpps";
pub const UDP64_VM_DROPPED: &str = "udp64_vm_dropped_kpps";
pub const RR_P50: &str = "rr_p50_us";
pub const RR_P99: &str = "rr_p99_us";
pub const RR_SPIN_P50: &str = "rr_spin_p50_us";
pub const CPU: &str = "cpu_s_per_gb";
pub const UDP_CPU: &str = "udp64_cpu_ns_per_pkt";
pub const UDP_SOFTIRQ: &str = "udp64_softirq_ns_per_pkt";
pub const PROG: &str = "prog_ns_per_pkt";
pub const PROG_REVERSE: &str = "prog_rev_ns_per_pkt";

pub const METRICS: &[Metric] = &[
    Metric {
        key: TCP1,
        label: "TCP 1 stream",
        unit: "Gbps",
        higher_is_better: true,
        decimals: 2,
    },
    Metric {
        key: TCP1_REVERSE,
        label: "TCP 1 stream reverse",
        unit: "Gbps",
        higher_is_better: true,
        decimals: 2,
    },
    Metric {
        key: TCP4,
        label: "TCP 4 streams",
        unit: "Gbps",
        higher_is_better: true,
        decimals: 2,
    },
    Metric {
        key: UDP64,
        label: "UDP 64 B rx",
        unit: "kpps",
        higher_is_better: true,
        decimals: 0,
    },
    Metric {
        key: UDP64_REVERSE,
        label: "UDP 64 B rx reverse",
        unit: "kpps",
        higher_is_better: true,
        decimals: 0,
    },
    Metric {
        key: RR_P50,
        label: "RR p50",
        unit: "µs",
        higher_is_better: false,
        decimals: 1,
    },
    Metric {
        key: RR_P99,
        label: "RR p99",
        unit: "µs",
        higher_is_better: false,
        decimals: 1,
    },
    Metric {
        key: RR_SPIN_P50,
        label: "RR p50 busy-poll",
        unit: "µs",
        higher_is_better: false,
        decimals: 1,
    },
    Metric {
        key: CPU,
        label: "CPU per GB",
        unit: "s/GB",
        higher_is_better: false,
        decimals: 3,
    },
    Metric {
        key: UDP_CPU,
        label: "UDP CPU per pkt",
        unit: "ns",
        higher_is_better: false,
        decimals: 0,
    },
    Metric {
        key: UDP_SOFTIRQ,
        label: "UDP softirq per pkt",
        unit: "ns",
        higher_is_better: false,
        decimals: 0,
    },
    Metric {
        key: PROG,
        label: "eBPF prog per pkt",
        unit: "ns",
        higher_is_better: false,
        decimals: 0,
    },
    Metric {
        key: PROG_REVERSE,
        label: "eBPF prog per pkt reverse",
        unit: "ns",
        higher_is_better: false,
        decimals: 0,
    },
];

/// One (round, path): the metric values that were measured, extras, and what failed.
#[derive(Default)]
pub struct RoundResult {
    pub round: u32,
    pub values: BTreeMap<&'static str, f64>,
    /// Side figures kept in the JSON only (retransmits, UDP sent rate, RTT average...).
    pub extra: BTreeMap<&'static str, f64>,
    pub errors: Vec<String>,
    pub seconds: f64,
}

/// Everything about one path over the run.
pub struct PathRun {
    pub spec: PathSpec,
    pub unavailable: Option<String>,
    pub rounds: Vec<RoundResult>,
    /// device label -> feature -> value, taken after setup in the first round.
    pub offloads: BTreeMap<String, BTreeMap<String, String>>,
    /// The last round's `netshim stats --json`, vm-standin summary, connect/attach output.
    pub netshim_stats: Option<Value>,
    pub standin: Option<Value>,
    pub setup_output: Option<Value>,
    /// `--compare-netshim`: the other netshim binary this twin runs with (None: this build).
    pub netshim: Option<PathBuf>,
    /// The name of the path (this build's) this twin is compared with.
    pub twin_of: Option<&'static str>,
}

impl PathRun {
    pub fn new(spec: PathSpec, unavailable: Option<String>) -> PathRun {
        PathRun {
            spec,
            unavailable,
            rounds: Vec::new(),
            offloads: BTreeMap::new(),
            netshim_stats: None,
            standin: None,
            setup_output: None,
            netshim: None,
            twin_of: None,
        }
    }

    /// The A/B twin of `spec`, run with the `other` netshim binary: `<name>@<label>`.
    pub fn twin(
        spec: &PathSpec,
        label: &str,
        other: &Path,
        unavailable: Option<String>,
    ) -> PathRun {
        // One short string per path and run: leaking it keeps PathSpec's names 'static.
        let leak =
            |name: &str| -> &'static str { Box::leak(format!("{name}@{label}").into_boxed_str()) };
        let mut run = PathRun::new(
            PathSpec {
                name: leak(spec.name),
                guard_twin_of: spec.guard_twin_of.map(leak),
                ..spec.clone()
            },
            unavailable,
        );
        run.netshim = Some(other.to_owned());
        run.twin_of = Some(spec.name);
        run
    }

    /// The twin of this run, if `--compare-netshim` made one.
    fn twin_in<'a>(&self, runs: &'a [PathRun]) -> Option<&'a PathRun> {
        runs.iter()
            .find(|r| r.spec.topo == self.spec.topo && r.twin_of == Some(self.spec.name))
    }

    pub fn values(&self, key: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| r.values.get(key).copied())
            .collect()
    }

    /// The extra figure `key` of every round that has it.
    pub fn extra_values(&self, key: &str) -> Vec<f64> {
        self.rounds
            .iter()
            .filter_map(|r| r.extra.get(key).copied())
            .collect()
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        median(&self.values(key))
    }

    pub fn errors(&self) -> impl Iterator<Item = (u32, &String)> {
        self.rounds
            .iter()
            .flat_map(|r| r.errors.iter().map(move |e| (r.round, e)))
    }

    fn status(&self) -> &'static str {
        if self.unavailable.is_some() {
            "unavailable"
        } else if self.errors().next().is_some() {
            "error"
        } else {
            "ok"
        }
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Half the spread of the rounds relative to the median (`±x%`), when there are several.
fn spread(values: &[f64]) -> Option<f64> {
    let med = median(values)?;
    if values.len() < 2 || med == 0.0 {
        return None;
    }
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    Some((max - min) / 2.0 / med.abs())
}

/// The baselines a topology's ratios are computed against.
pub fn baselines(topo: Topo) -> &'static [&'static str] {
    match topo {
        Topo::Pair => &["direct", "mirred"],
        Topo::Sandbox => &["mirred"],
    }
}

/// median(path) / median(baseline) for every metric, when both exist.
pub fn ratios(runs: &[PathRun], run: &PathRun, baseline: &str) -> BTreeMap<&'static str, f64> {
    let Some(base) = runs
        .iter()
        .find(|r| r.spec.topo == run.spec.topo && r.spec.name == baseline)
    else {
        return BTreeMap::new();
    };
    METRICS
        .iter()
        .filter_map(|m| {
            let (a, b) = (run.median(m.key)?, base.median(m.key)?);
            (b != 0.0).then_some((m.key, a / b))
        })
        .collect()
}

fn round_f(x: f64, decimals: u32) -> f64 {
    let p = 10f64.powi(decimals as i32);
    (x * p).round() / p
}

fn map_json(m: &BTreeMap<&'static str, f64>, decimals: u32) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.to_string(), json!(round_f(*v, decimals))))
            .collect::<Map<_, _>>(),
    )
}

/// results.json: raw per-round numbers, medians, ratios, and the context around them.
pub fn to_json(runs: &[PathRun], header: Value) -> Value {
    let metrics: Vec<Value> = METRICS
        .iter()
        .map(|m| {
            json!({
                "key": m.key, "label": m.label, "unit": m.unit,
                "better": if m.higher_is_better { "higher" } else { "lower" },
            })
        })
        .collect();
    let paths: Vec<Value> = runs
        .iter()
        .map(|run| {
            let medians: BTreeMap<&'static str, f64> = METRICS
                .iter()
                .filter_map(|m| Some((m.key, run.median(m.key)?)))
                .collect();
            let mut ratio_obj = Map::new();
            let twin = run.twin_in(runs).map(|t| t.spec.name);
            let bases = baselines(run.spec.topo).iter().copied();
            for base in bases.chain(twin).chain(run.spec.guard_twin_of) {
                let r = ratios(runs, run, base);
                if !r.is_empty() {
                    ratio_obj.insert(format!("vs_{base}"), map_json(&r, 4));
                }
            }
            let rounds: Vec<Value> = run
                .rounds
                .iter()
                .map(|r| {
                    json!({
                        "round": r.round,
                        "values": map_json(&r.values, 4),
                        "extra": map_json(&r.extra, 4),
                        "errors": r.errors,
                        "seconds": round_f(r.seconds, 2),
                    })
                })
                .collect();
            json!({
                "id": run.spec.id(),
                "topology": run.spec.topo.name(),
                "path": run.spec.name,
                "about": run.spec.about,
                "status": run.status(),
                "unavailable": run.unavailable,
                "rounds": rounds,
                "median": map_json(&medians, 4),
                "ratios": ratio_obj,
                "offloads": run.offloads,
                "netshim_stats_last_round": run.netshim_stats,
                "standin_last_round": run.standin,
                "setup_output_last_round": run.setup_output,
            })
        })
        .collect();
    let mut out = header;
    out["metrics"] = Value::Array(metrics);
    out["paths"] = Value::Array(paths);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::paths::all_paths;

    fn run_with(name: &str, topo: Topo, tcp1: &[f64]) -> PathRun {
        let spec = all_paths()
            .into_iter()
            .find(|p| p.name == name && p.topo == topo)
            .unwrap();
        let mut run = PathRun::new(spec, None);
        for (i, v) in tcp1.iter().enumerate() {
            let mut r = RoundResult {
                round: i as u32 + 1,
                ..Default::default()
            };
            r.values.insert(TCP1, *v);
            run.rounds.push(r);
        }
        run
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratios_against_the_baselines_of_the_same_topology() {
        let runs = vec![
            run_with("direct", Topo::Pair, &[20.0, 22.0, 21.0]),
            run_with("mirred", Topo::Pair, &[15.0, 14.0, 16.0]),
            run_with("ebpf", Topo::Pair, &[21.0, 19.0, 20.0]),
            run_with("mirred", Topo::Sandbox, &[5.0]),
        ];
        let r = ratios(&runs, &runs[2], "direct");
        assert!((r[TCP1] - 20.0 / 21.0).abs() < 1e-9);
        let r = ratios(&runs, &runs[2], "mirred");
        assert!((r[TCP1] - 20.0 / 15.0).abs() < 1e-9);
        // sandbox has no direct path: no ratio, not pair's direct.
        assert!(ratios(&runs, &runs[3], "direct").is_empty());
        let json = to_json(&runs, json!({}));
        assert_eq!(json["paths"][2]["ratios"]["vs_mirred"][TCP1], json!(1.3333));
        assert_eq!(json["paths"][2]["median"][TCP1], json!(20.0));
        let md = markdown(&runs, "", "");
        assert!(md.contains("| ebpf | 20.00 ±5% |"), "{md}");
        assert!(md.contains("0.952×"), "{md}");
        let svg = svg(&runs, "x");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn offload_differences_are_listed() {
        let mut a = run_with("direct", Topo::Pair, &[]);
        let mut b = run_with("ebpf", Topo::Pair, &[]);
        let feats =
            |gro: &str| BTreeMap::from([("generic-receive-offload".to_string(), gro.to_string())]);
        a.offloads.insert("client:eth0".into(), feats("off"));
        b.offloads.insert("client:eth0".into(), feats("on"));
        let (md, diffs) = offload_markdown(&[a, b]);
        assert_eq!(diffs.len(), 1, "{md}");
        assert!(diffs[0].contains("generic-receive-offload off on pair/direct, on on pair/ebpf"));
    }
}
