//! Per-second rates between two collections, per endpoint and direction (`stats --watch`).
//!
//! A counter lower than before was reset (the sandbox was detached and attached again, or
//! an endpoint slot reused): as Prometheus' `rate()` does, the new value is taken as the
//! increase since the reset. An endpoint absent from the previous collection (just
//! attached, or its sandbox could not be read then) has no rate yet, as a new Prometheus
//! series has none before its second sample: it is left out of this interval rather than
//! shown with its whole lifetime as one interval's traffic.

use std::collections::HashMap;

use super::Sample;
use crate::stats::DirectionStats;

/// Rates of one direction of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DirectionRate {
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub bits_per_sec: f64,
    pub errors_per_sec: f64,
    /// The counters at the end of the interval.
    pub packets: u64,
    pub bytes: u64,
    pub errors: u64,
}

/// Rates of one endpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EndpointRate {
    pub endpoint: String,
    pub tap: String,
    pub to_vm: DirectionRate,
    pub from_vm: DirectionRate,
}

/// Rates of one sandbox.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SandboxRate {
    pub netns: String,
    pub netns_cookie: u64,
    pub backend: crate::datapath::TcBackend,
    pub datapath: String,
    pub endpoints: Vec<EndpointRate>,
}

/// One interval's rates.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RateReport {
    /// End of the interval, RFC 3339 UTC.
    pub time: String,
    /// Measured length of the interval, seconds.
    pub interval_secs: f64,
    pub sandboxes: Vec<SandboxRate>,
}

/// Increase of a counter from `before` to `now`, a reset counting from zero.
pub fn increase(before: u64, now: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

fn direction_rate(before: DirectionStats, now: DirectionStats, secs: f64) -> DirectionRate {
    let per_sec = |b: u64, n: u64| {
        if secs > 0.0 {
            increase(b, n) as f64 / secs
        } else {
            0.0
        }
    };
    let bytes_per_sec = per_sec(before.bytes, now.bytes);
    DirectionRate {
        packets_per_sec: per_sec(before.packets, now.packets),
        bytes_per_sec,
        bits_per_sec: bytes_per_sec * 8.0,
        errors_per_sec: per_sec(before.errors, now.errors),
        packets: now.packets,
        bytes: now.bytes,
        errors: now.errors,
    }
}

/// Rates from `before` to `now`, `secs` apart, for the sandboxes and endpoints in `now`.
pub fn rates(before: &[Sample], now: &[Sample], secs: f64, time: String) -> RateReport {
    let mut previous = HashMap::new();
    for s in before {
        for e in &s.stats.endpoints {
            previous.insert((s.stats.netns_cookie, e.pod.as_str(), e.tap.as_str()), e);
        }
    }
    let sandboxes = now
        .iter()
        .map(|s| SandboxRate {
            netns: s.stats.netns.clone(),
            netns_cookie: s.stats.netns_cookie,
            backend: s.stats.backend,
            datapath: s.datapath.clone(),
            endpoints: s
                .stats
                .endpoints
                .iter()
                .filter_map(|e| {
                    let key = (s.stats.netns_cookie, e.pod.as_str(), e.tap.as_str());
                    let p = previous.get(&key)?;
                    Some(EndpointRate {
                        endpoint: e.pod.clone(),
                        tap: e.tap.clone(),
                        to_vm: direction_rate(p.to_vm, e.to_vm, secs),
                        from_vm: direction_rate(p.from_vm, e.from_vm, secs),
                    })
                })
                .collect(),
        })
        .collect();
    RateReport {
        time,
        interval_secs: secs,
        sandboxes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        datapath::TcBackend,
        stats::{EndpointStats, SandboxStats},
    };

    fn sample(cookie: u64, pod: &str, to_vm: (u64, u64, u64), from_vm: (u64, u64, u64)) -> Sample {
        let d = |(packets, bytes, errors)| DirectionStats {
            packets,
            bytes,
            errors,
            ..DirectionStats::default()
        };
        Sample {
            stats: SandboxStats {
                netns: format!("ns{cookie}"),
                netns_inode: 1,
                netns_cookie: cookie,
                backend: TcBackend::Ebpf,
                endpoints: vec![EndpointStats {
                    index: 0,
                    pod: pod.into(),
                    tap: "tap0_kata".into(),
                    to_vm: d(to_vm),
                    from_vm: d(from_vm),
                    rx_limit: None,
                    tx_limit: None,
                }],
                unmatched: DirectionStats::default(),
                notes: Vec::new(),
                health: crate::sandbox::Health::Ok,
                problems: Vec::new(),
            },
            datapath: "tcx".into(),
        }
    }

    #[test]
    fn rates_are_increases_per_second() {
        let before = [sample(7, "eth0", (100, 10_000, 0), (50, 5_000, 2))];
        let now = [sample(7, "eth0", (300, 30_000, 0), (60, 6_000, 6))];
        let r = rates(&before, &now, 2.0, "t".into());
        let e = &r.sandboxes[0].endpoints[0];
        assert_eq!(e.to_vm.packets_per_sec, 100.0);
        assert_eq!(e.to_vm.bytes_per_sec, 10_000.0);
        assert_eq!(e.to_vm.bits_per_sec, 80_000.0);
        assert_eq!(e.from_vm.packets_per_sec, 5.0);
        assert_eq!(e.from_vm.errors_per_sec, 2.0);
        assert_eq!(e.to_vm.packets, 300);
        assert_eq!(r.interval_secs, 2.0);
        assert_eq!(r.time, "t");
    }

    #[test]
    fn a_counter_reset_counts_from_zero() {
        assert_eq!(increase(10, 15), 5);
        assert_eq!(increase(1_000, 40), 40);
        assert_eq!(increase(u64::MAX, 0), 0);
        let before = [sample(7, "eth0", (1_000, 100_000, 0), (0, 0, 0))];
        let now = [sample(7, "eth0", (40, 4_000, 0), (0, 0, 0))];
        let e = &rates(&before, &now, 1.0, String::new()).sandboxes[0].endpoints[0];
        assert_eq!(e.to_vm.packets_per_sec, 40.0);
        assert_eq!(e.to_vm.bytes_per_sec, 4_000.0);
    }

    #[test]
    fn new_endpoints_wait_for_a_second_sample_and_sandboxes_are_told_apart() {
        // Same endpoint name in another netns (cookie) is another endpoint: new here.
        let before = [sample(7, "eth0", (100, 0, 0), (0, 0, 0))];
        let now = [
            sample(7, "eth0", (110, 0, 0), (0, 0, 0)),
            sample(8, "eth0", (30_000, 0, 0), (0, 0, 0)),
        ];
        let r = rates(&before, &now, 1.0, String::new());
        assert_eq!(r.sandboxes[0].endpoints[0].to_vm.packets_per_sec, 10.0);
        assert_eq!(r.sandboxes[1].netns_cookie, 8);
        assert!(r.sandboxes[1].endpoints.is_empty());
        let later = [sample(8, "eth0", (30_050, 0, 0), (0, 0, 0))];
        let r = rates(&now, &later, 1.0, String::new());
        assert_eq!(r.sandboxes[0].endpoints[0].to_vm.packets_per_sec, 50.0);
    }

    #[test]
    fn a_zero_interval_gives_zero_rates() {
        let s = [sample(7, "eth0", (1, 1, 1), (1, 1, 1))];
        let r = rates(&s, &s, 0.0, String::new());
        assert_eq!(r.sandboxes[0].endpoints[0].to_vm, {
            DirectionRate {
                packets: 1,
                bytes: 1,
                errors: 1,
                ..Default::default()
            }
        });
    }
}
