//! The source guard is visible (issue 11): what it refuses from the VM is counted per reason
//! in `stats` (JSON and table) and Prometheus, and `netshim logs` / `watch` show
//! rate-limited records naming the endpoint, the reason and the offending address. Log
//! mode counts as flagged and delivers; off counts nothing and delivers.
//!
//! The "VM" is the test writing frames into the tap fd of a [`Pod`]; what is delivered is
//! what a client socket receives.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use netshim_tests::{
    netshim_cli::{attach_as_before_the_guard, netshim_json, netshim_ok, Follower, Pod},
    require_root,
    tap_reader::udp_frame,
    traffic, TapQueue,
};
use serde_json::Value;

/// An address that is not the pod's.
const FOREIGN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
/// A unicast MAC that is not the pod device's (the guest MAC).
const FOREIGN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x66];
const FOREIGN_MAC_STR: &str = "02:00:00:00:00:66";

/// A sandbox attached with `extra` attach flags (the eBPF backend), its tap open as the
/// VMM would, and a client socket the VM's datagrams are sent to.
struct Guarded {
    pod: Pod,
    tap: TapQueue,
    client: UdpSocket,
}

impl Guarded {
    fn new(tag: &str, extra: &[&str]) -> Guarded {
        let pod = Pod::new(tag);
        let mut args = vec!["attach", "--netns", pod.netns(), "--tc-backend", "ebpf"];
        args.extend_from_slice(extra);
        netshim_json(&args);
        Guarded::attached(pod)
    }

    /// `pod`, attached already.
    fn attached(pod: Pod) -> Guarded {
        pod.pin_pod_neighbor();
        let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
        let client = pod.client.udp_receiver(
            pod.client_ip,
            0,
            "bind the client socket",
            Duration::from_millis(300),
        );
        Guarded { pod, tap, client }
    }

    fn port(&self) -> u16 {
        self.client.local_addr().unwrap().port()
    }

    /// A datagram to the client from `src_mac` / `src_ip`.
    fn frame(&self, src_mac: [u8; 6], src_ip: Ipv4Addr, tag: &str) -> Vec<u8> {
        let p = &self.pod;
        udp_frame(
            src_mac,
            p.client_mac,
            src_ip,
            p.client_ip,
            4242,
            self.port(),
            tag.as_bytes(),
        )
    }

    fn write(&self, frame: &[u8], n: usize) {
        for _ in 0..n {
            self.tap
                .write_frame(frame)
                .expect("write a frame to the tap");
        }
    }

    /// Datagrams the client received until none came for a while.
    fn received(&self) -> usize {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while self.client.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    fn stats(&self) -> Value {
        netshim_json(&["stats", "--netns", self.pod.netns()])[0].clone()
    }

    fn stats_from_vm(&self) -> Value {
        self.stats()["endpoints"][0]["from_vm"].clone()
    }

    /// The value of the Prometheus sample `name` of this sandbox's from_vm direction with
    /// `reason` (`None`: no such sample).
    fn prometheus(&self, name: &str, reason: &str) -> Option<u64> {
        let text = netshim_ok(&[
            "stats",
            "--netns",
            self.pod.netns(),
            "--format",
            "prometheus",
        ]);
        let netns = format!("netns=\"{}\"", self.pod.netns());
        let reason = format!("reason=\"{reason}\"}}");
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&netns)
                    && l.contains("direction=\"from_vm\"")
                    && l.contains(&reason)
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }
}

/// A ring buffer has one consumer position: a `logs --all` of one test would take records
/// of another test's sandbox. The tests that read records take turns.
static RECORD_READERS: Mutex<()> = Mutex::new(());

fn reading_records() -> MutexGuard<'static, ()> {
    RECORD_READERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The guard records of `netns` (a name: `--netns` labels them with it, `--all` with the
/// path the attach recorded, `/run/netns/NAME`) with `reason` in a follower's stderr.
fn records<'a>(stderr: &'a str, netns: &str, reason: &str) -> Vec<&'a str> {
    let netns = format!("{netns}\"");
    let reason = format!("reason=\"{reason}\"");
    stderr
        .lines()
        .filter(|l| l.contains("netshim::guard") && l.contains(&netns) && l.contains(&reason))
        .collect()
}

