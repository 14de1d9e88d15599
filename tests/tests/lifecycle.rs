//! Lifecycle and crash safety: attach is idempotent, an attach killed at any step is cleaned
//! up by the next attach or by `netshim gc` without a trace, gc collects what a deleted netns
//! left, and detach of a netns that is gone succeeds (CNI DEL).
//!
//! Every assertion is about this file's own namespaces: other tests on the machine create and
//! remove sandboxes of their own at the same time.

use std::{
    collections::BTreeMap,
    net::UdpSocket,
    os::unix::{fs::MetadataExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use netshim::{
    crash::{CRASH_POINTS, KILL_AT_ENV},
    datapath::TcBackend,
};
use netshim_tests::{
    netns_json::{self, json},
    netshim_cli::{netshim, netshim_bin, netshim_json, netshim_ok, Pod},
    require_root,
    traffic::{pin_neighbor, recv_numbered, vm_frame},
    TapQueue, TestNetns,
};
use serde_json::Value;

/// Held from a killed attach to the run that cleans it up, and around every gc: otherwise
/// one test's gc could clean another test's half-made sandbox before that test's own
/// cleanup runs, and the test would assert on what someone else did.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pod whose client has a permanent neighbour entry for the pod address: every frame that
/// crosses is one a test sent.
fn pod(tag: &str) -> Pod {
    let pod = Pod::new(tag);
    pin_neighbor(&pod.client, "c0", pod.pod_ip, &pod.pod_mac);
    pod
}

fn attach_args<'a>(pod: &'a Pod, backend: &'a str) -> Vec<&'a str> {
    vec!["attach", "--netns", pod.netns(), "--tc-backend", backend]
}

fn cookie(ns: &TestNetns) -> u64 {
    netshim_json(&["status", "--netns", ns.name()])["netns_cookie"]
        .as_u64()
        .expect("netns_cookie")
}

fn pin_dir(cookie: u64) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/netshim/netns-{cookie}"))
}

fn state_dir(cookie: u64) -> PathBuf {
    PathBuf::from(format!("/run/netshim/netns-{cookie}"))
}

fn lock_file(cookie: u64) -> PathBuf {
    PathBuf::from(format!("/run/netshim/netns-{cookie}.lock"))
}

// ---- TCX links, straight from the kernel (bpftool 7.1 cannot filter them by device) -----

/// `union bpf_attr` for BPF_PROG_QUERY (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// (hook, program id, link id) of every TCX attachment of device `ifindex` in `ns`.
fn tcx_attachments(ns: &TestNetns, ifindex: u32) -> Vec<(&'static str, u32, u32)> {
    ns.run(|| {
        let mut out = Vec::new();
        for (hook, attach_type) in [("ingress", BPF_TCX_INGRESS), ("egress", BPF_TCX_EGRESS)] {
            let mut progs = [0u32; 16];
            let mut links = [0u32; 16];
            let mut attr = ProgQueryAttr {
                target_ifindex: ifindex,
                attach_type,
                prog_ids: progs.as_mut_ptr() as u64,
                link_ids: links.as_mut_ptr() as u64,
                count: progs.len() as u32,
                ..ProgQueryAttr::default()
            };
            // SAFETY: attr is a valid BPF_PROG_QUERY attribute whose id buffers hold `count`
            // entries and outlive the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_QUERY,
                    &mut attr as *mut ProgQueryAttr,
                    std::mem::size_of::<ProgQueryAttr>() as u32,
                )
            };
            assert_eq!(
                rc,
                0,
                "BPF_PROG_QUERY {hook} on ifindex {ifindex}: {}",
                std::io::Error::last_os_error()
            );
            for i in 0..attr.count as usize {
                out.push((hook, progs[i], links[i]));
            }
        }
        out
    })
}

// ---- what attach can change, as the kernel and the file system report it ---------------

