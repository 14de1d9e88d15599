//! netshim started in a mount namespace of its own (`ip netns exec`, which mounts a fresh
//! /sys without bpffs) still works on the host's bpffs and /run/netshim: it joins the host's
//! mount namespace first. And commands that need privileges say so up front.
//!
//! Every assertion is about this file's own namespaces (their cookies).

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use netshim_tests::{
    leaks::{netshim_dirs, tcx_programs},
    netshim_cli::{assert_ok, netshim_bin, netshim_json, Pod},
    require_root,
    traffic::probe,
    TestNetns,
};
use serde_json::Value;

/// `ip netns exec NS netshim args…`.
fn netshim_in(ns: &TestNetns, args: &[&str]) -> Output {
    let bin = netshim_bin();
    let mut all = vec![bin.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    ns.exec(&all)
}

fn json_of(out: &Output, what: &str) -> Value {
    let text = assert_ok(out, what);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: bad JSON {e}: {text}"))
}

fn pins(cookie: u64) -> Vec<String> {
    let dir = PathBuf::from(format!("/sys/fs/bpf/netshim/netns-{cookie}"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ping(from: &TestNetns, ip: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "2", ip])
        .status
        .success()
}

#[test]
fn attach_status_stats_detach_under_ip_netns_exec_act_on_the_hosts_bpffs() {
    require_root!();
    let pod = Pod::new("hv-exec");
    let name = pod.netns().to_owned();
    let cookie = pod.cookie();

    // TCX: the links are what the TCX queries below look for.
    let attach = netshim_in(
        &pod.sandbox,
        &["attach", "--netns", &name, "--ebpf-attach", "tcx", "--json"],
    );
    let report = json_of(&attach, "ip netns exec … netshim attach");
    assert_eq!(report["netns_cookie"], cookie);
    // From the host: the pins outlived the process that made them.
    let pinned = pins(cookie);
    for pin in [
        "link_eth0",
        "link_tap0_kata",
        "program",
        "peers",
        "counters",
    ] {
        assert!(
            pinned.iter().any(|p| p == pin),
            "no {pin} in the host's pin dir after attach under ip netns exec: {pinned:?}"
        );
    }
    let status = netshim_json(&["status", "--netns", &name]);
    assert_eq!(status["attached"], true, "{status}");
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");
    assert_eq!(
        tcx_programs(&pod.sandbox, &["eth0".into()]).len(),
        1,
        "netshim's TCX program on eth0"
    );
    let crossed = probe(&pod, "tap0_kata", 3);
    assert_eq!((crossed.to_vm, crossed.from_vm), (3, 3), "through the tap");

    // status and stats from inside see the same (attached, connected, counters).
    let inside = json_of(
        &netshim_in(&pod.sandbox, &["status", "--netns", &name, "--json"]),
        "ip netns exec … netshim status",
    );
    assert_eq!(inside["attached"], true, "{inside}");
    assert_eq!(inside["endpoints"][0]["connected"], true, "{inside}");
    let stats = json_of(
        &netshim_in(&pod.sandbox, &["stats", "--netns", &name, "--json"]),
        "ip netns exec … netshim stats",
    );
    let ep = &stats[0]["endpoints"][0];
    assert!(ep["to_vm"]["packets"].as_u64() >= Some(3), "{stats}");
    assert!(ep["from_vm"]["packets"].as_u64() >= Some(3), "{stats}");

    // detach from inside takes the host's pins and the TCX links down.
    assert_ok(
        &netshim_in(&pod.sandbox, &["detach", "--netns", &name]),
        "ip netns exec … netshim detach",
    );
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "left behind");
    assert!(
        tcx_programs(&pod.sandbox, &["eth0".into()]).is_empty(),
        "a TCX program is still on eth0"
    );
    assert!(
        ping(&pod.client, &pod.pod_ip.to_string()),
        "client -> pod after detach"
    );
}

#[test]
fn the_cni_plugin_under_ip_netns_exec_pins_on_the_host() {
    require_root!();
    let pod = Pod::new("hv-cni");
    let cookie = pod.cookie();
    let netns_path = pod.sandbox.path().display().to_string();
    let conf = |prev: bool| {
        let mut c = serde_json::json!({"cniVersion": "1.0.0", "name": "hv", "type": "netshim"});
        if prev {
            c["prevResult"] = serde_json::json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": netns_path}],
                "ips": [{"address": format!("{}/24", pod.pod_ip), "interface": 0}],
            });
        }
        serde_json::to_vec(&c).unwrap()
    };
    let plugin = |command: &str, stdin: Vec<u8>| {
        let bin = netshim_bin();
        let mut cmd = pod.client.exec_cmd(&[bin.to_str().unwrap()]);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("hv-{cookie}"))
            .env("CNI_NETNS", &netns_path)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the plugin");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        child.wait_with_output().expect("wait for the plugin")
    };
    let add = plugin("ADD", conf(true));
    let result = json_of(&add, "CNI ADD under ip netns exec");
    assert!(
        result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "tap0_kata"),
        "{result}"
    );
    let pinned = pins(cookie);
    assert!(
        pinned.iter().any(|p| p == "program"),
        "no program pin on the host after CNI ADD under ip netns exec: {pinned:?}"
    );
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");
    let crossed = probe(&pod, "tap0_kata", 2);
    assert_eq!((crossed.to_vm, crossed.from_vm), (2, 2));
    assert_ok(&plugin("DEL", conf(false)), "CNI DEL under ip netns exec");
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "left behind");
    assert!(tcx_programs(&pod.sandbox, &["eth0".into()]).is_empty());
}

/// `netshim args…` as uid/gid 65534 with no capabilities (`cni`: as a CNI plugin with this
/// CNI_COMMAND and an empty configuration on stdin).
fn as_nobody_cmd(args: &[&str], cni: Option<&str>) -> Output {
    let bin = netshim_bin();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&bin)
        .args(args)
        .stdin(Stdio::null());
    if let Some(command) = cni {
        cmd.env("CNI_COMMAND", command);
    }
    cmd.output().expect("run setpriv")
}

fn as_nobody(args: &[&str]) -> Output {
    as_nobody_cmd(args, None)
}

#[test]
fn commands_that_need_privileges_refuse_an_unprivileged_user() {
    require_root!();
    let ns = TestNetns::new("nsh-hv-nobody");
    for args in [
        vec!["stats"],
        vec!["status", "--netns", ns.name()],
        vec!["attach", "--netns", ns.name()],
    ] {
        let out = as_nobody(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "netshim {args:?} as nobody: {stderr}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains(&format!("netshim {} needs root (or CAP_BPF", args[0])),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "no report: {:?}", out.stdout);
    }
    // Those that need nothing still work.
    let out = as_nobody(&["completions", "bash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = json_of(
        &as_nobody_cmd(&[], Some("VERSION")),
        "CNI VERSION as nobody",
    );
    assert!(version["supportedVersions"].is_array(), "{version}");
    // A CNI call that needs privileges is a CNI error result saying so.
    let out = as_nobody_cmd(&[], Some("GC"));
    let err: Value = serde_json::from_slice(&out.stdout).expect("CNI error result");
    assert_eq!(err["code"], 50, "{err}");
    let details = err["details"].as_str().unwrap();
    assert!(details.contains("needs root"), "{err}");
}
