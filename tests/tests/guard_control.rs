//! The source guard's control plane: attach reports it, mirred refuses it when asked for,
//! `netshim guard --allow` and `watch` change it without reattaching (on the next packet),
//! and `netshim upgrade` gives it to a sandbox attached before it existed.
//!
//! Frames are written into the tap fd as a VM writes them; what reaches a UDP socket in the
//! client netns is what the guard let through. The spoof classes themselves are tested in
//! guard.rs.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::Path,
    time::Duration,
};

use netshim_tests::{
    netshim_cli::{attach_as_before_the_guard, netshim, netshim_json, netshim_ok, Pod},
    require_root,
    tap_reader::{format_mac, udp_frame},
    traffic::{open_tap, probe},
    watch::Watch,
    TapQueue,
};
use serde_json::Value;

/// A UDP receiver on the client's address, and what reaches it.
struct Client {
    socket: UdpSocket,
    port: u16,
}

impl Client {
    fn new(pod: &Pod) -> Client {
        let socket = pod
            .client
            .udp_socket(pod.client_ip, 0, "bind the client receiver");
        let port = socket.local_addr().expect("receiver address").port();
        Client { socket, port }
    }

    /// Writes a datagram from `src` (with the pod's MAC, as the VM would) into `tap` and
    /// returns whether it reached the client. Earlier datagrams still in flight are read
    /// and ignored by their payload.
    fn delivered(&self, pod: &Pod, tap: &TapQueue, src: Ipv4Addr, tag: &str) -> bool {
        let frame = udp_frame(
            pod.pod_mac,
            pod.client_mac,
            src,
            pod.client_ip,
            4242,
            self.port,
            tag.as_bytes(),
        );
        tap.write_frame(&frame).expect("write a frame to the tap");
        self.socket
            .set_read_timeout(Some(Duration::from_millis(700)))
            .expect("receiver timeout");
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            if &buf[..n] == tag.as_bytes() {
                assert_eq!(from.ip(), src, "{tag} came from another source");
                return true;
            }
        }
        false
    }
}

fn attach(pod: &Pod, extra: &[&str]) -> Value {
    let mut args = vec!["attach", "--netns", pod.netns()];
    args.extend_from_slice(extra);
    netshim_json(&args)
}

fn guard_of(report: &Value) -> &Value {
    &report["endpoints"][0]["guard"]
}

