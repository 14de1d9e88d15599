//! Medians, ratios, and the three outputs: results.json, results.md, chart.svg.

use crate::bench::paths::{PathSpec, Topo, OFFLOAD_FEATURES};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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

fn fmt_value(values: &[f64], decimals: usize) -> String {
    match median(values) {
        None => "–".into(),
        Some(m) => match spread(values) {
            Some(s) => format!("{m:.decimals$} ±{:.0}%", s * 100.0),
            None => format!("{m:.decimals$}"),
        },
    }
}

fn topo_title(topo: Topo) -> &'static str {
    match topo {
        Topo::Pair => "pair: client ↔ veth ↔ shim netns ↔ veth ↔ server",
        Topo::Sandbox => {
            "sandbox: client ↔ veth ↔ sandbox netns [eth0 ↔ tap0_kata] ↔ vm-standin ↔ guest"
        }
    }
}

/// One markdown table of ratios: a row per (label, ratios by metric).
fn ratio_table(md: &mut String, rows: impl Iterator<Item = (String, BTreeMap<&'static str, f64>)>) {
    md.push_str("| path |");
    for m in METRICS {
        let _ = write!(md, " {} |", m.label);
    }
    md.push_str("\n|---|");
    md.push_str(&"--:|".repeat(METRICS.len()));
    md.push('\n');
    for (label, r) in rows {
        let _ = write!(md, "| {label} |");
        for m in METRICS {
            match r.get(m.key) {
                Some(x) => {
                    let _ = write!(md, " {x:.3}× |");
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
}

/// The markdown tables: per topology, medians (± half the spread of the rounds), then the
/// ratios against each baseline, then what was unavailable or failed.
pub fn markdown(runs: &[PathRun], intro: &str, offload_md: &str) -> String {
    let mut md = String::new();
    md.push_str(intro);
    for topo in [Topo::Pair, Topo::Sandbox] {
        let rows: Vec<&PathRun> = runs.iter().filter(|r| r.spec.topo == topo).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## {}\n", topo_title(topo));
        md.push_str("| path |");
        for m in METRICS {
            let _ = write!(md, " {} ({}) |", m.label, m.unit);
        }
        md.push_str("\n|---|");
        md.push_str(&"--:|".repeat(METRICS.len()));
        md.push('\n');
        for run in &rows {
            let _ = write!(md, "| {} |", run.spec.name);
            for m in METRICS {
                let cell = if run.unavailable.is_some() {
                    "n/a".to_string()
                } else {
                    fmt_value(&run.values(m.key), m.decimals)
                };
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
        for base in baselines(topo) {
            let has_base = rows
                .iter()
                .any(|r| r.spec.name == *base && r.median(TCP1).is_some());
            if !has_base {
                let _ = writeln!(
                    md,
                    "\nRatios vs {base}: no {base} figures in this run (unavailable or failed)."
                );
                continue;
            }
            let _ = writeln!(
                md,
                "\nRatios vs {base} (median / median of {base}, same run; Gbps, kpps: higher is \
                 better; RTT, CPU, ns: lower is better)\n"
            );
            ratio_table(
                &mut md,
                rows.iter()
                    .filter(|r| r.spec.name != *base && r.unavailable.is_none())
                    .map(|run| (run.spec.name.to_owned(), ratios(runs, run, base))),
            );
        }
        let pairs: Vec<(&PathRun, &PathRun)> = rows
            .iter()
            .filter_map(|r| Some((*r, r.twin_in(runs)?)))
            .collect();
        if !pairs.is_empty() {
            let _ = writeln!(
                md,
                "\nA/B: this build / the compared netshim (median / median of `<path>@…`, same \
                 run, rounds interleaved; Gbps, kpps: higher is better; RTT, CPU, ns: lower is \
                 better)\n"
            );
            ratio_table(
                &mut md,
                pairs.into_iter().map(|(run, twin)| {
                    (
                        format!("{} vs {}", run.spec.name, twin.spec.name),
                        ratios(runs, run, twin.spec.name),
                    )
                }),
            );
        }
        let guarded: Vec<&PathRun> = rows
            .iter()
            .copied()
            .filter(|r| r.spec.guard_twin_of.is_some() && r.unavailable.is_none())
            .collect();
        if !guarded.is_empty() {
            let _ = writeln!(
                md,
                "\nSource guard: `<path>+guard` / `<path>` (median / median, same run, rounds \
                 interleaved; the guard checks the reverse direction only; Gbps, kpps: higher \
                 is better; RTT, CPU, ns: lower is better)\n"
            );
            ratio_table(
                &mut md,
                guarded.into_iter().map(|run| {
                    let base = run.spec.guard_twin_of.unwrap_or_default();
                    (
                        format!("{} vs {base}", run.spec.name),
                        ratios(runs, run, base),
                    )
                }),
            );
        }
        let notes: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                r.unavailable
                    .as_ref()
                    .map(|why| format!("- {} unavailable: {why}", r.spec.id()))
            })
            .chain(rows.iter().flat_map(|r| {
                r.errors()
                    .map(|(round, e)| format!("- {} round {round} error: {e}", r.spec.id()))
                    .collect::<Vec<_>>()
            }))
            .collect();
        if !notes.is_empty() {
            md.push('\n');
            for n in notes {
                let _ = writeln!(md, "{}", n.replace('\n', " "));
            }
        }
    }
    md.push_str(offload_md);
    md
}

/// Offload table (round 1, after setup) and whether each device had the same settings on
/// every path it appears in.
pub fn offload_markdown(runs: &[PathRun]) -> (String, Vec<String>) {
    let mut md = String::from(
        "\n## Offloads\n\n`ethtool -k` after setup (first round); + on, - off; queues rx/tx. \
         One row per device and setting, with the paths that had it.\n\n",
    );
    md.push_str("| device | paths |");
    for (_, short) in OFFLOAD_FEATURES {
        let _ = write!(md, " {short} |");
    }
    md.push_str(" queues |\n|---|---|");
    md.push_str(&":-:|".repeat(OFFLOAD_FEATURES.len() + 1));
    md.push('\n');
    let sign = |v: Option<&String>| match v.map(String::as_str) {
        Some("on") => "+".to_string(),
        Some("off") => "-".to_string(),
        Some(other) => other.to_string(),
        None => "?".to_string(),
    };
    // "topology device" -> (path id, settings), in path order
    let mut by_dev: BTreeMap<String, Vec<(String, &Features)>> = BTreeMap::new();
    for run in runs {
        for (dev, feats) in &run.offloads {
            by_dev
                .entry(format!("{} {dev}", run.spec.topo.name()))
                .or_default()
                .push((run.spec.id(), feats));
        }
    }
    for (dev, seen) in &by_dev {
        let mut groups: Vec<(&Features, Vec<&str>)> = Vec::new();
        for (path, feats) in seen {
            match groups.iter_mut().find(|(f, _)| f == feats) {
                Some((_, paths)) => paths.push(path),
                None => groups.push((feats, vec![path])),
            }
        }
        for (feats, paths) in groups {
            let _ = write!(md, "| {dev} | {} |", paths.join(", "));
            for (name, _) in OFFLOAD_FEATURES {
                let _ = write!(md, " {} |", sign(feats.get(*name)));
            }
            let _ = writeln!(md, " {} |", feats.get("queues").map_or("?", String::as_str));
        }
    }
    let mut diffs = Vec::new();
    for (dev, seen) in &by_dev {
        let (first_path, first) = &seen[0];
        for (path, feats) in &seen[1..] {
            if feats != first {
                let changed: Vec<String> = first
                    .iter()
                    .filter(|(k, v)| feats.get(*k) != Some(v))
                    .map(|(k, v)| {
                        format!(
                            "{k} {v} on {first_path}, {} on {path}",
                            feats.get(k).map_or("?", String::as_str)
                        )
                    })
                    .collect();
                diffs.push(format!("{dev}: {}", changed.join("; ")));
            }
        }
    }
    if by_dev.is_empty() {
        md.push_str("\n(no offloads recorded)\n");
    } else if diffs.is_empty() {
        md.push_str(
            "\nEvery device that appears on several paths had the same settings on each.\n",
        );
    } else {
        md.push_str("\nDiffering between paths:\n\n");
        for d in &diffs {
            let _ = writeln!(md, "- {d}");
        }
    }
    (md, diffs)
}

type Features = BTreeMap<String, String>;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A hand-written SVG: two panels (median TCP 1-stream Gbps, median UDP 64 B received kpps),
/// one bar per path, coloured by topology; paths without a figure are left out.
pub fn svg(runs: &[PathRun], subtitle: &str) -> String {
    let panels = [
        (TCP1, "TCP, 1 stream (Gbps)", 2usize),
        (UDP64, "UDP 64 B received (kpps)", 0),
    ];
    let bars: Vec<&PathRun> = runs.iter().filter(|r| r.unavailable.is_none()).collect();
    let n = bars.len().max(1);
    let bar_w = 34.0;
    let gap = 14.0;
    let panel_w = 60.0 + n as f64 * (bar_w + gap);
    let (plot_top, plot_h) = (70.0, 260.0);
    let width = 2.0 * panel_w + 60.0;
    let height = plot_top + plot_h + 120.0;
    let colour = |t: Topo| match t {
        Topo::Pair => "#4e79a7",
        Topo::Sandbox => "#f28e2b",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/><text x="20" y="24" font-size="16" font-weight="bold">netshim bench: medians per path</text><text x="20" y="42" fill="#555">{}</text>"##,
        esc(subtitle)
    );
    for (i, (key, title, decimals)) in panels.iter().enumerate() {
        let x0 = 30.0 + i as f64 * (panel_w + 20.0);
        let max = bars
            .iter()
            .filter_map(|r| r.median(key))
            .fold(0.0f64, f64::max);
        let scale = if max > 0.0 { plot_h / (max * 1.1) } else { 0.0 };
        let base_y = plot_top + plot_h;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
            x0,
            plot_top - 12.0,
            esc(title)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{base_y:.1}" x2="{:.1}" y2="{base_y:.1}" stroke="#333"/>"##,
            x0 + panel_w - 20.0
        );
        for (j, run) in bars.iter().enumerate() {
            let x = x0 + 20.0 + j as f64 * (bar_w + gap);
            let label_x = x + bar_w / 2.0;
            let label_y = base_y + 12.0;
            let _ = writeln!(
                s,
                r#"<text x="{label_x:.1}" y="{label_y:.1}" text-anchor="end" transform="rotate(-40 {label_x:.1} {label_y:.1})">{}</text>"#,
                esc(&run.spec.id())
            );
            let Some(v) = run.median(key) else {
                let _ = writeln!(
                    s,
                    r##"<text x="{label_x:.1}" y="{:.1}" text-anchor="middle" fill="#999">–</text>"##,
                    base_y - 4.0
                );
                continue;
            };
            let h = v * scale;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{}"><title>{}: {v:.decimals$}</title></rect>"#,
                base_y - h,
                colour(run.spec.topo),
                esc(&run.spec.id())
            );
            let _ = writeln!(
                s,
                r#"<text x="{label_x:.1}" y="{:.1}" text-anchor="middle">{v:.decimals$}</text>"#,
                base_y - h - 4.0
            );
        }
    }
    let ly = height - 18.0;
    for (i, t) in [Topo::Pair, Topo::Sandbox].into_iter().enumerate() {
        let lx = 30.0 + i as f64 * 120.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            colour(t),
            lx + 16.0,
            t.name()
        );
    }
    s.push_str("</svg>\n");
    s
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
