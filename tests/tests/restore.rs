//! attach then detach leaves the netns exactly as it was: links, addresses, qdiscs,
//! filters, bpffs pins — and the pod interface answers again (no redirect left behind).

use std::{collections::BTreeMap, path::PathBuf};

use netshim_tests::{
    netns_json,
    netshim_cli::{netshim_json, Pod},
    require_root, TestNetns,
};
use serde_json::Value;

/// Everything attach could change, as the kernel reports it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: Vec<Value>,
    addresses: Vec<Value>,
    qdiscs: Vec<Value>,
    filters: BTreeMap<String, Value>,
    pin_dir_exists: bool,
}

fn pin_dir(ns: &TestNetns) -> PathBuf {
    netshim_tests::netshim_cli::pin_dir(ns)
}

fn snapshot(ns: &TestNetns) -> Snapshot {
    let links = netns_json::links(ns);
    let addresses = netns_json::addresses(ns);
    let qdiscs = netns_json::qdiscs(ns);
    let mut filters = BTreeMap::new();
    for l in &links {
        let dev = l["ifname"].as_str().unwrap().to_owned();
        netns_json::add_filters(ns, &dev, &mut filters);
    }
    Snapshot {
        links,
        addresses,
        qdiscs,
        filters,
        pin_dir_exists: pin_dir(ns).exists(),
    }
}

fn pings(pod: &Pod) -> bool {
    pod.client
        .exec(&["ping", "-c", "1", "-W", "1", &pod.pod_ip.to_string()])
        .status
        .success()
}

fn attach_detach_restores(backend: &str, attach_mode: &str) {
    require_root!();
    let pod = Pod::new(&format!("rs{}{}", &backend[..1], &attach_mode[..1]));
    assert!(pings(&pod), "the pod answers before attach");
    let before = snapshot(&pod.sandbox);

    netshim_json(&[
        "attach",
        "--netns",
        pod.netns(),
        "--tc-backend",
        backend,
        "--ebpf-attach",
        attach_mode,
    ]);
    let attached = snapshot(&pod.sandbox);
    assert_ne!(before, attached, "attach changed nothing?");
    assert!(
        !pings(&pod),
        "attached: eth0's traffic goes to the tap, the sandbox stack must not answer"
    );

    let report = netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(report["removed_taps"], serde_json::json!(["tap0_kata"]));
    let after = snapshot(&pod.sandbox);
    assert_eq!(before, after, "detach must restore the netns exactly");
    assert!(!after.pin_dir_exists);
    assert!(pings(&pod), "no redirect is left on eth0 after detach");

    // Detaching again is a quiet success that removes nothing.
    let again = netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(again["removed_taps"], serde_json::json!([]));
    assert_eq!(again["removed_pin_dir"], Value::Null);
    assert_eq!(snapshot(&pod.sandbox), before);
}

#[test]
fn ebpf_attach_then_detach_restores_the_netns() {
    attach_detach_restores("ebpf", "auto");
}

#[test]
fn mirred_attach_then_detach_restores_the_netns() {
    attach_detach_restores("mirred", "auto");
}

#[test]
fn status_reports_what_attach_made() {
    require_root!();
    let pod = Pod::new("st");
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(status["attached"], false);
    assert_eq!(status["endpoints"][0]["connected"], false);
    // TCX: its pinned links are what the health check below takes away.
    netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", "tcx"]);
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(status["attached"], true);
    assert_eq!(status["datapath"], "tcx");
    let ep = &status["endpoints"][0];
    assert_eq!(ep["name"], "eth0");
    assert_eq!(ep["tap"], "tap0_kata");
    assert_eq!(ep["connected"], true);
    assert_eq!(ep["tap_up"], true);
    // The pinned links are what keep the datapath; removing one shows as disconnected, and
    // the sandbox as broken (exit 4) with the missing pin named.
    std::fs::remove_file(pin_dir(&pod.sandbox).join("link_eth0")).unwrap();
    let out = netshim_tests::netshim_cli::netshim(&["status", "--netns", pod.netns(), "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["endpoints"][0]["connected"], false);
    assert_eq!(status["health"], "broken");
    assert!(
        status["problems"].to_string().contains("link_eth0"),
        "{status}"
    );
    netshim_json(&["detach", "--netns", pod.netns()]);
    assert!(!pin_dir(&pod.sandbox).exists());
}

#[test]
fn ebpf_cls_bpf_fallback_attach_then_detach_restores_the_netns() {
    // clsact qdiscs netshim added go away again; the filters with them.
    attach_detach_restores("ebpf", "cls-bpf");
}