#[derive(Debug, PartialEq)]
struct Snapshot {
    links: Vec<Value>,
    addresses: Vec<Value>,
    routes: Vec<Value>,
    qdiscs: Vec<Value>,
    filters: BTreeMap<String, Value>,
    tcx: BTreeMap<String, Vec<(&'static str, u32, u32)>>,
}

fn snapshot(ns: &TestNetns) -> Snapshot {
    let links = netns_json::links(ns);
    let addresses = netns_json::addresses(ns);
    let routes = json(ns.ip(&["-j", "route", "show", "table", "all"]));
    let qdiscs = netns_json::qdiscs(ns);
    let mut filters = BTreeMap::new();
    let mut tcx = BTreeMap::new();
    for l in &links {
        let dev = l["ifname"].as_str().unwrap().to_owned();
        netns_json::add_filters(ns, &dev, &mut filters);
        let ifindex = l["ifindex"].as_u64().unwrap() as u32;
        tcx.insert(dev, tcx_attachments(ns, ifindex));
    }
    Snapshot {
        links,
        addresses,
        routes,
        qdiscs,
        filters,
        tcx,
    }
}

/// Everything of netshim's still in the pod's sandbox netns (and in bpffs and /run for it),
/// compared with the snapshot taken before anything was attached.
fn leaks(pod: &Pod, before: &Snapshot, cookie: u64) -> Vec<String> {
    let now = snapshot(&pod.sandbox);
    let mut leaks = Vec::new();
    let mut differs = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        let (a, b) = (format!("{a:?}"), format!("{b:?}"));
        if a != b {
            leaks.push(format!("{what}: before {a}\n  now {b}"));
        }
    };
    differs("links", &before.links, &now.links);
    differs("addresses", &before.addresses, &now.addresses);
    differs("routes", &before.routes, &now.routes);
    differs("qdiscs", &before.qdiscs, &now.qdiscs);
    differs("filters", &before.filters, &now.filters);
    differs("tcx", &before.tcx, &now.tcx);
    for path in [pin_dir(cookie), state_dir(cookie), lock_file(cookie)] {
        if path.exists() {
            leaks.push(format!("{} exists", path.display()));
        }
    }
    // Preloads are host-wide: a test that killed an attach holds SERIAL until its own
    // cleanup has taken that attach's preload away (CI saw this check catch one in between).
    let _serial = serial();
    leaks.extend(dead_preloads());
    leaks
}

/// Preloaded datapaths (`/sys/fs/bpf/netshim-preload-<pid>-<n>`) of processes that are gone:
/// what a killed attach left and neither the next attach nor gc removed.
fn dead_preloads() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: i32 = name
                .strip_prefix("netshim-preload-")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            let gone = !Path::new(&format!("/proc/{pid}")).exists();
            gone.then(|| format!("{} exists (its process {pid} is gone)", e.path().display()))
        })
        .collect()
}

// ---- traffic ------------------------------------------------------------------------------

/// A few datagrams cross tap0_kata each way: client → tap fd, tap fd → client.
fn traffic_flows(pod: &Pod, frames: usize) {
    let tap = TapQueue::open_in(pod.sandbox.path(), "tap0_kata", false, None).expect("open tap");
    assert!(
        pod.sandbox
            .wait_oper_up("tap0_kata", Duration::from_secs(10)),
        "tap0_kata not UP: {}",
        diagnostics(pod)
    );
    pod.send_to_pod("to-vm", frames, 9999);
    for i in 0..frames {
        let u = tap
            .read_udp(Duration::from_secs(2), 9999)
            .unwrap_or_else(|| {
                panic!(
                    "datagram {i} of {frames} did not reach the tap\n{}",
                    diagnostics(pod)
                )
            });
        assert_eq!(u.payload, format!("to-vm {i}").as_bytes());
    }
    let receiver =
        pod.client
            .udp_receiver(pod.client_ip, 0, "bind receiver", Duration::from_secs(2));
    let port = receiver.local_addr().unwrap().port();
    for i in 0..frames {
        let frame = vm_frame(pod, 5555, port, format!("from-vm {i}").as_bytes());
        tap.write_frame(&frame).expect("write frame to tap");
    }
    recv_numbered(&receiver, "from-vm", frames);
}

