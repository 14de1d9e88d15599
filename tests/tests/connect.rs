//! `netshim connect` between two devices of a netns (the pair topology of the benchmark):
//! client ⟷ veth ⟷ shim [ma0 ⟷ mb0] ⟷ veth ⟷ server.

use netshim_tests::{
    netshim_cli::{netshim, netshim_json},
    skip_unless_root, veth_pair, TestNetns,
};

struct PairTopo {
    client: TestNetns,
    shim: TestNetns,
    server: TestNetns,
}

fn pair_topo(tag: &str) -> PairTopo {
    let client = TestNetns::new(&format!("nsh-{tag}-c"));
    let shim = TestNetns::new(&format!("nsh-{tag}-m"));
    let server = TestNetns::new(&format!("nsh-{tag}-s"));
    veth_pair(&client, "c0", &shim, "ma0");
    veth_pair(&server, "s0", &shim, "mb0");
    client.ip(&["addr", "add", "10.201.0.1/24", "dev", "c0"]);
    server.ip(&["addr", "add", "10.201.0.2/24", "dev", "s0"]);
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
    if skip_unless_root() {
        return;
    }
    let t = pair_topo(&format!("cn{}{}", &backend[..1], &fast_path[..1]));
    assert!(!pings(&t), "nothing joins a and b yet");
    let mut args = vec![
        "connect",
        "--netns",
        t.shim.name(),
        "ma0",
        "mb0",
        "--tc-backend",
        backend,
    ];
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

    let again = netshim(&[
        "connect",
        "--netns",
        t.shim.name(),
        "ma0",
        "mb0",
        "--tc-backend",
        backend,
    ]);
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
    if skip_unless_root() {
        return;
    }
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

#[test]
fn bad_connect_arguments() {
    if skip_unless_root() {
        return;
    }
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
