//! Rate limits (issue 15): kata's rx/tx limiter keys shape traffic into and out of the VM.
//!
//! Topology: client netns `veth0` <-> sandbox netns `eth0` (attached by netshim, tcfilter,
//! eBPF) <-> `tap0_kata` <-> vm-standin <-> guest netns `eth0` running `iperf3 -s`. rx is
//! client -> guest, tx is guest -> client (`iperf3 -R`). The achieved rate is checked
//! twice: on the wire (the bytes the shaper sent, Ethernet frames as tc counts them) and as
//! TCP goodput (iperf3's receiver; ~4.4% below the wire rate at MTU 1500, headers).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netshim_tests::netns_fixture::unique_octet;
use netshim_tests::netshim_cli::{netshim, netshim_json, netshim_ok, vm_standin_bin};
use netshim_tests::{is_root, veth_pair, ChildGuard, TestNetns};
use serde_json::Value;

struct Topology {
    client: TestNetns,
    sandbox: TestNetns,
    guest: TestNetns,
    guest_ip: String,
    guest_mac: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = netshim(&["detach", "--netns", self.sandbox.path().to_str().unwrap()]);
    }
}

fn topology(tag: &str) -> Topology {
    let client = TestNetns::new(&format!("nsrl-{tag}-c"));
    let sandbox = TestNetns::new(&format!("nsrl-{tag}-s"));
    let guest = TestNetns::new(&format!("nsrl-{tag}-g"));
    let n = unique_octet();
    let client_ip = format!("10.78.{n}.1");
    let guest_ip = format!("10.78.{n}.2");
    veth_pair(&client, "veth0", &sandbox, "eth0");
    client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "veth0"]);
    sandbox.ip(&["addr", "add", &format!("{guest_ip}/24"), "dev", "eth0"]);
    let guest_mac = sandbox.link_mac("eth0");
    Topology {
        client,
        sandbox,
        guest,
        guest_ip,
        guest_mac,
    }
}

fn ns(t: &TestNetns) -> &str {
    t.path().to_str().unwrap()
}

/// Starts the stand-in on tap0_kata (after attach) and waits for `ready`.
fn start_standin(t: &Topology) -> (ChildGuard, mpsc::Receiver<String>) {
    start_standin_on(t, &["--tap", "tap0_kata"], &t.guest_ip)
}

/// The stand-in on `queue` (`--tap NAME` or `--sandbox-dev PATH`), the guest at `guest_ip`.
fn start_standin_on(
    t: &Topology,
    queue: &[&str],
    guest_ip: &str,
) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut cmd = Command::new(vm_standin_bin());
    cmd.arg("--sandbox-netns")
        .arg(t.sandbox.path())
        .args(queue)
        .arg("--guest-netns")
        .arg(t.guest.path())
        .args(["--guest-ifname", "eth0", "--guest-mac", &t.guest_mac])
        .args(["--guest-addr", &format!("{guest_ip}/24")]);
    netshim_tests::standin::spawn_ready(cmd)
}

/// The shaper's sent bytes of `direction` (`rx`/`tx`) as `netshim limit` reads them back.
fn shaper_sent(t: &Topology, direction: &str) -> u64 {
    shaper_sent_in(&t.sandbox, direction)
}

fn shaper_sent_in(sandbox: &TestNetns, direction: &str) -> u64 {
    let v = netshim_json(&["limit", "--netns", ns(sandbox)]);
    v["endpoints"][0][direction]["counters"]["sent_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {direction} counters: {v}"))
}

/// One iperf3 TCP run; `(goodput bit/s, seconds, retransmits, JSON)`.
fn iperf3(t: &Topology, secs: u32, reverse: bool, extra: &[&str]) -> (f64, f64, u64, Value) {
    iperf3_from(&t.client, &t.guest_ip, secs, reverse, extra)
}

