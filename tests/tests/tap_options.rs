//! Tap options (queues, owner, txqueuelen) and re-attaching over a dead run's leftovers.

use netshim_tests::{
    netshim_cli::{netshim, netshim_json, Pod},
    require_root, traffic, TapQueue,
};

#[test]
fn queues_owner_and_txqueuelen_reach_the_tap() {
    require_root!();
    let pod = Pod::new("topt");
    let report = netshim_json(&[
        "attach",
        "--netns",
        pod.netns(),
        "--queues",
        "4",
        "--tap-owner",
        "1234:4321",
        "--txqueuelen",
        "777",
    ]);
    let tap = &report["endpoints"][0]["tap"];
    assert_eq!(tap["queues"], 4);
    assert_eq!(tap["multi_queue"], true);
    assert_eq!(tap["vnet_hdr"], true);
    let d = pod.sandbox.ip(&["-d", "link", "show", "tap0_kata"]);
    assert!(d.contains("multi_queue"), "{d}");
    assert!(d.contains("vnet_hdr on"), "{d}");
    assert!(d.contains("persist on"), "{d}");
    assert!(d.contains("user 1234") && d.contains("group 4321"), "{d}");
    assert!(d.contains("qlen 777"), "{d}");
    assert!(d.contains("mtu 1500"), "{d}");
    // A VMM opens 4 queues.
    let queues: Vec<TapQueue> = (0..4)
        .map(|_| TapQueue::open_in(pod.sandbox.path(), "tap0_kata", true, None).unwrap())
        .collect();
    drop(queues);
    netshim_json(&["detach", "--netns", pod.netns()]);
}

#[test]
fn tap_mtu_follows_the_endpoint() {
    require_root!();
    let pod = Pod::new("tmtu");
    pod.sandbox.ip(&["link", "set", "eth0", "mtu", "1400"]);
    let report = netshim_json(&["attach", "--netns", pod.netns()]);
    assert_eq!(report["endpoints"][0]["mtu"], 1400);
    assert_eq!(pod.sandbox.link_mtu("tap0_kata"), 1400);
    netshim_json(&["detach", "--netns", pod.netns()]);
}

#[test]
fn reattach_over_a_leftover_tap_replaces_it_even_while_held_open() {
    require_root!();
    let pod = Pod::new("left");
    // kata #6339: a dead run left tap0_kata behind; a stuck process still holds it.
    pod.sandbox.ip(&[
        "tuntap",
        "add",
        "dev",
        "tap0_kata",
        "mode",
        "tap",
        "vnet_hdr",
    ]);
    let held = TapQueue::open_in(pod.sandbox.path(), "tap0_kata", false, None).unwrap();
    let report = netshim_json(&["attach", "--netns", pod.netns()]);
    assert_eq!(report["replaced_leftovers"][0], "tap0_kata");
    assert_eq!(report["endpoints"][0]["tap"]["name"], "tap0_kata");
    drop(held);
    // The new tap is connected: a VMM can open it and frames from the client arrive.
    let q = TapQueue::open_in(pod.sandbox.path(), "tap0_kata", false, None).unwrap();
    let _ = pod
        .client
        .exec(&["ping", "-c", "1", "-W", "1", &pod.pod_ip.to_string()]);
    let frame = q.read_frame(std::time::Duration::from_secs(2));
    assert!(frame.is_some(), "the client's ARP reaches the new tap");
    drop(q);
    netshim_json(&["detach", "--netns", pod.netns()]);
}

