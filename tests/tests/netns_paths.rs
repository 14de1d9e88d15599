//! How a sandbox's netns is named and found again: netshim records canonical absolute paths
//! and finds a live netns by cookie when the recorded path no longer names it; the caller's
//! own netns named by path is refused without --disable-new-netns (kata's rule).
//!
//! `upgrade --all` reports every sandbox on the host (other developers' too): assertions
//! are about this file's own cookies only.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use netshim_tests::{
    leaks::netshim_dirs,
    netshim_cli::{assert_ok, netshim, netshim_bin, netshim_json, Pod},
    on_netns_thread, require_root, ChildGuard,
};
use serde_json::Value;

/// `netshim upgrade --all --json` run from `/`; this cookie's entry.
fn upgrade_all_entry(cookie: u64) -> Value {
    let out = Command::new(netshim_bin())
        .current_dir("/")
        .args(["upgrade", "--all", "--json"])
        .output()
        .expect("run netshim upgrade --all");
    // Another developer's broken sandbox may make the exit code 1: the report is there.
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "upgrade --all: bad JSON {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("cookie {cookie} not in the upgrade report: {report}"))
        .clone()
}

/// Both links of the pod swapped to a new program.
fn assert_upgraded(entry: &Value) {
    assert_eq!(entry["outcome"], "upgraded", "{entry}");
    let swapped = entry["swapped"].as_array().expect("swapped hooks");
    assert_eq!(swapped.len(), 2, "pod device and tap: {entry}");
    for hook in swapped {
        assert_ne!(hook["old_prog_id"], hook["new_prog_id"], "{entry}");
    }
}

#[test]
fn a_relative_netns_path_is_recorded_absolute_and_upgrade_all_finds_it() {
    require_root!();
    let pod = Pod::new("np-rel");
    let cookie = pod.cookie();
    let relative = format!("./{}", pod.netns());
    let out = Command::new(netshim_bin())
        .current_dir("/run/netns")
        .args(["attach", "--netns", &relative, "--json"])
        .output()
        .expect("run netshim attach");
    let report: Value = serde_json::from_str(&assert_ok(&out, "attach --netns ./NAME")).unwrap();
    let canonical = format!("/run/netns/{}", pod.netns());
    assert_eq!(report["netns"], relative.as_str(), "as typed");
    assert_eq!(report["netns_path"], canonical.as_str());
    let commit: Value = serde_json::from_slice(
        &std::fs::read(format!("/run/netshim/netns-{cookie}/attached.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(commit["netns_path"], canonical.as_str(), "attached.json");

    assert_upgraded(&upgrade_all_entry(cookie));
}

#[test]
fn a_sandbox_attached_through_an_exited_processs_ns_link_is_found_by_cookie() {
    require_root!();
    let pod = Pod::new("np-pid");
    let cookie = pod.cookie();
    // A process of the netns (the netns itself lives on in /run/netns/NAME).
    let mut helper = pod.sandbox.exec_cmd(&["sleep", "600"]);
    helper.stdout(Stdio::null());
    let helper = ChildGuard::spawn(helper, "sleep in the sandbox");
    let path = format!("/proc/{}/ns/net", helper.id());
    // `ip netns exec` execs sleep: same pid; wait until it is in the netns.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while netshim_json(&["status", "--netns", &path])["netns_cookie"] != cookie {
        assert!(std::time::Instant::now() < deadline, "helper never entered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = netshim_json(&["attach", "--netns", &path]);
    assert_eq!(report["netns_path"], path.as_str());
    drop(helper); // killed: the recorded path is gone
    assert!(!std::path::Path::new(&path).exists());

    assert_upgraded(&upgrade_all_entry(cookie));
}

#[test]
fn the_callers_own_netns_by_path_is_refused_without_disable_new_netns() {
    require_root!();
    let pod = Pod::new("np-self");
    let cookie = pod.cookie();
    // A process spawned from a thread inside the pod netns starts in it.
    let run = |args: &[&str]| {
        let bin = netshim_bin();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        on_netns_thread(pod.sandbox.path(), move || {
            let child = Command::new(bin)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn netshim");
            ChildGuard::new(child, "netshim attach").wait_with_output(Duration::from_secs(60))
        })
    };
    for own in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
        for extra in [&[][..], &["--model", "none"][..]] {
            let mut args = vec!["attach", "--netns", own];
            args.extend_from_slice(extra);
            let out = run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "netshim {args:?}: {stderr}");
            assert!(stderr.contains("disable_new_netns"), "{stderr}");
            assert!(
                stderr.contains("--disable-new-netns --model none"),
                "{stderr}"
            );
            assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "{args:?}");
            assert!(!pod.sandbox.link_exists("tap0_kata"), "{args:?} made a tap");
        }
    }
    // kata's way is allowed: no netns of its own, model none.
    let out = run(&[
        "attach",
        "--netns",
        "/proc/self/ns/net",
        "--disable-new-netns",
        "--model",
        "none",
    ]);
    assert_ok(&out, "attach --disable-new-netns --model none");
    assert!(pod.sandbox.link_exists("tap0_kata"));
    let out = netshim(&["detach", "--netns", pod.netns()]);
    assert_ok(&out, "detach");
}
