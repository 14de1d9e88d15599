//! The counters tell the truth, and a broken sandbox says so.
//!
//! - Frames redirected into a tap that no VMM reads are forwarded by the datapath and
//!   dropped by the tap: `stats` shows them as `tap_tx_dropped` (mirred: `mirred_action`,
//!   the action refuses a tap without carrier) and not as delivered (table, JSON,
//!   Prometheus), and `status` says "no VMM attached" until a reader opens the tap,
//!   and again once it has closed it.
//! - A tap deleted behind netshim's back (both backends): `status` and `stats` say the
//!   sandbox is broken, what is broken and that detach repairs it (exit 4); detach does, and
//!   the pod device passes traffic to its own stack again with nothing left behind.

use std::{process::Output, time::Duration};

use netshim_tests::{
    netshim_cli::{netshim, netshim_json, netshim_ok, Pod},
    require_root, traffic,
};

fn send(pod: &Pod, n: usize) {
    pod.send_to_pod("to nobody", n, 9);
}

fn to_vm(pod: &Pod) -> serde_json::Value {
    netshim_json(&["stats", "--netns", pod.netns()])[0]["endpoints"][0]["to_vm"].clone()
}

fn vmm_attached(pod: &Pod) -> serde_json::Value {
    netshim_json(&["status", "--netns", pod.netns()])["endpoints"][0]["vmm_attached"].clone()
}

fn a_tap_nobody_reads_drops_what_is_forwarded_to_it(backend: &str) {
    require_root!();
    let pod = Pod::new(&format!("nr{}", &backend[..1]));
    netshim_json(&["attach", "--netns", pod.netns(), "--tc-backend", backend]);
    pod.pin_pod_neighbor();
    assert_eq!(vmm_attached(&pod), false);
    let table = netshim_ok(&["status", "--netns", pod.netns()]);
    assert!(table.contains("no VMM attached"), "{table}");

    // The eBPF datapath hands the frames to the tap, whose xmit drops them (no queue
    // attached); kata's mirred action refuses a target without carrier itself.
    let reason = if backend == "ebpf" {
        "tap_tx_dropped"
    } else {
        "mirred_action"
    };
    const N: u64 = 23;
    send(&pod, N as usize);
    std::thread::sleep(Duration::from_millis(200));
    let d = to_vm(&pod);
    println!("{backend}, no reader: to_vm {d}");
    assert_eq!(d["packets"], N, "{d}");
    assert_eq!(d["dropped"][reason], N, "{d}");
    assert_eq!(d["delivered"], 0, "{d}");
    let text = netshim_ok(&["stats", "--netns", pod.netns(), "--format", "prometheus"]);
    let series = |name: &str, tail: &str| {
        text.lines()
            .any(|l| l.starts_with(name) && l.contains("direction=\"to_vm\"") && l.ends_with(tail))
    };
    assert!(
        series(
            "netshim_endpoint_dropped_total{",
            &format!("reason=\"{reason}\"}} {N}")
        ),
        "no {reason} {N} in\n{text}"
    );
    assert!(
        series("netshim_endpoint_delivered_total{", "} 0"),
        "no delivered 0 in\n{text}"
    );
    let table = netshim_ok(&["stats", "--netns", pod.netns()]);
    assert!(table.contains(&format!("{reason}={N}")), "{table}");

    // A VMM attaches: what it reads is delivered.
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    assert_eq!(vmm_attached(&pod), true);
    send(&pod, 5);
    for i in 0..5 {
        tap.read_udp(Duration::from_secs(2), 9)
            .unwrap_or_else(|| panic!("datagram {i} never reached the tap"));
    }
    let d = to_vm(&pod);
    assert_eq!(d["packets"], N + 5, "{d}");
    assert_eq!(d["dropped"][reason], N, "{d}");
    assert_eq!(d["delivered"], 5, "{d}");
    // ... and stops: status says so again.
    drop(tap);
    assert_eq!(vmm_attached(&pod), false);
}

#[test]
fn a_tap_nobody_reads_drops_what_is_forwarded_to_it_ebpf() {
    a_tap_nobody_reads_drops_what_is_forwarded_to_it("ebpf");
}

#[test]
fn a_tap_nobody_reads_drops_what_is_forwarded_to_it_mirred() {
    a_tap_nobody_reads_drops_what_is_forwarded_to_it("mirred");
}

fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn a_tap_deleted_behind_netshims_back_is_reported_and_detach_repairs_it(backend: &str) {
    require_root!();
    let pod = Pod::new(&format!("bk{}", &backend[..1]));
    netshim_json(&["attach", "--netns", pod.netns(), "--tc-backend", backend]);
    pod.sandbox.ip(&["link", "del", "tap0_kata"]);

    let out = netshim(&["status", "--netns", pod.netns(), "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status JSON");
    println!("{backend}: status exit {:?}: {status}", exit_code(&out));
    assert_eq!(exit_code(&out), Some(4), "status of a broken sandbox");
    assert_eq!(status["attached"], true, "{status}");
    assert_eq!(status["health"], "broken", "{status}");
    let problems = status["problems"].to_string();
    assert!(problems.contains("tap0_kata"), "{problems}");

    let out = netshim(&["status", "--netns", pod.netns()]);
    let table = stdout(&out);
    assert_eq!(exit_code(&out), Some(4));
    let first = table.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("BROKEN") && first.contains("tap0_kata"),
        "{table}"
    );
    assert!(
        table.contains(&format!("netshim detach --netns {}", pod.netns())),
        "{table}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("detach"),
        "the error names the repair"
    );

    let out = netshim(&["stats", "--netns", pod.netns(), "--json"]);
    println!(
        "{backend}: stats exit {:?}: {}",
        exit_code(&out),
        stdout(&out)
    );
    assert_eq!(exit_code(&out), Some(4), "stats of a broken sandbox");
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stats JSON");
    assert_eq!(stats[0]["netns_cookie"], status["netns_cookie"], "{stats}");
    assert_eq!(stats[0]["health"], "broken", "{stats}");
    assert!(
        stats[0]["problems"].to_string().contains("tap0_kata"),
        "{stats}"
    );

    // detach repairs it: nothing of netshim's is left and eth0 is the pod's device again.
    netshim_ok(&["detach", "--netns", pod.netns()]);
    let out = netshim(&["status", "--netns", pod.netns(), "--json"]);
    assert_eq!(exit_code(&out), Some(0), "{}", stdout(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["attached"], false, "{status}");
    assert_eq!(status["health"], "ok");
    assert_eq!(
        pod.sandbox
            .try_tc(&["filter", "show", "dev", "eth0", "ingress"]),
        ""
    );
    assert_eq!(
        pod.sandbox
            .try_tc(&["qdisc", "show", "dev", "eth0", "ingress"]),
        ""
    );
    assert!(!netshim_tests::netshim_cli::pin_dir(&pod.sandbox).exists());
    let ping = pod
        .client
        .exec(&["ping", "-c", "1", "-W", "2", &pod.pod_ip.to_string()]);
    assert!(
        ping.status.success(),
        "eth0 passes traffic again after detach"
    );
}

#[test]
fn a_tap_deleted_behind_netshims_back_is_reported_and_detach_repairs_it_ebpf() {
    a_tap_deleted_behind_netshims_back_is_reported_and_detach_repairs_it("ebpf");
}

#[test]
fn a_tap_deleted_behind_netshims_back_is_reported_and_detach_repairs_it_mirred() {
    a_tap_deleted_behind_netshims_back_is_reported_and_detach_repairs_it("mirred");
}