fn addresses(guard: &Value) -> Vec<String> {
    guard["addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("no addresses in {guard}"))
        .iter()
        .map(|a| a.as_str().expect("address text").to_owned())
        .collect()
}

#[test]
fn attach_and_status_report_the_guard_enforced_by_default() {
    require_root!();
    let pod = Pod::new("gc-rep");
    let report = attach(&pod, &[]);
    let guard = guard_of(&report);
    assert_eq!(guard["mode"], "enforce", "{report:#}");
    assert_eq!(guard["mac"], format_mac(&pod.pod_mac));
    assert!(
        addresses(guard).contains(&pod.pod_ip.to_string()),
        "{guard}"
    );
    assert_eq!(guard["allow_dhcp"], false);
    assert_eq!(guard["allowed_addresses"], serde_json::json!([]));
    // status reads it back from the maps.
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(guard_of(&status), guard, "{status:#}");
    let table = netshim_ok(&["status", "--netns", pod.netns()]);
    assert!(table.contains("guard: enforce"), "{table}");
    // The pod's own traffic flows; another source does not.
    let tap = open_tap(&pod.sandbox, "tap0_kata");
    let client = Client::new(&pod);
    assert!(client.delivered(&pod, &tap, pod.pod_ip, "own"));
    assert!(!client.delivered(&pod, &tap, Ipv4Addr::new(10, 123, 0, 99), "spoofed"));
}

#[test]
fn mirred_refuses_an_explicit_guard_and_reports_it_off_by_default() {
    require_root!();
    let pod = Pod::new("gc-mir");
    for mode in ["enforce", "log"] {
        let out = netshim(&[
            "attach",
            "--netns",
            pod.netns(),
            "--tc-backend",
            "mirred",
            "--guard",
            mode,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--guard {mode}: {stderr}");
        assert!(
            stderr.contains("the mirred tc backend has no source guard"),
            "--guard {mode}: {stderr}"
        );
        assert!(
            !pod.sandbox.link_names().contains(&"tap0_kata".to_owned()),
            "a refused attach made a tap"
        );
    }
    let report = attach(&pod, &["--tc-backend", "mirred"]);
    let guard = guard_of(&report);
    assert_eq!(guard["mode"], "off", "{report:#}");
    assert!(
        guard["reason"]
            .as_str()
            .is_some_and(|r| r.contains("mirred")),
        "{guard}"
    );
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(guard_of(&status)["mode"], "off", "{status:#}");
    // The guard command says why it cannot change anything there.
    let out = netshim(&["guard", "--netns", pod.netns(), "--mode", "log"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn guard_allow_takes_effect_on_the_next_packet() {
    require_root!();
    let pod = Pod::new("gc-allow");
    attach(&pod, &[]);
    let tap = open_tap(&pod.sandbox, "tap0_kata");
    let client = Client::new(&pod);
    let secondary = Ipv4Addr::new(10, 123, 0, 50);
    assert!(client.delivered(&pod, &tap, pod.pod_ip, "own"));
    assert!(
        !client.delivered(&pod, &tap, secondary, "before allow"),
        "a source the guard does not know was delivered"
    );
    let out = netshim_json(&[
        "guard",
        "--netns",
        pod.netns(),
        "--allow",
        &secondary.to_string(),
    ]);
    let guard = &out["endpoints"][0]["guard"];
    assert_eq!(
        guard["allowed_addresses"],
        serde_json::json!([format!("{secondary}/32")]),
        "{out:#}"
    );
    assert!(client.delivered(&pod, &tap, secondary, "after allow"));
    // Recorded: an idempotent attach and status show it; --disallow takes it back.
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(
        guard_of(&status)["allowed_addresses"],
        guard["allowed_addresses"]
    );
    let again = attach(&pod, &[]);
    assert_eq!(
        guard_of(&again)["allowed_addresses"],
        guard["allowed_addresses"]
    );
    netshim_ok(&[
        "guard",
        "--netns",
        pod.netns(),
        "--disallow",
        &format!("{secondary}/32"),
    ]);
    assert!(!client.delivered(&pod, &tap, secondary, "after disallow"));
    // Log mode delivers it again.
    netshim_ok(&["guard", "--netns", pod.netns(), "--mode", "log"]);
    assert!(client.delivered(&pod, &tap, secondary, "log mode"));
}

#[test]
fn watch_follows_an_address_added_to_the_pod_device() {
    require_root!();
    let pod = Pod::new("gc-watch");
    let mut watch = Watch::start(pod.netns(), &[]);
    watch.expect("watching", None, Duration::from_secs(20));
    let tap = open_tap(&pod.sandbox, "tap0_kata");
    let client = Client::new(&pod);
    let added = Ipv4Addr::new(10, 123, 0, 60);
    assert!(client.delivered(&pod, &tap, pod.pod_ip, "own"));
    assert!(!client.delivered(&pod, &tap, added, "before the address"));
    pod.sandbox
        .ip(&["addr", "add", &format!("{added}/24"), "dev", "eth0"]);
    let (_, event) = watch.expect("guard-addresses", Some("eth0"), Duration::from_secs(10));
    assert!(
        event["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == &added.to_string())),
        "{event}"
    );
    assert!(client.delivered(&pod, &tap, added, "after the address"));
    // And it goes with the address.
    pod.sandbox
        .ip(&["addr", "del", &format!("{added}/24"), "dev", "eth0"]);
    watch.expect("guard-addresses", Some("eth0"), Duration::from_secs(10));
    assert!(!client.delivered(&pod, &tap, added, "after removing it"));
    let (status, _) = watch.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
}

#[test]
fn upgrade_gives_a_sandbox_attached_before_the_guard_its_guard() {
    require_root!();
    let pod = Pod::new("gc-upg");
    let dir = attach_as_before_the_guard(&pod);
    let crossed = probe(&pod, "tap0_kata", 5);
    assert_eq!((crossed.to_vm, crossed.from_vm), (5, 5), "{crossed:?}");
    let client = Client::new(&pod);
    let spoofed = Ipv4Addr::new(10, 123, 0, 77);
    {
        let tap = open_tap(&pod.sandbox, "tap0_kata");
        assert!(client.delivered(&pod, &tap, spoofed, "base delivers anything"));
    }

    let report = netshim_json(&["upgrade", "--netns", pod.netns()]);
    let sandbox = &report["sandboxes"][0];
    assert_eq!(sandbox["outcome"], "upgraded", "{report:#}");
    let created: Vec<&str> = sandbox["created_maps"]
        .as_array()
        .expect("created_maps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for map in [
        "guard",
        "guard_drops_v2",
        "guard_v4",
        "guard_v6",
        "guard_log",
        "guard_last",
    ] {
        assert!(created.contains(&map), "{map} not created: {report:#}");
        assert!(Path::new(&dir).join(map).exists(), "{map} not pinned");
    }
    let guard = &sandbox["guard"][0]["guard"];
    assert_eq!(guard["mode"], "enforce", "{report:#}");
    assert!(
        addresses(guard).contains(&pod.pod_ip.to_string()),
        "{guard}"
    );
    // Still forwarding both ways, and now guarded.
    let crossed = probe(&pod, "tap0_kata", 5);
    assert_eq!((crossed.to_vm, crossed.from_vm), (5, 5), "{crossed:?}");
    let tap = open_tap(&pod.sandbox, "tap0_kata");
    assert!(client.delivered(&pod, &tap, pod.pod_ip, "own after upgrade"));
    assert!(!client.delivered(&pod, &tap, spoofed, "spoofed after upgrade"));
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(guard_of(&status)["mode"], "enforce", "{status:#}");
    // --guard overrides the recorded mode.
    let report = netshim_json(&["upgrade", "--netns", pod.netns(), "--guard", "log"]);
    assert_eq!(report["sandboxes"][0]["guard"][0]["guard"]["mode"], "log");
    assert!(client.delivered(&pod, &tap, spoofed, "log mode after upgrade --guard log"));
}

#[test]
fn hot_plugged_endpoints_get_the_guard() {
    require_root!();
    let pod = Pod::new("gc-plug");
    let mut watch = Watch::start(pod.netns(), &[]);
    watch.expect("watching", None, Duration::from_secs(20));
    let client2 = netshim_tests::TestNetns::new("nsh-gc-plug-c2");
    netshim_tests::veth_pair(&client2, "c1", &pod.sandbox, "eth1");
    client2.ip(&["addr", "add", "10.124.9.1/24", "dev", "c1"]);
    pod.sandbox
        .ip(&["addr", "add", "10.124.9.2/24", "dev", "eth1"]);
    let (_, added) = watch.expect("added", Some("eth1"), Duration::from_secs(10));
    let guard = &added["report"]["guard"];
    assert_eq!(guard["mode"], "enforce", "{added:#}");
    assert!(
        addresses(guard).contains(&"10.124.9.2".to_owned()),
        "{guard}"
    );
    assert_eq!(guard["mac"], pod.sandbox.link_mac("eth1").trim(), "{guard}");
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    let eth1 = status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == "eth1")
        .unwrap_or_else(|| panic!("no eth1 in {status:#}"));
    assert_eq!(&eth1["guard"], guard, "{status:#}");
    let (exit, _) = watch.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn connect_guards_what_dev_b_sends() {
    require_root!();
    use netshim_tests::{traffic::pin_neighbor, veth_pair, TestNetns};
    let client = TestNetns::new("nsh-gc-pair-c");
    let shim = TestNetns::new("nsh-gc-pair-m");
    let server = TestNetns::new("nsh-gc-pair-s");
    for ns in [&client, &server] {
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    veth_pair(&client, "c0", &shim, "ma0");
    veth_pair(&server, "s0", &shim, "mb0");
    client.ip(&["addr", "add", "10.205.0.1/24", "dev", "c0"]);
    server.ip(&["addr", "add", "10.205.0.2/24", "dev", "s0"]);
    server.ip(&["addr", "add", "10.205.0.9/24", "dev", "s0"]);
    let server_mac = server.link_mac("s0").trim().to_owned();
    let client_mac = netshim_tests::tap_reader::parse_mac(&client.link_mac("c0")).unwrap();
    pin_neighbor(&server, "s0", Ipv4Addr::new(10, 205, 0, 1), &client_mac);
    let report = netshim_json(&[
        "connect",
        "--netns",
        shim.name(),
        "ma0",
        "mb0",
        "--guard",
        "enforce",
        "--guard-mac",
        &server_mac,
        "--guard-allow",
        "10.205.0.2",
    ]);
    /// Disconnects the pair however the test ends.
    struct Pair<'a>(&'a TestNetns);
    impl Drop for Pair<'_> {
        fn drop(&mut self) {
            let out = netshim(&["disconnect", "--netns", self.0.name(), "ma0", "mb0"]);
            assert!(out.status.success() || std::thread::panicking(), "{out:?}");
        }
    }
    let _pair = Pair(&shim);
    let guard = &report["guard"];
    assert_eq!(guard["mode"], "enforce", "{report:#}");
    assert_eq!(guard["mac"], server_mac.as_str(), "{report:#}");
    assert!(
        addresses(guard).contains(&"10.205.0.2".to_owned()),
        "{guard}"
    );
    let receiver = client.run(|| UdpSocket::bind(("10.205.0.1", 0)).unwrap());
    receiver
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let port = receiver.local_addr().unwrap().port();
    let send_from = |src: &str, tag: &str| {
        let s = server.run(|| UdpSocket::bind((src, 0)).unwrap());
        s.send_to(tag.as_bytes(), ("10.205.0.1", port)).unwrap();
        let mut buf = [0u8; 64];
        while let Ok((n, _)) = receiver.recv_from(&mut buf) {
            if &buf[..n] == tag.as_bytes() {
                return true;
            }
        }
        false
    };
    let allowed = send_from("10.205.0.2", "allowed");
    let other = send_from("10.205.0.9", "other");
    assert!(allowed, "the allowed source was dropped");
    assert!(
        !other,
        "a source the guard does not allow reached the client"
    );
}
