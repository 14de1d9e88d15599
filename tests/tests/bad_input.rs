//! Every bad input gets its error and exit code, and leaves nothing behind.

use std::{path::PathBuf, process::Output};

use netshim_tests::{
    netshim_cli::{netshim, netshim_json, Pod},
    require_root, TestNetns,
};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails(out: &Output, code: i32, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    assert!(
        stderr(out).contains(needle),
        "{needle:?} not in: {}",
        stderr(out)
    );
    assert!(out.stdout.is_empty(), "a failed command prints no report");
}

fn pin_dir(ns: &TestNetns) -> PathBuf {
    netshim_tests::netshim_cli::pin_dir(ns)
}

#[test]
fn missing_netns_name() {
    let out = netshim(&["attach", "--netns", "netshim-test-no-such-netns"]);
    assert_fails(
        &out,
        2,
        "network namespace netshim-test-no-such-netns not found",
    );
    let out = netshim(&["status", "--netns", "netshim-test-no-such-netns"]);
    assert_fails(&out, 2, "not found");
    // detach is CNI DEL: a netns that is gone has nothing to detach (see lifecycle.rs).
}

#[test]
fn paths_that_are_not_network_namespaces() {
    assert_fails(
        &netshim(&["attach", "--netns", "/proc/self/ns/uts"]),
        2,
        "is not a network namespace",
    );
    assert_fails(
        &netshim(&["attach", "--netns", "/proc/self/status"]),
        2,
        "is not a network namespace",
    );
    assert_fails(&netshim(&["attach", "--netns", ""]), 2, "empty");
}

#[test]
fn unknown_model_uses_katas_text_and_touches_nothing() {
    require_root!();
    let pod = Pod::new("bm");
    let before = pod.sandbox.link_names();
    let out = netshim(&["attach", "--netns", pod.netns(), "--model", "bogus"]);
    assert_fails(&out, 2, "Unknown type bogus");
    for valid in ["default", "macvtap", "tcfilter", "none"] {
        assert!(stderr(&out).contains(valid), "lists {valid}");
    }
    assert_fails(
        &netshim(&["attach", "--netns", pod.netns(), "--tc-backend", "xdp"]),
        2,
        "unknown tc backend xdp",
    );
    assert_fails(
        &netshim(&["attach", "--netns", pod.netns(), "--queues", "0"]),
        2,
        "--queues",
    );
    assert_eq!(pod.sandbox.link_names(), before);
    assert!(!pin_dir(&pod.sandbox).exists());
}

#[test]
fn netns_without_a_usable_interface() {
    require_root!();
    let ns = TestNetns::new("nsh-empty");
    let out = netshim(&["attach", "--netns", ns.name()]);
    assert_fails(&out, 2, "no usable interface");
    // A veth without an address is skipped, as kata does: still nothing to attach to.
    let peer = TestNetns::new("nsh-empty-peer");
    netshim_tests::veth_pair(&peer, "p0", &ns, "eth0");
    let before = ns.link_names();
    let out = netshim(&["attach", "--netns", ns.name()]);
    assert_fails(&out, 2, "eth0 (no address)");
    assert_eq!(ns.link_names(), before, "no tap created");
    assert!(!pin_dir(&ns).exists(), "no pins created");
}

#[test]
fn unsupported_interface_kind_uses_katas_text_and_touches_nothing() {
    require_root!();
    let pod = Pod::new("un");
    pod.sandbox.ip(&["link", "add", "br0", "type", "bridge"]);
    pod.sandbox
        .ip(&["addr", "add", "10.124.0.2/24", "dev", "br0"]);
    let before = pod.sandbox.link_names();
    let out = netshim(&["attach", "--netns", pod.netns()]);
    assert_fails(&out, 2, "Unsupported network interface: bridge");
    assert!(stderr(&out).contains(pod.netns()), "names the netns");
    assert_eq!(pod.sandbox.link_names(), before);
    assert!(!pin_dir(&pod.sandbox).exists());
}

#[test]
fn attaching_again_with_another_backend_is_a_conflict_that_changes_nothing() {
    require_root!();
    let pod = Pod::new("tw");
    netshim_json(&["attach", "--netns", pod.netns()]);
    let links = pod.sandbox.link_names();
    let out = netshim(&["attach", "--netns", pod.netns(), "--tc-backend", "mirred"]);
    assert_fails(&out, 3, "already attached");
    assert_eq!(pod.sandbox.link_names(), links);
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(status["datapath"], "cls_bpf", "the first attach is intact");
    assert_eq!(status["endpoints"][0]["connected"], true);
    netshim_json(&["detach", "--netns", pod.netns()]);
}
