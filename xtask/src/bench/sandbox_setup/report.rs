//! The setup section's figures: results.json's `setup` object, its markdown tables, and
//! setup.svg (attach and detach p50 per variant).

use super::concurrent::Concurrent;
use super::hotplug::Hotplug;
use super::latency::Latency;
use super::memory::Memory;
use super::{percentile, Bin, Row, SetupConfig};
use serde_json::{json, Value};
use std::fmt::Write as _;

pub struct SetupResults {
    pub cfg: SetupConfig,
    /// The other binary's label (`--compare-netshim`), if any.
    pub other_label: Option<String>,
    pub latency: Vec<Row<Latency>>,
    pub concurrent: Vec<Row<Concurrent>>,
    pub memory: Vec<Row<Memory>>,
    pub hotplug: Vec<Row<Hotplug>>,
    pub seconds: f64,
}

fn p(v: &[f64], q: f64) -> Option<f64> {
    percentile(v, q)
}

fn r1(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |x| json!((x * 10.0).round() / 10.0))
}

fn r3(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |x| json!((x * 1000.0).round() / 1000.0))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn cell(x: Option<f64>, decimals: usize) -> String {
    x.map_or("–".into(), |x| format!("{x:.decimals$}"))
}

fn times(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{x:.2}×"))
}

/// The first row that `key` accepts.
fn find<T>(rows: &[T], key: impl Fn(&T) -> bool) -> Option<&T> {
    rows.iter().find(|r| key(r))
}