/// What the kernel says about the pod, for a failure message.
fn diagnostics(pod: &Pod) -> String {
    let stats = netshim(&["stats", "--netns", pod.netns()]);
    format!(
        "sandbox links:\n{}\nclient links:\n{}\nclient neighbours:\n{}\nsandbox qdiscs:\n{}\n\
         tcx: {:?}\nstats:\n{}{}",
        String::from_utf8_lossy(&pod.sandbox.try_ip(&["-s", "-d", "link"]).stdout),
        String::from_utf8_lossy(&pod.client.try_ip(&["-s", "link"]).stdout),
        String::from_utf8_lossy(&pod.client.try_ip(&["neigh"]).stdout),
        pod.sandbox.tc(&["qdisc", "show"]),
        snapshot(&pod.sandbox).tcx,
        String::from_utf8_lossy(&stats.stdout),
        String::from_utf8_lossy(&stats.stderr),
    )
}

// ---- idempotent attach ------------------------------------------------------------------

/// Pinned files of a sandbox, with their inodes: re-pinning would make new ones.
fn pin_files(cookie: u64) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(pin_dir(cookie))
        .expect("pin dir")
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().ino(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn attaching_twice_returns_the_recorded_attach_and_changes_nothing() {
    require_root!();
    let pod = pod("idem");
    let before = snapshot(&pod.sandbox);
    let first = netshim_json(&attach_args(&pod, "ebpf"));
    assert_eq!(first["already_attached"], false);
    let cookie = first["netns_cookie"].as_u64().unwrap();
    let attached = snapshot(&pod.sandbox);
    // The default hook (`--ebpf-attach auto`): a cls_bpf filter on eth0 and tap0_kata.
    let ours: Vec<&String> = attached
        .filters
        .keys()
        .filter(|dev| {
            attached.filters[*dev]
                .to_string()
                .contains("netshim_redirect")
        })
        .collect();
    assert_eq!(
        ours,
        ["eth0/ingress", "tap0_kata/ingress"],
        "{:?}",
        attached.filters
    );
    let pins = pin_files(cookie);
    assert!(pins.iter().any(|(n, _)| n == "program"), "{pins:?}");
    let commit = state_dir(cookie).join("attached.json");
    let commit_inode = std::fs::metadata(&commit).unwrap().ino();

    let second = netshim_json(&attach_args(&pod, "ebpf"));
    assert_eq!(second["already_attached"], true);
    let mut same = second.clone();
    same["already_attached"] = Value::Bool(false);
    assert_eq!(same, first, "the recorded report comes back");
    assert_eq!(
        second["endpoints"][0]["tap"]["ifindex"],
        first["endpoints"][0]["tap"]["ifindex"]
    );
    // The default backend is the recorded one: no conflict either.
    let table = netshim_ok(&["attach", "--netns", pod.netns()]);
    assert!(table.contains("already attached"), "{table}");

    assert_eq!(
        snapshot(&pod.sandbox),
        attached,
        "nothing changed in the netns"
    );
    assert_eq!(pin_files(cookie), pins, "same pins, same inodes");
    assert_eq!(std::fs::metadata(&commit).unwrap().ino(), commit_inode);
    assert!(!state_dir(cookie).join("attaching.json").exists());
    traffic_flows(&pod, 3);

    netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(leaks(&pod, &before, cookie), Vec::<String>::new());
}

#[test]
fn attaching_with_another_model_or_backend_is_a_conflict_that_changes_nothing() {
    require_root!();
    let pod = pod("conf");
    let before = snapshot(&pod.sandbox);
    let first = netshim_json(&attach_args(&pod, "mirred"));
    let cookie = first["netns_cookie"].as_u64().unwrap();
    let attached = snapshot(&pod.sandbox);
    for other in [
        vec!["attach", "--netns", pod.netns(), "--model", "none"],
        vec!["attach", "--netns", pod.netns(), "--model", "macvtap"],
        vec!["attach", "--netns", pod.netns(), "--tc-backend", "ebpf"],
    ] {
        let out = netshim(&other);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{other:?}: {stderr}");
        assert!(stderr.contains("already attached"), "{stderr}");
        assert!(
            stderr.contains("datapath mirred"),
            "says what is attached: {stderr}"
        );
        assert!(
            stderr.contains("netshim detach"),
            "says what to do: {stderr}"
        );
        assert!(out.stdout.is_empty());
        assert_eq!(
            snapshot(&pod.sandbox),
            attached,
            "{other:?} changed the netns"
        );
    }
    assert!(
        !pin_dir(cookie).exists(),
        "no eBPF pins for a mirred attach"
    );
    traffic_flows(&pod, 3);
    netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(leaks(&pod, &before, cookie), Vec::<String>::new());
}

// ---- crash safety -----------------------------------------------------------------------

/// Runs attach with a crash point armed; it must die by SIGKILL.
fn killed_attach(pod: &Pod, backend: &str, step: &str) {
    let out = Command::new(netshim_bin())
        .args(attach_args(pod, backend))
        .env(KILL_AT_ENV, step)
        .output()
        .expect("run netshim");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "attach --tc-backend {backend} with {KILL_AT_ENV}={step} did not die by SIGKILL: {} \
         stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn crash_matrix(backend: TcBackend) {
    require_root!();
    let name = backend.as_str();
    let pod = pod(&format!("crash{}", &name[..1]));
    let cookie = cookie(&pod.sandbox);
    let before = snapshot(&pod.sandbox);
    assert_eq!(leaks(&pod, &before, cookie), Vec::<String>::new());
    let intent = state_dir(cookie).join("attaching.json");
    let taps_from = CRASH_POINTS
        .iter()
        .position(|p| p.name == "tap-created")
        .unwrap();
    let started = Instant::now();
    let mut steps = 0;
    for (i, point) in CRASH_POINTS.iter().enumerate() {
        if !point.backends.contains(&backend.as_str()) {
            continue;
        }
        steps += 1;
        let step = point.name;
        let committed = step == "committed";

        // (a) a killed attach, then attach again: it cleans up and attaches.
        {
            let _serial = serial();
            killed_attach(&pod, name, step);
            assert!(
                intent.exists(),
                "{step}: the killed attach left its intent file"
            );
            let report = netshim_json(&attach_args(&pod, name));
            if committed {
                assert_eq!(report["already_attached"], true, "{step}: {report}");
                assert_eq!(report["cleaned_leftovers"], Value::Null, "{step}: {report}");
            } else {
                assert_eq!(report["already_attached"], false, "{step}: {report}");
                let cleaned = &report["cleaned_leftovers"];
                let removed_intent = cleaned["removed_state"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p == intent.to_str().unwrap()));
                assert!(
                    removed_intent,
                    "{step}: dead run's intent not cleaned: {report}"
                );
                let taps = if i >= taps_from {
                    serde_json::json!(["tap0_kata"])
                } else {
                    serde_json::json!([])
                };
                assert_eq!(report["replaced_leftovers"], taps, "{step}: {report}");
            }
            assert!(
                !intent.exists(),
                "{step}: intent file after a complete attach"
            );
        }
        traffic_flows(&pod, 2);
        netshim_json(&["detach", "--netns", pod.netns()]);
        let after_reattach = leaks(&pod, &before, cookie);
        assert_eq!(after_reattach, Vec::<String>::new(), "{step} (a), {name}");

        // (b) a killed attach, then gc: the half-made sandbox is taken down.
        {
            let _serial = serial();
            killed_attach(&pod, name, step);
            let gc = netshim_json(&["gc"]);
            let cleaned = gc["cleaned_half_made"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["netns_cookie"] == cookie);
            if committed {
                // A complete attach (its commit file is there) is not gc's to take.
                assert!(!cleaned, "{step}: gc took down a committed attach: {gc}");
                assert_eq!(
                    netshim_json(&["status", "--netns", pod.netns()])["attached"],
                    true
                );
                netshim_json(&["detach", "--netns", pod.netns()]);
            } else {
                assert!(
                    cleaned,
                    "{step}: gc did not clean netns cookie {cookie}: {gc}"
                );
            }
        }
        let after_gc = leaks(&pod, &before, cookie);
        assert_eq!(after_gc, Vec::<String>::new(), "{step} (b), {name}");
        eprintln!(
            "crash matrix: step {step:<16} backend {name:<6} leaks after re-attach+detach = {}, \
             after gc = {}",
            after_reattach.len(),
            after_gc.len()
        );
    }
    eprintln!(
        "crash matrix: {name}: {steps} steps x 2 rounds in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(steps >= 6, "{name}: only {steps} crash points apply");
}

#[test]
fn ebpf_attach_killed_at_every_step_is_cleaned_up_by_attach_and_by_gc() {
    crash_matrix(TcBackend::Ebpf);
}

#[test]
fn mirred_attach_killed_at_every_step_is_cleaned_up_by_attach_and_by_gc() {
    crash_matrix(TcBackend::Mirred);
}

#[test]
fn an_unknown_crash_point_refuses_to_start() {
    let out = Command::new(netshim_bin())
        .args(["detach", "--netns", "netshim-test-no-such-netns-lc"])
        .env(KILL_AT_ENV, "tap-creatd")
        .output()
        .expect("run netshim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no such crash point"), "{stderr}");
    assert!(
        stderr.contains("tap-created"),
        "lists the known ones: {stderr}"
    );
}

