//! results.md: the tables of medians, spreads and ratios, and the offloads of each
//! path's devices.

use super::*;

type Features = BTreeMap<String, String>;

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
        if topo == Topo::Sandbox {
            vm_queue_table(&mut md, &rows);
            step_profile_table(&mut md, &rows);
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

/// Towards the VM during the UDP 64 B run: what the client sent, what went into the VMM's
/// queue (taken by the stand-in) and what was dropped there (see `vm_queue.rs`), so that a
/// rate the stand-in caps is not read as the datapath's.
fn vm_queue_table(md: &mut String, rows: &[&PathRun]) {
    let rows: Vec<&&PathRun> = rows
        .iter()
        .filter(|r| !r.extra_values(UDP64_VM_QUEUE).is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    md.push_str(
        "\nTowards the VM during UDP 64 B (median of rounds): sent by the client, taken into the \
         VMM's queue (the tap's `tx_packets`, the macvtap's `rx_packets` - `rx_errors`), \
         dropped at that queue (`tx_dropped`, `rx_errors`)\n\n\
         | path | sent (kpps) | into the VMM's queue (kpps) | dropped at it (kpps) | dropped at it (%) |\n\
         |---|--:|--:|--:|--:|\n",
    );
    for run in rows {
        let m = |k: &str| median(&run.extra_values(k));
        let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
        let pct = match (m(UDP64_VM_QUEUE), m(UDP64_VM_DROPPED)) {
            (Some(q), Some(d)) if q + d > 0.0 => format!("{:.1}", 100.0 * d / (q + d)),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {pct} |",
            run.spec.name,
            cell(m("udp64_sent_kpps")),
            cell(m(UDP64_VM_QUEUE)),
            cell(m(UDP64_VM_DROPPED)),
        );
    }
}

/// Towards the VM at a fixed rate (see `datapath_profile.rs`): each kernel step's CPU per
/// frame, one column per path, so a path's extra cost is named by the step it is in.
fn step_profile_table(md: &mut String, rows: &[&PathRun]) {
    use crate::bench::datapath_profile::{PERIOD_NS, RATE_PPS, STEPS};
    let rows: Vec<&&PathRun> = rows
        .iter()
        .filter(|r| !r.extra_values(STEPS[0].key).is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        md,
        "\nWhere the time goes towards the VM: UDP 64 B at {} kpps (every path carries it), \
         `perf record -a -g` (cpu-clock, one sample per {} µs), each step's inclusive CPU time \
         per frame taken into the VMM's queue, ns, median of rounds; – = the path does not \
         run that step\n\n| step |",
        RATE_PPS / 1000,
        PERIOD_NS / 1000
    );
    for run in &rows {
        let _ = write!(md, " {} |", run.spec.name);
    }
    md.push_str("\n|---|");
    md.push_str(&"--:|".repeat(rows.len()));
    md.push('\n');
    for step in &STEPS {
        let _ = write!(md, "| {} |", step.label);
        for run in &rows {
            let cell =
                median(&run.extra_values(step.key)).map_or("–".into(), |v| format!("{v:.0}"));
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
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