/// `(uid_t)-1` is "no owner" to TUNSETOWNER, which refused it with EINVAL after the tap was
/// made (exit 1); an id past u32 was "not a number". Both are bad input now, refused before
/// anything is made, with the reason.
#[test]
fn tap_owner_ids_outside_0_to_4294967294_are_refused_as_input() {
    require_root!();
    let pod = Pod::new("town");
    for (owner, why) in [
        (
            "4294967295",
            "uid 4294967295 is (uid_t)-1, which the kernel takes as \"no owner\"",
        ),
        (
            "1000:4294967295",
            "gid 4294967295 is (gid_t)-1, which the kernel takes as \"no group\"",
        ),
        (
            "99999999999",
            "uid 99999999999 is out of range (0..=4294967294)",
        ),
        ("qemu", "uid \"qemu\" is not a number"),
    ] {
        let out = netshim(&["attach", "--netns", pod.netns(), "--tap-owner", owner]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--tap-owner {owner}: {err}");
        assert!(
            err.contains(why),
            "--tap-owner {owner}: {why:?} not in {err}"
        );
        assert!(!pod.sandbox.link_exists("tap0_kata"), "no tap made");
    }
    // The largest valid id reaches the tap.
    let report = netshim_json(&[
        "attach",
        "--netns",
        pod.netns(),
        "--tap-owner",
        "4294967294:4294967294",
    ]);
    assert_eq!(report["endpoints"][0]["tap"]["owner"], 4294967294u64);
    let d = pod.sandbox.ip(&["-d", "link", "show", "tap0_kata"]);
    assert!(d.contains("user 4294967294"), "{d}");
    netshim_json(&["detach", "--netns", pod.netns()]);
}

/// `tap0_kata` is taken by a device netshim did not make (`make` creates it): attach is a
/// conflict (exit 3) that names the device and changes nothing, and detach leaves the device.
fn tap_name_taken_by(tag: &str, make: &[&[&str]], what: &str) {
    let pod = Pod::new(tag);
    for args in make {
        pod.sandbox.ip(args);
    }
    let kind = pod.sandbox.link_json("tap0_kata")["linkinfo"]["info_kind"].clone();
    let before = pod.sandbox.link_names();
    let out = netshim(&["attach", "--netns", pod.netns()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let want = format!(
        "netns {} has {what} named tap0_kata that netshim did not make: netshim names endpoint \
         0's tap tap0_kata; rename or remove it",
        pod.netns()
    );
    assert!(err.contains(&want), "{want:?} not in {err}");
    assert_eq!(
        pod.sandbox.link_names(),
        before,
        "nothing created or removed"
    );
    let cookie = netshim_json(&["status", "--netns", pod.netns()])["netns_cookie"].clone();
    assert!(!std::path::Path::new(&format!("/run/netshim/netns-{cookie}")).exists());
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/netshim/netns-{cookie}")).exists());
    // Not netshim's: detach (and attach's leftover cleanup) never takes it.
    netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(
        pod.sandbox.link_json("tap0_kata")["linkinfo"]["info_kind"],
        kind,
        "the device is still there"
    );
}

#[test]
fn a_bridge_named_tap0_kata_is_a_conflict() {
    require_root!();
    tap_name_taken_by(
        "tnb",
        &[&["link", "add", "tap0_kata", "type", "bridge"]],
        "a bridge",
    );
}

#[test]
fn a_veth_named_tap0_kata_is_a_conflict() {
    require_root!();
    tap_name_taken_by(
        "tnv",
        &[&[
            "link",
            "add",
            "tap0_kata",
            "type",
            "veth",
            "peer",
            "name",
            "vx0",
        ]],
        "a veth",
    );
}

#[test]
fn a_tun_mode_tun_named_tap0_kata_is_a_conflict() {
    require_root!();
    tap_name_taken_by(
        "tnt",
        &[&["tuntap", "add", "dev", "tap0_kata", "mode", "tun"]],
        "a tun device in tun mode",
    );
}

/// `tc qdisc show dev tap0_kata` in the sandbox, the root line only.
fn tap_root_qdisc(pod: &Pod) -> String {
    let shown = pod.sandbox.tc(&["qdisc", "show", "dev", "tap0_kata"]);
    shown
        .lines()
        .find(|l| l.contains(" root "))
        .unwrap_or_else(|| panic!("tap0_kata has no root qdisc: {shown}"))
        .to_owned()
}

/// The frames of `n` datagrams from the client that reach a VMM reading every one of the
/// `queues` queues of `tap0_kata`.
fn datagrams_to_vm(pod: &Pod, queues: usize, n: usize) -> usize {
    let multi_queue = queues > 1;
    let taps: Vec<TapQueue> = (0..queues)
        .map(|_| TapQueue::open_in(pod.sandbox.path(), "tap0_kata", multi_queue, None).unwrap())
        .collect();
    assert!(
        pod.sandbox
            .wait_oper_up("tap0_kata", std::time::Duration::from_secs(5)),
        "tap0_kata never came up"
    );
    traffic::pin_neighbor(&pod.client, "c0", pod.pod_ip, &pod.pod_mac);
    pod.send_to_pod("qdisc", n, 9997);
    let mut got = 0;
    loop {
        let before = got;
        for tap in &taps {
            while tap
                .read_udp(std::time::Duration::from_millis(300), 9997)
                .is_some()
            {
                got += 1;
            }
        }
        if got == before {
            return got;
        }
    }
}

#[test]
fn the_ebpf_datapath_gives_its_taps_noqueue_and_the_baselines_keep_the_kernel_default() {
    require_root!();
    let pod = Pod::new("tqd");
    // eBPF (default): the frames it redirects go straight to the tap's driver, on every
    // queue of a multi-queue tap too.
    for queues in [1, 2] {
        let report = netshim_json(&[
            "attach",
            "--netns",
            pod.netns(),
            "--queues",
            &queues.to_string(),
        ]);
        assert_eq!(
            report["endpoints"][0]["tap"]["qdisc"], "noqueue",
            "{report}"
        );
        let root = tap_root_qdisc(&pod);
        assert!(
            root.starts_with("qdisc noqueue "),
            "queues {queues}: {root}"
        );
        let status = netshim_json(&["status", "--netns", pod.netns()]);
        assert_eq!(status["endpoints"][0]["tap_qdisc"], "noqueue", "{status}");
        assert_eq!(datagrams_to_vm(&pod, queues, 20), 20, "queues {queues}");
        // An operator who puts a qdisc of their own on the tap: status says so, and the
        // frames still pass it to the VM.
        pod.sandbox.tc(&[
            "qdisc",
            "replace",
            "dev",
            "tap0_kata",
            "root",
            "handle",
            "1:",
            "pfifo",
        ]);
        let status = netshim_json(&["status", "--netns", pod.netns()]);
        assert_eq!(status["endpoints"][0]["tap_qdisc"], "pfifo", "{status}");
        assert_eq!(
            datagrams_to_vm(&pod, queues, 20),
            20,
            "queues {queues}, pfifo"
        );
        netshim_json(&["detach", "--netns", pod.netns()]);
    }
    // kata's mirred setup and the none model leave the qdisc the kernel attaches on up.
    for args in [["--tc-backend", "mirred"], ["--model", "none"]] {
        let mut attach = vec!["attach", "--netns", pod.netns()];
        attach.extend(args);
        let report = netshim_json(&attach);
        assert_eq!(
            report["endpoints"][0]["tap"]["qdisc"], "kernel-default",
            "{args:?}: {report}"
        );
        let root = tap_root_qdisc(&pod);
        assert!(!root.contains("noqueue"), "{args:?}: {root}");
        let status = netshim_json(&["status", "--netns", pod.netns()]);
        assert_ne!(status["endpoints"][0]["tap_qdisc"], "noqueue", "{status}");
        assert!(
            root.contains(" 0: root"),
            "{args:?}: the kernel's own: {root}"
        );
        netshim_json(&["detach", "--netns", pod.netns()]);
    }
}
