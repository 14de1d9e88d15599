//! `netshim upgrade`: a new datapath program under load, with the pinned maps kept.
//!
//! Pair topology as in the benchmark: client ⟷ veth ⟷ shim [ma0 ⟷ mb0] ⟷ veth ⟷ server,
//! connected with `netshim connect`. Every netns is a [`TestNetns`] of this test; `--all` runs
//! in a private mount namespace with a bpffs of its own, so it never sees (or upgrades) the
//! sandboxes of other tests running on the machine.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netshim_tests::{
    client_shim_server,
    cni_runtime::cookie,
    leaks::netshim_dirs,
    netshim_cli::{link_prog_id, netshim, netshim_bin, netshim_json},
    require_root, two_veths_from, veth_pair, ChildGuard, TestNetns,
};
use serde_json::Value;

struct PairTopo {
    client: TestNetns,
    shim: TestNetns,
    server: TestNetns,
}

const CLIENT_IP: &str = "10.202.0.1";
const SERVER_IP: &str = "10.202.0.2";

fn pair_topo(tag: &str) -> PairTopo {
    let [client, shim, server] = client_shim_server(tag, CLIENT_IP, SERVER_IP);
    PairTopo {
        client,
        shim,
        server,
    }
}

impl Drop for PairTopo {
    fn drop(&mut self) {
        // Pins of a failed test go before the namespaces do.
        let _ = netshim(&["disconnect", "--netns", self.shim.name(), "ma0", "mb0"]);
    }
}

/// The pin directory of `ns` (from `status`).
fn pin_dir(ns: &TestNetns) -> PathBuf {
    let status = netshim_json(&["status", "--netns", ns.name()]);
    PathBuf::from(status["pin_dir"].as_str().expect("pinned sandbox"))
}

/// (to_vm packets, to_vm bytes, from_vm packets, from_vm bytes) of the only endpoint.
fn counters(ns: &TestNetns) -> [u64; 4] {
    let s = netshim_json(&["stats", "--netns", ns.name()]);
    let ep = &s[0]["endpoints"][0];
    let n = |d: &str, f: &str| {
        ep[d][f]
            .as_u64()
            .unwrap_or_else(|| panic!("{d}.{f} in {s}"))
    };
    [
        n("to_vm", "packets"),
        n("to_vm", "bytes"),
        n("from_vm", "packets"),
        n("from_vm", "bytes"),
    ]
}