impl SetupResults {
    pub fn new(cfg: SetupConfig, bins: &[Bin]) -> SetupResults {
        SetupResults {
            cfg,
            other_label: bins.iter().find_map(|b| b.label.clone()),
            latency: Vec::new(),
            concurrent: Vec::new(),
            memory: Vec::new(),
            hotplug: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn errors(&self) -> Vec<String> {
        let l = self.latency.iter().map(|r| (&r.id, &r.errors));
        let c = self.concurrent.iter().map(|r| (&r.id, &r.errors));
        let m = self.memory.iter().map(|r| (&r.id, &r.errors));
        let h = self.hotplug.iter().map(|r| (&r.id, &r.errors));
        l.chain(c)
            .chain(m)
            .chain(h)
            .flat_map(|(id, es)| es.iter().map(move |e| format!("setup {id}: {e}")))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let latency: Vec<Value> = self
            .latency
            .iter()
            .map(|r| {
                let mirred = self.mirred_latency(r.other_binary);
                let this = self.this_build_latency(r);
                json!({
                    "id": r.id, "mode": r.mode, "other_binary": r.other_binary,
                    "attach_ms": {"p50": r1(p(&r.data.attach_ms, 50.0)), "p99": r1(p(&r.data.attach_ms, 99.0)),
                                  "samples": r.data.attach_ms.iter().map(|x| r1(Some(*x))).collect::<Vec<_>>()},
                    "detach_ms": {"p50": r1(p(&r.data.detach_ms, 50.0)), "p99": r1(p(&r.data.detach_ms, 99.0)),
                                  "samples": r.data.detach_ms.iter().map(|x| r1(Some(*x))).collect::<Vec<_>>()},
                    "attach_p50_vs_mirred": r3(mirred.and_then(|m| ratio(p(&r.data.attach_ms, 50.0), p(&m.data.attach_ms, 50.0)))),
                    "detach_p50_vs_mirred": r3(mirred.and_then(|m| ratio(p(&r.data.detach_ms, 50.0), p(&m.data.detach_ms, 50.0)))),
                    "attach_p50_this_vs_other": r3(this.and_then(|t| ratio(p(&t.data.attach_ms, 50.0), p(&r.data.attach_ms, 50.0)))),
                    "detach_p50_this_vs_other": r3(this.and_then(|t| ratio(p(&t.data.detach_ms, 50.0), p(&r.data.detach_ms, 50.0)))),
                    "errors": r.errors,
                })
            })
            .collect();
        let concurrent: Vec<Value> = self
            .concurrent
            .iter()
            .map(|r| {
                let n = self.cfg.concurrent as f64;
                let (a, d) = (p(&r.data.attach_s, 50.0), p(&r.data.detach_s, 50.0));
                json!({
                    "id": r.id, "mode": r.mode, "other_binary": r.other_binary,
                    "sandboxes": self.cfg.concurrent, "at_a_time": self.cfg.concurrency,
                    "attach_wall_s": {"median": r3(a), "rounds": r.data.attach_s},
                    "detach_wall_s": {"median": r3(d), "rounds": r.data.detach_s},
                    "attach_per_s": r1(a.map(|a| n / a)), "detach_per_s": r1(d.map(|d| n / d)),
                    "attach_call_ms": {"p50": r1(p(&r.data.attach_call_ms, 50.0)), "p99": r1(p(&r.data.attach_call_ms, 99.0))},
                    "detach_call_ms": {"p50": r1(p(&r.data.detach_call_ms, 50.0)), "p99": r1(p(&r.data.detach_call_ms, 99.0))},
                    "errors": r.errors,
                })
            })
            .collect();
        let memory: Vec<Value> = self
            .memory
            .iter()
            .map(|r| {
                let per: Vec<f64> = r.data.per_sandbox.iter().map(|&b| b as f64).collect();
                let obj = |o: &super::memory::Object| json!({"kind": o.kind, "name": o.name, "bytes": o.bytes});
                json!({
                    "id": r.id, "mode": r.mode, "other_binary": r.other_binary,
                    "sandboxes": r.data.per_sandbox.len(),
                    "per_sandbox_bytes": {"median": p(&per, 50.0), "each": r.data.per_sandbox},
                    "first_sandbox_objects": r.data.breakdown.iter().map(obj).collect::<Vec<_>>(),
                    "shared_objects": r.data.shared.iter().map(obj).collect::<Vec<_>>(),
                    "shared_bytes": r.data.shared.iter().map(|o| o.bytes).sum::<u64>(),
                    "errors": r.errors,
                })
            })
            .collect();
        let hotplug: Vec<Value> = self
            .hotplug
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "mode": r.mode, "other_binary": r.other_binary,
                    "forwarding_ms": {"p50": r1(p(&r.data.forwarding_ms, 50.0)), "p99": r1(p(&r.data.forwarding_ms, 99.0)),
                                      "samples": r.data.forwarding_ms.iter().map(|x| r1(Some(*x))).collect::<Vec<_>>()},
                    "ip_plug_ms_p50": r1(p(&r.data.plugged_ms, 50.0)),
                    "tap_appeared_ms_p50": r1(p(&r.data.tap_ms, 50.0)),
                    "watch_reported_ms_p50": r1(p(&r.data.reported_ms, 50.0)),
                    "errors": r.errors,
                })
            })
            .collect();
        json!({
            "about": "netshim binary as a runtime calls it: one process per call, wall time from spawn to exit; a fresh pod netns (veth eth0, peer in a node netns, addresses) per sample",
            "params": {
                "latency_rounds": self.cfg.latency_rounds,
                "latency_order": "for round { for variant (rotated by round) { new pod; attach; detach; delete pod } }",
                "percentiles": "nearest rank (p99 of fewer than 100 samples is the maximum)",
                "concurrent": {"sandboxes": self.cfg.concurrent, "at_a_time": self.cfg.concurrency, "rounds": self.cfg.concurrent_rounds},
                "memory_sandboxes_per_mode": self.cfg.memory_sandboxes,
                "memory": "bytes_memlock (fdinfo memlock) of each object the sandbox uses: maps pinned in its pin dir, programs on its devices / pinned links / pinned programs / programs using its maps, and those programs' maps; objects used by more than one sandbox are shared (counted once, not per sandbox)",
                "hotplug_rounds": self.cfg.hotplug_rounds,
                "hotplug": "from just before `ip link add` of a second veth to the first probe frame read from tap1_kata (opened IFF_TAP|IFF_NO_PI|IFF_VNET_HDR once it appears; probes sent every 200 µs from the node side)",
            },
            "duration_s": (self.seconds * 10.0).round() / 10.0,
            "latency": latency,
            "concurrent": concurrent,
            "memory": memory,
            "hotplug": hotplug,
        })
    }

    fn mirred_latency(&self, other: bool) -> Option<&Row<Latency>> {
        find(&self.latency, |m| {
            m.mode == "mirred" && m.other_binary == other
        })
    }

    fn this_build_latency(&self, r: &Row<Latency>) -> Option<&Row<Latency>> {
        if !r.other_binary {
            return None;
        }
        find(&self.latency, |t| t.mode == r.mode && !t.other_binary)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let other = self.other_label.as_deref();
        let _ = writeln!(
            md,
            "\n## setup: starting and stopping a sandbox\n\n\
             The netshim binary as a runtime calls it: one process per call, wall time from \
             spawn to exit; a fresh pod netns (veth eth0 with addresses, peer in another \
             netns) per sample; {} interleaved rounds, order rotated every round; p99 is \
             nearest-rank (the maximum below 100 samples). Section took {:.0} s.\n",
            self.cfg.latency_rounds, self.seconds
        );
        md.push_str("| mode | attach p50 (ms) | attach p99 (ms) | detach p50 (ms) | detach p99 (ms) | attach p50 / mirred | detach p50 / mirred |");
        if other.is_some() {
            md.push_str(" attach p50 this / other | detach p50 this / other |");
        }
        md.push_str("\n|---|--:|--:|--:|--:|--:|--:|");
        if other.is_some() {
            md.push_str("--:|--:|");
        }
        md.push('\n');
        for r in &self.latency {
            let m = self.mirred_latency(r.other_binary);
            let (a, d) = (p(&r.data.attach_ms, 50.0), p(&r.data.detach_ms, 50.0));
            let _ = write!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                cell(a, 1),
                cell(p(&r.data.attach_ms, 99.0), 1),
                cell(d, 1),
                cell(p(&r.data.detach_ms, 99.0), 1),
                times(m.and_then(|m| ratio(a, p(&m.data.attach_ms, 50.0)))),
                times(m.and_then(|m| ratio(d, p(&m.data.detach_ms, 50.0)))),
            );
            if other.is_some() {
                let t = self.this_build_latency(r);
                let _ = write!(
                    md,
                    " {} | {} |",
                    times(t.and_then(|t| ratio(p(&t.data.attach_ms, 50.0), a))),
                    times(t.and_then(|t| ratio(p(&t.data.detach_ms, 50.0), d)))
                );
            }
            md.push('\n');
        }
        let n = self.cfg.concurrent;
        let _ = writeln!(
            md,
            "\n{n} sandboxes attached {} at a time, then detached the same way (median of {} \
             round(s); wall time from the first spawn to the last exit)\n\n\
             | mode | attach wall (s) | attach sandboxes/s | detach wall (s) | detach sandboxes/s | attach / mirred | detach / mirred | per-call attach p50 (ms) | per-call detach p50 (ms) |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|",
            self.cfg.concurrency, self.cfg.concurrent_rounds
        );
        for r in &self.concurrent {
            let m = find(&self.concurrent, |m| {
                m.mode == "mirred" && m.other_binary == r.other_binary
            });
            let (a, d) = (p(&r.data.attach_s, 50.0), p(&r.data.detach_s, 50.0));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                cell(a, 2),
                cell(a.map(|a| n as f64 / a), 0),
                cell(d, 2),
                cell(d.map(|d| n as f64 / d), 0),
                times(m.and_then(|m| ratio(a, p(&m.data.attach_s, 50.0)))),
                times(m.and_then(|m| ratio(d, p(&m.data.detach_s, 50.0)))),
                cell(p(&r.data.attach_call_ms, 50.0), 1),
                cell(p(&r.data.detach_call_ms, 50.0), 1),
            );
        }
        let _ = writeln!(
            md,
            "\nKernel memory per attached sandbox ({} sandboxes per mode; memlock of every BPF \
             object a sandbox uses, each counted once; objects several sandboxes use are \
             shared, counted once and not per sandbox)\n\n\
             | mode | per sandbox (KiB) | shared (KiB) | the first sandbox's objects: maps, and prog (B) | shared objects |\n\
             |---|--:|--:|---|---|",
            self.cfg.memory_sandboxes
        );
        for r in &self.memory {
            let per: Vec<f64> = r.data.per_sandbox.iter().map(|&b| b as f64).collect();
            let list = |objs: &[super::memory::Object]| {
                let s: Vec<String> = objs
                    .iter()
                    .map(|o| match o.kind {
                        "map" => format!("{} {}", o.name, o.bytes),
                        kind => format!("{kind} {} {}", o.name, o.bytes),
                    })
                    .collect();
                if s.is_empty() {
                    "–".into()
                } else {
                    s.join(", ")
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {} | {} |",
                r.id,
                cell(p(&per, 50.0).map(|b| b / 1024.0), 1),
                r.data.shared.iter().map(|o| o.bytes).sum::<u64>() as f64 / 1024.0,
                list(&r.data.breakdown),
                list(&r.data.shared)
            );
        }
        let _ = writeln!(
            md,
            "\nwatch hot-plug: from just before a second veth is added to the pod to the first \
             probe frame read from its new tap ({} round(s))\n\n\
             | mode | to forwarding p50 (ms) | p99 (ms) | `ip` plug done p50 (ms) | tap appeared p50 (ms) | watch reported p50 (ms) |\n\
             |---|--:|--:|--:|--:|--:|",
            self.cfg.hotplug_rounds
        );
        for r in &self.hotplug {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                r.id,
                cell(p(&r.data.forwarding_ms, 50.0), 1),
                cell(p(&r.data.forwarding_ms, 99.0), 1),
                cell(p(&r.data.plugged_ms, 50.0), 1),
                cell(p(&r.data.tap_ms, 50.0), 1),
                cell(p(&r.data.reported_ms, 50.0), 1)
            );
        }
        let errors = self.errors();
        if !errors.is_empty() {
            md.push_str("\nErrors:\n\n");
            for e in errors {
                let _ = writeln!(md, "- {e}");
            }
        }
        md
    }

    /// setup.svg: attach and detach p50 (ms) per variant, two panels.
    pub fn svg(&self, subtitle: &str) -> String {
        let rows: Vec<(&str, Option<f64>, Option<f64>)> = self
            .latency
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    p(&r.data.attach_ms, 50.0),
                    p(&r.data.detach_ms, 50.0),
                )
            })
            .collect();
        use crate::bench::report::esc;
        let (bar_h, gap, label_w, plot_w) = (16.0, 6.0, 150.0, 300.0);
        let top = 70.0;
        let height = top + rows.len() as f64 * (bar_h + gap) + 40.0;
        let width = label_w + 2.0 * (plot_w + 90.0) + 20.0;
        let mut s = crate::bench::report::svg_open(
            width,
            height,
            "netshim bench: sandbox setup, p50 per call",
            subtitle,
        );
        for (panel, title) in ["attach (ms)", "detach (ms)"].iter().enumerate() {
            let x0 = label_w + panel as f64 * (plot_w + 90.0);
            let value = |r: &(&str, Option<f64>, Option<f64>)| if panel == 0 { r.1 } else { r.2 };
            let max = rows.iter().filter_map(value).fold(0.0f64, f64::max);
            let scale = if max > 0.0 { plot_w / max } else { 0.0 };
            let _ = writeln!(
                s,
                r#"<text x="{x0:.1}" y="{:.1}" font-size="13" font-weight="bold">{title}</text>"#,
                top - 10.0
            );
            for (i, r) in rows.iter().enumerate() {
                let y = top + i as f64 * (bar_h + gap);
                if panel == 0 {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                        label_w - 8.0,
                        y + bar_h - 4.0,
                        esc(r.0)
                    );
                }
                let Some(v) = value(r) else { continue };
                let colour = if r.0.contains('@') {
                    "#bab0ac"
                } else {
                    "#59a14f"
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{bar_h:.1}" fill="{colour}"/><text x="{:.1}" y="{:.1}">{v:.1}</text>"#,
                    v * scale,
                    x0 + v * scale + 4.0,
                    y + bar_h - 4.0
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}
