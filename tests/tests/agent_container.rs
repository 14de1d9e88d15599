//! `netshim agent` in a container, as the DaemonSet runs it, under a real container runtime:
//! podman 4.3 with its CNI backend and runc ([`netshim_tests::podman_env`]), a podman of the
//! test's own whose CNI configuration dir and plugin dir play the node's /etc/cni/net.d and
//! /opt/cni/bin.
//!
//! The image is built here (no registry: `FROM scratch`, the static netshim binary as
//! /usr/local/bin/netshim, its entrypoint) from `NETSHIM_STATIC_BIN`, which `cargo xtask
//! test` builds, or else this workspace's musl release build. The agent container gets what
//! the DaemonSet gives it: host pid namespace, privileged, the host's network (here: the
//! test's host netns, where podman runs), the configuration and plugin dirs under /host, and
//! /sys/fs/bpf, /run/netshim and /run/netns (HostToContainer: `rslave`) at the same paths.
//! The primary network is bridge + host-local as `podman network create` writes it, without
//! netshim; the agent chains netshim into it and installs its own binary as the plugin, a
//! second container gets its tap through that, and `netshim cni uninstall` run from the same
//! image gives both directories back byte for byte.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::MutexGuard,
    time::{Duration, Instant},
};

use netshim_tests::{
    leaks::netshim_dirs,
    netns_fixture::{random_u32, unique_octet},
    netshim_cli::{netshim, netshim_json},
    podman_env::{podman_missing, serial, PodmanEnv, PLUGIN_DIR},
    tap_reader::parse_mac,
    traffic::{probe_path, ProbePath},
    TestNetns,
};
use serde_json::Value;

/// Where `cargo xtask test` puts the path of the static (musl) netshim it built.
const STATIC_BIN_ENV: &str = "NETSHIM_STATIC_BIN";
/// The static build of this workspace, under its target dir.
const STATIC_BIN_REL: &str = "x86_64-unknown-linux-musl/release/netshim";
/// The image's name in the test's own storage.
const IMAGE: &str = "localhost/netshim:test";
/// Where the agent container sees the node's CNI dirs (the DaemonSet's mounts).
const CONF_IN: &str = "/host/etc/cni/net.d";
const BIN_IN: &str = "/host/opt/cni/bin";
/// The host dirs the agent needs to be the host's, and their modes as netshim and `ip
/// netns` make them.
const HOST_DIRS: [(&str, u32); 2] = [("/run/netshim", 0o700), ("/run/netns", 0o755)];
/// The workspace's root (this test is a target of its netshim package).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// The static netshim binary the image is built from; panics (saying how to build it) when
/// there is none or it is not statically linked.
fn static_binary() -> PathBuf {
    let (bin, from) = match std::env::var_os(STATIC_BIN_ENV) {
        Some(p) => (PathBuf::from(p), format!("{STATIC_BIN_ENV}'s")),
        None => (
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"))
                .join(STATIC_BIN_REL),
            format!("{STATIC_BIN_ENV} unset, the workspace's"),
        ),
    };
    assert!(
        bin.is_file(),
        "no static netshim at {} ({from}): run `cargo xtask test`, or `cargo build \
         --release -p netshim --target x86_64-unknown-linux-musl` first",
        bin.display()
    );
    let out = Command::new("file")
        .arg("-b")
        .arg(&bin)
        .output()
        .expect("run file");
    let kind = String::from_utf8_lossy(&out.stdout);
    assert!(
        kind.contains("statically linked") || kind.contains("static-pie linked"),
        "{} is not a static binary (a FROM scratch image needs one): {kind}",
        bin.display()
    );
    // An older static build may be of other sources than the netshim that checks its work.
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(s), Some(t)) = (
        mtime(&bin),
        mtime(&netshim_tests::netshim_cli::netshim_bin()),
    ) {
        if s < t {
            eprintln!(
                "note: {} is older than the test build of netshim; rebuild it if this fails",
                bin.display()
            );
        }
    }
    bin
}

/// A file tree as `ls -lR` would tell two apart: per relative path its mode (type bits
/// included), and its bytes or link target.
type Tree = BTreeMap<PathBuf, (u32, Vec<u8>)>;

fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries {
            let path = e.expect("a dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let content = if meta.is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                walk(root, &path, out);
                Vec::new()
            } else {
                std::fs::read(&path).unwrap()
            };
            out.insert(rel, (meta.mode(), content));
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// What differs from `before` to `after`, one line per path.
fn tree_diff(before: &Tree, after: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, (mode, bytes)) in before {
        match after.get(path) {
            None => out.push(format!("{} is gone", path.display())),
            Some((m, _)) if m != mode => {
                out.push(format!("{}: mode {mode:o} -> {m:o}", path.display()))
            }
            Some((_, b)) if b != bytes => out.push(format!(
                "{}: other bytes ({} -> {} bytes)",
                path.display(),
                bytes.len(),
                b.len()
            )),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{} is new", path.display()));
    }
    out
}

/// `GET path` over a fresh connection from inside `ns`: (status code, body).
fn http_get(ns: &TestNetns, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let raw = ns.run(|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// The samples of metric `name` in a Prometheus text: (labels, value).
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// The conflist's plugin types, in order.
fn plugin_types(conflist: &Path) -> Vec<String> {
    let list: Value = serde_json::from_slice(&std::fs::read(conflist).expect("read the conflist"))
        .expect("the conflist is JSON");
    list["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The test's podman, network and agent, taken down on Drop (also on failure).
struct AgentTest {
    env: PodmanEnv,
    bridge: String,
    /// The network is 10.a.b.0/24, gateway 10.a.b.1 on the bridge.
    subnet: (u8, u8),
    /// The primary network's file (without netshim until the agent chains it).
    conflist: PathBuf,
    agent: String,
    /// The agent's ready file (a directory of the test's own under the host's /run/netshim).
    ready_file: PathBuf,
    /// The agent's metrics address, inside the host netns.
    listen: SocketAddr,
    /// Dropped after `env` (whose host netns is in /run/netns).
    _made_dirs: MadeDirs,
    /// Netns cookies of the test's sandboxes.
    cookies: Vec<u64>,
    _serial: MutexGuard<'static, ()>,
}

impl AgentTest {
    fn new() -> AgentTest {
        let serial = serial();
        // Before the host netns: `ip netns add` would make /run/netns.
        let made_dirs = MadeDirs::new();
        let n = random_u32();
        let dir =
            std::env::temp_dir().join(format!("netshim-agent-ct-{}-{n:08x}", std::process::id()));
        let host = TestNetns::new("nsh-ac-h");
        let listen = host.run(|| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port in the host netns")
        });
        let network = format!("nsh-ac-{n:08x}");
        let env = PodmanEnv::new(dir, host, network.clone());
        let test = AgentTest {
            conflist: env.conf_dir().join(format!("10-{network}.conflist")),
            env,
            bridge: format!("nshac{:04x}", n & 0xffff),
            subnet: (unique_octet(), unique_octet()),
            agent: format!("nsh-ac-agent-{n:08x}"),
            ready_file: PathBuf::from(format!("/run/netshim/agent-test-{n:08x}/ready")),
            listen,
            _made_dirs: made_dirs,
            cookies: Vec::new(),
            _serial: serial,
        };
        test.write_plugins();
        test.write_conflist();
        test
    }

    /// The reference plugins, copied (the agent adds netshim itself).
    fn write_plugins(&self) {
        for name in ["bridge", "host-local"] {
            let to = self.env.bin_dir().join(name);
            std::fs::copy(Path::new(PLUGIN_DIR).join(name), &to)
                .unwrap_or_else(|e| panic!("copy {PLUGIN_DIR}/{name}: {e}"));
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    /// bridge + host-local in cniVersion 0.4.0, laid out as `podman network create` writes
    /// it (three-space indent, its key order), which no JSON re-serialization reproduces.
    fn write_conflist(&self) {
        let (a, b) = self.subnet;
        let text = format!(
            r#"{{
   "cniVersion": "0.4.0",
   "name": "{network}",
   "plugins": [
      {{
         "type": "bridge",
         "bridge": "{bridge}",
         "isGateway": true,
         "ipMasq": false,
         "hairpinMode": true,
         "ipam": {{
            "type": "host-local",
            "dataDir": "{leases}",
            "routes": [
               {{
                  "dst": "0.0.0.0/0"
               }}
            ],
            "ranges": [
               [
                  {{
                     "subnet": "10.{a}.{b}.0/24",
                     "gateway": "10.{a}.{b}.1"
                  }}
               ]
            ]
         }}
      }}
   ],
   "args": {{
      "podman_labels": {{
         "test": "netshim-agent-container"
      }}
   }}
}}
"#,
            network = self.env.network,
            bridge = self.bridge,
            leases = self.env.path("leases").display(),
        );
        std::fs::write(&self.conflist, text).expect("write the conflist");
        std::fs::set_permissions(&self.conflist, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Puts `bytes` at the conflist's path by rename, mode 0644, as a CNI installer does.
    fn rewrite_conflist(&self, bytes: &[u8]) {
        let tmp = self.env.conf_dir().join(".primary-cni.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &self.conflist).unwrap();
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.env.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?} exited {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.podman_ok(&["inspect", name, "--format", format])
    }

    /// The agent's log (`podman logs`), stdout then stderr.
    fn agent_log(&self) -> String {
        let out = self.env.podman(&["logs", &self.agent]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `podman build -f deploy/Containerfile` of the image from `bin`, in a context dir of
    /// its own that holds it as `netshim` (as `cargo xtask image` builds it). Returns the
    /// Containerfile's path.
    fn build_image(&self, bin: &Path) -> PathBuf {
        let context = self.env.path("image");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy(bin, context.join("netshim")).expect("copy the static binary");
        std::fs::set_permissions(
            context.join("netshim"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let containerfile = workspace().join("deploy/Containerfile");
        let file = containerfile.display().to_string();
        let context = context.display().to_string();
        self.podman_ok(&[
            "build",
            "--quiet",
            "--pull=never",
            "-t",
            IMAGE,
            "-f",
            &file,
            &context,
        ]);
        containerfile
    }

    /// The volumes of the DaemonSet's pod.
    fn volumes(&self) -> Vec<String> {
        vec![
            format!("{}:{CONF_IN}", self.env.conf_dir().display()),
            format!("{}:{BIN_IN}", self.env.bin_dir().display()),
            "/sys/fs/bpf:/sys/fs/bpf".into(),
            "/run/netshim:/run/netshim".into(),
            "/run/netns:/run/netns:rslave".into(),
        ]
    }

    /// `podman run` of the image as the DaemonSet's pod (`detached`: `-d --name NAME`,
    /// else `--rm`), with netshim's arguments.
    fn run_image(&self, detached: Option<&str>, args: &[&str]) -> Output {
        let volumes = self.volumes();
        let mut all = vec!["run"];
        match detached {
            Some(name) => all.extend(["-d", "--name", name, "--log-driver", "k8s-file"]),
            None => all.push("--rm"),
        }
        all.extend(["--privileged", "--pid", "host", "--network", "host"]);
        for v in &volumes {
            all.extend(["-v", v]);
        }
        all.push(IMAGE);
        all.extend(args);
        self.env.podman(&all)
    }

    /// Starts the agent; returns once `podman run -d` does.
    fn start_agent(&self) {
        let listen = self.listen.to_string();
        let ready = self.ready_file.display().to_string();
        let out = self.run_image(
            Some(&self.agent),
            &[
                "agent",
                "--conf-dir",
                CONF_IN,
                "--bin-dir",
                BIN_IN,
                "--listen",
                &listen,
                "--plugin-json",
                r#"{"type":"netshim","report_tap":false}"#,
                "--ready-file",
                &ready,
                // Only this test's sandbox is the agent's business: other sandboxes of
                // this host (other tests') keep the datapath they run.
                "--no-upgrade",
                "--log-level",
                "info",
            ],
        );
        assert!(
            out.status.success(),
            "podman run of the agent exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn agent_running(&self) -> bool {
        self.inspect(&self.agent, "{{.State.Running}}") == "true"
    }

    /// Polls GET /readyz until it answers 200 (panics after `timeout`, or when the agent's
    /// container stops); returns the body.
    fn wait_ready(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut checked = Instant::now();
        loop {
            let last = match http_get(&self.env.host, self.listen, "/readyz") {
                Ok((200, body)) => return body,
                Ok((code, body)) => format!("{code} {}", body.trim()),
                Err(e) => format!("GET: {e}"),
            };
            if checked.elapsed() > Duration::from_millis(500) {
                assert!(
                    self.agent_running(),
                    "the agent's container stopped (exit {}); last /readyz: {last}\nlog:\n{}",
                    self.inspect(&self.agent, "{{.State.ExitCode}}"),
                    self.agent_log()
                );
                checked = Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "the agent not ready after {timeout:?}: last /readyz: {last}\nlog:\n{}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        match http_get(&self.env.host, self.listen, "/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// Runs the busybox container on the network; its name, netns and address.
    fn container(&self, name: &str) -> (TestNetns, Ipv4Addr) {
        let rootfs = self.env.rootfs().display().to_string();
        let out = self.env.podman(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &self.env.network,
            "--rootfs",
            &rootfs,
            "/bin/busybox",
            "sleep",
            "1000",
        ]);
        assert!(
            out.status.success(),
            "podman run on the chained network exited {}: {}\nagent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.agent_log()
        );
        let key = self.inspect(name, "{{.NetworkSettings.SandboxKey}}");
        let ip = self.inspect(
            name,
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.env.network
            ),
        );
        (
            TestNetns::existing(&key),
            ip.parse()
                .unwrap_or_else(|e| panic!("container IP {ip:?}: {e}")),
        )
    }

    fn leases(&self) -> Vec<String> {
        self.env.leases()
    }
}

impl Drop for AgentTest {
    fn drop(&mut self) {
        // The sandbox container first (its DEL runs the installed netshim), then the agent.
        let out = self.env.podman(&["rm", "--all", "--force", "--time", "0"]);
        if !out.status.success() {
            eprintln!(
                "warning: podman rm --all: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = self.env.podman(&["rmi", "--all", "--force"]);
        // A DEL that did not run (podman killed): the collector takes a sandbox whose netns
        // is gone.
        if self.cookies.iter().any(|c| !netshim_dirs(*c).is_empty()) {
            let _ = netshim(&["gc"]);
            for c in &self.cookies {
                let left = netshim_dirs(*c);
                if !left.is_empty() {
                    eprintln!("warning: netshim state of the test's sandbox left: {left:?}");
                }
            }
        }
        // The agent removes its ready file and dir when it stops; not when it is killed.
        let _ = std::fs::remove_file(&self.ready_file);
        if let Some(dir) = self.ready_file.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        // Storage the overlay driver may still have mounted under the test's dir.
        let dir = self.env.path("");
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| Path::new(m).starts_with(&dir))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
        // Then PodmanEnv's Drop: podman rm (nothing left), the temp dir, libcni's cache
        // entries, the host netns; then MadeDirs'.
    }
}

/// The host dirs of [`HOST_DIRS`] the test had to make, removed again on Drop when empty.
struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    fn new() -> MadeDirs {
        let mut made = MadeDirs(Vec::new());
        for (dir, mode) in HOST_DIRS {
            if !Path::new(dir).exists() {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {dir}: {e}"));
                made.0.push(PathBuf::from(dir));
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        made
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
                // `ip netns add` mounted /run/netns on itself.
                let _ = Command::new("umount").arg(dir).output();
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The agent as the DaemonSet runs it: chains netshim into bridge + host-local and installs
/// its binary, gets ready, a container of that network gets its tap connected (frames cross,
/// the agent's /metrics shows it), DEL leaves nothing of it, the agent stops with 0 leaving
/// the chain in place, and `netshim cni uninstall` from the same image restores both dirs
/// byte for byte.
#[test]
fn agent_container_chains_serves_and_uninstalls() {
    if podman_missing() {
        return;
    }
    let started = Instant::now();
    let static_bin = static_binary();
    let static_bytes = std::fs::read(&static_bin).unwrap();
    let mut t = AgentTest::new();

    // 1. The image.
    let t0 = Instant::now();
    let containerfile = t.build_image(&static_bin);
    let build_ms = t0.elapsed().as_millis();
    eprintln!(
        "image {IMAGE} from {} with {}",
        static_bin.display(),
        containerfile.display()
    );
    let entrypoint = t.podman_ok(&[
        "image",
        "inspect",
        IMAGE,
        "--format",
        "{{.Config.Entrypoint}}",
    ]);
    assert_eq!(
        entrypoint, "[/usr/local/bin/netshim]",
        "the image's entrypoint"
    );

    // 2. The node's CNI dirs before.
    let conf_before = tree(&t.env.conf_dir());
    let bin_before = tree(&t.env.bin_dir());
    assert_eq!(plugin_types(&t.conflist), ["bridge"]);

    // 3. The agent.
    let t0 = Instant::now();
    t.start_agent();
    let run_ms = t0.elapsed().as_millis();
    let readyz = t.wait_ready(Duration::from_secs(30));
    let ready_ms = t0.elapsed().as_millis();
    let conflist_in = format!(
        "{CONF_IN}/{}",
        t.conflist.file_name().unwrap().to_string_lossy()
    );
    assert!(
        readyz.starts_with("ready: ") && readyz.contains(&conflist_in),
        "GET /readyz: {readyz}"
    );
    assert_eq!(
        http_get(&t.env.host, t.listen, "/healthz")
            .map(|r| r.0)
            .ok(),
        Some(200),
        "GET /healthz"
    );
    assert_eq!(
        plugin_types(&t.conflist),
        ["bridge", "netshim"],
        "the agent chained netshim last"
    );
    let list: Value = serde_json::from_slice(&std::fs::read(&t.conflist).unwrap()).unwrap();
    assert_eq!(list["plugins"][1]["report_tap"], false, "{list}");
    assert_eq!(list["cniVersion"], "0.4.0");
    let installed = t.env.bin_dir().join("netshim");
    assert!(
        std::fs::read(&installed).unwrap() == static_bytes,
        "{} is not the image's binary",
        installed.display()
    );
    assert_eq!(
        std::fs::metadata(&installed).unwrap().mode() & 0o7777,
        0o755,
        "the installed plugin's mode"
    );
    let ready: Value = serde_json::from_slice(
        &std::fs::read(&t.ready_file)
            .unwrap_or_else(|e| panic!("the ready file {}: {e}", t.ready_file.display())),
    )
    .expect("the ready file is JSON");
    let agent_pid = t.inspect(&t.agent, "{{.State.Pid}}");
    assert_eq!(
        (ready["chained"].as_str(), ready["pid"].to_string()),
        (Some(conflist_in.as_str()), agent_pid.clone()),
        "the ready file: {ready}"
    );

    // The primary CNI rewrites its file (its installer restarted; by rename, as installers
    // do): the agent, woken by inotify through the bind mount, chains netshim into it again
    // well before its periodic recheck.
    let chained = std::fs::read(&t.conflist).unwrap();
    let original = &conf_before[t.conflist.strip_prefix(t.env.conf_dir()).unwrap()].1;
    let t0 = Instant::now();
    t.rewrite_conflist(original);
    let rechained_ms = loop {
        if std::fs::read(&t.conflist).is_ok_and(|b| b == chained) {
            break t0.elapsed().as_millis();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "not chained again 15 s after the primary's rewrite: {}\nlog:\n{}",
            String::from_utf8_lossy(&std::fs::read(&t.conflist).unwrap_or_default()),
            t.agent_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        rechained_ms < 2_500,
        "chained again {rechained_ms} ms after the primary's rewrite (inotify: some 50 ms \
         expected; the periodic recheck is every 5 s)"
    );

    // 4. A container on the network: its tap, through the plugin the agent installed.
    let t0 = Instant::now();
    let name = "nsh-ac-sandbox";
    let (netns, ip) = t.container(name);
    let container_ms = t0.elapsed().as_millis();
    let key = netns.path().display().to_string();
    assert!(netns.link_exists("tap0_kata"), "no tap0_kata in {key}");
    let status = netshim_json(&["status", "--netns", &key]);
    let cookie = status["netns_cookie"].as_u64().expect("netns_cookie");
    t.cookies.push(cookie);
    assert_eq!(status["health"], "ok", "netshim status: {status}");
    let endpoints: Vec<(&str, &str, bool)> = status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default(),
                e["tap"].as_str().unwrap_or_default(),
                e["connected"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(endpoints, [("eth0", "tap0_kata", true)], "{status}");
    let gateway = Ipv4Addr::new(10, t.subnet.0, t.subnet.1, 1);
    let forwarded = probe_path(
        &ProbePath {
            client: &t.env.host,
            client_dev: &t.bridge,
            client_ip: gateway,
            client_mac: parse_mac(&t.env.host.link_mac(&t.bridge)).unwrap(),
            sandbox: &netns,
            pod_ip: ip,
            pod_mac: parse_mac(&netns.link_mac("eth0")).unwrap(),
        },
        "tap0_kata",
        5,
    );
    assert_eq!(
        (forwarded.to_vm, forwarded.from_vm),
        (5, 5),
        "datagrams through tap0_kata"
    );
    let metrics = t.metrics();
    let cookie_label = cookie.to_string();
    let info: Vec<_> = samples(&metrics, "netshim_sandbox_info")
        .into_iter()
        .filter(|(l, _)| l.get("netns_cookie") == Some(&cookie_label))
        .collect();
    assert_eq!(
        info.len(),
        1,
        "netshim_sandbox_info of {cookie}:\n{metrics}"
    );
    assert_eq!(info[0].0.get("netns"), Some(&key), "{:?}", info[0]);
    assert_eq!(info[0].1, 1.0);
    let packets: BTreeMap<String, f64> = samples(&metrics, "netshim_endpoint_packets_total")
        .into_iter()
        .filter(|(l, _)| {
            l.get("netns_cookie") == Some(&cookie_label)
                && l.get("endpoint").map(String::as_str) == Some("eth0")
                && l.get("tap").map(String::as_str) == Some("tap0_kata")
        })
        .map(|(l, v)| (l["direction"].clone(), v))
        .collect();
    assert!(
        packets.get("to_vm").is_some_and(|v| *v >= 5.0)
            && packets.get("from_vm").is_some_and(|v| *v >= 5.0),
        "the agent's packet counters of {cookie} after 5 datagrams each way: {packets:?}"
    );

    // 5. DEL, then the agent's stop.
    t.podman_ok(&["rm", "--force", "--time", "0", name]);
    assert_eq!(
        netshim_dirs(cookie),
        Vec::<PathBuf>::new(),
        "netshim left state"
    );
    assert_eq!(t.leases(), Vec::<String>::new(), "host-local lease left");
    assert!(!netns.path().exists(), "podman's netns is gone");
    let metrics = t.metrics();
    assert!(
        !metrics.contains(&format!("netns_cookie=\"{cookie}\"")),
        "the agent still reports the removed sandbox:\n{metrics}"
    );
    let t0 = Instant::now();
    t.podman_ok(&["stop", "--time", "10", &t.agent]);
    let stop_ms = t0.elapsed().as_millis();
    let log = t.agent_log();
    assert_eq!(
        t.inspect(&t.agent, "{{.State.ExitCode}}"),
        "0",
        "the agent's exit code on SIGTERM; log:\n{log}"
    );
    assert_eq!(
        plugin_types(&t.conflist),
        ["bridge", "netshim"],
        "still chained after the agent stopped"
    );
    assert!(
        std::fs::read(&installed).is_ok_and(|b| b == static_bytes),
        "the plugin binary stays"
    );
    assert!(!t.ready_file.exists(), "the ready file is gone");
    assert!(
        !t.ready_file.parent().unwrap().exists(),
        "the ready file's dir (the agent made it) is gone"
    );
    assert!(
        log.contains(&format!("serving metrics on http://{}/metrics", t.listen)),
        "the agent's log:\n{log}"
    );
    t.podman_ok(&["rm", &t.agent]);

    // 6. Uninstall, from the image.
    let out = t.run_image(
        None,
        &[
            "cni",
            "uninstall",
            "--conf-dir",
            CONF_IN,
            "--bin-dir",
            BIN_IN,
        ],
    );
    assert!(
        out.status.success(),
        "cni uninstall exited {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let conf_diff = tree_diff(&conf_before, &tree(&t.env.conf_dir()));
    let bin_diff = tree_diff(&bin_before, &tree(&t.env.bin_dir()));
    assert_eq!(
        (conf_diff, bin_diff),
        (Vec::<String>::new(), Vec::<String>::new()),
        "the conf dir and bin dir after uninstall, against before the agent"
    );

    eprintln!(
        "image build {build_ms} ms; agent: podman run {run_ms} ms, ready {ready_ms} ms after \
         podman run started, chained again {rechained_ms} ms after a rewrite; container on the chained network {container_ms} ms; agent stop \
         {stop_ms} ms; total {} ms",
        started.elapsed().as_millis()
    );
    eprintln!("agent log:\n{log}");
}