/// Gives a follower the time to find the ring buffers (it rescans every second). Not an
/// assertion: the records the test expects are.
fn wait_following(f: &Follower) {
    let _ = f.wait_for(
        "following the source guard's records",
        Duration::from_secs(5),
    );
}

#[test]
fn enforced_refusals_show_in_stats_prometheus_and_logs() {
    require_root!();
    let _turn = reading_records();
    let g = Guarded::new("ge", &[]);
    let netns = g.pod.netns().to_owned();
    // A legitimate datagram, then 5 from a foreign source IP and 3 from a foreign MAC.
    g.write(&g.frame(g.pod.pod_mac, g.pod.pod_ip, "ok"), 1);
    g.write(&g.frame(g.pod.pod_mac, FOREIGN_IP, "spoofed ip"), 5);
    g.write(&g.frame(FOREIGN_MAC, g.pod.pod_ip, "spoofed mac"), 3);

    let from_vm = g.stats_from_vm();
    println!("stats from_vm: {from_vm}");
    assert_eq!(from_vm["dropped"]["source_ip"], 5, "{from_vm}");
    assert_eq!(from_vm["dropped"]["source_mac"], 3, "{from_vm}");
    for reason in ["arp", "nd", "ra", "dhcp_server", "ethertype"] {
        assert_eq!(from_vm["dropped"][reason], 0, "{reason}: {from_vm}");
    }
    assert_eq!(from_vm["guard"]["mode"], "enforce", "{from_vm}");
    assert_eq!(from_vm["guard"]["flagged"]["source_ip"], 0, "{from_vm}");
    // Guard drops are not forwarded packets, and not subtracted from delivered.
    assert_eq!(from_vm["packets"], 1, "{from_vm}");
    assert_eq!(from_vm["delivered"], 1, "{from_vm}");
    assert_eq!(g.received(), 1, "only the legitimate datagram is delivered");
    let to_vm = g.stats()["endpoints"][0]["to_vm"].clone();
    assert!(to_vm["dropped"].get("source_ip").is_none(), "{to_vm}");
    assert!(to_vm.get("guard").is_none(), "{to_vm}");

    let dropped = "netshim_endpoint_dropped_total";
    let flagged = "netshim_endpoint_guard_flagged_total";
    assert_eq!(g.prometheus(dropped, "source_ip"), Some(5));
    assert_eq!(g.prometheus(dropped, "source_mac"), Some(3));
    assert_eq!(g.prometheus(dropped, "ethertype"), Some(0));
    assert_eq!(g.prometheus(flagged, "source_ip"), Some(0));

    let table = netshim_ok(&["stats", "--netns", &netns]);
    println!("{table}");
    let line = table.lines().find(|l| l.contains("from_vm")).unwrap();
    assert!(
        line.contains("source_mac=3 source_ip=5") && line.contains("guard=enforce"),
        "{table}"
    );
    assert!(
        !line.contains("arp="),
        "zero guard reasons are not listed: {table}"
    );

    // The records were written while nobody followed: `logs` forwards them when it starts.
    let logs = Follower::start(&["--log-level", "info", "logs", "--netns", &netns]);
    let seen = logs.wait_for("address=02:00:00:00:00:66", Duration::from_secs(5))
        && logs.wait_for("address=192.0.2.66", Duration::from_secs(1));
    let (code, stdout, stderr) = logs.stop();
    println!("logs --netns:\n{stderr}");
    assert!(seen, "no guard records in\n{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let ip = records(&stderr, &netns, "source_ip");
    assert_eq!(
        ip.len(),
        1,
        "one record for 5 packets within a second:\n{stderr}"
    );
    for want in [
        "WARN",
        "guard: endpoint 0 (eth0 / tap0_kata) dropped a packet from the VM: source_ip 192.0.2.66",
        "endpoint=eth0",
        "address=192.0.2.66",
    ] {
        assert!(ip[0].contains(want), "{want} not in {}", ip[0]);
    }
    let mac = records(&stderr, &netns, "source_mac");
    assert_eq!(mac.len(), 1, "{stderr}");
    assert!(
        mac[0].contains(&format!("source_mac {FOREIGN_MAC_STR}")),
        "{}",
        mac[0]
    );

    // `logs --all` follows this sandbox too (among any others on the host), and finds
    // what is refused after it started: an ethertype nobody allowed.
    let all = Follower::start(&["--log-level", "info", "logs", "--all"]);
    wait_following(&all);
    let mut lldp = g.frame(g.pod.pod_mac, g.pod.pod_ip, "lldp");
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    g.write(&lldp, 1);
    let seen = all.wait_for("address=0x88cc", Duration::from_secs(5));
    let (_, _, stderr) = all.stop();
    assert!(seen, "logs --all: no ethertype record in\n{stderr}");
    assert_eq!(records(&stderr, &netns, "ethertype").len(), 1, "{stderr}");
    assert_eq!(g.stats_from_vm()["dropped"]["ethertype"], 1);
    netshim_ok(&["detach", "--netns", &netns]);
}

#[test]
fn a_flood_is_counted_whole_and_logged_about_once_a_second() {
    require_root!();
    let _turn = reading_records();
    let g = Guarded::new("gf", &[]);
    let netns = g.pod.netns().to_owned();
    let logs = Follower::start(&["--log-level", "info", "logs", "--netns", &netns]);
    wait_following(&logs);
    const N: usize = 1000;
    let frame = g.frame(g.pod.pod_mac, FOREIGN_IP, "flood");
    let start = Instant::now();
    for _ in 0..N {
        g.write(&frame, 1);
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    // The last record (if any) reaches the follower.
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, stderr) = logs.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let from_vm = g.stats_from_vm();
    assert_eq!(from_vm["dropped"]["source_ip"], N, "{from_vm}");
    assert_eq!(
        g.prometheus("netshim_endpoint_dropped_total", "source_ip"),
        Some(N as u64)
    );
    let n = records(&stderr, &netns, "source_ip").len();
    println!("{N} refused frames in {elapsed:?}: {n} log records");
    // One at the start and at most one per second after it (the datapath rate-limits);
    // a flood longer than a second has a second one.
    let most = elapsed.as_secs() as usize + 2;
    assert!(
        (2..=most).contains(&n),
        "{n} records (expected 2..={most}):\n{stderr}"
    );
    netshim_ok(&["detach", "--netns", &netns]);
}

#[test]
fn log_mode_counts_flagged_delivers_and_watch_logs_it() {
    require_root!();
    let _turn = reading_records();
    let pod = Pod::new("gl");
    let netns = pod.netns().to_owned();
    // `watch` attaches (with the guard in log mode) and follows the sandbox's records.
    let watch = Follower::start(&[
        "--log-level",
        "info",
        "watch",
        "--netns",
        &netns,
        "--guard",
        "log",
        "--json",
    ]);
    let following = watch.wait_for(
        "following the source guard's records",
        Duration::from_secs(15),
    );
    assert!(
        following,
        "watch does not follow the guard records:\n{}",
        watch.stderr()
    );
    let g = Guarded::attached(pod);
    const N: usize = 4;
    g.write(&g.frame(FOREIGN_MAC, g.pod.pod_ip, "flagged"), N);
    assert_eq!(g.received(), N, "log mode delivers what it flags");
    let seen = watch.wait_for("flagged (log mode, delivered)", Duration::from_secs(5));
    let from_vm = g.stats_from_vm();
    let (code, _, stderr) = watch.stop();
    println!("stats from_vm: {from_vm}\nwatch stderr:\n{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(from_vm["guard"]["mode"], "log", "{from_vm}");
    assert_eq!(from_vm["guard"]["flagged"]["source_mac"], N, "{from_vm}");
    assert_eq!(from_vm["dropped"]["source_mac"], 0, "{from_vm}");
    assert_eq!(
        from_vm["packets"], N,
        "flagged packets are forwarded: {from_vm}"
    );
    assert!(seen, "no flagged record in\n{stderr}");
    let recs = records(&stderr, &netns, "source_mac");
    assert_eq!(recs.len(), 1, "{stderr}");
    assert!(
        recs[0].contains(&format!("address={FOREIGN_MAC_STR}")),
        "{}",
        recs[0]
    );
    netshim_ok(&["detach", "--netns", &netns]);
}

#[test]
fn guard_off_counts_nothing_and_delivers() {
    require_root!();
    let g = Guarded::new("go", &["--guard", "off"]);
    let netns = g.pod.netns().to_owned();
    const N: usize = 3;
    g.write(&g.frame(FOREIGN_MAC, g.pod.pod_ip, "not guarded"), N);
    assert_eq!(g.received(), N);
    let from_vm = g.stats_from_vm();
    println!("stats from_vm: {from_vm}");
    assert_eq!(from_vm["guard"]["mode"], "off", "{from_vm}");
    assert_eq!(from_vm["dropped"]["source_mac"], 0, "{from_vm}");
    assert_eq!(from_vm["guard"]["flagged"]["source_mac"], 0, "{from_vm}");
    assert_eq!(from_vm["packets"], N, "{from_vm}");
    assert_eq!(
        g.prometheus("netshim_endpoint_guard_flagged_total", "source_mac"),
        Some(0)
    );
    let table = netshim_ok(&["stats", "--netns", &netns]);
    assert!(table.contains("guard=off"), "{table}");
    netshim_ok(&["detach", "--netns", &netns]);
}

#[test]
fn a_sandbox_from_before_the_guard_is_not_counted_until_upgrade_and_logs_find_it_then() {
    require_root!();
    let _turn = reading_records();
    let pod = Pod::new("gu");
    let netns = pod.netns().to_owned();
    attach_as_before_the_guard(&pod);

    // Not counted is not zero: null, and the notes say why.
    let stats = netshim_json(&["stats", "--netns", &netns])[0].clone();
    let from_vm = &stats["endpoints"][0]["from_vm"];
    let dropped = from_vm["dropped"].as_object().expect("dropped");
    for reason in ["source_mac", "source_ip", "ethertype"] {
        assert_eq!(dropped.get(reason), Some(&Value::Null), "{reason}: {stats}");
    }
    assert!(from_vm.get("guard").is_none(), "{stats}");
    let notes = stats["notes"].to_string();
    assert!(notes.contains("source guard drops"), "{stats}");
    assert!(notes.contains("netshim upgrade"), "{stats}");

    // `logs` started before the upgrade finds the guard's ring buffer the upgrade creates.
    let logs = Follower::start(&["--log-level", "info", "logs", "--netns", &netns]);
    assert!(
        logs.wait_for(
            "following the datapath's log records",
            Duration::from_secs(5)
        ),
        "{}",
        logs.stderr()
    );
    netshim_json(&["upgrade", "--netns", &netns]);
    let following = logs.wait_for(
        "following the source guard's records",
        Duration::from_secs(5),
    );
    let g = Guarded::attached(pod);
    g.write(&g.frame(g.pod.pod_mac, FOREIGN_IP, "after upgrade"), 2);
    let seen = logs.wait_for("address=192.0.2.66", Duration::from_secs(5));
    let (_, _, stderr) = logs.stop();
    assert!(
        following,
        "the upgraded sandbox's records are not followed:\n{stderr}"
    );
    assert!(seen, "no record after the upgrade:\n{stderr}");
    let stats = g.stats();
    let from_vm = &stats["endpoints"][0]["from_vm"];
    assert_eq!(from_vm["dropped"]["source_ip"], 2, "{stats}");
    assert_eq!(from_vm["guard"]["mode"], "enforce", "{stats}");
    assert!(
        !stats["notes"].to_string().contains("source guard"),
        "{stats}"
    );
    netshim_ok(&["detach", "--netns", &netns]);
}
