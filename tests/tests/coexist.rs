//! What netshim's eBPF datapath shares the pod device with: another tool's TCX program
//! (which runs first), a foreign root qdisc and a foreign clsact filter (left exactly as they
//! were), and what it refuses: kata's legacy `ingress` qdisc (exit 3, nothing created).
//!
//! Every netns is the test's own ([`Pod`]); the foreign program's pins live in a directory of
//! this test in bpffs, removed at the end.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        tc::TcAttachOptions,
        LinkOrder, SchedClassifier, TcAttachType,
    },
    EbpfLoader,
};
use netshim_common::Counters;
use netshim_tests::{
    netns_fixture::random_u32,
    netshim_cli::{netshim, netshim_json, pin_dir, Pod},
    require_root, traffic,
    traffic::pin_neighbor,
};

/// Sends `n` datagrams from the client to the pod address and counts the frames that arrive
/// on `tap0_kata` (the VM side).
fn frames_to_vm(pod: &Pod, n: usize) -> usize {
    // Waits for the tap's qdisc to be live: frames sent before that are dropped.
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    pin_neighbor(&pod.client, "c0", pod.pod_ip, &pod.pod_mac);
    pod.send_to_pod("coexist", n, 9999);
    let mut got = 0;
    while tap.read_udp(Duration::from_millis(600), 9999).is_some() {
        got += 1;
    }
    got
}

/// The programs on `dev`'s TCX ingress, in the order the kernel runs them.
fn tcx_order(pod: &Pod, dev: &str) -> Vec<u32> {
    let dev = dev.to_owned();
    pod.sandbox.run(move || {
        let (_, progs) =
            SchedClassifier::query_tcx(&dev, TcAttachType::Ingress).expect("query tcx");
        progs.iter().map(|p| p.id()).collect()
    })
}

/// The program a pinned link runs.
fn pinned_link_prog(pin: &Path) -> u32 {
    let link: FdLink = PinnedLink::from_pin(pin).expect("open link pin").into();
    link.info().expect("link info").program_id()
}

/// Another tool's TCX program on the pod veth: netshim's own object with an empty `peers` map,
/// so it passes every packet on (TC_ACT_UNSPEC = TCX_NEXT) and counts it in `unmatched`. Its
/// maps and link are pinned in a directory of this test; dropping it removes them (which
/// detaches the program).
struct ForeignProgram {
    dir: PathBuf,
    prog_id: u32,
}

impl ForeignProgram {
    fn attach_first(pod: &Pod, dev: &str) -> ForeignProgram {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/nsh-test-foreign-{}-{:08x}",
            std::process::id(),
            random_u32()
        ));
        std::fs::create_dir(&dir).expect("mkdir foreign pin dir");
        // Removes the directory again should the load fail.
        let mut foreign = ForeignProgram { dir, prog_id: 0 };
        let (dir, dev) = (foreign.dir.clone(), dev.to_owned());
        let prog_id = pod.sandbox.run(move || {
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(&dir)
                .load(netshim::EBPF_OBJECT)
                .expect("load the foreign object");
            let prog: &mut SchedClassifier = ebpf
                .program_mut("netshim_redirect")
                .unwrap()
                .try_into()
                .unwrap();
            prog.load().expect("load the foreign program");
            let id = prog
                .attach_with_options(
                    &dev,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .expect("attach the foreign program");
            let link: FdLink = prog.take_link(id).unwrap().try_into().unwrap();
            link.pin(dir.join("link")).expect("pin the foreign link");
            prog.info().unwrap().id()
        });
        foreign.prog_id = prog_id;
        foreign
    }

    /// Packets the foreign program saw and passed on.
    fn passed(&self) -> u64 {
        let map = aya::maps::Map::from_map_data(
            MapData::from_pin(self.dir.join("unmatched")).expect("foreign unmatched map"),
        )
        .unwrap();
        let counters: PerCpuArray<MapData, Counters> = PerCpuArray::try_from(map).unwrap();
        counters.get(&0, 0).unwrap().iter().map(|c| c.packets).sum()
    }
}

impl Drop for ForeignProgram {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_foreign_tcx_program_runs_first_and_stays_after_detach() {
    require_root!();
    let pod = Pod::new("cxa");
    let foreign = ForeignProgram::attach_first(&pod, "eth0");
    assert_eq!(tcx_order(&pod, "eth0"), vec![foreign.prog_id]);

