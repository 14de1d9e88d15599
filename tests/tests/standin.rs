//! End-to-end check of the VM stand-in (root only):
//!
//! ```text
//! client netns            sandbox netns                          guest netns
//!  veth0 10.77.N.1 <-veth-> eth0 ==u32+mirred== tap0_kata <=vm-standin=> eth0 (tap) 10.77.N.2
//! ```
//!
//! eth0 <-> tap0_kata is connected here with kata's tc u32 + mirred filters (netshim's own
//! datapath replaces that); tap0_kata is created with `netshim::tap::create_persistent_tap`.
//! Pings the guest, runs a 3 s iperf3 client -> guest and prints the throughput.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use netshim::tap::{create_persistent_tap, TapSpec};
use netshim_tests::netns_fixture::unique_octet;
use netshim_tests::{is_root, veth_pair, ChildGuard, TestNetns};

struct Topology {
    client: TestNetns,
    sandbox: TestNetns,
    guest: TestNetns,
    client_ip: String,
    guest_ip: String,
    guest_mac: String,
    mtu: u32,
}

fn topology() -> Topology {
    let client = TestNetns::new("nsh-cl");
    let sandbox = TestNetns::new("nsh-sb");
    let guest = TestNetns::new("nsh-gu");
    let n = unique_octet();
    let client_ip = format!("10.77.{n}.1");
    let guest_ip = format!("10.77.{n}.2");

    veth_pair(&client, "veth0", &sandbox, "eth0");
    client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "veth0"]);
    // As a CNI plugin would leave it: the sandbox veth carries the pod IP. Everything that
    // enters eth0 is redirected to the tap, so the sandbox stack never answers for it.
    sandbox.ip(&["addr", "add", &format!("{guest_ip}/24"), "dev", "eth0"]);
    let guest_mac = sandbox.link_mac("eth0");
    let mtu = sandbox.link_mtu("eth0");

    sandbox
        .run(|| create_persistent_tap(&TapSpec::new("tap0_kata")))
        .expect("create tap0_kata");
    sandbox.ip(&[
        "link",
        "set",
        "dev",
        "tap0_kata",
        "mtu",
        &mtu.to_string(),
        "up",
    ]);
    sandbox.mirred_redirect("eth0", "tap0_kata");
    sandbox.mirred_redirect("tap0_kata", "eth0");

    Topology {
        client,
        sandbox,
        guest,
        client_ip,
        guest_ip,
        guest_mac,
        mtu,
    }
}

/// Starts the stand-in and waits for its `ready` line; returns the guard and the receiver of
/// its remaining stdout lines.
fn start_standin(t: &Topology, extra: &[&str]) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-standin"));
    cmd.arg("--sandbox-netns")
        .arg(t.sandbox.path())
        .args(["--tap", "tap0_kata"])
        .arg("--guest-netns")
        .arg(t.guest.path())
        .args(["--guest-ifname", "eth0", "--guest-mac", &t.guest_mac])
        .args(["--guest-mtu", &t.mtu.to_string()])
        .args(["--guest-addr", &format!("{}/24", t.guest_ip)])
        .args(["--guest-gw", &t.client_ip])
        .args(extra);
    netshim_tests::standin::spawn_ready(cmd)
}

/// Closes the stand-in's stdin (its stop signal), returns its JSON summary.
fn stop_standin(mut guard: ChildGuard, rx: mpsc::Receiver<String>) -> serde_json::Value {
    drop(guard.child_mut().stdin.take());
    let out = guard.wait_with_output(Duration::from_secs(5));
    assert!(out.status.success(), "vm-standin exit: {}", out.status);
    let line = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("vm-standin summary line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"))
}

