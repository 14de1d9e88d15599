//! The counters table of `stats`.

use std::fmt::Write as _;

use netshim::stats::{DropCount, Dropped, SandboxStats};
use netshim_common::GUARD_REASONS;

use super::{
    broken_lines,
    table::{lay_out, left, right},
};

pub fn stats(all: &[SandboxStats]) -> String {
    let mut s = String::new();
    for sb in all {
        broken_lines(&mut s, &sb.netns, &sb.problems);
    }
    let count = |c: DropCount| c.value().map_or_else(|| "-".to_owned(), |n| n.to_string());
    let mut rows = Vec::new();
    let mut dropped_lists = Vec::new();
    for sb in all {
        for e in &sb.endpoints {
            for (dir, d, limit) in [
                ("to_vm", &e.to_vm, &e.rx_limit),
                ("from_vm", &e.from_vm, &e.tx_limit),
            ] {
                let mut dropped: Vec<String> = d
                    .dropped
                    .reasons()
                    .iter()
                    // The guard's seven reasons only when they counted something (a
                    // sandbox without guard maps says so in its notes).
                    .filter(|(reason, c)| {
                        !c.is_not_applicable()
                            && (!Dropped::is_guard_reason(reason) || c.value().unwrap_or(0) > 0)
                    })
                    .map(|(reason, c)| format!("{reason}={}", count(*c)))
                    .collect();
                if let Some(g) = &d.guard {
                    dropped.push(format!("guard={}", g.mode));
                    dropped.extend(
                        GUARD_REASONS
                            .iter()
                            .zip(g.flagged)
                            .filter(|(_, n)| *n > 0)
                            .map(|(reason, n)| format!("flagged_{reason}={n}")),
                    );
                }
                if let Some(l) = limit {
                    let rate = netshim::limit::rate::display_rate(l.shaper.rate_bps);
                    match l.counters {
                        Some(c) => dropped.push(format!(
                            "limit={rate} throttled={} limit_dropped={}",
                            c.throttled, c.dropped
                        )),
                        None => dropped.push(format!("limit={rate} MISSING")),
                    }
                }
                rows.push(vec![
                    sb.netns.clone(),
                    sb.backend.as_str().to_owned(),
                    e.pod.clone(),
                    e.tap.clone(),
                    dir.to_owned(),
                    d.packets.to_string(),
                    d.bytes.to_string(),
                    d.errors.to_string(),
                    d.delivered
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                ]);
                dropped_lists.push(dropped.join(" "));
            }
        }
    }
    // The netns column is as wide as the longest name, also of a sandbox with no endpoint.
    let netns = all.iter().map(|sb| sb.netns.len()).max().unwrap_or(0);
    let columns = [
        left("netns", netns.max("netns".len()) as u16),
        left("backend", 7),
        left("endpoint", 12),
        left("tap", 12),
        left("dir", 7),
        right("forwarded", 12),
        right("bytes", 14),
        right("errs", 6),
        right("delivered", 12),
    ];
    let laid = lay_out(&columns, true, rows);
    let _ = writeln!(s, "{}  dropped", laid.lines[0]);
    let mut lines = laid.lines[1..].iter().zip(&dropped_lists);
    let w = laid.widths[0];
    for sb in all {
        for _ in 0..sb.endpoints.len() * 2 {
            if let Some((line, dropped)) = lines.next() {
                let _ = writeln!(s, "{line}  {dropped}");
            }
        }
        if sb.unmatched.packets > 0 {
            let _ = writeln!(
                s,
                "{:<w$} unmatched (passed, no peer entry): {} packets, {} bytes",
                sb.netns, sb.unmatched.packets, sb.unmatched.bytes
            );
        }
        for note in &sb.notes {
            let _ = writeln!(s, "{:<w$} note: {note}", sb.netns);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use netshim::{
        datapath::TcBackend,
        stats::{DirectionStats, EndpointStats, GuardStats},
    };

    use super::*;

    fn one_endpoint(from_vm: DirectionStats) -> SandboxStats {
        SandboxStats {
            netns: "pod-a".into(),
            netns_inode: 1,
            netns_cookie: 2,
            backend: TcBackend::Ebpf,
            endpoints: vec![EndpointStats {
                index: 0,
                pod: "eth0".into(),
                tap: "tap0_kata".into(),
                to_vm: DirectionStats::default(),
                from_vm,
                rx_limit: None,
                tx_limit: None,
            }],
            unmatched: DirectionStats::default(),
            notes: vec![],
            health: netshim::sandbox::Health::Ok,
            problems: vec![],
        }
    }

    #[test]
    fn stats_show_the_guard_reasons_that_counted_and_the_guard_mode() {
        let mut guard = [DropCount::Counted(0); 7];
        guard[1] = DropCount::Counted(1000);
        let mut flagged = [0; 7];
        flagged[0] = 3;
        let table = stats(&[one_endpoint(DirectionStats {
            packets: 5,
            dropped: Dropped {
                mtu: DropCount::Counted(0),
                guard,
                pod_tx_dropped: DropCount::Counted(0),
                ..Dropped::default()
            },
            guard: Some(GuardStats {
                mode: netshim::guard::GuardMode::Enforce,
                flagged,
            }),
            ..DirectionStats::default()
        })]);
        let line = table.lines().find(|l| l.contains("from_vm")).unwrap();
        assert!(
            line.ends_with(
                "mtu=0 source_ip=1000 pod_tx_dropped=0 guard=enforce flagged_source_mac=3"
            ),
            "{table}"
        );
        assert!(!line.contains("arp="), "{table}");
    }

    #[test]
    fn stats_of_a_sandbox_without_guard_maps_list_no_guard_reason() {
        let table = stats(&[one_endpoint(DirectionStats {
            dropped: Dropped {
                mtu: DropCount::Counted(0),
                guard: [DropCount::NotCounted; 7],
                ..Dropped::default()
            },
            ..DirectionStats::default()
        })]);
        let line = table.lines().find(|l| l.contains("from_vm")).unwrap();
        assert!(line.ends_with("mtu=0"), "{table}");
    }

    #[test]
    fn stats_lines_keep_the_widths_they_had() {
        let table = stats(&[one_endpoint(DirectionStats {
            packets: 5,
            bytes: 420,
            ..DirectionStats::default()
        })]);
        let lines: Vec<&str> = table.lines().collect();
        let header = format!(
            "{:<5} {:<7} {:<12} {:<12} {:<7} {:>12} {:>14} {:>6} {:>12}  dropped",
            "netns", "backend", "endpoint", "tap", "dir", "forwarded", "bytes", "errs", "delivered"
        );
        assert_eq!(lines[0], header, "{table}");
        let from_vm = format!(
            "{:<5} {:<7} {:<12} {:<12} {:<7} {:>12} {:>14} {:>6} {:>12}  ",
            "pod-a", "ebpf", "eth0", "tap0_kata", "from_vm", 5, 420, 0, "-"
        );
        assert!(lines[2].starts_with(&from_vm), "{table}");
    }
}
