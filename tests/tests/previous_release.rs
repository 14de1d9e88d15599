//! Sandboxes attached by the release before the pinned program (cc25fd2: the program is loaded
//! by every connect, no `program` pin) stay alive under this netshim: they forward both
//! ways, `stats` reads them, a second pair joins them (`connect`), `upgrade` moves them to
//! the current program with their counters, `detach` leaves nothing and `gc` collects them
//! once their netns is gone.
//!
//! Such a sandbox is made with `attach --object` and the fixture of that release's eBPF
//! object, then its `program` pin is removed: what is left is what cc25fd2 left.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use netshim_tests::{
    leaks::NetnsSnapshot,
    netshim_cli::{netshim, netshim_json, pin_dir, Pod},
    require_root,
    traffic::{exchange, open_tap},
    veth_pair, TestNetns,
};
use serde_json::Value;

/// The eBPF object of cc25fd2 (see tests/fixtures/README.md).
const CC25FD2_OBJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/netshim-ebpf-cc25fd2.o"
);

/// Attaches `pod` as cc25fd2 would have (its object, hooked with `mode`), and removes the
/// program pin that release did not make. Returns the pin directory.
fn attach_as_cc25fd2(pod: &Pod, mode: &str) -> PathBuf {
    let r = netshim_json(&[
        "attach",
        "--netns",
        pod.netns(),
        "--ebpf-attach",
        mode,
        "--object",
        CC25FD2_OBJECT,
    ]);
    assert_eq!(r["endpoints"][0]["tap"]["name"], "tap0_kata", "{r}");
    let dir = pin_dir(&pod.sandbox);
    let program = dir.join("program");
    assert!(program.exists(), "attach pins the program it loaded");
    std::fs::remove_file(&program).unwrap();
    dir
}

fn stats(pod: &Pod) -> Value {
    netshim_json(&["stats", "--netns", pod.netns()])[0].clone()
}

fn counted(stats: &Value, index: usize) -> [u64; 4] {
    let ep = &stats["endpoints"][index];
    [
        ep["to_vm"]["packets"].as_u64().unwrap(),
        ep["to_vm"]["bytes"].as_u64().unwrap(),
        ep["from_vm"]["packets"].as_u64().unwrap(),
        ep["from_vm"]["bytes"].as_u64().unwrap(),
    ]
}

/// A second network joined by `netshim connect`: client `c1` ⟷ `ma1` (sandbox) and
/// sandbox `mb1` ⟷ `s1` (server), 10.125.0.0/24.
struct SecondPair {
    client: TestNetns,
    _server: TestNetns,
}

impl SecondPair {
    fn new(sandbox: &TestNetns, tag: &str) -> Self {
        let client = TestNetns::new(&format!("nsh-{tag}-c2"));
        let server = TestNetns::new(&format!("nsh-{tag}-s2"));
        veth_pair(&client, "c1", sandbox, "ma1");
        veth_pair(sandbox, "mb1", &server, "s1");
        client.ip(&["addr", "add", "10.125.0.1/24", "dev", "c1"]);
        server.ip(&["addr", "add", "10.125.0.2/24", "dev", "s1"]);
        SecondPair {
            client,
            _server: server,
        }
    }

    fn pings(&self) -> bool {
        self.client
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.125.0.2"])
            .status
            .success()
    }
}