fn iperf3_gbps(t: &Topology, port: u16, secs: u32, reverse: bool) -> (f64, serde_json::Value) {
    let _server = t.guest.spawn(&[
        "iperf3",
        "-s",
        "-1",
        "-B",
        &t.guest_ip,
        "-p",
        &port.to_string(),
    ]);
    // Wait for the server to listen (a refused connect leaves no state behind).
    let (p, s) = (port.to_string(), secs.to_string());
    let mut args = vec!["iperf3", "-c", &t.guest_ip, "-p", &p, "-t", &s, "-J"];
    if reverse {
        args.push("-R");
    }
    let mut last = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = t.client.exec(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if out.status.success() {
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .expect("iperf3 sum_received");
            return (bps / 1e9, v);
        }
        let refused = v["error"]
            .as_str()
            .is_some_and(|e| e.contains("Connection refused"));
        last = Some(v["error"].clone());
        if !refused {
            break;
        }
    }
    panic!("iperf3 failed: {last:?}");
}

#[test]
fn standin_ping_and_iperf3() {
    if !is_root() {
        eprintln!("skipping standin_ping_and_iperf3: needs root");
        return;
    }
    let t = topology();
    let (standin, rx) = start_standin(&t, &[]);

    // The guest NIC exists only while the stand-in runs, with the veth's MAC and the pod IP.
    let gl = t.guest.link_json("eth0");
    assert_eq!(gl["address"].as_str(), Some(t.guest_mac.as_str()));
    assert!(t
        .guest
        .ip(&["addr", "show", "dev", "eth0"])
        .contains(&t.guest_ip));

    let ping = t
        .client
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &t.guest_ip]);
    assert!(
        ping.status.success(),
        "ping client -> guest failed:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Offloads negotiated by the stand-in (as a VMM would) make the taps TSO-capable.
    let k = t.sandbox.exec_ok(&["ethtool", "-k", "tap0_kata"]);
    let tso_on = k.contains("tcp-segmentation-offload: on");
    eprintln!("tap0_kata tcp-segmentation-offload on: {tso_on}");
    assert!(tso_on, "{k}");

    let (gbps, _) = iperf3_gbps(&t, 5201, 3, false);
    eprintln!("iperf3 client -> guest (TCP, 1 stream, 3 s): {gbps:.2} Gbps");
    let (gbps_r, _) = iperf3_gbps(&t, 5202, 3, true);
    eprintln!("iperf3 guest -> client (TCP, 1 stream, 3 s, -R): {gbps_r:.2} Gbps");
    assert!(gbps > 0.5, "client -> guest only {gbps:.2} Gbps");

    let summary = stop_standin(standin, rx);
    eprintln!("vm-standin summary: {summary}");
    for dir in ["sandbox_to_guest", "guest_to_sandbox"] {
        assert!(summary[dir]["frames"].as_u64().unwrap() > 0, "{summary}");
        assert!(summary[dir]["bytes"].as_u64().unwrap() > 0, "{summary}");
    }
    // GSO frames crossed whole: average frame well above the MTU.
    let s2g = &summary["sandbox_to_guest"];
    let avg = s2g["bytes"].as_u64().unwrap() / s2g["frames"].as_u64().unwrap();
    eprintln!("average sandbox->guest frame: {avg} bytes");
    assert!(summary["error"].is_null(), "{summary}");

    // The guest NIC went away with the stand-in; the persistent sandbox tap stays.
    assert!(!t.guest.link_exists("eth0"));
    assert!(t.sandbox.link_exists("tap0_kata"));
}

#[test]
fn standin_stops_on_sigterm() {
    if !is_root() {
        eprintln!("skipping standin_stops_on_sigterm: needs root");
        return;
    }
    let t = topology();
    let (standin, rx) = start_standin(&t, &["--ignore-stdin"]);
    let ping = t
        .client
        .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &t.guest_ip]);
    assert!(ping.status.success());
    standin
        .signal(nix::sys::signal::Signal::SIGTERM)
        .expect("kill -TERM");
    let out = standin.wait_with_output(Duration::from_secs(5));
    assert!(out.status.success(), "{}", out.status);
    let line = rx.recv_timeout(Duration::from_secs(2)).expect("summary");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        v["sandbox_to_guest"]["frames"].as_u64().unwrap() >= 2,
        "{v}"
    );
    assert!(!t.guest.link_exists("eth0"));
}
