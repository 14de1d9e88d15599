//! netshim's own files of a sandbox found damaged (a directory where a pin should be, a
//! plain file where the state directory should be, a lock "file" that is a directory, a
//! commit file that does not parse): attach refuses with exit 3 and changes nothing, status
//! reports it, detach and gc repair it. Also: a FIFO as --config, and detach of a netns
//! that was deleted (a name that never existed: lifecycle.rs).
//!
//! Every assertion is about this file's own namespaces (their cookies).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use netshim_tests::{
    leaks::netshim_dirs,
    netns_fixture::random_u32,
    netshim_cli::{netshim, netshim_bin, netshim_json, Pod},
    require_root,
    traffic::open_tap,
    ChildGuard,
};
use serde_json::Value;

/// gc collects every dead netns's leftovers, not only its caller's: the test that runs gc
/// and the test whose detach must be the one to collect its deleted netns take turns.
static GC: Mutex<()> = Mutex::new(());

fn gc_turn() -> MutexGuard<'static, ()> {
    GC.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ifindex(pod: &Pod, dev: &str) -> u64 {
    pod.sandbox.link_json(dev)["ifindex"]
        .as_u64()
        .expect("ifindex")
}

/// Attaches, damages with `damage(cookie)`, and checks that attach refuses (exit 3, naming
/// `bad` and the repair) while the live tap keeps its ifindex, that status reports it, and
/// that detach repairs it so that a fresh attach works.
fn refused_then_repaired(tag: &str, bad: impl Fn(u64) -> PathBuf, damage: impl Fn(&Path)) {
    let pod = Pod::new(tag);
    let cookie = pod.cookie();
    netshim_json(&["attach", "--netns", pod.netns()]);
    let reader = open_tap(&pod.sandbox, "tap0_kata");
    let before = ifindex(&pod, "tap0_kata");
    let path = bad(cookie);
    damage(&path);

    let out = netshim(&["attach", "--netns", pod.netns()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "attach over {}: {stderr}",
        path.display()
    );
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!("netshim detach --netns {}", pod.netns())),
        "{stderr}"
    );
    assert_eq!(
        ifindex(&pod, "tap0_kata"),
        before,
        "the live tap was replaced"
    );

    // Status says so, and that the sandbox is broken (exit 4): detach repairs it.
    let out = netshim(&["status", "--netns", pod.netns(), "--json"]);
    assert_eq!(out.status.code(), Some(4), "status of a damaged sandbox");
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["health"], "broken", "{status}");
    let damaged = status["damaged"].as_array().expect("damaged in status");
    assert!(
        damaged
            .iter()
            .any(|d| d["path"] == path.display().to_string()),
        "{status}"
    );

    let detached = netshim_json(&["detach", "--netns", pod.netns()]);
    assert!(
        detached["repaired"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &Value::from(path.display().to_string())),
        "{detached}"
    );
    drop(reader);
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "after detach");
    assert!(!pod.sandbox.link_exists("tap0_kata"));
    let again = netshim_json(&["attach", "--netns", pod.netns()]);
    assert_eq!(again["already_attached"], false, "{again}");
    netshim_json(&["detach", "--netns", pod.netns()]);
}

fn pin_dir(cookie: u64) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/netshim/netns-{cookie}"))
}

fn state_dir(cookie: u64) -> PathBuf {
    PathBuf::from(format!("/run/netshim/netns-{cookie}"))
}

#[test]
fn a_directory_where_a_pin_should_be() {
    require_root!();
    // The map stays alive (the program holds it); its pin becomes a directory.
    refused_then_repaired(
        "ds-pin",
        |c| pin_dir(c).join("peers"),
        |p| {
            std::fs::remove_file(p).unwrap();
            std::fs::create_dir(p).unwrap();
            std::fs::create_dir(p.join("inner")).unwrap();
        },
    );
}

