//! `netshim agent` as a node runs it (here as a process on the host; tests/tests/
//! agent_container.rs runs it as the DaemonSet's container): it chains netshim and keeps it
//! chained while the primary CNI rewrites its file, waits for a primary that is not there
//! yet, serves /metrics, /readyz and /healthz, collects a netns deleted without a DEL within
//! seconds, upgrades a sandbox attached by the previous build on start (and only then),
//! and on SIGTERM exits 0 leaving the datapaths and the chained configuration running.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use netshim_tests::{
    leaks::{bpffs_root_strays, netshim_dirs},
    netns_fixture::ChildGuard,
    netshim_cli::{attach_with_previous_object, netshim, netshim_bin, netshim_json, Pod},
    require_root,
    traffic::{exchange, open_tap},
};
use serde_json::Value;

/// One agent at a time: each upgrades and collects host-wide.
static SERIAL: Mutex<()> = Mutex::new(());

const PRIMARY: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
"#;

/// A node's CNI directories and the agent's ready file, in a temporary directory.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("netshim-agent-")
            .tempdir()
            .unwrap();
        for d in ["net.d", "bin"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        Node { tmp }
    }
    fn conf(&self) -> PathBuf {
        self.tmp.path().join("net.d")
    }
    fn bin(&self) -> PathBuf {
        self.tmp.path().join("bin")
    }
    fn ready_file(&self) -> PathBuf {
        self.tmp.path().join("ready")
    }
    /// Whether `file`'s last plugin is netshim's.
    fn chained(&self, file: &str) -> bool {
        std::fs::read(self.conf().join(file))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["plugins"].as_array()?.last().cloned())
            .is_some_and(|p| p["type"] == "netshim")
    }
    /// `netshim cni uninstall` of this node's directories (it must succeed).
    fn uninstall(&self) {
        let out = netshim(&[
            "cni",
            "uninstall",
            "--conf-dir",
            &self.conf().display().to_string(),
            "--bin-dir",
            &self.bin().display().to_string(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    /// Writes `file` as a primary CNI's installer does: a temporary file renamed over it.
    fn write_renamed(&self, file: &str, text: &str) {
        let tmp = self.conf().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.conf().join(file)).unwrap();
    }
}

/// A running agent: its address, stderr lines, and the process.
struct Agent {
    child: Option<ChildGuard>,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(node: &Node, extra: &[&str]) -> Agent {
        let mut cmd = Command::new(netshim_bin());
        cmd.arg("agent")
            .arg("--conf-dir")
            .arg(node.conf())
            .arg("--bin-dir")
            .arg(node.bin())
            .arg("--ready-file")
            .arg(node.ready_file())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--gc-interval",
                "1",
                "--log-level",
                "info",
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(cmd, "netshim agent");
        let stderr = child.child_mut().stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.child_mut().stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("serving metrics on http://")
            .and_then(|s| s.strip_suffix("/metrics"))
            .unwrap_or_else(|| {
                panic!(
                    "the agent's first line: {line:?}; log: {}",
                    log.lock().unwrap()
                )
            })
            .parse()
            .unwrap();
        Agent {
            child: Some(child),
            addr,
            log,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let status = reply[9..12].parse().unwrap();
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Waits until /readyz answers 200; how long that took.
    fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let (status, body) = self.get("/readyz");
            if status == 200 {
                return started.elapsed();
            }
            assert_eq!(status, 503, "{body}");
            assert!(
                started.elapsed() < timeout,
                "not ready after {timeout:?}: {body}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the exit code and how long the exit took.
    fn terminate(mut self) -> (Option<i32>, Duration) {
        let child = self.child.take().unwrap();
        let started = Instant::now();
        child.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        let out = child.wait_with_output(Duration::from_secs(10));
        (out.status.code(), started.elapsed())
    }
}

/// How long until `cond` holds (at most `timeout`).
fn within(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// The tag of the program on the ingress hook of the sandbox's `eth0`, as tc shows it.
fn hook_tag(pod: &Pod) -> String {
    let text = pod
        .sandbox
        .tc(&["filter", "show", "dev", "eth0", "ingress"]);
    text.split_whitespace()
        .skip_while(|w| *w != "tag")
        .nth(1)
        .unwrap_or_else(|| panic!("no program tag on eth0's ingress: {text}"))
        .to_owned()
}

#[test]
fn the_agent_keeps_netshim_chained_serves_metrics_collects_and_exits_leaving_the_datapath() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = Node::new();
    node.write_renamed("10-podnet.conflist", PRIMARY);
    let strays = bpffs_root_strays();
    let agent = Agent::start(&node, &[]);
    let ready = agent.wait_ready(Duration::from_secs(20));
    eprintln!("agent ready {} ms after start", ready.as_millis());
    assert_eq!(
        bpffs_root_strays(),
        strays,
        "the readiness load check pins nothing at the root of bpffs"
    );
    assert!(node.chained("10-podnet.conflist"));
    assert_eq!(
        std::fs::read(node.bin().join("netshim")).unwrap(),
        std::fs::read(netshim_bin()).unwrap()
    );
    let file: Value = serde_json::from_slice(&std::fs::read(node.ready_file()).unwrap()).unwrap();
    assert_eq!(
        file["chained"],
        node.conf().join("10-podnet.conflist").display().to_string()
    );
    assert_eq!(agent.get("/healthz").0, 200);

    // The primary CNI writes its file again (its installer restarted): chained again.
    node.write_renamed("10-podnet.conflist", PRIMARY);
    let t = within(Duration::from_secs(5), "chained after a rename", || {
        node.chained("10-podnet.conflist")
    });
    eprintln!(
        "re-chained {} ms after the primary renamed its file over",
        t.as_millis()
    );
    // In place (truncate and write), as a careless script does.
    std::fs::write(node.conf().join("10-podnet.conflist"), PRIMARY).unwrap();
    let t = within(
        Duration::from_secs(5),
        "chained after an in-place write",
        || node.chained("10-podnet.conflist"),
    );
    eprintln!("re-chained {} ms after an in-place write", t.as_millis());
    // It moves to a single-plugin .conf: that becomes the chained .conflist.
    std::fs::remove_file(node.conf().join("10-podnet.conflist")).unwrap();
    let conf = r#"{"cniVersion":"0.4.0","name":"podnet","type":"ptp","ipam":{"type":"host-local","subnet":"10.89.0.0/16"}}"#;
    node.write_renamed("10-podnet.conf", conf);
    within(
        Duration::from_secs(5),
        "the .conf made a chained .conflist",
        || node.chained("10-podnet.conflist") && !node.conf().join("10-podnet.conf").exists(),
    );
    agent.wait_ready(Duration::from_secs(5));

    // Metrics for every sandbox of the node.
    let pod = Pod::new("agm");
    netshim_json(&["attach", "--netns", pod.netns()]);
    let cookie = pod.cookie();
    let keep = Pod::new("agk");
    netshim_json(&["attach", "--netns", keep.netns()]);
    let (status, metrics) = agent.get("/metrics");
    assert_eq!(status, 200);
    for c in [cookie, keep.cookie()] {
        assert!(
            metrics.contains(&format!("netns_cookie=\"{c}\"")),
            "sandbox {c} missing from:\n{metrics}"
        );
    }

    // A netns deleted without DEL: collected within seconds.
    assert!(!netshim_dirs(cookie).is_empty());
    let out = Command::new("ip")
        .args(["netns", "del", pod.netns()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = within(
        Duration::from_secs(5),
        "the deleted netns collected",
        || netshim_dirs(cookie).is_empty(),
    );
    eprintln!(
        "deleted netns collected {} ms after `ip netns del`",
        t.as_millis()
    );
    agent.wait_log(
        &format!("collected sandbox netns-{cookie}"),
        Duration::from_secs(2),
    );

    // SIGTERM: exit 0; the other sandbox keeps forwarding, netshim stays chained.
    let (code, took) = agent.terminate();
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    eprintln!("agent exited {} ms after SIGTERM", took.as_millis());
    assert!(
        !node.ready_file().exists(),
        "the ready file goes with the agent"
    );
    assert!(
        node.chained("10-podnet.conflist"),
        "the exit does not uninstall"
    );
    keep.pin_pod_neighbor();
    let tap = open_tap(&keep.sandbox, "tap0_kata");
    exchange(&keep, &tap, 5, "after-agent");
    assert_eq!(
        netshim_json(&["status", "--netns", keep.netns()])["health"],
        "ok"
    );
    netshim_json(&["detach", "--netns", keep.netns()]);

    // Uninstall gives back the last file the primary wrote, byte for byte.
    node.uninstall();
    assert_eq!(
        std::fs::read_to_string(node.conf().join("10-podnet.conf")).unwrap(),
        conf
    );
    assert!(!node.conf().join("10-podnet.conflist").exists());
    assert!(!node.bin().join("netshim").exists());
}

#[test]
fn the_agent_upgrades_a_sandbox_of_the_previous_build_on_start_and_only_then() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = Node::new();
    node.write_renamed("10-podnet.conflist", PRIMARY);
    let current = Pod::new("agc");
    netshim_json(&["attach", "--netns", current.netns()]);
    let current_tag = hook_tag(&current);
    let old = Pod::new("ago");
    attach_with_previous_object(&old);
    let old_tag = hook_tag(&old);
    assert_ne!(
        old_tag, current_tag,
        "the previous build's program is another one"
    );
    old.pin_pod_neighbor();
    let tap = open_tap(&old.sandbox, "tap0_kata");
    exchange(&old, &tap, 3, "before");
    let counted = |pod: &Pod| {
        netshim_json(&["stats", "--netns", pod.netns()])[0]["endpoints"][0]["to_vm"]["packets"]
            .as_u64()
            .unwrap()
    };
    let before = counted(&old);

    // --no-upgrade leaves it on its program.
    let agent = Agent::start(&node, &["--no-upgrade"]);
    agent.wait_ready(Duration::from_secs(20));
    assert_eq!(hook_tag(&old), old_tag);
    assert_eq!(agent.terminate().0, Some(0));

    // The agent of this build moves it to this build's program, counters kept, forwarding.
    let agent = Agent::start(&node, &[]);
    agent.wait_ready(Duration::from_secs(20));
    agent.wait_log(
        &format!("upgraded the datapath of /run/netns/{}", old.netns()),
        Duration::from_secs(10),
    );
    assert_eq!(hook_tag(&old), current_tag);
    let file: Value = serde_json::from_slice(&std::fs::read(node.ready_file()).unwrap()).unwrap();
    assert_eq!(
        file["datapath_tag"], current_tag,
        "the ready file names the program"
    );
    exchange(&old, &tap, 3, "after");
    assert_eq!(
        counted(&old),
        before + 3,
        "the counters survive the upgrade"
    );
    assert!(
        !agent.log().contains(&format!(
            "upgraded the datapath of /run/netns/{}",
            current.netns()
        )),
        "the sandbox already on this build's program is left alone:\n{}",
        agent.log()
    );
    assert_eq!(agent.terminate().0, Some(0));

    // Started again, it finds nothing to upgrade.
    let agent = Agent::start(&node, &[]);
    agent.wait_log(
        "every sandbox runs this build's datapath",
        Duration::from_secs(20),
    );
    assert_eq!(agent.terminate().0, Some(0));
    for pod in [&old, &current] {
        netshim_json(&["detach", "--netns", pod.netns()]);
    }
    node.uninstall();
}

#[test]
fn the_agent_waits_for_the_primary_network_and_refuses_a_pid_namespace_of_its_own() {
    require_root!();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Started before the primary CNI: up, not ready, and ready once the primary writes.
    let node = Node::new();
    let agent = Agent::start(&node, &[]);
    let mut body = String::new();
    within(
        Duration::from_secs(10),
        "not ready for want of a primary",
        || {
            let (status, b) = agent.get("/readyz");
            assert_eq!(status, 503, "{b}");
            body = b;
            body.contains("no CNI network configuration")
        },
    );
    assert!(!node.ready_file().exists());
    node.write_renamed("10-podnet.conflist", PRIMARY);
    let t = agent.wait_ready(Duration::from_secs(10));
    eprintln!(
        "ready {} ms after the primary wrote its file",
        t.as_millis()
    );
    assert!(node.chained("10-podnet.conflist"));
    assert!(node.ready_file().exists());
    // The primary takes its file away (its uninstall): not ready, no ready file.
    std::fs::remove_file(node.conf().join("10-podnet.conflist")).unwrap();
    within(
        Duration::from_secs(5),
        "not ready without a primary",
        || agent.get("/readyz").0 == 503 && !node.ready_file().exists(),
    );
    assert_eq!(agent.terminate().0, Some(0));

    // In a pid namespace of its own it could not tell which namespaces are alive: exit 2.
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(netshim_bin())
        .arg("agent")
        .arg("--conf-dir")
        .arg(node.conf())
        .arg("--bin-dir")
        .arg(node.bin())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("hostPID: true"), "{stderr}");
    node.uninstall();
}
