//! The Prometheus text exposition format (version 0.0.4) of a [`Collection`]: one family per
//! metric, `# HELP` and `# TYPE` before its samples, label values escaped.

use std::fmt::Write as _;

use netshim_common::GUARD_REASONS;

use super::{Collection, Sample};
use crate::stats::DirectionStats;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `# HELP` text: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        debug_assert!(is_metric_name(name), "{name}");
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Metric names (also listed in docs/metrics.md).
pub mod names {
    pub const SANDBOX_INFO: &str = "netshim_sandbox_info";
    pub const PACKETS: &str = "netshim_endpoint_packets_total";
    pub const BYTES: &str = "netshim_endpoint_bytes_total";
    pub const ERRORS: &str = "netshim_endpoint_redirect_errors_total";
    pub const DROPPED: &str = "netshim_endpoint_dropped_total";
    pub const DELIVERED: &str = "netshim_endpoint_delivered_total";
    pub const GUARD_FLAGGED: &str = "netshim_endpoint_guard_flagged_total";
    pub const UNMATCHED_PACKETS: &str = "netshim_unmatched_packets_total";
    pub const UNMATCHED_BYTES: &str = "netshim_unmatched_bytes_total";
    pub const SCRAPE_ERRORS: &str = "netshim_scrape_errors";
    pub const LIMIT_RATE: &str = "netshim_endpoint_rate_limit_bits_per_second";
    pub const LIMIT_SENT_BYTES: &str = "netshim_endpoint_rate_limit_sent_bytes_total";
    pub const LIMIT_THROTTLED: &str = "netshim_endpoint_rate_limit_throttled_total";
    pub const LIMIT_DROPPED: &str = "netshim_endpoint_rate_limit_dropped_total";
}

/// One sample per endpoint direction and per `(extra label, value)` that `values` gives
/// for it (none: no sample).
fn endpoint_family(
    out: &mut String,
    samples: &[Sample],
    name: &'static str,
    help: &str,
    values: impl Fn(&DirectionStats) -> Vec<(Option<(&'static str, &'static str)>, u64)>,
) {
    let mut f = Family::new(out, name, "counter", help);
    for s in samples {
        let cookie = s.stats.netns_cookie.to_string();
        for e in &s.stats.endpoints {
            for (direction, d) in [("to_vm", &e.to_vm), ("from_vm", &e.from_vm)] {
                for (extra, value) in values(d) {
                    let mut labels = vec![
                        ("netns", s.stats.netns.as_str()),
                        ("netns_cookie", &cookie),
                        ("endpoint", &e.pod),
                        ("tap", &e.tap),
                        ("direction", direction),
                        ("backend", s.stats.backend.as_str()),
                    ];
                    labels.extend(extra);
                    f.sample(&labels, value);
                }
            }
        }
    }
}

