//! The internetworking models through the CLI: none (taps only), macvtap, kata's
//! disable_new_netns rule, conflicting flags and the config file.

use std::time::Duration;

use netshim_tests::{
    netshim_cli::{netshim, netshim_json, Pod},
    require_root, TapQueue,
};

fn pings(pod: &Pod) -> bool {
    pod.client
        .exec(&["ping", "-c", "1", "-W", "1", &pod.pod_ip.to_string()])
        .status
        .success()
}

fn fails_with(out: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

#[test]
fn none_model_makes_taps_and_connects_nothing() {
    require_root!();
    let pod = Pod::new("none");
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--model", "none"]);
    assert_eq!(report["model"], "none");
    assert_eq!(report["datapath"], "none");
    assert_eq!(report["pin_dir"], serde_json::Value::Null);
    let tap = &report["endpoints"][0]["tap"];
    assert_eq!(tap["name"], "tap0_kata");
    assert!(pod.sandbox.link_exists("tap0_kata"));
    // Nothing redirects: the sandbox stack answers the client, and a reader of the tap
    // sees none of that traffic.
    let q = TapQueue::open_in(pod.sandbox.path(), "tap0_kata", false, None).unwrap();
    assert!(pings(&pod), "eth0 is not redirected under the none model");
    while let Some(f) = q.read_frame(Duration::from_millis(300)) {
        // The sandbox kernel may send its own IPv6/ARP out of the tap; nothing from the client.
        assert_ne!(&f[6..12], &pod.client_mac, "a client frame crossed: {f:?}");
    }
    assert_eq!(
        pod.sandbox
            .tc(&["qdisc", "show", "dev", "eth0", "ingress"])
            .trim(),
        "",
        "no ingress qdisc"
    );
    drop(q);
    let detached = netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(detached["removed_taps"][0], "tap0_kata");
}

#[test]
fn disable_new_netns_only_with_none_and_uses_the_callers_netns() {
    require_root!();
    let pod = Pod::new("dnn");
    let bin = netshim_tests::netshim_cli::netshim_bin();
    let bin = bin.to_str().unwrap();
    // kata's rule: disable_new_netns needs the none model.
    let out = pod
        .sandbox
        .exec(&[bin, "attach", "--disable-new-netns", "--model", "tcfilter"]);
    fails_with(
        &out,
        2,
        "config disable_new_netns only works with 'none' internetworking model",
    );
    let out = pod.sandbox.exec(&[bin, "attach", "--disable-new-netns"]);
    fails_with(&out, 2, "disable_new_netns");
    assert!(!pod.sandbox.link_exists("tap0_kata"));
    // Run inside the sandbox netns without --netns: the caller's netns gets the taps.
    let out = pod.sandbox.exec(&[
        bin,
        "attach",
        "--disable-new-netns",
        "--model",
        "none",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Recorded canonical: /proc/<pid of that netshim>/ns/net.
    assert_eq!(report["netns"], "/proc/self/ns/net");
    let path = report["netns_path"].as_str().unwrap();
    let pid = path
        .strip_prefix("/proc/")
        .and_then(|p| p.strip_suffix("/ns/net"))
        .unwrap_or_else(|| panic!("{path}"));
    assert!(pid.parse::<u32>().is_ok(), "{path}");
    assert_eq!(report["endpoints"][0]["name"], "eth0");
    assert!(pod.sandbox.link_exists("tap0_kata"));
    netshim_json(&["detach", "--netns", pod.netns()]);
    assert!(!pod.sandbox.link_exists("tap0_kata"));
}

#[test]
fn conflicting_flags_are_refused_before_anything_changes() {
    require_root!();
    let pod = Pod::new("conf");
    fails_with(
        &netshim(&[
            "attach",
            "--netns",
            pod.netns(),
            "--model",
            "macvtap",
            "--tc-backend",
            "mirred",
        ]),
        2,
        "--tc-backend applies to the tcfilter model only",
    );
    fails_with(
        &netshim(&[
            "attach",
            "--netns",
            pod.netns(),
            "--tc-backend",
            "mirred",
            "--ebpf-attach",
            "tcx",
        ]),
        2,
        "--ebpf-attach applies to the ebpf tc backend only",
    );
    fails_with(
        &netshim(&["attach", "--netns", pod.netns(), "--tap-owner", "qemu"]),
        2,
        "--tap-owner",
    );
    assert!(!pod.sandbox.link_exists("tap0_kata"));
}

#[test]
fn config_file_sets_the_model_and_flags_override_it() {
    require_root!();
    let pod = Pod::new("cfg");
    let dir = std::env::temp_dir().join(format!(
        "netshim-cfg-{}-{}",
        std::process::id(),
        pod.netns()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("configuration.toml");
    std::fs::write(
        &cfg,
        "[hypervisor.qemu]\npath = \"/usr/bin/qemu-system-x86_64\"\n\
         [runtime]\ninternetworking_model = \"none\"\n\
         [netshim]\ntxqueuelen = 321\n",
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--config", cfg_s]);
    assert_eq!(report["model"], "none");
    assert!(pod
        .sandbox
        .ip(&["link", "show", "tap0_kata"])
        .contains("qlen 321"));
    netshim_json(&["detach", "--netns", pod.netns()]);
    // A flag beats the file.
    let report = netshim_json(&[
        "attach",
        "--netns",
        pod.netns(),
        "--config",
        cfg_s,
        "--model",
        "tcfilter",
    ]);
    assert_eq!(report["model"], "tcfilter");
    assert_eq!(report["datapath"], "cls_bpf");
    netshim_json(&["detach", "--netns", pod.netns()]);
    // A bad file is refused with the key named, and nothing is made.
    std::fs::write(&cfg, "[runtime]\ninternetworking_model = \"bridged\"\n").unwrap();
    fails_with(
        &netshim(&["attach", "--netns", pod.netns(), "--config", cfg_s]),
        2,
        "runtime.internetworking_model: Unknown type bridged",
    );
    std::fs::write(&cfg, "[netshim]\nqueue = 2\n").unwrap();
    fails_with(
        &netshim(&["attach", "--netns", pod.netns(), "--config", cfg_s]),
        2,
        "netshim.queue: unknown key",
    );
    fails_with(
        &netshim(&[
            "attach",
            "--netns",
            pod.netns(),
            "--config",
            "/nonexistent/netshim.toml",
        ]),
        2,
        "reading config file /nonexistent/netshim.toml",
    );
    assert!(!pod.sandbox.link_exists("tap0_kata"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn macvtap_model_hands_a_macvtap_to_the_vmm_and_detach_restores_the_veth() {
    require_root!();
    let pod = Pod::new("mvm");
    let eth0_before = pod.sandbox.ip(&["-br", "addr", "show", "dev", "eth0"]);
    let mac_before = pod.sandbox.link_mac("eth0");
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--model", "macvtap"]);
    assert_eq!(report["datapath"], "macvtap");
    let e = &report["endpoints"][0];
    assert_eq!(e["attachment"], "macvtap");
    assert_eq!(e["mac"], mac_before, "the guest keeps the veth's MAC");
    let mvt = &e["macvtap"];
    assert_eq!(mvt["name"], "tap0_kata");
    assert_eq!(mvt["created"], true);
    let details = pod.sandbox.ip(&["-d", "link", "show", "tap0_kata"]);
    assert!(details.contains("macvtap mode bridge"), "{details}");
    assert_eq!(pod.sandbox.link_mac("tap0_kata"), mac_before);
    assert_ne!(
        pod.sandbox.link_mac("eth0"),
        mac_before,
        "veth got a new MAC"
    );
    assert!(
        !pod.sandbox
            .ip(&["-4", "addr", "show", "dev", "eth0"])
            .contains("inet "),
        "the veth's IPv4 address moved to the guest"
    );
    let device = mvt["device"].as_str().unwrap();
    assert!(std::path::Path::new(device).exists(), "{device}");
    // Attaching again is idempotent: the recorded report, nothing changed.
    let again = netshim_json(&["attach", "--netns", pod.netns(), "--model", "macvtap"]);
    assert_eq!(again["already_attached"], true, "{again}");
    assert_eq!(again["endpoints"][0]["macvtap"], e["macvtap"]);
    assert_eq!(pod.sandbox.link_mac("tap0_kata"), mac_before);
    let other = netshim(&["attach", "--netns", pod.netns(), "--model", "tcfilter"]);
    assert_eq!(other.status.code(), Some(3), "another model is a conflict");
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(status["attached"], true);
    assert_eq!(status["datapath"], "macvtap");
    assert_eq!(status["macvtaps"][0]["name"], "tap0_kata");
    assert_eq!(status["macvtaps"][0]["device"], device);

    let detached = netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(detached["removed_macvtaps"][0], "tap0_kata");
    assert!(!pod.sandbox.link_exists("tap0_kata"));
    assert_eq!(pod.sandbox.link_mac("eth0"), mac_before);
    assert_eq!(
        pod.sandbox.ip(&["-br", "addr", "show", "dev", "eth0"]),
        eth0_before
    );
    assert!(pings(&pod), "the veth answers again");
}