// ---- gc and detach of namespaces that are gone -------------------------------------------

/// Runs `netshim gc` until it collects `cookie` (the kernel tears a netns down in a worker
/// after its last reference goes, and gc leaves a sandbox alone while its TCX links are
/// still on devices) and returns that report.
/// Asserts that the sandbox `cookie` has no pin directory, state directory or lock file.
fn assert_no_files_left(cookie: u64) {
    for p in [pin_dir(cookie), state_dir(cookie), lock_file(cookie)] {
        assert!(!p.exists(), "{p:?} left");
    }
}

fn gc_until_collected(cookie: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gc = netshim_json(&["gc"]);
        let collected = gc["removed_dead"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d["netns_cookie"] == cookie));
        if collected {
            return gc;
        }
        assert!(
            Instant::now() < deadline,
            "gc never collected {cookie}: {gc}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ip netns del`: the name (bind mount) goes; the netns lives on while anything holds it.
fn delete_netns_name(pod: &Pod) {
    let out = Command::new("ip")
        .args(["netns", "del", pod.netns()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mentions(report: &Value, cookie: u64) -> bool {
    [
        "removed_dead",
        "cleaned_half_made",
        "skipped_busy",
        "failed",
    ]
    .iter()
    .any(|list| {
        report[*list]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["netns_cookie"] == cookie))
    })
}

#[test]
fn gc_removes_what_a_deleted_netns_left() {
    require_root!();
    let _serial = serial();
    let pod = pod("gcdead");
    let report = netshim_json(&attach_args(&pod, "ebpf"));
    let cookie = report["netns_cookie"].as_u64().unwrap();
    let (pins, state, lock) = (pin_dir(cookie), state_dir(cookie), lock_file(cookie));
    assert!(pins.exists() && state.exists() && lock.exists());
    // The netns goes without a detach; its devices vanish with it, the pins and files stay.
    delete_netns_name(&pod);
    assert!(pins.exists() && state.exists() && lock.exists());

    let gc = gc_until_collected(cookie);
    let dead = gc["removed_dead"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("gc did not collect cookie {cookie}: {gc}"));
    let removed: Vec<&str> = dead["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [&pins, &state, &lock] {
        assert!(
            removed.contains(&p.to_str().unwrap()),
            "{p:?} not in {dead}"
        );
        assert!(!p.exists(), "{p:?} still exists");
    }
    let again = netshim_json(&["gc"]);
    assert!(
        !mentions(&again, cookie),
        "a second gc found {cookie} again: {again}"
    );
}

#[test]
fn gc_leaves_a_live_attached_netns_alone() {
    require_root!();
    let pod = pod("gclive");
    let before = snapshot(&pod.sandbox);
    let report = netshim_json(&attach_args(&pod, "ebpf"));
    let cookie = report["netns_cookie"].as_u64().unwrap();
    let attached = snapshot(&pod.sandbox);
    let pins = pin_files(cookie);
    let gc = {
        let _serial = serial();
        netshim_json(&["gc"])
    };
    assert!(!mentions(&gc, cookie), "gc touched a live attach: {gc}");
    assert_eq!(snapshot(&pod.sandbox), attached);
    assert_eq!(pin_files(cookie), pins);
    traffic_flows(&pod, 2);
    netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(leaks(&pod, &before, cookie), Vec::<String>::new());
}

#[test]
fn detach_of_a_netns_that_is_gone_succeeds_and_of_a_file_is_refused() {
    let _serial = serial();
    let name = format!("netshim-test-gone-{}", std::process::id());
    let out = netshim(&["detach", "--netns", &name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "no network namespace {name} exists (no /run/netns/{name}); nothing to detach"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("netshim has no record of a sandbox in it"),
        "{stdout}"
    );
    assert!(stdout.contains("gc: "), "what gc removed: {stdout}");
    let report = netshim_json(&["detach", "--netns", &name]);
    assert_eq!(
        report["netns_path"],
        format!("/run/netns/{name}"),
        "{report}"
    );
    assert!(report.get("recorded_sandboxes").is_none(), "{report}");
    let report = netshim_json(&["detach", "--netns", &format!("/proc/{}/ns/net", u32::MAX)]);
    assert_eq!(report["netns_gone"], true, "{report}");
    assert_eq!(report["removed_taps"], serde_json::json!([]));
    assert!(report["gc"].is_object(), "{report}");

    let file = std::env::temp_dir().join(format!("netshim-not-a-netns-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let out = netshim(&["detach", "--netns", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is not a network namespace"), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(!Path::new(&file).exists());
}

#[test]
fn gc_finds_a_netns_that_only_a_process_holds() {
    require_root!();
    let _serial = serial();
    let pod = pod("gcproc");
    // The runtime's view: a process (in a mount namespace of its own, as `ip netns exec`
    // makes) holds the netns; no name is bound to it.
    let holder = pod.sandbox.spawn(&["sleep", "120"]);
    let path = format!("/proc/{}/ns/net", holder.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    let want = ino(pod.sandbox.path().to_str().unwrap());
    while ino(&path) != want {
        assert!(Instant::now() < deadline, "sleep did not enter the netns");
        std::thread::sleep(Duration::from_millis(10));
    }
    let cookie = cookie(&pod.sandbox);
    delete_netns_name(&pod);

    // Alive and attached: left alone.
    netshim_json(&["attach", "--netns", &path]);
    let gc = netshim_json(&["gc"]);
    assert!(!mentions(&gc, cookie), "gc touched a live attach: {gc}");
    netshim_json(&["detach", "--netns", &path]);

    // Alive and half-made: taken down inside the netns, found through the process.
    let out = Command::new(netshim_bin())
        .args(["attach", "--netns", &path])
        .env(KILL_AT_ENV, "tap-link-pinned")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    let gc = netshim_json(&["gc"]);
    let half = gc["cleaned_half_made"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("gc did not clean cookie {cookie}: {gc}"));
    assert_eq!(
        half["removed"]["removed_taps"],
        serde_json::json!(["tap0_kata"])
    );
    assert!(
        half["netns_path"].as_str().unwrap().starts_with("/proc/"),
        "{half}"
    );
    let status = netshim_json(&["status", "--netns", &path]);
    assert_eq!(status["attached"], false, "{status}");
    assert_no_files_left(cookie);

    // Dead once the process is: collected.
    netshim_json(&["attach", "--netns", &path]);
    drop(holder);
    gc_until_collected(cookie);
    assert_no_files_left(cookie);
}

#[test]
fn gc_finds_a_netns_that_only_an_open_fd_holds() {
    require_root!();
    let _serial = serial();
    let pod = pod("gcfd");
    // Opened through the bind mount, which `ip netns del` then detaches: the fd reads back
    // as "/" and is the only thing that keeps the netns (and its pinned datapath) alive.
    let holder = std::fs::File::open(pod.sandbox.path()).unwrap();
    let path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&holder)
    );
    // Attached by name: the path the sandbox recorded goes away with the name.
    let report = netshim_json(&["attach", "--netns", pod.netns()]);
    let cookie = report["netns_cookie"].as_u64().unwrap();
    delete_netns_name(&pod);
    assert_eq!(std::fs::read_link(&path).unwrap(), Path::new("/"));

    let gc = netshim_json(&["gc"]);
    assert!(!mentions(&gc, cookie), "gc touched a live attach: {gc}");
    assert!(pin_dir(cookie).exists() && state_dir(cookie).exists());
    let status = netshim_json(&["status", "--netns", &path]);
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");

    drop(holder);
    gc_until_collected(cookie);
    assert_no_files_left(cookie);
}

/// A netns that only a socket keeps alive has no path gc can find. With TCX, its pinned
/// links are still on its devices; with cls_bpf (the default), its netns anchor link still
/// reports the netns: either vetoes the removal. Once the socket goes, the netns goes, the
/// links report it, and gc collects the sandbox.
fn gc_keeps_a_netns_that_only_a_socket_holds(mode: &str, tag: &str, veto_pin: &str, why: &str) {
    require_root!();
    let _serial = serial();
    let pod = pod(tag);
    let socket = pod
        .sandbox
        .run(|| UdpSocket::bind("0.0.0.0:0").expect("socket in the sandbox netns"));
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", mode]);
    let cookie = report["netns_cookie"].as_u64().unwrap();
    delete_netns_name(&pod);

    let gc = netshim_json(&["gc"]);
    let skipped = gc["skipped_busy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("gc did not keep cookie {cookie}: {gc}"));
    assert!(
        skipped["reason"].as_str().unwrap().contains(why),
        "{skipped}"
    );
    assert!(pin_dir(cookie).join(veto_pin).exists());
    assert!(
        pin_dir(cookie).join("peers").exists(),
        "the datapath's maps are kept"
    );

    drop(socket);
    gc_until_collected(cookie);
    assert_no_files_left(cookie);
}

/// `bpftool <kind> show pinned <path> --json`, field `field`.
fn pinned_field(kind: &str, path: &Path, field: &str) -> Value {
    let out = std::process::Command::new("bpftool")
        .args([kind, "show", "pinned"])
        .arg(path)
        .arg("--json")
        .output()
        .expect("bpftool");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool {kind} show pinned {}: {e}", path.display()));
    v[field].clone()
}

/// Every cls_bpf sandbox's netns anchor links the one SK_LOOKUP program the node pinned
/// (loaded once, not once per sandbox), and each anchor still follows its own netns.
#[test]
fn netns_anchors_share_one_program() {
    require_root!();
    let _serial = serial();
    let (a, b) = (pod("anchora"), pod("anchorb"));
    let cookies: Vec<u64> = [&a, &b]
        .iter()
        .map(|p| {
            netshim_json(&["attach", "--netns", p.netns()])["netns_cookie"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let links: Vec<Value> = cookies
        .iter()
        .map(|c| pinned_field("link", &pin_dir(*c).join("netns_anchor"), "prog_id"))
        .collect();
    let node = pinned_field(
        "prog",
        Path::new("/sys/fs/bpf/netshim/netns_anchor_program"),
        "id",
    );
    assert!(node.as_u64().is_some_and(|id| id > 0), "{node}");
    assert_eq!(
        links,
        vec![node.clone(), node],
        "both anchors run the node's program"
    );
    for (p, c) in [(&a, cookies[0]), (&b, cookies[1])] {
        netshim_ok(&["detach", "--netns", p.netns()]);
        assert_no_files_left(c);
    }
}

#[test]
fn gc_keeps_a_tcx_netns_that_only_a_socket_holds() {
    gc_keeps_a_netns_that_only_a_socket_holds("tcx", "gcsock", "link_eth0", "still attached");
}

#[test]
fn gc_keeps_a_cls_bpf_netns_that_only_a_socket_holds() {
    gc_keeps_a_netns_that_only_a_socket_holds(
        "cls-bpf",
        "gcsockc",
        "netns_anchor",
        "netns anchor link still reports",
    );
}

/// An attach that fails after it started preloading the datapath (a netns with nothing to
/// attach) leaves no preload directory, no pin directory and no state behind.
#[test]
fn a_failed_attach_removes_its_preloaded_datapath() {
    require_root!();
    let ns = TestNetns::new("preload");
    let child = Command::new(netshim_bin())
        .args(["--log-level", "debug", "attach", "--netns", ns.name()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run netshim");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for netshim");
    assert_eq!(
        out.status.code(),
        Some(2),
        "attach of a netns with only lo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("datapath preloaded"),
        "the attach preloaded nothing, so this test shows nothing: {stderr}"
    );
    let prefix = format!("netshim-preload-{pid}-");
    let left: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "preload directories left");
    let cookie = cookie(&ns);
    for path in [pin_dir(cookie), state_dir(cookie)] {
        assert!(!path.exists(), "{} exists", path.display());
    }
}