#[test]
fn a_plain_file_where_the_state_directory_should_be() {
    require_root!();
    refused_then_repaired("ds-state", state_dir, |p| {
        std::fs::remove_dir_all(p).unwrap();
        std::fs::write(p, b"not a directory").unwrap();
    });
}

#[test]
fn a_corrupt_commit_file() {
    require_root!();
    refused_then_repaired(
        "ds-commit",
        |c| state_dir(c).join("attached.json"),
        |p| std::fs::write(p, b"{\"netns\": \"trunc").unwrap(),
    );
}

#[test]
fn a_directory_where_the_lock_file_should_be() {
    require_root!();
    refused_then_repaired(
        "ds-lock",
        |c| PathBuf::from(format!("/run/netshim/netns-{c}.lock")),
        |p| {
            std::fs::remove_file(p).unwrap();
            std::fs::create_dir(p).unwrap();
        },
    );
}

#[test]
fn gc_repairs_wrong_types_of_a_live_sandbox_and_leaves_it_attached() {
    require_root!();
    let _turn = gc_turn();
    let pod = Pod::new("ds-gc");
    let cookie = pod.cookie();
    netshim_json(&["attach", "--netns", pod.netns()]);
    let bogus = pin_dir(cookie).join("link_bogus");
    std::fs::create_dir(&bogus).unwrap();
    let lock = PathBuf::from(format!("/run/netshim/netns-{cookie}.lock"));
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let report = netshim_json(&["gc"]);
    let ours = report["repaired"]
        .as_array()
        .expect("repaired in gc's report")
        .iter()
        .find(|r| r["netns_cookie"] == cookie)
        .unwrap_or_else(|| panic!("gc did not repair cookie {cookie}: {report}"))
        .clone();
    let removed: Vec<&str> = ours["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let (bogus_s, lock_s) = (bogus.display().to_string(), lock.display().to_string());
    assert_eq!(removed, vec![lock_s.as_str(), bogus_s.as_str()], "{report}");
    assert!(!bogus.exists());
    assert!(!lock.is_dir());
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");
    assert_eq!(status["damaged"], Value::Array(vec![]), "{status}");
}

#[test]
fn a_fifo_as_config_is_refused_promptly() {
    require_root!();
    let pod = Pod::new("ds-fifo");
    let cookie = pod.cookie();
    let fifo = std::env::temp_dir().join(format!("netshim-fifo-{:08x}.toml", random_u32()));
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let child = Command::new(netshim_bin())
        .args(["attach", "--netns", pod.netns(), "--config"])
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Generous: the old code blocks in open(2) forever (no writer); the guard kills it.
    let out = ChildGuard::new(child, "netshim attach --config FIFO")
        .wait_with_output(Duration::from_secs(30));
    let _ = std::fs::remove_file(&fifo);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a FIFO, not a regular file"), "{stderr}");
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new());
    assert!(!pod.sandbox.link_exists("tap0_kata"));
}

#[test]
fn detach_of_a_deleted_netns_says_its_leftovers_were_collected() {
    require_root!();
    let _turn = gc_turn();
    let pod = Pod::new("ds-gone");
    let cookie = pod.cookie();
    netshim_json(&["attach", "--netns", pod.netns()]);
    let del = Command::new("ip")
        .args(["netns", "del", pod.netns()])
        .status()
        .unwrap();
    assert!(del.success());
    // The kernel tears a dead netns down in a worker: gc may skip it the first time.
    let line =
        format!("netshim had a record of it (netns cookie {cookie}): its leftovers were collected");
    let mut last = String::new();
    for _ in 0..50 {
        let out = netshim(&["detach", "--netns", pod.netns()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if last.contains(&line) {
            break;
        }
        if netshim_dirs(cookie).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(last.contains(&line), "{last}");
    assert!(
        last.contains(&format!("gc: dead netns cookie {cookie}: removed")),
        "{last}"
    );
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new());
}
