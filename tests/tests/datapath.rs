//! Traffic crosses an attached endpoint both ways, after the attaching process has exited,
//! and the counters `netshim stats` reads from another process equal the frames seen.

use std::time::Duration;

use netshim_tests::{
    netshim_cli::{netshim_json, Pod},
    require_root,
    tap_reader::format_mac,
    traffic::{self, recv_numbered, vm_frame},
    UdpFrame,
};

const TO_VM: usize = 40;
const FROM_VM: usize = 25;
const ETH_HLEN: u64 = 14;

fn forwards_both_ways_and_counts(backend: &str, attach_mode: &str, fast_path: &str) {
    require_root!();
    let pod = Pod::new(&format!(
        "dp{}{}{}",
        &backend[..1],
        &attach_mode[..1],
        &fast_path[..1]
    ));
    let mut args = vec!["attach", "--netns", pod.netns(), "--tc-backend", backend];
    if backend == "ebpf" {
        args.extend(["--ebpf-attach", attach_mode, "--fast-path", fast_path]);
    }
    let report = netshim_json(&args);
    // `netshim attach` has exited: from here on only what it left in the kernel works.
    let ep = &report["endpoints"][0];
    assert_eq!(ep["name"], "eth0");
    assert_eq!(ep["kind"], "veth");
    assert_eq!(ep["tap"]["name"], "tap0_kata");
    assert_eq!(ep["mac"], format_mac(&pod.pod_mac), "guest MAC = veth MAC");
    assert_eq!(report["backend"], backend);
    if backend == "ebpf" {
        // Towards the tap: plain redirect (a tap has no peer). Towards eth0, whose peer is
        // in the client netns: bpf_redirect_peer unless the fast path is off.
        assert_eq!(ep["redirect"]["to_vm"], "redirect");
        let from_vm = if fast_path == "auto" {
            "redirect_peer"
        } else {
            "redirect"
        };
        assert_eq!(ep["redirect"]["from_vm"], from_vm, "{report}");
    } else {
        assert_eq!(ep["redirect"], serde_json::Value::Null);
    }

    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    // A permanent neighbour entry: the client sends no ARP, so every frame is the test's.
    pod.pin_pod_neighbor();

    // Client → VM: datagrams sent in the client netns arrive on the tap fd.
    pod.send_to_pod("to-vm", TO_VM, 9999);
    let mut frames = Vec::new();
    while let Some(f) = tap.read_frame(Duration::from_millis(800)) {
        frames.push(f);
    }
    let udp: Vec<UdpFrame> = frames.iter().filter_map(|f| UdpFrame::parse(f)).collect();
    assert_eq!(frames.len(), TO_VM, "frames on the tap: {udp:?}");
    for (i, u) in udp.iter().enumerate() {
        assert_eq!(u.dst_port, 9999);
        assert_eq!(u.payload, format!("to-vm {i}").as_bytes());
        assert_eq!(u.dst_mac, pod.pod_mac);
    }
    let to_vm_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();

    // VM → client: frames written to the tap fd leave the veth and reach a client socket.
    let receiver =
        pod.client
            .udp_receiver(pod.client_ip, 9998, "bind receiver", Duration::from_secs(2));
    let mut from_vm_bytes = 0u64;
    for i in 0..FROM_VM {
        let frame = vm_frame(&pod, 5555, 9998, format!("from-vm {i}").as_bytes());
        from_vm_bytes += frame.len() as u64;
        tap.write_frame(&frame).expect("write frame to tap");
    }
    for from in recv_numbered(&receiver, "from-vm", FROM_VM) {
        assert_eq!(from.ip(), pod.pod_ip);
    }

    // Counters, read by a fresh process.
    let stats = netshim_json(&["stats", "--netns", pod.netns()]);
    let ep = &stats[0]["endpoints"][0];
    assert_eq!(stats[0]["backend"], backend);
    assert_eq!(ep["pod"], "eth0");
    assert_eq!(ep["tap"], "tap0_kata");
    assert_eq!(ep["to_vm"]["packets"], TO_VM as u64, "{stats}");
    assert_eq!(ep["from_vm"]["packets"], FROM_VM as u64, "{stats}");
    assert_eq!(ep["to_vm"]["errors"], 0);
    assert_eq!(ep["from_vm"]["errors"], 0);
    // The classifier sees whole frames; mirred's action counts from the network header.
    let l2 = |bytes: u64, packets: usize| match backend {
        "mirred" => bytes - ETH_HLEN * packets as u64,
        _ => bytes,
    };
    assert_eq!(ep["to_vm"]["bytes"], l2(to_vm_bytes, TO_VM), "{stats}");
    assert_eq!(
        ep["from_vm"]["bytes"],
        l2(from_vm_bytes, FROM_VM),
        "{stats}"
    );
    if backend == "ebpf" {
        assert_eq!(stats[0]["unmatched"]["packets"], 0);
        // Without --netns, stats lists every pinned sandbox; this one is among them.
        let all = netshim_json(&["stats"]);
        let inode = report["netns_inode"].clone();
        let mine = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["netns_inode"] == inode)
            .unwrap_or_else(|| panic!("sandbox {inode} missing from {all}"));
        assert_eq!(mine["endpoints"][0]["to_vm"]["packets"], TO_VM as u64);
    }

    drop(tap);
    let detached = netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(detached["removed_taps"][0], "tap0_kata");
    assert!(!pod.sandbox.link_exists("tap0_kata"));
}

#[test]
fn ebpf_forwards_both_ways_after_netshim_exits_and_counts_every_frame() {
    forwards_both_ways_and_counts("ebpf", "auto", "auto");
}

#[test]
fn mirred_forwards_both_ways_and_counts_every_frame() {
    forwards_both_ways_and_counts("mirred", "auto", "off");
}

#[test]
fn ebpf_cls_bpf_fallback_forwards_both_ways_and_counts_every_frame() {
    // The path kernels before 6.6 take (clsact + cls_bpf direct-action), forced here.
    forwards_both_ways_and_counts("ebpf", "cls-bpf", "auto");
}

#[test]
fn ebpf_without_fast_path_forwards_both_ways_and_counts_every_frame() {
    forwards_both_ways_and_counts("ebpf", "auto", "off");
}