    let report = netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", "tcx"]);
    assert_eq!(report["datapath"], "tcx", "{report}");
    let ours = pinned_link_prog(&pin_dir(&pod.sandbox).join("link_eth0"));
    // BPF_PROG_QUERY (bpftool 7.1's `net show` predates TCX and lists nothing for it).
    let order = tcx_order(&pod, "eth0");
    assert_eq!(
        order,
        vec![foreign.prog_id, ours],
        "foreign first, ours last"
    );

    let seen_before = foreign.passed();
    assert_eq!(frames_to_vm(&pod, 20), 20, "traffic crosses both programs");
    assert!(
        foreign.passed() >= seen_before + 20,
        "the foreign program saw every packet before ours redirected it"
    );

    let detached = netshim_json(&["detach", "--netns", pod.netns()]);
    assert!(detached["removed_pin_dir"].is_string(), "{detached}");
    assert_eq!(
        tcx_order(&pod, "eth0"),
        vec![foreign.prog_id],
        "detach leaves the foreign program attached"
    );
}

/// `tc qdisc show` and `tc filter show … ingress` of the pod device, without statistics.
fn tc_snapshot(pod: &Pod) -> (String, String) {
    (
        pod.sandbox.tc(&["qdisc", "show", "dev", "eth0"]),
        pod.sandbox
            .tc(&["filter", "show", "dev", "eth0", "ingress"]),
    )
}

#[test]
fn a_foreign_root_qdisc_and_clsact_filter_are_left_as_they_were() {
    require_root!();
    let pod = Pod::new("cxb");
    let ns = &pod.sandbox;
    // (fq, the usual example, is not built into the test kernel; tbf is.)
    ns.tc(&[
        "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "tbf", "rate", "10gbit", "burst",
        "1mb", "latency", "50ms",
    ]);
    ns.tc(&["qdisc", "add", "dev", "eth0", "clsact"]);
    // Matches nothing the test sends: traffic goes on to the next filter.
    ns.tc(&[
        "filter",
        "add",
        "dev",
        "eth0",
        "ingress",
        "pref",
        "7",
        "protocol",
        "ip",
        "u32",
        "match",
        "ip",
        "dst",
        "198.51.100.7/32",
        "flowid",
        "1:1",
    ]);
    let before = tc_snapshot(&pod);
    assert!(before.0.contains("qdisc tbf 1: root"), "{}", before.0);
    assert!(before.0.contains("qdisc clsact ffff:"), "{}", before.0);
    assert!(before.1.contains("pref 7 u32"), "{}", before.1);

    for mode in ["tcx", "cls-bpf"] {
        let report = netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", mode]);
        assert_eq!(
            report["datapath"],
            mode.replace('-', "_"),
            "{mode}: {report}"
        );
        let during = tc_snapshot(&pod);
        assert!(during.1.contains("pref 7 u32"), "{mode}: {}", during.1);
        if mode == "cls-bpf" {
            assert!(
                during.1.contains("netshim_redirect"),
                "our filter next to the foreign one: {}",
                during.1
            );
        }
        assert_eq!(frames_to_vm(&pod, 10), 10, "{mode}: traffic flows");
        netshim_json(&["detach", "--netns", pod.netns()]);
        assert_eq!(
            tc_snapshot(&pod),
            before,
            "{mode}: detach left the foreign qdiscs and filter as they were"
        );
    }
}

#[test]
fn kata_ingress_qdisc_on_the_pod_device_is_a_conflict() {
    require_root!();
    let pod = Pod::new("cxc");
    let ns = &pod.sandbox;
    ns.tc(&["qdisc", "add", "dev", "eth0", "ingress"]);
    let before = tc_snapshot(&pod);
    for mode in ["tcx", "cls-bpf"] {
        let out = netshim(&["attach", "--netns", pod.netns(), "--ebpf-attach", mode]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{mode}: {err}");
        for word in [
            "eth0",
            pod.netns(),
            "`ingress` qdisc",
            "kata's mirred datapath",
        ] {
            assert!(err.contains(word), "{mode}: {word:?} in {err}");
        }
        assert!(!ns.link_exists("tap0_kata"), "{mode}: no tap created");
        let status = netshim_json(&["status", "--netns", pod.netns()]);
        assert_eq!(
            status["pin_dir"],
            serde_json::Value::Null,
            "{mode}: no pins"
        );
        assert_eq!(tc_snapshot(&pod), before, "{mode}: the qdisc is untouched");
    }
    // `connect` refuses the device the same way.
    ns.ip(&["link", "add", "x0", "type", "veth", "peer", "name", "x1"]);
    let out = netshim(&["connect", "--netns", pod.netns(), "eth0", "x0"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tc_snapshot(&pod), before);
}
