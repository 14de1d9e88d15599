//! `netshim connect` between two devices of a netns (the pair topology of the benchmark):
//! client ⟷ veth ⟷ shim [ma0 ⟷ mb0] ⟷ veth ⟷ server.

use netshim_tests::{
    client_shim_server,
    netshim_cli::{netshim, netshim_json},
    require_root, two_veths_from, veth_pair, TestNetns,
};

struct PairTopo {
    client: TestNetns,
    shim: TestNetns,
    server: TestNetns,
}

fn pair_topo(tag: &str) -> PairTopo {
    let [client, shim, server] = client_shim_server(tag, "10.201.0.1", "10.201.0.2");
    PairTopo {
        client,
        shim,
        server,
    }
}

fn pings(t: &PairTopo) -> bool {
    t.client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.201.0.2"])
        .status
        .success()
}

fn connect_carries_traffic(backend: &str, fast_path: &str) {
    require_root!();
    let t = pair_topo(&format!("cn{}{}", &backend[..1], &fast_path[..1]));
    assert!(!pings(&t), "nothing joins a and b yet");
    let connect = [
        "connect",
        "--netns",
        t.shim.name(),
        "ma0",
        "mb0",
        "--tc-backend",
        backend,
    ];
    let mut args = connect.to_vec();
    if backend == "ebpf" {
        args.extend(["--fast-path", fast_path]);
    }
    let r = netshim_json(&args);
    assert_eq!(r["backend"], backend);
    if backend == "ebpf" {
        // Both targets are veths whose peers are in other netns.
        let want = if fast_path == "auto" {
            "redirect_peer"
        } else {
            "redirect"
        };
        assert_eq!(r["a_to_b"], want, "{r}");
        assert_eq!(r["b_to_a"], want, "{r}");
    }
    assert!(pings(&t), "client reaches server through the shim");
    let stats = netshim_json(&["stats", "--netns", t.shim.name()]);
    let ep = &stats[0]["endpoints"][0];
    assert_eq!(ep["pod"], "ma0");
    assert_eq!(ep["tap"], "mb0");
    // 2 echo requests (+ ARP) one way, 2 replies (+ ARP) back: all counted, even the
    // bpf_redirect_peer ones that never show in b's own tx counters.
    assert!(ep["to_vm"]["packets"].as_u64().unwrap() >= 2, "{stats}");
    assert!(ep["from_vm"]["packets"].as_u64().unwrap() >= 2, "{stats}");

    let again = netshim(&connect);
    assert_ne!(
        again.status.code(),
        Some(0),
        "a second connect of the same pair is refused"
    );

    let d = netshim_json(&["disconnect", "--netns", t.shim.name(), "ma0", "mb0"]);
    assert_eq!(d["removed"], backend);
    assert!(!pings(&t), "disconnected");
    assert_eq!(
        t.shim
            .tc(&["qdisc", "show", "dev", "ma0", "ingress"])
            .trim(),
        ""
    );
    let d = netshim_json(&["disconnect", "--netns", t.shim.name(), "ma0", "mb0"]);
    assert_eq!(d["removed"], serde_json::Value::Null, "idempotent");
    let status = netshim_json(&["status", "--netns", t.shim.name()]);
    assert_eq!(status["pin_dir"], serde_json::Value::Null, "no pins left");
    drop(t.server);
}

#[test]
fn ebpf_connect_with_redirect_peer() {
    connect_carries_traffic("ebpf", "auto");
}

#[test]
fn ebpf_connect_with_plain_redirect() {
    connect_carries_traffic("ebpf", "off");
}

#[test]
fn mirred_connect() {
    connect_carries_traffic("mirred", "off");
}

