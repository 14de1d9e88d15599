//! `netshim stats` (table, JSON, Prometheus, --watch rates) and `netshim metrics`.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Write as _},
    time::Duration,
};

use netshim::{
    metrics::{self, prometheus, rates::RateReport, Collection, Sample, Scope},
    netns::Netns,
    sandbox, Error,
};

use super::{
    args::{MetricsArgs, StatsArgs, StatsFormat},
    output,
    signal::stop_signal,
};

fn scope(netns: Option<&str>) -> Result<Scope, Error> {
    Ok(match netns {
        Some(arg) => Scope::Netns(Netns::resolve(arg)?),
        None => Scope::All,
    })
}

fn warn_all(errors: &[String]) {
    for e in errors {
        eprintln!("netshim: warning: {e}");
    }
}

pub fn stats(a: StatsArgs) -> Result<(), Error> {
    let format = if a.json {
        StatsFormat::Json
    } else {
        a.format.unwrap_or(StatsFormat::Table)
    };
    let scope = scope(a.netns.as_deref())?;
    if a.watch {
        if format == StatsFormat::Prometheus {
            return Err(Error::InvalidOptions(
                "--watch prints rates; for counters in the Prometheus format drop --watch \
                 (or serve them with `netshim metrics`)"
                    .into(),
            ));
        }
        return watch(
            scope,
            a.interval.unwrap_or(1.0),
            format == StatsFormat::Json,
        );
    }
    // One netns: a failure to read it is the command's failure (exit code of the error).
    let collection = match &scope {
        Scope::Netns(netns) => Collection {
            samples: sandbox::stats(netns)?
                .into_iter()
                .map(Sample::new)
                .collect(),
            errors: Vec::new(),
        },
        Scope::All => metrics::collect(&scope),
    };
    warn_all(&collection.errors);
    let all: Vec<_> = collection.samples.iter().map(|s| s.stats.clone()).collect();
    match format {
        StatsFormat::Table => print!("{}", output::stats(&all)),
        StatsFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("serializable stats")
        ),
        StatsFormat::Prometheus => print!("{}", prometheus::render(&collection)),
    }
    match all.into_iter().find(|s| !s.problems.is_empty()) {
        Some(broken) => Err(Error::Broken {
            netns: broken.netns,
            problems: broken.problems,
        }),
        None => Ok(()),
    }
}

fn watch(scope: Scope, interval: f64, json: bool) -> Result<(), Error> {
    let tty = std::io::stdout().is_terminal();
    metrics::watch::watch(
        scope,
        Duration::from_secs_f64(interval),
        stop_signal(),
        |report, errors| {
            warn_all(errors);
            let text = if json {
                // Serializing plain structs cannot fail.
                format!(
                    "{}\n",
                    serde_json::to_string(report).expect("serializable rates")
                )
            } else if tty {
                // Home the cursor and clear the screen: redraw in place.
                format!("\x1b[H\x1b[2J{}", rate_table(report))
            } else {
                format!("{}\n", rate_table(report))
            };
            // A closed stdout does not stop the watch (Ctrl-C does).
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        },
    )?;
    Ok(())
}

/// `1.23 Mbit/s`-style bit rate (SI prefixes, as `ip -s -h link`).
pub fn human_bits(bits_per_sec: f64) -> String {
    let units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let mut v = bits_per_sec;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.2} {}", units[u])
}

/// One row per endpoint and direction.
pub fn rate_table(r: &RateReport) -> String {
    let w = r
        .sandboxes
        .iter()
        .map(|s| s.netns.len())
        .chain(["netns".len()])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    let _ = writeln!(s, "{} (interval {:.2} s)", r.time, r.interval_secs);
    let _ = writeln!(
        s,
        "{:<w$} {:<12} {:<12} {:<7} {:>12} {:>14} {:>16} {:>10}",
        "netns", "endpoint", "tap", "dir", "pkt/s", "bytes/s", "bits/s", "errors/s"
    );
    for sb in &r.sandboxes {
        for e in &sb.endpoints {
            for (dir, d) in [("to_vm", &e.to_vm), ("from_vm", &e.from_vm)] {
                let _ = writeln!(
                    s,
                    "{:<w$} {:<12} {:<12} {:<7} {:>12.1} {:>14.1} {:>16} {:>10.1}",
                    sb.netns,
                    e.endpoint,
                    e.tap,
                    dir,
                    d.packets_per_sec,
                    d.bytes_per_sec,
                    human_bits(d.bits_per_sec),
                    d.errors_per_sec
                );
            }
        }
    }
    if r.sandboxes.is_empty() {
        let _ = writeln!(s, "(no sandbox)");
    }
    s
}

pub fn serve(a: MetricsArgs) -> Result<(), Error> {
    let scope = scope(a.netns.as_deref())?;
    metrics::server::serve(a.listen, scope, stop_signal(), |addr| {
        println!("serving metrics on http://{addr}/metrics");
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_rates_are_human() {
        assert_eq!(human_bits(0.0), "0.00 bit/s");
        assert_eq!(human_bits(999.0), "999.00 bit/s");
        assert_eq!(human_bits(5_600.0), "5.60 kbit/s");
        assert_eq!(human_bits(1.25e9), "1.25 Gbit/s");
    }
}