/// [`iperf3`] from `client` to the server at `server_ip`.
fn iperf3_from(
    client: &TestNetns,
    server_ip: &str,
    secs: u32,
    reverse: bool,
    extra: &[&str],
) -> (f64, f64, u64, Value) {
    let s = secs.to_string();
    let mut args = vec!["iperf3", "-c", server_ip, "-p", "5201", "-t", &s, "-J"];
    if reverse {
        args.push("-R");
    }
    args.extend_from_slice(extra);
    let mut last = Value::Null;
    for _ in 0..50 {
        let out = client.exec(&args);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // iperf3 3.12 can exit 0 with an error in its JSON.
        if out.status.success() && v["error"].is_null() {
            let end = &v["end"]["sum_received"];
            let bps = end["bits_per_second"]
                .as_f64()
                .unwrap_or_else(|| panic!("sum_received: {v}"));
            let seconds = end["seconds"].as_f64().expect("seconds");
            let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
            return (bps, seconds, retr, v);
        }
        last = v["error"].clone();
        if !last.as_str().is_some_and(|e| e.contains("refused")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 {args:?} failed: {last}");
}

/// A limited run: `(wire rate, goodput)` in bit/s.
fn limited_run(t: &Topology, direction: &str, secs: u32) -> (f64, f64) {
    let before = shaper_sent(t, direction);
    let (goodput, seconds, retr, _) = iperf3(t, secs, direction == "tx", &[]);
    let wire = (shaper_sent(t, direction) - before) as f64 * 8.0 / seconds;
    eprintln!(
        "  {direction}: wire {:.1} Mbit/s, goodput {:.1} Mbit/s, {retr} retransmits",
        wire / 1e6,
        goodput / 1e6
    );
    (wire, goodput)
}

/// Whether the `peers` entry of endpoint 0's tap has `PEER_REDIRECT_PEER` (bit 0 of
/// `flags`, the third u32 of the value), as bpftool dumps the pinned map.
fn tap_redirects_peer(sandbox: &TestNetns) -> bool {
    let status = netshim_json(&["status", "--netns", ns(sandbox)]);
    let tap = status["endpoints"][0]["tap_ifindex"]
        .as_u64()
        .expect("tap_ifindex");
    let dir = netshim_tests::netshim_cli::pin_dir(sandbox);
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(dir.join("peers"))
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let bytes = |x: &Value| -> Vec<u8> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .map(|b| {
                        let h = b.as_str().expect("hex byte").trim_start_matches("0x");
                        u8::from_str_radix(h, 16).expect("hex byte")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for e in v.as_array().expect("entries") {
        let key = match &e["key"] {
            Value::Number(n) => n.as_u64().unwrap(),
            k => bytes(k)
                .iter()
                .rev()
                .fold(0u64, |acc, b| acc << 8 | *b as u64),
        };
        if key != tap {
            continue;
        }
        let flags = match &e["value"] {
            Value::Object(o) => o["flags"].as_u64().expect("flags"),
            val => {
                let b = bytes(val);
                u32::from_le_bytes(b[8..12].try_into().unwrap()) as u64
            }
        };
        return flags & 1 == 1;
    }
    panic!("no peers entry for the tap (ifindex {tap}): {v}");
}

fn set_limits(t: &Topology, args: &[&str]) -> Value {
    let mut all = vec!["limit", "--netns", ns(&t.sandbox)];
    all.extend_from_slice(args);
    netshim_json(&all)
}

fn assert_within(what: &str, got: f64, limit: f64, low: f64, high: f64) {
    let r = got / limit;
    assert!(
        (low..=high).contains(&r),
        "{what}: {:.1} Mbit/s is {:.1}% of the {:.0} Mbit/s limit (allowed {:.0}%..{:.0}%)",
        got / 1e6,
        r * 100.0,
        limit / 1e6,
        low * 100.0,
        high * 100.0
    );
}

/// Asserts what `measure` gives, `(wire, goodput)` in bit/s, is within ±5% of `rate` on the
/// wire and 90-105% in goodput (headers are 4.4%). The machine is shared with the other test
/// thread: a run out of the band is run again once (a shaper that is wrong is wrong twice).
fn in_band(what: &str, rate: f64, measure: impl Fn() -> (f64, f64)) {
    let got = measure();
    if !within_band(got, rate) {
        eprintln!("  {what}: out of the band, once more");
        assert_in_band(what, measure(), rate);
        return;
    }
    assert_in_band(what, got, rate);
}

/// [`in_band`] for a rate near what the machine carries at all: after a run below the band,
/// `unlimited` measures the path without the limit, interleaved. When the other test thread
/// has taken the headroom (the path carries under 1.1x the rate now), that shortfall is the
/// machine's, not the shaper's: only the band's upper bound is judged (a shaper that lets
/// too much through still fails). Otherwise the run is made again once, as in [`in_band`].
fn in_band_near_capacity(
    what: &str,
    rate: f64,
    measure: impl Fn() -> (f64, f64),
    unlimited: impl Fn() -> f64,
) {
    for attempt in 0..2 {
        let got = measure();
        if within_band(got, rate) {
            return;
        }
        if got.0 < 0.95 * rate || got.1 < 0.90 * rate {
            let carried = unlimited();
            if carried < 1.1 * rate {
                eprintln!(
                    "  {what}: below the band while the unlimited path carries only {:.2} \
                     Gbit/s (under 1.1x the limit): the upper bound alone is judged",
                    carried / 1e9
                );
                assert_within(&format!("{what} on the wire"), got.0, rate, 0.0, 1.05);
                assert_within(&format!("{what} goodput"), got.1, rate, 0.0, 1.05);
                return;
            }
        }
        if attempt == 1 {
            assert_in_band(what, got, rate);
        }
        eprintln!("  {what}: out of the band, once more");
    }
}

fn within_band((wire, goodput): (f64, f64), rate: f64) -> bool {
    (0.95..=1.05).contains(&(wire / rate)) && (0.90..=1.05).contains(&(goodput / rate))
}

fn assert_in_band(what: &str, got: (f64, f64), rate: f64) {
    assert_within(&format!("{what} on the wire"), got.0, rate, 0.95, 1.05);
    assert_within(&format!("{what} goodput"), got.1, rate, 0.90, 1.05);
}

#[test]
fn limits_shape_into_and_out_of_the_vm_within_5_percent_and_change_live() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let t = topology("shape");
    netshim_ok(&["attach", "--netns", ns(&t.sandbox)]);
    let (_standin, _lines) = start_standin(&t);
    let _server = t.guest.spawn(&["iperf3", "-s", "-p", "5201"]);

    let (base_rx, ..) = iperf3(&t, 2, false, &[]);
    let (base_tx, ..) = iperf3(&t, 2, true, &[]);
    eprintln!(
        "unlimited: rx {:.2} Gbit/s, tx {:.2} Gbit/s",
        base_rx / 1e9,
        base_tx / 1e9
    );

    for (rate, text) in [(100e6, "100M"), (1e9, "1G"), (5e9, "5G")] {
        let carried = base_rx.min(base_tx);
        if rate * 1.1 > carried {
            eprintln!(
                "SKIP {text}: unlimited this path carries only {:.2} Gbit/s here, not 1.1x the \
                 limit, so a shortfall would be the machine's and not the shaper's",
                carried / 1e9
            );
            continue;
        }
        let v = set_limits(&t, &["--rx", text, "--tx", text]);
        assert!(
            !tap_redirects_peer(&t.sandbox),
            "a tx limit: the VM's frames take bpf_redirect through eth0's qdisc"
        );
        for d in ["rx", "tx"] {
            assert_eq!(
                v["endpoints"][0][d]["live_rate_bps"].as_f64(),
                Some(rate),
                "{v}"
            );
        }
        eprintln!("limit {text}:");
        for d in ["rx", "tx"] {
            let what = format!("{d} {text}");
            let measure = || limited_run(&t, d, 3);
            if rate * 1.5 > carried {
                // The path unlimited, between two limited runs (the limits back after it).
                let unlimited = || {
                    set_limits(&t, &["--rx", "0", "--tx", "0"]);
                    let (got, ..) = iperf3(&t, 2, d == "tx", &[]);
                    set_limits(&t, &["--rx", text, "--tx", text]);
                    got
                };
                in_band_near_capacity(&what, rate, measure, unlimited);
            } else {
                in_band(&what, rate, measure);
            }
        }
        if text == "1G" {
            stats_and_metrics_show_the_limits(&t, rate);
            live_change_takes_effect_within_a_second(&t);
            // Removing the limits gives the path back its full rate.
            let v = set_limits(&t, &["--rx", "0", "--tx", "0"]);
            assert!(v["endpoints"][0]["rx"].is_null() && v["endpoints"][0]["tx"].is_null());
            assert_eq!(
                t.sandbox
                    .tc(&["qdisc", "show", "dev", "tap0_kata", "root"])
                    .split_whitespace()
                    .nth(1),
                Some("noqueue")
            );
            for (d, reverse, base) in [("rx", false, base_rx), ("tx", true, base_tx)] {
                // Well over the removed 1 Gbit/s (a shaper left behind holds it there); not
                // a share of `base`: the other test thread may have the CPU now.
                let restored = |got: f64| got > 1.5 * rate;
                let (mut got, ..) = iperf3(&t, 2, reverse, &[]);
                if !restored(got) {
                    eprintln!("  {d} after removal {:.2} Gbit/s, once more", got / 1e9);
                    got = iperf3(&t, 2, reverse, &[]).0;
                }
                eprintln!("removed: {d} {:.2} Gbit/s", got / 1e9);
                assert!(
                    restored(got),
                    "{d} after removal {got:.0} bit/s, unlimited before {base:.0}, limit was 1 Gbit/s"
                );
            }
            assert!(
                tap_redirects_peer(&t.sandbox),
                "bpf_redirect_peer is back for the VM's frames without a tx limit"
            );
        }
    }
}

/// `stats` (JSON and Prometheus text) shows both limits, and the shaper's counters are the
/// ones `limit` reads.
fn stats_and_metrics_show_the_limits(t: &Topology, rate: f64) {
    let all = netshim_json(&["stats", "--netns", ns(&t.sandbox)]);
    let v = &all[0];
    let e = &v["endpoints"][0];
    for (key, d) in [("rx_limit", "rx"), ("tx_limit", "tx")] {
        assert_eq!(e[key]["live_rate_bps"].as_f64(), Some(rate), "{v}");
        let c = &e[key]["counters"];
        assert!(c["sent_bytes"].as_u64().unwrap() > 300_000_000, "{d}: {v}");
        assert!(
            c["throttled"].as_u64().unwrap() > 0,
            "{d} was over its rate: {v}"
        );
        let sent = shaper_sent(t, d);
        assert!(
            sent >= c["sent_bytes"].as_u64().unwrap(),
            "{d}: limit reads {sent}: {v}"
        );
    }
    let text = netshim_ok(&["stats", "--netns", ns(&t.sandbox), "--format", "prometheus"]);
    for (direction, d) in [("to_vm", "rx"), ("from_vm", "tx")] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("netshim_endpoint_rate_limit_bits_per_second{")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .unwrap_or_else(|| panic!("no {direction} rate sample: {text}"));
        assert!(line.ends_with(&format!(" {}", rate as u64)), "{line}");
        let sent: u64 = text
            .lines()
            .find(|l| {
                l.starts_with("netshim_endpoint_rate_limit_sent_bytes_total{")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {direction} sent sample: {text}"));
        assert!(
            sent > 300_000_000 && sent <= shaper_sent(t, d),
            "{d}: {sent}"
        );
    }
}

/// At 1 Gbit/s rx, `netshim limit --rx 100M` during a transfer: the rate falls to the new
/// limit within a second of the command returning.
fn live_change_takes_effect_within_a_second(t: &Topology) {
    let started = Instant::now();
    let mut cmd = t.client.exec_cmd(&[
        "iperf3",
        "-c",
        &t.guest_ip,
        "-p",
        "5201",
        "-t",
        "4",
        "-i",
        "0.25",
        "-J",
    ]);
    cmd.stdout(Stdio::piped()).stdin(Stdio::null());
    let client = ChildGuard::spawn(cmd, "iperf3 live");
    std::thread::sleep(Duration::from_millis(1500));
    set_limits(t, &["--rx", "100M"]);
    let changed_at = started.elapsed().as_secs_f64();
    let out = client.wait_with_output(Duration::from_secs(15));
    let v: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let intervals: Vec<(f64, f64)> = v["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| {
            let s = &i["sum"];
            (
                s["end"].as_f64().unwrap(),
                s["bits_per_second"].as_f64().unwrap(),
            )
        })
        .collect();
    eprintln!(
        "live change at {changed_at:.2} s; intervals (end s, Mbit/s): {:?}",
        intervals
            .iter()
            .map(|(e, b)| (*e, (b / 1e6).round()))
            .collect::<Vec<_>>()
    );
    let before: Vec<_> = intervals
        .iter()
        .filter(|(e, _)| *e <= changed_at - 0.3)
        .collect();
    assert!(
        before.iter().any(|(_, b)| *b > 500e6),
        "1 Gbit/s before the change: {intervals:?}"
    );
    // Every interval that starts a second after the change is far below the old 1 Gbit/s
    // (an interval counts what the sender wrote: 64 KiB frames make single 0.25 s intervals
    // swing between 84 and 126 Mbit/s), and together they are at the new limit.
    let after: Vec<_> = intervals
        .iter()
        .filter(|(e, _)| *e - 0.25 >= changed_at + 1.0)
        .collect();
    assert!(after.len() >= 4, "{intervals:?}");
    for (end, bps) in &after {
        assert!(
            *bps < 200e6,
            "{:.1} Mbit/s at {end:.2} s, more than 1 s after the change to 100 Mbit/s at \
             {changed_at:.2} s",
            bps / 1e6
        );
    }
    let mean = after.iter().map(|(_, b)| b).sum::<f64>() / after.len() as f64;
    assert_within("the rate after the live change", mean, 100e6, 0.85, 1.15);
}

/// The devices' root qdisc kind, as tc lists it.
fn root_kind(t: &TestNetns, dev: &str) -> String {
    let out = t.tc(&["qdisc", "show", "dev", dev, "root"]);
    out.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

fn class_rate(t: &TestNetns, dev: &str) -> String {
    let out = t.tc(&["class", "show", "dev", dev, "classid", "6e73:1"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "rate")
        .unwrap_or_else(|| panic!("{out}"));
    words[i + 1].to_owned()
}

/// kata's keys, unchanged in a kata configuration.toml, make both shapers at attach, on the
/// eBPF and the mirred datapath; detach leaves the pod device as it was.
#[test]
fn kata_keys_from_a_configuration_toml_limit_both_directions() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    for backend in ["ebpf", "mirred"] {
        let t = topology("kata");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("configuration.toml");
        let mut f = std::fs::File::create(&config).unwrap();
        writeln!(
            f,
            "[hypervisor.qemu]\npath = \"/usr/bin/qemu-system-x86_64\"\n\
             rx_rate_limiter_max_rate = 100000000\ntx_rate_limiter_max_rate = 200000000\n\
             [runtime]\ninternetworking_model = \"tcfilter\""
        )
        .unwrap();
        let before = root_kind(&t.sandbox, "eth0");
        let attach = netshim_json(&[
            "attach",
            "--netns",
            ns(&t.sandbox),
            "--config",
            config.to_str().unwrap(),
            "--tc-backend",
            backend,
        ]);
        let e = &attach["endpoints"][0];
        assert_eq!(e["shapers"]["rx"]["rate_bps"], 100_000_000, "{attach}");
        assert_eq!(e["shapers"]["rx"]["device"], "tap0_kata");
        assert_eq!(e["shapers"]["tx"]["rate_bps"], 200_000_000);
        assert_eq!(e["shapers"]["tx"]["device"], "eth0");
        if backend == "ebpf" {
            // The VM's frames must pass eth0's qdisc: no bpf_redirect_peer for this endpoint.
            assert_eq!(e["redirect"]["from_vm"], "redirect", "{attach}");
        }
        assert_eq!(class_rate(&t.sandbox, "tap0_kata"), "100Mbit");
        assert_eq!(class_rate(&t.sandbox, "eth0"), "200Mbit");
        let status = netshim_json(&["status", "--netns", ns(&t.sandbox)]);
        let s = &status["endpoints"][0];
        assert_eq!(s["rx_limit"]["live_rate_bps"], 100_000_000, "{status}");
        assert_eq!(s["tx_limit"]["live_rate_bps"], 200_000_000, "{status}");
        assert_eq!(status["health"], "ok", "{status}");
        // Someone changes the shaper's rate, or deletes it: status says so.
        t.sandbox.tc(&[
            "class",
            "change",
            "dev",
            "tap0_kata",
            "parent",
            "6e73:",
            "classid",
            "6e73:1",
            "htb",
            "rate",
            "5mbit",
        ]);
        let out = netshim(&["status", "--netns", ns(&t.sandbox), "--json"]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "a rate changed behind netshim's back"
        );
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            status["problems"]
                .to_string()
                .contains("behind netshim's back"),
            "{status}"
        );
        netshim_ok(&["limit", "--netns", ns(&t.sandbox), "--rx", "100M"]);
        assert_eq!(class_rate(&t.sandbox, "tap0_kata"), "100Mbit");
        t.sandbox.tc(&["qdisc", "del", "dev", "eth0", "root"]);
        let out = netshim(&["status", "--netns", ns(&t.sandbox), "--json"]);
        assert_eq!(out.status.code(), Some(4), "status of a broken sandbox");
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["health"], "broken", "{status}");
        assert!(
            status["problems"].to_string().contains("tx limit"),
            "{status}"
        );
        netshim_ok(&["limit", "--netns", ns(&t.sandbox), "--tx", "200M"]);
        assert_eq!(class_rate(&t.sandbox, "eth0"), "200Mbit");
        netshim_ok(&["detach", "--netns", ns(&t.sandbox)]);
        assert_eq!(
            root_kind(&t.sandbox, "eth0"),
            before,
            "{backend}: eth0's qdisc back"
        );
        assert!(!t.sandbox.link_exists("tap0_kata"));
    }
}

fn exit_code_and_stderr(args: &[&str]) -> (Option<i32>, String) {
    let out = netshim(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Negative, non-numeric, absurd and too-small rates and bursts are exit 2 naming the key,
/// from flags, from a kata configuration and from `netshim limit`; a foreign root qdisc is
/// exit 3 and stays; models without a device for a direction refuse it; nothing half-made.
#[test]
fn bad_limits_are_refused_with_their_key_and_change_nothing() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let t = topology("bad");
    let sb = ns(&t.sandbox);
    for (flag, value, says) in [
        ("--rx-rate", "-5", "negative"),
        ("--rx-rate", "fast", "not a number"),
        ("--tx-rate", "12MBps", "byte rate"),
        ("--tx-rate", "100", "below"),
        ("--rx-rate", "5T", "above"),
        ("--rx-burst", "10", "outside"),
    ] {
        let arg = format!("{flag}={value}");
        let (code, err) = exit_code_and_stderr(&["attach", "--netns", sb, &arg]);
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
    let (code, err) = exit_code_and_stderr(&["attach", "--netns", sb, "--rx-burst", "64k"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("rx burst") && err.contains("without a rate"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        (
            "[hypervisor.qemu]\nrx_rate_limiter_max_rate = -1",
            "hypervisor.qemu.rx_rate_limiter_max_rate",
        ),
        (
            "[hypervisor.fc]\ntx_rate_limiter_max_rate = \"1G\"",
            "hypervisor.fc.tx_rate_limiter_max_rate",
        ),
        ("[netshim]\nrx_rate = \"fast\"", "netshim.rx_rate"),
        ("[netshim]\ntx_burst = 99999999999", "netshim.tx_burst"),
    ] {
        let config = dir.path().join("c.toml");
        std::fs::write(&config, text).unwrap();
        let (code, err) = exit_code_and_stderr(&[
            "attach",
            "--netns",
            sb,
            "--config",
            config.to_str().unwrap(),
        ]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
    }
    let (code, err) = exit_code_and_stderr(&["limit", "--netns", sb, "--rx", "1G"]);
    assert_eq!(code, Some(2), "not attached: {err}");
    // None of that made anything.
    assert!(!t.sandbox.link_exists("tap0_kata"));
    assert_eq!(root_kind(&t.sandbox, "eth0"), "noqueue");

    // A root qdisc of someone else's on eth0: refused (exit 3), kept, nothing made.
    t.sandbox.tc(&[
        "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "tbf", "rate", "1gbit", "burst",
        "64kb", "latency", "50ms",
    ]);
    let (code, err) = exit_code_and_stderr(&["attach", "--netns", sb, "--tx-rate", "1G"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("eth0") && err.contains("tbf"), "{err}");
    assert_eq!(root_kind(&t.sandbox, "eth0"), "tbf");
    assert!(!t.sandbox.link_exists("tap0_kata"), "nothing half-made");
    assert!(netshim_json(&["status", "--netns", sb])["attached"] == false);
    // rx alone does not touch eth0: fine.
    netshim_ok(&["attach", "--netns", sb, "--rx-rate", "1G"]);
    let (code, err) = exit_code_and_stderr(&["limit", "--netns", sb, "--tx", "1G"]);
    assert_eq!(code, Some(3), "{err}");
    let (code, err) =
        exit_code_and_stderr(&["limit", "--netns", sb, "--endpoint", "eth9", "--rx", "1G"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no endpoint eth9"), "{err}");
    let v = netshim_json(&["limit", "--netns", sb]);
    assert_eq!(
        v["endpoints"][0]["rx"]["live_rate_bps"], 1_000_000_000u64,
        "{v}"
    );
    assert!(v["endpoints"][0]["tx"].is_null(), "{v}");
    for (args, says) in [
        (vec!["--rx=-1"], "negative"),
        (vec!["--tx", "1e9"], "not a number"),
        (vec!["--rx-burst", "512m"], "outside"),
        (vec!["--tx-burst", "64k"], "without a rate"),
    ] {
        let mut all = vec!["limit", "--netns", sb];
        all.extend(args.iter().copied());
        let (code, err) = exit_code_and_stderr(&all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    netshim_ok(&["detach", "--netns", sb]);
    assert_eq!(
        root_kind(&t.sandbox, "eth0"),
        "tbf",
        "the operator's qdisc stays"
    );

    // An IFB name taken by another device: refused (exit 3), nothing made, the device stays.
    t.sandbox.ip(&[
        "link",
        "add",
        "ifb0_kata",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
    ]);
    let (code, err) = exit_code_and_stderr(&[
        "attach",
        "--netns",
        sb,
        "--model",
        "none",
        "--tx-rate",
        "1G",
    ]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("ifb0_kata") && err.contains("not an IFB"),
        "{err}"
    );
    assert!(t.sandbox.link_exists("ifb0_kata") && !t.sandbox.link_exists("tap0_kata"));
    assert_eq!(netshim_json(&["status", "--netns", sb])["attached"], false);
}

/// The CNI plugin takes kata's annotation names from runtimeConfig and args.cni, shapes at
/// ADD, and DEL leaves the pod device as it was; a bad value is CNI error 7 naming the key.
#[test]
fn the_cni_plugin_takes_kata_annotations_from_runtime_config_and_args() {
    use netshim_tests::cni_runtime::{cni_error, netshim_conf, veth_pod, Runtime};
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let (host, sandbox) = veth_pod("rl", 79);
    let rt = Runtime::new(&host, &sandbox);
    let rx = "io.katacontainers.config.hypervisor.rx_rate_limiter_max_rate";
    let tx = "io.katacontainers.config.hypervisor.tx_rate_limiter_max_rate";
    let bad = netshim_conf("1.0.0", serde_json::json!({"runtimeConfig": {rx: "fast"}}));
    let (code, err) = cni_error(&rt.netshim("ADD", &bad, &[]));
    assert_eq!(code, 7, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("runtimeConfig.{rx}")),
        "{err}"
    );
    assert!(!sandbox.link_exists("tap0_kata"), "nothing made");
    let conf = netshim_conf(
        "1.0.0",
        serde_json::json!({"runtimeConfig": {rx: 100000000}, "args": {"cni": {tx: "200000000"}}}),
    );
    let out = rt.netshim("ADD", &conf, &[]);
    assert!(
        out.status.success(),
        "ADD: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(class_rate(&sandbox, "tap0_kata"), "100Mbit");
    assert_eq!(class_rate(&sandbox, "eth0"), "200Mbit");
    let out = rt.netshim("DEL", &conf, &[]);
    assert!(out.status.success(), "DEL: {out:?}");
    assert_eq!(
        root_kind(&sandbox, "eth0"),
        "noqueue",
        "DEL took the shaper away"
    );
    assert!(!sandbox.link_exists("tap0_kata"));
}

/// `watch --rx-rate` gives the endpoints it hot-plugs later the same limit.
#[test]
fn watch_limits_the_endpoints_it_hot_plugs() {
    use netshim_tests::netshim_cli::Follower;
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let t = topology("watch");
    let watch = Follower::start(&[
        "watch",
        "--netns",
        ns(&t.sandbox),
        "--rx-rate",
        "300M",
        "--tx-rate",
        "400M",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.sandbox.link_exists("tap0_kata") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    veth_pair(&t.client, "veth1", &t.sandbox, "eth1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(t.sandbox.link_exists("tap1_kata")
        && t.sandbox
            .try_tc(&["class", "show", "dev", "eth1"])
            .contains("6e73:1"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = watch.stderr();
    let _ = watch.stop();
    for (dev, rate) in [
        ("tap0_kata", "300Mbit"),
        ("eth0", "400Mbit"),
        ("tap1_kata", "300Mbit"),
        ("eth1", "400Mbit"),
    ] {
        assert_eq!(
            class_rate(&t.sandbox, dev),
            rate,
            "{dev}; watch said: {stderr}"
        );
    }
    let v = netshim_json(&["limit", "--netns", ns(&t.sandbox)]);
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(2), "{v}");
    netshim_ok(&["detach", "--netns", ns(&t.sandbox)]);
    for dev in ["eth0", "eth1"] {
        assert_eq!(root_kind(&t.sandbox, dev), "noqueue", "{dev}");
    }
}

/// The none model's tx and the macvtap model's rx have no qdisc of netshim's on their path:
/// they are shaped on an IFB fed by kata's ingress mirred redirect, and come within the band
/// like the others; detach takes the IFB and the redirect away.
#[test]
fn the_none_and_macvtap_models_shape_through_an_ifb() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let rate = 100e6;
    // One measured run: the client netns, the server's address, the direction's shaper.
    let run = |t: &Topology, client: &TestNetns, ip: &str, d: &str| {
        let measure = || {
            let before = shaper_sent_in(&t.sandbox, d);
            let (goodput, seconds, _, _) = iperf3_from(client, ip, 2, d == "tx", &[]);
            let wire = (shaper_sent_in(&t.sandbox, d) - before) as f64 * 8.0 / seconds;
            eprintln!(
                "  {d}: wire {:.1} Mbit/s, goodput {:.1} Mbit/s",
                wire / 1e6,
                goodput / 1e6
            );
            (wire, goodput)
        };
        in_band(d, rate, measure);
    };

    // none: the tap alone; the sandbox talks to the guest over it (10.79.n.0/24).
    let t = topology("none");
    let n = unique_octet();
    let (tap_ip, guest_ip) = (format!("10.79.{n}.1"), format!("10.79.{n}.2"));
    let attach = netshim_json(&[
        "attach",
        "--netns",
        ns(&t.sandbox),
        "--model",
        "none",
        "--rx-rate",
        "100M",
        "--tx-rate",
        "100M",
    ]);
    let e = &attach["endpoints"][0];
    assert_eq!(e["shapers"]["rx"]["device"], "tap0_kata", "{attach}");
    assert_eq!(e["shapers"]["tx"]["device"], "ifb0_kata", "{attach}");
    assert_eq!(
        e["shapers"]["tx"]["fed_from"]["device"], "tap0_kata",
        "{attach}"
    );
    t.sandbox
        .ip(&["addr", "add", &format!("{tap_ip}/24"), "dev", "tap0_kata"]);
    let (_standin, _lines) = start_standin_on(&t, &["--tap", "tap0_kata"], &guest_ip);
    let _server = t.guest.spawn(&["iperf3", "-s", "-p", "5201"]);
    eprintln!("none model:");
    run(&t, &t.sandbox, &guest_ip, "rx");
    run(&t, &t.sandbox, &guest_ip, "tx");
    let status = netshim_json(&["status", "--netns", ns(&t.sandbox)]);
    assert!(
        status["skipped"].to_string().contains("netshim-ifb"),
        "{status}"
    );
    netshim_ok(&["detach", "--netns", ns(&t.sandbox)]);
    assert!(
        !t.sandbox.link_exists("ifb0_kata"),
        "the IFB went with detach"
    );
    drop(_server);
    drop(_standin);

    // macvtap: the pod device's frames reach the macvtap from its rx handler.
    let t = topology("mvtap");
    let attach = netshim_json(&[
        "attach",
        "--netns",
        ns(&t.sandbox),
        "--model",
        "macvtap",
        "--rx-rate",
        "100M",
        "--tx-rate",
        "100M",
    ]);
    let e = &attach["endpoints"][0];
    assert_eq!(e["shapers"]["rx"]["device"], "ifb0_kata", "{attach}");
    assert_eq!(e["shapers"]["rx"]["fed_from"]["device"], "eth0", "{attach}");
    assert_eq!(e["shapers"]["tx"]["device"], "tap0_kata", "{attach}");
    let dev = e["macvtap"]["device"]
        .as_str()
        .expect("macvtap device")
        .to_owned();
    let (_standin, _lines) = start_standin_on(&t, &["--sandbox-dev", &dev], &t.guest_ip);
    let _server = t.guest.spawn(&["iperf3", "-s", "-p", "5201"]);
    eprintln!("macvtap model:");
    run(&t, &t.client, &t.guest_ip, "rx");
    run(&t, &t.client, &t.guest_ip, "tx");
    let status = netshim_json(&["status", "--netns", ns(&t.sandbox)]);
    let m = &status["macvtaps"][0];
    assert_eq!(m["rx_limit"]["live_rate_bps"], 100_000_000, "{status}");
    assert_eq!(m["tx_limit"]["live_rate_bps"], 100_000_000, "{status}");
    drop(_server);
    drop(_standin);
    netshim_ok(&["detach", "--netns", ns(&t.sandbox)]);
    assert!(!t.sandbox.link_exists("ifb0_kata"));
    assert_eq!(
        t.sandbox
            .try_tc(&["qdisc", "show", "dev", "eth0", "ingress"])
            .trim(),
        "",
        "the pod device's ingress redirect went with detach"
    );
}