/// `Udp: RcvbufErrors` of a netns (/proc/net/snmp is per netns).
fn udp_rcvbuf_errors(ns: &TestNetns) -> u64 {
    let snmp = ns.exec_ok(&["cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .expect("Udp RcvbufErrors")
}

fn pings(t: &PairTopo) -> bool {
    t.client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", SERVER_IP])
        .status
        .success()
}

/// Upgrades the shim's sandbox once and checks what it reports against what bpftool sees.
/// Returns the new program id.
fn upgrade_once(t: &PairTopo, links: &[PathBuf]) -> u64 {
    let before: Vec<u64> = links.iter().map(|l| link_prog_id(l)).collect();
    let r = netshim_json(&["upgrade", "--netns", t.shim.name()]);
    let sb = &r["sandboxes"][0];
    assert_eq!(sb["outcome"], "upgraded", "{r}");
    let new_id = sb["new_prog_id"].as_u64().expect("new_prog_id");
    let swapped = sb["swapped"].as_array().expect("swapped");
    assert_eq!(swapped.len(), links.len(), "{r}");
    for (link, old) in links.iter().zip(&before) {
        let now = link_prog_id(link);
        assert_ne!(now, *old, "{link:?} changed program");
        assert_eq!(now, new_id, "{link:?} runs the reported program");
    }
    for s in swapped {
        assert!(before.contains(&s["old_prog_id"].as_u64().unwrap()), "{s}");
        assert_eq!(s["new_prog_id"].as_u64(), Some(new_id));
    }
    new_id
}

/// Runs iperf3 in the client netns to the server while upgrading `upgrades` times, `gap`
/// apart, checking the counters never go back. Returns iperf3's JSON and the new program ids.
fn run_with_upgrades(
    t: &PairTopo,
    links: &[PathBuf],
    iperf_args: &[&str],
    upgrades: usize,
    gap: Duration,
    last: &mut [u64; 4],
) -> (Value, Vec<u64>) {
    let mut cmd = t.client.exec_cmd(&["iperf3", "-c", SERVER_IP, "-J"]);
    cmd.args(iperf_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let client = ChildGuard::spawn(cmd, &format!("iperf3 {iperf_args:?}"));
    // Let the flow ramp up before the first swap.
    std::thread::sleep(Duration::from_millis(700));
    let mut ids = Vec::new();
    for _ in 0..upgrades {
        let start = Instant::now();
        ids.push(upgrade_once(t, links));
        let now = counters(&t.shim);
        for (i, (n, l)) in now.iter().zip(last.iter()).enumerate() {
            assert!(n >= l, "counter {i} went back: {l} -> {n}");
        }
        *last = now;
        std::thread::sleep(gap.saturating_sub(start.elapsed()));
    }
    let out = client.wait_with_output(Duration::from_secs(30));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 JSON: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "iperf3 {iperf_args:?} failed: {v}");
    assert!(
        v.get("error").is_none(),
        "iperf3 {iperf_args:?}: {}",
        v["error"]
    );
    (v, ids)
}

#[test]
fn upgrade_under_load_loses_nothing_and_keeps_counters() {
    require_root!();
    let t = pair_topo("upl");
    let r = netshim_json(&[
        "connect",
        "--netns",
        t.shim.name(),
        "ma0",
        "mb0",
        "--ebpf-attach",
        "tcx",
    ]);
    assert_eq!(r["datapath"], "tcx", "{r}");
    let dir = pin_dir(&t.shim);
    let links = vec![dir.join("link_ma0"), dir.join("link_mb0")];
    let _tcp_server = t.server.spawn(&["iperf3", "-s", "-p", "5301"]);
    let _udp_server = t.server.spawn(&["iperf3", "-s", "-p", "5302"]);
    assert!(pings(&t), "client reaches server through the shim");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut last = counters(&t.shim);
    let gap = Duration::from_millis(400);

    let (tcp, tcp_ids) =
        run_with_upgrades(&t, &links, &["-p", "5301", "-t", "8"], 10, gap, &mut last);
    let tcp_bytes = tcp["end"]["sum_received"]["bytes"].as_u64().unwrap();
    let tcp_gbps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e9;
    let retransmits = tcp["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);

    // -w 4M: a receive buffer that rides out the scheduling hiccups of a busy 2-core machine
    // (capped by net.core.rmem_max); what the socket still drops is in RcvbufErrors.
    let rcvbuf_before = udp_rcvbuf_errors(&t.server);
    let (udp, udp_ids) = run_with_upgrades(
        &t,
        &links,
        &[
            "-p", "5302", "-u", "-b", "200M", "-l", "1000", "-w", "4M", "-t", "8",
        ],
        10,
        gap,
        &mut last,
    );
    let rcvbuf_drops = udp_rcvbuf_errors(&t.server) - rcvbuf_before;
    let sum = &udp["end"]["sum"];
    let udp_loss = sum["lost_percent"].as_f64().unwrap();
    let udp_packets = sum["packets"].as_u64().unwrap();
    let udp_lost = sum["lost_packets"].as_u64().unwrap();
    let udp_received = udp_packets - udp_lost;

    let mut ids = tcp_ids;
    ids.extend(udp_ids);
    ids.dedup();
    assert_eq!(ids.len(), 20, "every upgrade loaded a new program: {ids:?}");
    let total = counters(&t.shim);
    let elapsed = started.elapsed();
    eprintln!(
        "upgrade under load: {} upgrades in {:.1} s; TCP {:.2} Gbit/s ({} bytes, {} \
         retransmits); UDP 200M x 1000 B: {} sent, {} lost ({:.4} %, receiver socket \
         overflows {}); counters to_vm {} pkts {} bytes, from_vm {} pkts {} bytes",
        ids.len(),
        elapsed.as_secs_f64(),
        tcp_gbps,
        tcp_bytes,
        retransmits,
        udp_packets,
        udp_lost,
        udp_loss,
        rcvbuf_drops,
        total[0],
        total[1],
        total[2],
        total[3]
    );
    assert!(
        udp_loss < 0.1,
        "UDP loss {udp_loss} % across the upgrades ({rcvbuf_drops} of the {udp_lost} lost \
         were receiver socket overflows, i.e. after the datapath)"
    );
    // The classifier counts whole frames: at least the payload iperf3 moved crossed it.
    assert!(
        total[1] >= tcp_bytes + udp_received * 1000,
        "to_vm bytes {} < TCP {tcp_bytes} + UDP {udp_received} x 1000",
        total[1]
    );
    assert!(total[0] >= udp_received, "to_vm packets {}", total[0]);
    assert!(total[2] > 0, "ACKs and replies came back through from_vm");

    // One program per hook, the last one loaded: no link was duplicated or left behind.
    let last_id = *ids.last().unwrap();
    for l in &links {
        assert_eq!(link_prog_id(l), last_id);
    }
    assert!(pings(&t));
}

#[test]
fn cls_bpf_filters_are_replaced_in_place_under_ping() {
    require_root!();
    let t = pair_topo("upc");
    let r = netshim_json(&[
        "connect",
        "--netns",
        t.shim.name(),
        "ma0",
        "mb0",
        "--ebpf-attach",
        "cls-bpf",
    ]);
    assert_eq!(r["datapath"], "cls_bpf", "{r}");
    assert!(pings(&t));
    let filters = |dev: &str| -> Vec<(u64, u64)> {
        let out = t.shim.tc(&["-j", "filter", "show", "dev", dev, "ingress"]);
        let v: Value = serde_json::from_str(&out).expect("tc JSON");
        v.as_array()
            .unwrap()
            .iter()
            .filter(|f| f["options"]["bpf_name"] == "netshim_redirect")
            .map(|f| {
                (
                    f["pref"].as_u64().unwrap(),
                    f["options"]["prog"]["id"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = [filters("ma0"), filters("mb0")];
    assert_eq!(before[0].len(), 1, "{before:?}");
    // A steady ping through the datapath while the filters are replaced.
    let mut ping = t
        .client
        .exec_cmd(&["ping", "-c", "300", "-i", "0.01", "-q", SERVER_IP]);
    ping.stdout(Stdio::piped()).stderr(Stdio::piped());
    let ping = ChildGuard::spawn(ping, "ping");
    let mut prev = before.clone();
    for _ in 0..5 {
        let r = netshim_json(&["upgrade", "--netns", t.shim.name()]);
        let sb = &r["sandboxes"][0];
        assert_eq!(sb["outcome"], "upgraded", "{r}");
        assert_eq!(sb["datapath"], "cls_bpf");
        let new_id = sb["new_prog_id"].as_u64().unwrap();
        let now = [filters("ma0"), filters("mb0")];
        for (n, p) in now.iter().zip(&prev) {
            assert_eq!(n.len(), 1, "one netshim filter per device: {now:?}");
            assert_eq!(n[0].0, p[0].0, "same preference (replaced in place)");
            assert_ne!(n[0].1, p[0].1, "new program");
            assert_eq!(n[0].1, new_id);
        }
        assert_eq!(sb["swapped"].as_array().unwrap().len(), 2, "{r}");
        prev = now;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ping.wait_with_output(Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "ping across cls_bpf upgrades: {text}"
    );
}

#[test]
fn upgrade_of_a_netns_without_netshim_says_not_attached() {
    require_root!();
    let ns = TestNetns::new("nsh-upn");
    let out = netshim(&["upgrade", "--netns", ns.name()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not attached"), "{err}");
    assert!(err.contains(ns.name()), "{err}");
    let out = netshim(&["upgrade", "--netns", "nsh-no-such-netns-upgrade"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs a shell script in a private mount namespace with a fresh (empty) bpffs on
/// /sys/fs/bpf: whatever it pins there goes with it, and the machine's sandboxes are not
/// visible to it.
fn in_private_bpffs(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!("mount -t bpf bpf /sys/fs/bpf\n{script}"))
        .env("NETSHIM", netshim_bin())
        .output()
        .expect("run unshare")
}

#[test]
fn upgrade_all_skips_stale_sandboxes_and_says_when_there_is_nothing() {
    require_root!();
    let live = pair_topo("upa");
    let doomed = TestNetns::new("nsh-upa-d");
    // Two veths whose peers are elsewhere (the two ends of one pair would loop: refused).
    let far = TestNetns::new("nsh-upa-f");
    veth_pair(&far, "p0", &doomed, "da0");
    veth_pair(&far, "p1", &doomed, "db0");
    let _state = RunStateOf(vec![cookie(&live.shim), cookie(&doomed)]);
    let script = format!(
        r#"
echo "--- none"
"$NETSHIM" upgrade --all
"$NETSHIM" upgrade --all --json
"$NETSHIM" connect --netns {live} ma0 mb0 --ebpf-attach tcx >/dev/null
"$NETSHIM" connect --netns {doomed} da0 db0 --ebpf-attach tcx >/dev/null
ip netns del {doomed}
echo "--- all"
"$NETSHIM" upgrade --all --json
echo "--- ping"
ip netns exec {client} ping -c 1 -W 1 {SERVER_IP} >/dev/null && echo ping ok
"#,
        live = live.shim.name(),
        doomed = doomed.name(),
        client = live.client.name(),
    );
    let out = in_private_bpffs(&script);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (none, rest) = stdout
        .split_once("--- all\n")
        .expect("script ran to --- all");
    assert!(none.contains("nothing to upgrade"), "{none}");
    let none_json: Value = serde_json::from_str(&none[none.find('{').expect("JSON")..])
        .expect("--all --json with none");
    assert_eq!(none_json["sandboxes"], serde_json::json!([]));
    let (all, ping) = rest.split_once("--- ping\n").unwrap();
    let all: Value = serde_json::from_str(all).expect("upgrade --all JSON");
    let sandboxes = all["sandboxes"].as_array().unwrap();
    assert_eq!(sandboxes.len(), 2, "{all}");
    let mine = sandboxes
        .iter()
        .find(|s| s["netns"].as_str().unwrap().ends_with(live.shim.name()))
        .unwrap_or_else(|| panic!("live sandbox in {all}"));
    assert_eq!(mine["outcome"], "upgraded", "{all}");
    assert_eq!(mine["swapped"].as_array().unwrap().len(), 2);
    let stale = sandboxes
        .iter()
        .find(|s| s["netns"].as_str().unwrap().ends_with(doomed.name()))
        .unwrap_or_else(|| panic!("stale sandbox in {all}"));
    assert_eq!(stale["outcome"], "skipped", "{all}");
    assert!(
        stale["reason"].as_str().unwrap().contains("stale"),
        "{stale}"
    );
    assert!(ping.contains("ping ok"), "{ping}");
    // Everything pinned went with the private bpffs. The kernel frees a bpffs (and the
    // links pinned in it) once the last mount namespace holding it is put, which it may do
    // a moment after the process exits (the loader's own short-lived mount namespace, too).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut still = pings(&live);
    while still && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        still = pings(&live);
    }
    assert!(!still, "the private bpffs and its links are gone");
}

/// Removes netshim's files of these netns cookies under /run/netshim when a test ends,
/// passed or failed: a private bpffs takes the pins with it, not the state and lock files
/// (the sandbox whose netns the test deletes would leave its lock file to the next gc).
struct RunStateOf(Vec<u64>);

impl Drop for RunStateOf {
    fn drop(&mut self) {
        for path in self.0.iter().flat_map(|c| netshim_dirs(*c)) {
            if !path.starts_with("/run/netshim") {
                continue;
            }
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Runs netshim to completion; also returns its pid.
fn netshim_with_pid(args: &[&str]) -> (std::process::Output, u32) {
    let child = Command::new(netshim_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netshim");
    let pid = child.id();
    (child.wait_with_output().expect("wait netshim"), pid)
}

/// The datapath's pinned maps are replaced by ones the object does not fit: the upgrade
/// fails naming the map and changes nothing.
#[test]
fn mismatched_or_missing_maps_fail_cleanly() {
    require_root!();
    let ns = TestNetns::new("nsh-upm");
    // Two veths whose peers are elsewhere: the two ends of one pair here would loop.
    let far = TestNetns::new("nsh-upm-f");
    two_veths_from(&far, &ns);
    netshim_json(&[
        "connect",
        "--netns",
        ns.name(),
        "ma0",
        "mb0",
        "--ebpf-attach",
        "tcx",
    ]);
    let dir = pin_dir(&ns);
    let links = [dir.join("link_ma0"), dir.join("link_mb0")];
    let ids_before: Vec<u64> = links.iter().map(|l| link_prog_id(l)).collect();
    let listing = || {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // The staging directories a run with this pid made.
    let staging_dirs = |pid: u32| {
        std::fs::read_dir("/sys/fs/bpf")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("netshim-upgrade-{pid}-"))
            })
            .count()
    };

    // A counters map of another value size in place of the real one.
    let counters = dir.join("counters");
    let aside = dir.join("counters_aside");
    std::fs::rename(&counters, &aside).unwrap();
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&counters)
        .args([
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "32",
            "entries",
            "64",
            "name",
            "counters",
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let before = listing();
    let out = netshim(&["upgrade", "--netns", ns.name()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("map counters"), "{err}");
    assert!(err.contains("value size pinned 32, object 24"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(listing(), before);
    let ids_now: Vec<u64> = links.iter().map(|l| link_prog_id(l)).collect();
    assert_eq!(ids_now, ids_before, "no link changed");
    std::fs::remove_file(&counters).unwrap();
    std::fs::rename(&aside, &counters).unwrap();

    // A map the object pins that the sandbox lacks: aya would create and pin a new one in
    // the sandbox directory; the upgrade refuses instead and leaves the directory alone.
    let unmatched = dir.join("unmatched");
    std::fs::rename(&unmatched, &aside).unwrap();
    let before = listing();
    let (out, _) = netshim_with_pid(&["upgrade", "--netns", ns.name(), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("map unmatched"), "{err}");
    assert_eq!(
        listing(),
        before,
        "nothing created in the sandbox directory"
    );
    assert!(!unmatched.exists());
    std::fs::rename(&aside, &unmatched).unwrap();
    let ids_now: Vec<u64> = links.iter().map(|l| link_prog_id(l)).collect();
    assert_eq!(ids_now, ids_before, "no link changed");

    // The same object from a file loads; a file that is not one is invalid input.
    let file = std::env::temp_dir().join(format!("netshim-upm-{}.o", std::process::id()));
    std::fs::write(&file, netshim::EBPF_OBJECT).unwrap();
    let (out, pid) = netshim_with_pid(&[
        "upgrade",
        "--netns",
        ns.name(),
        "--object",
        file.to_str().unwrap(),
        "--json",
    ]);
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        staging_dirs(pid),
        0,
        "the staging directory went with the load"
    );
    assert_eq!(r["object"], file.to_str().unwrap());
    assert_eq!(r["sandboxes"][0]["outcome"], "upgraded", "{r}");
    let out = netshim(&[
        "upgrade",
        "--netns",
        ns.name(),
        "--object",
        "/nonexistent.o",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.o"));
    netshim_json(&["disconnect", "--netns", ns.name(), "ma0", "mb0"]);
}

/// A sandbox whose datapath is the previous version's (its program, its five maps) is
/// upgraded live: the map the new object adds (`drops_v2`, the drop counter) is created and
/// pinned into the sandbox directory, the counters carry on, and the new program counts
/// into that map.
#[test]
fn a_sandbox_of_the_previous_version_gets_the_new_maps_and_keeps_its_counters() {
    require_root!();
    let pod = netshim_tests::netshim_cli::Pod::new("upv");
    // The previous version's program on the hooks, and its maps only: as 7fba15f left it.
    let dir = netshim_tests::netshim_cli::attach_with_previous_object(&pod);
    std::fs::remove_file(dir.join("drops_v2")).unwrap();

    pod.pin_pod_neighbor();
    let tap = netshim_tests::traffic::open_tap(&pod.sandbox, "tap0_kata");
    let pushed = netshim_tests::traffic::exchange(&pod, &tap, 9, "old");
    let stats = || netshim_json(&["stats", "--netns", pod.netns()])[0].clone();
    let before = stats();
    let ep = &before["endpoints"][0];
    assert_eq!(ep["to_vm"]["packets"], 9, "{before}");
    assert_eq!(ep["from_vm"]["bytes"], pushed.from_vm_bytes, "{before}");
    // Not counted, not zero, and the output says why.
    assert_eq!(ep["from_vm"]["dropped"]["mtu"], Value::Null, "{before}");
    assert!(
        before["notes"].to_string().contains("not counted"),
        "{before}"
    );

    let r = netshim_json(&["upgrade", "--netns", pod.netns()]);
    println!("upgrade: {r}");
    assert_eq!(r["sandboxes"][0]["outcome"], "upgraded", "{r}");
    assert_eq!(
        r["sandboxes"][0]["created_maps"],
        serde_json::json!(["drops_v2"]),
        "{r}"
    );
    assert!(
        dir.join("drops_v2").exists(),
        "drops_v2 pinned in the sandbox directory"
    );
    let after = stats();
    let ep = &after["endpoints"][0];
    assert_eq!(ep["to_vm"]["packets"], 9, "counters kept: {after}");
    assert_eq!(ep["from_vm"]["bytes"], pushed.from_vm_bytes, "{after}");
    assert_eq!(ep["from_vm"]["dropped"]["mtu"], 0, "{after}");
    assert_eq!(after["notes"], Value::Null, "{after}");

    // The pinned map is the one the new program counts into.
    let frame = netshim_tests::traffic::vm_frame(&pod, 1, 9, &[0u8; 4000]);
    tap.write_frame(&frame).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let ep = &stats()["endpoints"][0];
    assert_eq!(ep["from_vm"]["dropped"]["mtu"], 1, "{ep}");
    assert_eq!(ep["from_vm"]["packets"], 9, "{ep}");
}

/// The datapath of cc25fd2, the last one before issue 13 (aya-log's `AYA_LOGS` ring, a
/// preallocated `peers`, a 64 KiB `guard_events`, no `errors` map).
const CC25FD2_OBJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/netshim-ebpf-cc25fd2.o"
);

/// A sandbox whose program is cc25fd2's and which has none of the maps issue 13 added
/// (`errors`, `drops_v2`, `guard_drops_v2`): the object is accepted over maps that differ
/// from its own only in what its program does not see (`peers` not preallocated, a smaller
/// ring), its aya-log ring is followed as before, and upgrading to the current object
/// creates the new maps, keeps the counters (the drop counts too: the old per-CPU map's
/// plus the new one's) and is followed through `errors`.
#[test]
fn a_sandbox_on_the_aya_log_datapath_is_followed_and_upgrades_to_the_errors_map() {
    use netshim_tests::{
        netshim_cli::{Follower, Pod},
        traffic,
    };
    require_root!();
    let pod = Pod::new("ual");
    netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", "tcx"]);
    let r = netshim_json(&[
        "upgrade",
        "--netns",
        pod.netns(),
        "--object",
        CC25FD2_OBJECT,
    ]);
    println!("to cc25fd2: {r}");
    assert_eq!(r["sandboxes"][0]["outcome"], "upgraded", "{r}");
    let dir = pin_dir(&pod.sandbox);
    // cc25fd2 had none of the maps issue 13 added; its program counts drops in the
    // per-CPU `drops` the downgrade created.
    for map in ["errors", "drops_v2", "guard_drops_v2"] {
        std::fs::remove_file(dir.join(map)).unwrap_or_else(|e| panic!("unpin {map}: {e}"));
    }
    let old_prog = r["sandboxes"][0]["new_prog_id"].clone();

    pod.pin_pod_neighbor();
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    let pushed = traffic::exchange(&pod, &tap, 5, "old");
    let stats = || netshim_json(&["stats", "--netns", pod.netns()])[0]["endpoints"][0].clone();
    assert_eq!(stats()["to_vm"]["packets"], 5);
    // One frame larger than the pod device's MTU: an mtu drop, counted per CPU by cc25fd2.
    let too_big = || {
        let frame = traffic::vm_frame(&pod, 1, 9, &[0u8; 4000]);
        tap.write_frame(&frame).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    };
    too_big();
    assert_eq!(stats()["from_vm"]["dropped"]["mtu"], 1, "{}", stats());

    // The old program is followed through its aya-log ring, as cc25fd2's netshim did.
    let follower = Follower::start(&["--log-level", "info", "logs", "--netns", pod.netns()]);
    let needle = format!("prog_id={old_prog}");
    assert!(
        follower.wait_for(&needle, Duration::from_secs(10)),
        "{needle} not followed: {}",
        follower.stderr()
    );
    let line = follower
        .stderr()
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap()
        .to_owned();
    println!("followed: {line}");
    assert!(
        line.contains("following the datapath's log records"),
        "{line}"
    );
    assert!(
        !line.contains("errors map"),
        "aya-log, not the errors map: {line}"
    );

    let r = netshim_json(&["upgrade", "--netns", pod.netns()]);
    println!("to the current object: {r}");
    assert_eq!(r["sandboxes"][0]["outcome"], "upgraded", "{r}");
    assert_eq!(
        r["sandboxes"][0]["created_maps"],
        serde_json::json!(["drops_v2", "errors", "guard_drops_v2"]),
        "{r}"
    );
    assert!(dir.join("errors").exists());
    let new_prog = r["sandboxes"][0]["new_prog_id"].clone();
    let needle = format!("prog_id={new_prog}");
    assert!(
        follower.wait_for(&needle, Duration::from_secs(10)),
        "{needle} not followed: {}",
        follower.stderr()
    );
    assert!(follower.stderr().contains("(its sandbox's errors map)"));
    let after = stats();
    assert_eq!(after["to_vm"]["packets"], 5, "counters kept: {after}");
    assert_eq!(after["from_vm"]["bytes"], pushed.from_vm_bytes, "{after}");
    // The drop counts carry on: the old per-CPU map's plus the new shared map's.
    assert_eq!(after["from_vm"]["dropped"]["mtu"], 1, "{after}");
    too_big();
    assert_eq!(stats()["from_vm"]["dropped"]["mtu"], 2, "{}", stats());
    let (code, _, stderr) = follower.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    netshim_json(&["detach", "--netns", pod.netns()]);
}