fn sandbox_of_cc25fd2_lives_on(mode: &str, tag: &str) {
    require_root!();
    let pod = Pod::new(tag);
    let before = NetnsSnapshot::take(&pod.sandbox);
    let dir = attach_as_cc25fd2(&pod, mode);

    // Forwards both ways, and a fresh process reads its counters.
    pod.pin_pod_neighbor();
    let tap = open_tap(&pod.sandbox, "tap0_kata");
    let pushed = exchange(&pod, &tap, 5, "old");
    let old = counted(&stats(&pod), 0);
    assert_eq!(old[0], 5, "{old:?}");
    assert_eq!(old[1], pushed.to_vm_bytes, "{old:?}");
    assert_eq!(old[2], 5, "{old:?}");
    assert_eq!(old[3], pushed.from_vm_bytes, "{old:?}");

    // A second pair joins the sandbox; it loads a program (none is pinned) and pins it.
    let second = SecondPair::new(&pod.sandbox, tag);
    assert!(!second.pings(), "nothing joins ma1 and mb1 yet");
    let r = netshim_json(&["connect", "--netns", pod.netns(), "ma1", "mb1"]);
    assert_eq!(r["datapath"], mode.replace('-', "_"), "{r}");
    assert!(second.pings(), "ma1 <-> mb1 connected: {r}");
    assert!(dir.join("program").exists(), "connect pinned its program");

    // Upgraded to this netshim's program: the counters carry on, both pairs forward.
    let r = netshim_json(&["upgrade", "--netns", pod.netns()]);
    assert_eq!(r["sandboxes"][0]["outcome"], "upgraded", "{r}");
    let upgraded = stats(&pod);
    assert_eq!(counted(&upgraded, 0), old, "counters kept: {upgraded}");
    let more = exchange(&pod, &tap, 3, "new");
    let now = counted(&stats(&pod), 0);
    assert_eq!(now[0], 8, "{now:?}");
    assert_eq!(now[3], pushed.from_vm_bytes + more.from_vm_bytes, "{now:?}");
    assert!(
        second.pings(),
        "the connected pair forwards after the upgrade"
    );
    drop(tap);

    // Detach leaves nothing: the test's own second pair goes first, then the snapshots match.
    netshim_json(&["detach", "--netns", pod.netns()]);
    assert!(!dir.exists(), "{dir:?} left");
    for dev in ["ma1", "mb1"] {
        pod.sandbox.ip(&["link", "del", dev]);
    }
    assert_eq!(
        NetnsSnapshot::take(&pod.sandbox),
        before,
        "detach left something"
    );

    // Attached again as cc25fd2 did, and the netns deleted without a detach: gc collects it.
    let dir = attach_as_cc25fd2(&pod, mode);
    let cookie = pod.cookie();
    pod.sandbox.ip(&["link", "set", "eth0", "down"]);
    delete_netns(&pod);
    gc_until_collected(cookie, &dir);
}

fn delete_netns(pod: &Pod) {
    let out = std::process::Command::new("ip")
        .args(["netns", "del", pod.netns()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn gc_until_collected(cookie: u64, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gc = netshim_json(&["gc"]);
        let collected = gc["removed_dead"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d["netns_cookie"] == cookie));
        // gc is host-wide: a gc run by another test at the same time may be the one that
        // collected it.
        if collected || !dir.exists() {
            assert!(!dir.exists(), "{dir:?} left after gc: {gc}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gc never collected {cookie}: {gc}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tcx_sandbox_of_cc25fd2_forwards_joins_upgrades_detaches_and_is_collected() {
    sandbox_of_cc25fd2_lives_on("tcx", "prt");
}

#[test]
fn a_cls_bpf_sandbox_of_cc25fd2_forwards_joins_upgrades_detaches_and_is_collected() {
    sandbox_of_cc25fd2_lives_on("cls-bpf", "prc");
}

/// `attach --object` checks the file as `upgrade --object` does: one that is not an eBPF
/// object with the datapath program is invalid input (exit 2, naming the file), refused
/// before anything in the netns or in bpffs is made.
#[test]
fn attach_refuses_an_object_file_that_is_not_one_and_changes_nothing() {
    require_root!();
    let pod = Pod::new("prbad");
    let before = NetnsSnapshot::take(&pod.sandbox);
    let file = std::env::temp_dir().join(format!("netshim-notobj-{}.o", std::process::id()));
    std::fs::write(&file, b"not an ELF object\n").unwrap();
    let out = netshim(&[
        "attach",
        "--netns",
        pod.netns(),
        "--object",
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("parsing the eBPF object"), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert!(!pin_dir(&pod.sandbox).exists(), "nothing pinned");
    assert_eq!(
        NetnsSnapshot::take(&pod.sandbox),
        before,
        "the netns is unchanged"
    );
}
