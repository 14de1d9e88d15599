//! The CLI's tools: shell completions, man pages, logging (--log-level, RUST_LOG, stderr
//! only) and `netshim logs` following an attached datapath's log ring buffer.

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use netshim_tests::{
    leaks,
    netshim_cli::{netshim, netshim_bin, netshim_json, netshim_ok, Follower, Pod},
    require_root,
};

const SUBCOMMANDS: &[&str] = &[
    "attach",
    "watch",
    "scan",
    "connect",
    "disconnect",
    "detach",
    "status",
    "stats",
    "metrics",
    "upgrade",
    "gc",
    "guard",
    "limit",
    "cni",
    "agent",
    "logs",
    "completions",
    "man",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `netshim args…` with RUST_LOG as given (None: unset).
fn netshim_env(args: &[&str], rust_log: Option<&str>) -> Output {
    let mut cmd = Command::new(netshim_bin());
    cmd.args(args).env_remove("RUST_LOG");
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    cmd.output().expect("run netshim")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn bash_completion_names_every_subcommand_and_is_valid_bash() {
    let out = netshim_env(&["completions", "bash"], None);
    ok(&out, "completions bash");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "no {sub} in the bash completion");
    }
    assert!(script.contains("--log-level") && script.contains("--netns"));
    let path = std::env::temp_dir().join(format!("netshim-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    ok(&check, "bash -n on the completion script");
    // Sourcing it registers the completion function for netshim.
    let sourced = Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p netshim"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    ok(&sourced, "source + complete -p netshim");
    assert!(text(&sourced.stdout).contains("netshim"));
}

#[test]
fn every_shell_gets_a_script_and_a_bad_shell_is_a_usage_error() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = netshim_env(&["completions", shell], None);
        ok(&out, shell);
        let script = text(&out.stdout);
        assert!(
            script.contains("attach") && script.contains("logs"),
            "{shell}"
        );
    }
    let out = netshim_env(&["completions", "tcsh"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let out = netshim_env(&["man"], None);
    ok(&out, "man");
    let page = text(&out.stdout);
    assert!(page.contains(".TH NETSHIM 1"), "{page}");
    for sub in SUBCOMMANDS {
        assert!(page.contains(sub), "no {sub} in netshim.1");
    }
    assert!(
        page.contains("log\\-level"),
        "the global flag is documented"
    );
}

#[test]
fn man_out_writes_one_page_per_subcommand() {
    let dir = std::env::temp_dir().join(format!("netshim-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = netshim_env(&["man", "--out", dir.to_str().unwrap()], None);
    ok(&out, "man --out");
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(listed.len(), SUBCOMMANDS.len() + 1, "{listed:?}");
    let top = std::fs::read_to_string(dir.join("netshim.1")).unwrap();
    assert!(top.contains(".TH NETSHIM 1"));
    for sub in SUBCOMMANDS {
        let page = std::fs::read_to_string(dir.join(format!("netshim-{sub}.1")))
            .unwrap_or_else(|e| panic!("netshim-{sub}.1: {e}"));
        let th = format!(".TH NETSHIM-{} 1", sub.to_uppercase());
        assert!(page.contains(&th), "{th} not in netshim-{sub}.1:\n{page}");
    }
    let attach = std::fs::read_to_string(dir.join("netshim-attach.1")).unwrap();
    assert!(attach.contains("tc\\-backend"), "{attach}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_level_rejects_unknown_levels() {
    let out = netshim_env(&["--log-level", "loud", "gc"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("loud"));
}

#[test]
fn logs_go_to_stderr_and_stdout_keeps_only_the_report() {
    require_root!();
    let pod = Pod::new("lg");
    // Default level (warn): a clean attach logs nothing at all.
    let quiet = netshim_env(&["attach", "--netns", pod.netns(), "--json"], None);
    ok(&quiet, "attach");
    assert!(quiet.stderr.is_empty(), "{}", text(&quiet.stderr));
    let report: serde_json::Value = serde_json::from_slice(&quiet.stdout).unwrap();
    assert_eq!(report["endpoints"][0]["name"], "eth0");

    // --log-level debug: the attach steps with their netns and interface on stderr; the
    // JSON on stdout is the same document (an attached netns reports what was attached).
    let plain = netshim_env(&["status", "--netns", pod.netns(), "--json"], None);
    ok(&plain, "status");
    let loud = netshim_env(
        &[
            "--log-level",
            "debug",
            "status",
            "--netns",
            pod.netns(),
            "--json",
        ],
        None,
    );
    ok(&loud, "status --log-level debug");
    assert_eq!(text(&plain.stdout), text(&loud.stdout), "stdout unchanged");
    let again = netshim_env(
        &[
            "attach",
            "--netns",
            pod.netns(),
            "--json",
            "--log-level",
            "debug",
        ],
        None,
    );
    ok(&again, "attach --log-level debug");
    let again_report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again_report["already_attached"], true);
    let stderr = text(&again.stderr);
    assert!(stderr.contains("DEBUG"), "{stderr}");
    assert!(
        stderr.contains(&format!("netns={}", pod.netns())),
        "the attach span names the netns: {stderr}"
    );
    assert!(stderr.contains("sandbox lock taken"), "{stderr}");

    // RUST_LOG wins over --log-level, and aya's own `log` records come through the bridge
    // (aya logs its feature detection at debug on the first load of a process).
    let out = netshim_env(
        &["--log-level", "error", "detach", "--netns", pod.netns()],
        Some("netshim=debug"),
    );
    ok(&out, "detach with RUST_LOG");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DEBUG") && stderr.contains("netshim::"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("DEBUG"));

    let out = netshim_env(
        &["attach", "--netns", pod.netns(), "--json"],
        Some("aya=debug"),
    );
    ok(&out, "attach with RUST_LOG=aya=debug");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("BPF Feature Detection"), "{stderr}");
    assert!(stderr.contains(" aya"), "target shown: {stderr}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stdout is JSON only");
}

#[test]
fn logs_follows_the_programs_of_an_attached_netns_until_sigint() {
    require_root!();
    let pod = Pod::new("lf");
    // Not attached: nothing to follow is invalid input.
    let out = netshim(&["logs", "--netns", pod.netns()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no netshim eBPF datapath"));
    assert!(out.stdout.is_empty());
    assert_eq!(
        netshim(&["logs"]).status.code(),
        Some(2),
        "--netns or --all"
    );

    netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", "tcx"]);
    let mut ids = leaks::tcx_prog_ids(&pod.sandbox);
    ids.sort();
    ids.dedup();
    assert!(!ids.is_empty());

    let follower = Follower::start(&["--log-level", "info", "logs", "--netns", pod.netns()]);
    for id in &ids {
        let needle = format!("prog_id={id}");
        assert!(
            follower.wait_for(&needle, Duration::from_secs(10)),
            "{needle} not followed: {}",
            follower.stderr()
        );
    }
    assert!(follower
        .stderr()
        .contains("following the datapath's log records"));
    assert!(follower
        .stderr()
        .contains(&format!("netns={}", pod.netns())));

    // --all finds the same programs (among any others on the host).
    let all = Follower::start(&["--log-level", "info", "logs", "--all"]);
    for id in &ids {
        assert!(
            all.wait_for(&format!("prog_id={id}"), Duration::from_secs(10)),
            "--all: {}",
            all.stderr()
        );
    }
    let (code, stdout, _) = all.stop();
    assert_eq!(code, Some(0));
    assert!(stdout.is_empty());

    // Traffic that the datapath forwards logs nothing (it logs only a failed redirect).
    let forwarded = netshim_tests::traffic::probe(&pod, "tap0_kata", 3);
    assert_eq!(forwarded.to_vm, 3);
    let (code, stdout, stderr) = follower.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "logs prints nothing on stdout: {stdout}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    netshim_ok(&["detach", "--netns", pod.netns()]);
}

#[test]
fn watch_follows_its_datapath_logs_on_stderr_and_keeps_stdout_json_lines() {
    require_root!();
    let pod = Pod::new("lw");
    let watcher = Follower::start(&[
        "--log-level",
        "info",
        "watch",
        "--netns",
        pod.netns(),
        "--ebpf-attach",
        "tcx",
        "--json",
    ]);
    assert!(
        watcher.wait_for(
            "following the datapath's log records",
            Duration::from_secs(15)
        ),
        "{}",
        watcher.stderr()
    );
    let ids = leaks::tcx_prog_ids(&pod.sandbox);
    assert!(!ids.is_empty());
    for id in &ids {
        assert!(
            watcher.wait_for(&format!("prog_id={id}"), Duration::from_secs(5)),
            "{}",
            watcher.stderr()
        );
    }
    let (code, stdout, stderr) = watcher.stop();
    assert_eq!(code, Some(0), "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "watching", "{stdout}");
    assert_eq!(events.last().unwrap()["event"], "stopped", "{stdout}");
    assert!(!stdout.contains("INFO"), "logs stay off stdout");
    netshim_ok(&["detach", "--netns", pod.netns()]);
}

/// A `peers` value as 16 bytes (`PeerEntry`: peer_ifindex, slot, flags, _pad; little endian),
/// read with bpftool: raw hex bytes, or the BTF-formatted struct.
fn peer_value(peers: &std::path::Path, ifindex: u32) -> [u8; 16] {
    let mut cmd = Command::new("bpftool");
    cmd.args(["-j", "map", "lookup", "pinned"])
        .arg(peers)
        .arg("key")
        .arg("hex")
        .args(ifindex.to_le_bytes().map(|b| format!("{b:02x}")));
    let out = cmd.output().expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool map lookup: {}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let mut bytes = [0u8; 16];
    match &v["value"] {
        serde_json::Value::Array(hex) => {
            assert_eq!(hex.len(), 16, "{v}");
            for (b, h) in bytes.iter_mut().zip(hex) {
                let h = h.as_str().expect("hex byte").trim_start_matches("0x");
                *b = u8::from_str_radix(h, 16).expect("hex byte");
            }
        }
        serde_json::Value::Object(fields) => {
            for (i, name) in ["peer_ifindex", "slot", "flags", "_pad"].iter().enumerate() {
                let field = fields[*name].as_u64().expect("u32 field") as u32;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&field.to_le_bytes());
            }
        }
        other => panic!("unexpected bpftool value {other} in {v}"),
    }
    bytes
}

fn set_peer_value(peers: &std::path::Path, ifindex: u32, value: &[u8; 16]) {
    let out = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(peers)
        .arg("key")
        .arg("hex")
        .args(ifindex.to_le_bytes().map(|b| format!("{b:02x}")))
        .arg("value")
        .arg("hex")
        .args(value.map(|b| format!("{b:02x}")))
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool map update: {}",
        text(&out.stderr)
    );
    assert_eq!(&peer_value(peers, ifindex), value, "the entry was written");
}

fn flags_of(value: &[u8; 16]) -> u32 {
    u32::from_le_bytes(value[8..12].try_into().unwrap())
}

/// The version skew guard end to end: a `peers` entry with a flag bit this datapath does not
/// know (as a newer netshim could write) makes the program pass the packet to the sandbox's
/// stack instead of the tap, count it in `redirect_errors` and log one warning, which
/// `netshim logs` forwards as a `netshim::ebpf` event.
#[test]
fn logs_shows_the_datapath_warning_for_a_peers_entry_with_unknown_flags() {
    use netshim_tests::{netshim_cli::pin_dir, traffic};

    require_root!();
    const UNKNOWN_FLAG: u32 = 0x80;
    assert_ne!(UNKNOWN_FLAG & !netshim_common::PEER_KNOWN_FLAGS, 0);

    let pod = Pod::new("sk");
    pod.pin_pod_neighbor();
    netshim_json(&["attach", "--netns", pod.netns()]);
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    let ifindex = pod.sandbox.link_json("eth0")["ifindex"]
        .as_u64()
        .expect("eth0 ifindex") as u32;
    let peers = pin_dir(&pod.sandbox).join("peers");

    // The sandbox's own socket on the pod address, and the client's sender.
    let own = pod.sandbox.udp_socket(pod.pod_ip, 0, "bind in the sandbox");
    own.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = own.local_addr().unwrap().port();
    let sender = pod.client.udp_socket(pod.client_ip, 0, "bind the sender");
    let to_vm = |payload: &str| {
        sender
            .send_to(payload.as_bytes(), (pod.pod_ip, port))
            .expect("send to the pod address");
    };
    let on_tap = |timeout| tap.read_udp(timeout, port);

    // The normal path: the datagram goes to the tap, not to the sandbox's socket.
    to_vm("before");
    let got = on_tap(Duration::from_secs(2)).expect("a datagram reaches the tap");
    assert_eq!(got.payload, b"before");

    let follower = Follower::start(&["--log-level", "info", "logs", "--netns", pod.netns()]);
    assert!(
        follower.wait_for(
            "following the datapath's log records",
            Duration::from_secs(10)
        ),
        "{}",
        follower.stderr()
    );

    let original = peer_value(&peers, ifindex);
    let known = flags_of(&original);
    assert_eq!(known & UNKNOWN_FLAG, 0, "{original:?}");
    let mut skewed = original;
    skewed[8..12].copy_from_slice(&(known | UNKNOWN_FLAG).to_le_bytes());
    set_peer_value(&peers, ifindex, &skewed);

    to_vm("skewed");
    let mut buf = [0u8; 64];
    let (n, from) = own
        .recv_from(&mut buf)
        .expect("the datagram reaches the sandbox's own stack");
    assert_eq!(&buf[..n], b"skewed");
    assert_eq!(from.ip(), pod.client_ip);
    assert!(
        on_tap(Duration::from_millis(300)).is_none(),
        "nothing was redirected to the tap"
    );

    let needle = format!(
        "peers entry of ifindex {ifindex} has flags 0x{:x}",
        known | UNKNOWN_FLAG
    );
    assert!(
        follower.wait_for(&needle, Duration::from_secs(5)),
        "no warning naming ifindex {ifindex} and its flags: {}",
        follower.stderr()
    );
    let stderr = follower.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap()
        .to_owned();
    println!("netshim logs printed: {line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(" netshim::ebpf"), "{line}");
    assert!(
        line.contains(&format!("netns={}", pod.netns())) || line.contains(pod.netns()),
        "{line}"
    );
    assert_eq!(
        stderr.matches(needle.as_str()).count(),
        1,
        "one warning for one packet: {stderr}"
    );

    let stats = netshim_json(&["stats", "--netns", pod.netns()]);
    let ep = &stats[0]["endpoints"][0];
    assert_eq!(ep["pod"], "eth0", "{stats}");
    assert_eq!(ep["to_vm"]["errors"], 1, "{stats}");
    assert_eq!(
        ep["to_vm"]["packets"], 1,
        "only the first datagram: {stats}"
    );
    assert_eq!(ep["from_vm"]["errors"], 0, "{stats}");

    // Restored, the entry redirects again.
    set_peer_value(&peers, ifindex, &original);
    to_vm("after");
    let got = on_tap(Duration::from_secs(2)).expect("redirected again after the restore");
    assert_eq!(got.payload, b"after");

    let (code, stdout, stderr) = follower.stop();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.matches(needle.as_str()).count(), 1, "{stderr}");
    netshim_ok(&["detach", "--netns", pod.netns()]);
}

/// `bpftool -j ARGS…` as JSON.
fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// Issue 13: the datapath logs without aya-log (no `AYA_LOGS` ring held by its program: its
/// error records go to the pinned `errors` array) and its maps cost little kernel memory:
/// `peers` is not preallocated, the guard's records are an array (`guard_last`, no ring
/// buffer), the drop counters are shared arrays (`drops_v2`, `guard_drops_v2`), and the
/// per-endpoint maps are made for 8 endpoints. Prints the memlock per map.
#[test]
fn the_datapath_program_has_no_aya_log_ring_and_small_pinned_maps() {
    require_root!();
    let pod = Pod::new("mm");
    netshim_json(&["attach", "--netns", pod.netns(), "--ebpf-attach", "tcx"]);
    let dir = netshim_tests::netshim_cli::pin_dir(&pod.sandbox);
    let mut ids = leaks::tcx_prog_ids(&pod.sandbox);
    ids.sort();
    ids.dedup();
    assert!(!ids.is_empty());
    let mut total = 0;
    for id in ids {
        let prog = bpftool_json(&["prog", "show", "id", &id.to_string()]);
        println!(
            "program {id}: xlated {} B, jited {} B, memlock {} B",
            prog["bytes_xlated"], prog["bytes_jited"], prog["bytes_memlock"]
        );
        total += prog["bytes_memlock"].as_u64().unwrap();
        for map in prog["map_ids"].as_array().expect("map_ids") {
            let info = bpftool_json(&["map", "show", "id", &map.to_string()]);
            let name = info["name"].as_str().unwrap_or("").to_owned();
            println!(
                "  map {name}: {} max_entries {} flags {} memlock {} B",
                info["type"], info["max_entries"], info["flags"], info["bytes_memlock"]
            );
            total += info["bytes_memlock"].as_u64().unwrap();
            assert_ne!(
                name, "AYA_LOGS",
                "the program holds an aya-log ring: {info}"
            );
            match name.as_str() {
                "peers" => assert_eq!(info["flags"], 1, "BPF_F_NO_PREALLOC: {info}"),
                "guard_events" => panic!("a ring buffer: {info}"),
                // 8 endpoints x 7 reasons.
                "guard_last" => assert_eq!(info["max_entries"], 56, "{info}"),
                // The drop counters: one value for all CPUs, not one per possible CPU.
                "drops" | "guard_drops" => panic!("a per-CPU drop counter: {info}"),
                "drops_v2" | "guard_drops_v2" => assert_eq!(info["type"], "array", "{info}"),
                _ => {}
            }
        }
    }
    println!("program and maps: {total} B memlock");
    assert!(
        dir.join("errors").exists(),
        "errors pinned in {}",
        dir.display()
    );
    netshim_ok(&["detach", "--netns", pod.netns()]);
}