#[test]
fn two_pairs_in_one_netns_have_their_own_counters() {
    require_root!();
    let t = pair_topo("cn2");
    let peer = TestNetns::new("nsh-cn2-p");
    veth_pair(&peer, "p0", &t.shim, "mx0");
    veth_pair(&peer, "p1", &t.shim, "my0");
    let first = netshim_json(&["connect", "--netns", t.shim.name(), "ma0", "mb0"]);
    let second = netshim_json(&["connect", "--netns", t.shim.name(), "mx0", "my0"]);
    assert_eq!(first["index"], 0);
    assert_eq!(second["index"], 1);
    assert!(pings(&t));
    let stats = netshim_json(&["stats", "--netns", t.shim.name()]);
    let eps = stats[0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert!(eps[0]["to_vm"]["packets"].as_u64().unwrap() >= 2);
    // Removing one pair keeps the other working.
    netshim_json(&["disconnect", "--netns", t.shim.name(), "mx0", "my0"]);
    assert!(pings(&t));
    netshim_json(&["disconnect", "--netns", t.shim.name(), "mb0", "ma0"]);
    assert!(!pings(&t));
    let status = netshim_json(&["status", "--netns", t.shim.name()]);
    assert_eq!(status["pin_dir"], serde_json::Value::Null);
}

/// A sandbox's maps have room for 8 endpoints when its first attach connects fewer (a
/// sixth of the kernel memory a sandbox costs went to empty per-endpoint slots): the eighth
/// pair connects, the ninth is refused naming the room, nothing of it stays, and the first
/// eight still forward.
#[test]
fn a_sandbox_has_room_for_eight_endpoints_and_refuses_a_ninth_clearly() {
    require_root!();
    let t = pair_topo("cncap");
    let peer = TestNetns::new("nsh-cncap-p");
    for i in 1..9 {
        veth_pair(&peer, &format!("p{i}a"), &t.shim, &format!("x{i}a"));
        veth_pair(&peer, &format!("p{i}b"), &t.shim, &format!("x{i}b"));
    }
    assert_eq!(
        netshim_json(&["connect", "--netns", t.shim.name(), "ma0", "mb0"])["index"],
        0
    );
    let endpoints = netshim_tests::netshim_cli::pin_dir(&t.shim).join("endpoints");
    let shown = std::process::Command::new("bpftool")
        .args(["map", "show", "pinned"])
        .arg(&endpoints)
        .args(["--json"])
        .output()
        .expect("bpftool map show");
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("bpftool json");
    assert_eq!(shown["max_entries"], 8, "{shown}");
    for i in 1..8 {
        let (a, b) = (format!("x{i}a"), format!("x{i}b"));
        let r = netshim_json(&["connect", "--netns", t.shim.name(), &a, &b]);
        assert_eq!(r["index"], i, "{r}");
    }
    let out = netshim(&["connect", "--netns", t.shim.name(), "x8a", "x8b"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "the ninth endpoint: {err}");
    assert!(err.contains("room for 8 endpoints"), "{err}");
    assert_eq!(
        t.shim
            .tc(&["filter", "show", "dev", "x8a", "ingress"])
            .trim(),
        "",
        "nothing hooked on the refused pair"
    );
    assert!(pings(&t), "the first pair still forwards");
    let stats = netshim_json(&["stats", "--netns", t.shim.name()]);
    assert_eq!(
        stats[0]["endpoints"].as_array().unwrap().len(),
        8,
        "{stats}"
    );
    for i in 1..8 {
        let (a, b) = (format!("x{i}a"), format!("x{i}b"));
        netshim_json(&["disconnect", "--netns", t.shim.name(), &a, &b]);
    }
    netshim_json(&["disconnect", "--netns", t.shim.name(), "ma0", "mb0"]);
    let status = netshim_json(&["status", "--netns", t.shim.name()]);
    assert_eq!(status["pin_dir"], serde_json::Value::Null, "no pins left");
}

#[test]
fn bad_connect_arguments() {
    require_root!();
    let t = pair_topo("cnb");
    let out = netshim(&["connect", "--netns", t.shim.name(), "ma0", "nope0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device nope0 in netns"));
    let out = netshim(&["connect", "--netns", t.shim.name(), "ma0", "ma0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = netshim(&[
        "connect",
        "--netns",
        t.shim.name(),
        "ma0",
        "mb0",
        "--tc-backend",
        "mirred",
        "--fast-path",
        "off",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        t.shim
            .tc(&["qdisc", "show", "dev", "ma0", "ingress"])
            .trim(),
        ""
    );
}

/// Undoes a connect on Drop: the base code accepted the pairs below, and their loop pins
/// both CPUs until the pair is disconnected.
struct DisconnectOnDrop<'a> {
    ns: &'a TestNetns,
    a: &'a str,
    b: &'a str,
}

impl Drop for DisconnectOnDrop<'_> {
    fn drop(&mut self) {
        let _ = netshim(&["disconnect", "--netns", self.ns.name(), self.a, self.b]);
    }
}

/// `connect a b` in `ns` is refused as a loop (exit 2, naming both and `why`) and leaves no
/// pin directory (where the TCX links of a connected pair are pinned).
fn assert_refused_as_loop(ns: &TestNetns, a: &str, b: &str, why: &str) {
    let _undo = DisconnectOnDrop { ns, a, b };
    let out = netshim(&["connect", "--netns", ns.name(), a, b]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "connect {a} {b}: {err}");
    assert!(
        err.contains(&format!(
            "cannot connect {a} and {b} in netns {}",
            ns.name()
        )),
        "{err}"
    );
    assert!(err.contains(why), "{why:?} not in: {err}");
    assert!(out.stdout.is_empty());
    assert!(
        !netshim_tests::netshim_cli::pin_dir(ns).exists(),
        "no pin dir for {}",
        ns.name()
    );
}

fn rx_packets(ns: &TestNetns, dev: &str) -> u64 {
    ns.link_json(dev)["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("rx packets of {dev}"))
}

/// The repro: the two ends of one veth pair in one netns. Accepted, the kernel's own
/// IPv6 packets (router solicitations, MLD) circulated at line rate until disconnect.
#[test]
fn the_two_ends_of_one_veth_pair_are_refused() {
    require_root!();
    let ns = TestNetns::new("nsh-loop-v");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    assert_refused_as_loop(&ns, "va", "vb", "two ends of one veth pair");
    assert_refused_as_loop(&ns, "vb", "va", "two ends of one veth pair");
    // Nothing circulates: a couple of IPv6 packets in 2 s, not millions.
    let before = (rx_packets(&ns, "va"), rx_packets(&ns, "vb"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = (rx_packets(&ns, "va"), rx_packets(&ns, "vb"));
    let moved = (after.0 - before.0) + (after.1 - before.1);
    println!("rx_packets of va + vb over 2 s after the refusal: {moved}");
    assert!(moved < 1000, "{moved} packets in 2 s: something loops");
}

#[test]
fn loopback_is_refused() {
    require_root!();
    let ns = TestNetns::new("nsh-loop-l");
    let peer = TestNetns::new("nsh-loop-lp");
    veth_pair(&peer, "p0", &ns, "eth0");
    assert_refused_as_loop(&ns, "lo", "eth0", "lo is the loopback device");
    assert_refused_as_loop(&ns, "eth0", "lo", "lo is the loopback device");
}

#[test]
fn macvlans_on_one_lower_and_a_macvlan_with_its_lower_are_refused() {
    require_root!();
    let ns = TestNetns::new("nsh-loop-m");
    let peer = TestNetns::new("nsh-loop-mp");
    veth_pair(&peer, "p0", &ns, "eth0");
    for mv in ["mv0", "mv1"] {
        ns.ip(&[
            "link", "add", mv, "link", "eth0", "type", "macvlan", "mode", "bridge",
        ]);
        ns.ip(&["link", "set", mv, "up"]);
    }
    assert_refused_as_loop(&ns, "mv0", "mv1", "on lower device ifindex");
    assert_refused_as_loop(
        &ns,
        "mv0",
        "eth0",
        "mv0 is a macvlan/macvtap/ipvlan device on eth0",
    );
}

#[test]
fn veths_whose_peers_share_a_bridge_are_refused() {
    require_root!();
    let shim = TestNetns::new("nsh-loop-b");
    let far = TestNetns::new("nsh-loop-bf");
    two_veths_from(&far, &shim);
    far.ip(&["link", "add", "br0", "type", "bridge"]);
    far.ip(&["link", "set", "br0", "up"]);
    for p in ["p0", "p1"] {
        far.ip(&["link", "set", p, "master", "br0"]);
    }
    assert_refused_as_loop(&shim, "ma0", "mb0", "ports of one master device");
    // Off the bridge, the same two veths connect (two_pairs_in_one_netns_… forwards
    // through such a pair).
    far.ip(&["link", "set", "p1", "nomaster"]);
    let r = netshim_json(&["connect", "--netns", shim.name(), "ma0", "mb0"]);
    assert_eq!(r["index"], 0, "{r}");
    netshim_json(&["disconnect", "--netns", shim.name(), "ma0", "mb0"]);
}