/// The rate limits (kata's rx = to_vm, tx = from_vm) and their shapers' counters; an
/// unlimited direction has no sample.
fn limit_families(out: &mut String, samples: &[Sample]) {
    type Value = fn(&crate::limit::apply::LiveShaper) -> Option<u64>;
    let families: [(&'static str, &str, &str, Value); 4] = [
        (
            names::LIMIT_RATE,
            "gauge",
            "The rate limit of the direction, bits per second of Ethernet frames (kata's rx_rate_limiter_max_rate for to_vm, tx_ for from_vm), as the kernel's shaper has it.",
            |l| l.live_rate_bps,
        ),
        (
            names::LIMIT_SENT_BYTES,
            "counter",
            "Bytes the rate limit's shaper let through (since the limit was set).",
            |l| l.counters.map(|c| c.sent_bytes),
        ),
        (
            names::LIMIT_THROTTLED,
            "counter",
            "Times the shaper held frames back because the direction was over its rate (HTB overlimits).",
            |l| l.counters.map(|c| c.throttled),
        ),
        (
            names::LIMIT_DROPPED,
            "counter",
            "Frames the shaper dropped because its queue was full.",
            |l| l.counters.map(|c| c.dropped),
        ),
    ];
    for (name, kind, help, value) in families {
        let mut f = Family::new(out, name, kind, help);
        for s in samples {
            let cookie = s.stats.netns_cookie.to_string();
            for e in &s.stats.endpoints {
                for (direction, l) in [("to_vm", &e.rx_limit), ("from_vm", &e.tx_limit)] {
                    let Some(v) = l.as_ref().and_then(value) else {
                        continue;
                    };
                    let labels = [
                        ("netns", s.stats.netns.as_str()),
                        ("netns_cookie", &cookie),
                        ("endpoint", &e.pod),
                        ("tap", &e.tap),
                        ("direction", direction),
                    ];
                    f.sample(&labels, v);
                }
            }
        }
    }
}

/// Renders `c` in the text exposition format.
pub fn render(c: &Collection) -> String {
    let mut out = String::new();
    let samples = &c.samples;
    let mut info = Family::new(
        &mut out,
        names::SANDBOX_INFO,
        "gauge",
        "A sandbox netns netshim serves (always 1); datapath is tcx, cls_bpf or mirred.",
    );
    for s in samples {
        info.sample(
            &[
                ("netns", &s.stats.netns),
                ("netns_cookie", &s.stats.netns_cookie.to_string()),
                ("backend", s.stats.backend.as_str()),
                ("datapath", &s.datapath),
            ],
            1,
        );
    }
    endpoint_family(
        &mut out,
        samples,
        names::PACKETS,
        "Packets forwarded between the pod device and the tap (to_vm: pod ingress to tap).",
        |d| vec![(None, d.packets)],
    );
    endpoint_family(
        &mut out,
        samples,
        names::BYTES,
        "Bytes of the forwarded packets (eBPF: whole L2 frames; mirred: from the network header).",
        |d| vec![(None, d.bytes)],
    );
    endpoint_family(
        &mut out,
        samples,
        names::ERRORS,
        "Packets that could not be forwarded (eBPF: peers entry with unknown flags, or bpf_redirect refused by the helper; mirred: action drops).",
        |d| vec![(None, d.errors)],
    );
    endpoint_family(
        &mut out,
        samples,
        names::DROPPED,
        "Packets not delivered, by reason: mtu (eBPF datapath: larger than the target device's MTU), source_mac, source_ip, arp, nd, ra, dhcp_server, ethertype (eBPF datapath, from_vm: refused by the source guard in enforce mode: a source MAC or IP address that is not the VM's, a spoofed ARP or neighbour advertisement, a router advertisement or redirect, a DHCP server reply, an ethertype not allowed), tap_tx_dropped (to_vm: the tap dropped them, no VMM reading or its ring full), pod_tx_dropped (from_vm: the pod device's xmit dropped them), mirred_action (mirred: the action's own drops, e.g. a tap without carrier). A reason without a sample is not counted there.",
        |d| {
            d.dropped
                .reasons()
                .into_iter()
                .filter_map(|(reason, c)| Some((Some(("reason", reason)), c.value()?)))
                .collect()
        },
    );
    endpoint_family(
        &mut out,
        samples,
        names::GUARD_FLAGGED,
        "Packets the source guard in log mode would have dropped and delivered, by reason (eBPF datapath, from_vm; the reasons of netshim_endpoint_dropped_total). No sample: the sandbox's datapath has no guard maps.",
        |d| {
            d.guard
                .iter()
                .flat_map(|g| {
                    GUARD_REASONS
                        .iter()
                        .zip(g.flagged)
                        .map(|(reason, n)| (Some(("reason", *reason)), n))
                })
                .collect()
        },
    );
    endpoint_family(
        &mut out,
        samples,
        names::DELIVERED,
        "Forwarded packets minus those the kernel dropped after the datapath (tap_tx_dropped, pod_tx_dropped, mirred_action); frames still queued count as delivered.",
        |d| d.delivered.map(|n| (None, n)).into_iter().collect(),
    );
    limit_families(&mut out, samples);
    for (name, help, value) in [
        (
            names::UNMATCHED_PACKETS,
            "Packets the eBPF classifier saw on a device without a peer entry (passed on).",
            (|d: &DirectionStats| d.packets) as fn(&DirectionStats) -> u64,
        ),
        (
            names::UNMATCHED_BYTES,
            "Bytes of the packets the eBPF classifier saw on a device without a peer entry.",
            |d: &DirectionStats| d.bytes,
        ),
    ] {
        let mut f = Family::new(&mut out, name, "counter", help);
        for s in samples.iter().filter(|s| s.datapath != "mirred") {
            f.sample(
                &[
                    ("netns", &s.stats.netns),
                    ("netns_cookie", &s.stats.netns_cookie.to_string()),
                ],
                value(&s.stats.unmatched),
            );
        }
    }
    let mut errors = Family::new(
        &mut out,
        names::SCRAPE_ERRORS,
        "gauge",
        "Sandboxes whose counters could not be read in this collection.",
    );
    errors.sample(&[], c.errors.len() as u64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        datapath::TcBackend,
        stats::{DropCount, Dropped, EndpointStats, GuardStats, SandboxStats},
    };

    fn sample(netns: &str) -> Sample {
        Sample {
            stats: SandboxStats {
                netns: netns.into(),
                netns_inode: 4026532000,
                netns_cookie: 4097,
                backend: TcBackend::Ebpf,
                endpoints: vec![EndpointStats {
                    index: 0,
                    pod: "eth0".into(),
                    tap: "tap0_kata".into(),
                    to_vm: DirectionStats {
                        packets: 40,
                        bytes: 2800,
                        errors: 1,
                        dropped: Dropped {
                            mtu: DropCount::Counted(2),
                            tap_tx_dropped: DropCount::Counted(5),
                            ..Dropped::default()
                        },
                        delivered: Some(35),
                        guard: None,
                    },
                    from_vm: DirectionStats {
                        packets: 25,
                        bytes: 1750,
                        errors: 0,
                        dropped: Dropped {
                            mtu: DropCount::NotCounted,
                            guard: [1000, 0, 0, 7, 0, 0, 0].map(DropCount::Counted),
                            pod_tx_dropped: DropCount::Counted(0),
                            ..Dropped::default()
                        },
                        delivered: Some(25),
                        guard: Some(GuardStats {
                            mode: crate::guard::GuardMode::Enforce,
                            flagged: [0, 4, 0, 0, 0, 0, 0],
                        }),
                    },
                    rx_limit: None,
                    tx_limit: None,
                }],
                unmatched: DirectionStats {
                    packets: 3,
                    bytes: 180,
                    errors: 0,
                    ..DirectionStats::default()
                },
                notes: Vec::new(),
                health: crate::sandbox::Health::Ok,
                problems: Vec::new(),
            },
            datapath: "tcx".into(),
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("/run/netns/pod-1"), "/run/netns/pod-1");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn metric_names_follow_the_grammar() {
        for n in [
            names::SANDBOX_INFO,
            names::PACKETS,
            names::BYTES,
            names::ERRORS,
            names::DROPPED,
            names::DELIVERED,
            names::GUARD_FLAGGED,
            names::UNMATCHED_PACKETS,
            names::UNMATCHED_BYTES,
            names::SCRAPE_ERRORS,
        ] {
            assert!(is_metric_name(n), "{n}");
        }
        assert!(is_metric_name("a:b_1"));
        assert!(!is_metric_name("1abc"));
        assert!(!is_metric_name("a-b"));
        assert!(!is_metric_name(""));
    }

    #[test]
    fn renders_families_with_help_and_type_first() {
        let text = render(&Collection {
            samples: vec![sample("pod\"1\\x\ny")],
            errors: vec!["boom".into()],
        });
        let lines: Vec<&str> = text.lines().collect();
        let esc = r#"netns="pod\"1\\x\ny",netns_cookie="4097""#;
        for want in [
            format!("netshim_sandbox_info{{{esc},backend=\"ebpf\",datapath=\"tcx\"}} 1"),
            format!("netshim_endpoint_packets_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"to_vm\",backend=\"ebpf\"}} 40"),
            format!("netshim_endpoint_packets_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\"}} 25"),
            format!("netshim_endpoint_bytes_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"to_vm\",backend=\"ebpf\"}} 2800"),
            format!("netshim_endpoint_redirect_errors_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"to_vm\",backend=\"ebpf\"}} 1"),
            format!("netshim_endpoint_dropped_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"to_vm\",backend=\"ebpf\",reason=\"mtu\"}} 2"),
            format!("netshim_endpoint_dropped_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"to_vm\",backend=\"ebpf\",reason=\"tap_tx_dropped\"}} 5"),
            format!("netshim_endpoint_dropped_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\",reason=\"pod_tx_dropped\"}} 0"),
            format!("netshim_endpoint_dropped_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\",reason=\"source_mac\"}} 1000"),
            format!("netshim_endpoint_dropped_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\",reason=\"nd\"}} 7"),
            format!("netshim_endpoint_dropped_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\",reason=\"ethertype\"}} 0"),
            format!("netshim_endpoint_guard_flagged_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\",reason=\"source_ip\"}} 4"),
            format!("netshim_endpoint_guard_flagged_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"from_vm\",backend=\"ebpf\",reason=\"dhcp_server\"}} 0"),
            format!("netshim_endpoint_delivered_total{{{esc},endpoint=\"eth0\",tap=\"tap0_kata\",direction=\"to_vm\",backend=\"ebpf\"}} 35"),
            format!("netshim_unmatched_packets_total{{{esc}}} 3"),
            format!("netshim_unmatched_bytes_total{{{esc}}} 180"),
            "netshim_scrape_errors 1".to_owned(),
        ] {
            assert!(lines.contains(&want.as_str()), "missing {want} in\n{text}");
        }
        // Every sample's family was introduced by HELP then TYPE, each family once.
        let mut seen = Vec::new();
        let mut current: Option<&str> = None;
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name);
                assert_eq!(lines[i + 1].split(' ').nth(2), Some(name));
                current = Some(name);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(Some(name), current, "{line}");
                assert!(is_metric_name(name));
            }
        }
        assert_eq!(seen.len(), 14);
        assert!(text.ends_with('\n'));
        // A reason nothing counted has no sample (from_vm's mtu here), not a zero.
        assert!(!text.contains("direction=\"from_vm\",backend=\"ebpf\",reason=\"mtu\""));
        // The guard only runs from the VM: no guard sample for to_vm, neither dropped nor
        // flagged.
        for line in &lines {
            if line.contains("direction=\"to_vm\"") {
                assert!(!line.contains("reason=\"source_ip\""), "{line}");
                assert!(!line.starts_with(names::GUARD_FLAGGED), "{line}");
            }
        }
    }

    #[test]
    fn a_sandbox_without_guard_maps_has_no_guard_samples() {
        let mut s = sample("old");
        let from_vm = &mut s.stats.endpoints[0].from_vm;
        from_vm.dropped.guard = [DropCount::NotCounted; 7];
        from_vm.guard = None;
        let text = render(&Collection {
            samples: vec![s],
            errors: vec![],
        });
        assert!(!text.contains("reason=\"source_ip\""), "{text}");
        assert!(
            !text.contains(&format!("{}{{", names::GUARD_FLAGGED)),
            "{text}"
        );
        // The family is still introduced (a scraper sees the metric exists).
        assert!(text.contains(&format!("# TYPE {} counter", names::GUARD_FLAGGED)));
    }

    #[test]
    fn mirred_sandboxes_have_no_unmatched_samples() {
        let mut s = sample("m");
        s.datapath = "mirred".into();
        s.stats.backend = TcBackend::Mirred;
        let text = render(&Collection {
            samples: vec![s],
            errors: vec![],
        });
        assert!(!text.contains("netshim_unmatched_packets_total{"), "{text}");
        assert!(text.contains("backend=\"mirred\",datapath=\"mirred\"} 1"));
    }
}
