//! Running the real `netshim` binary from tests, and the pod topology tests attach to.

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use crate::{tap_reader::parse_mac, veth_pair, ChildGuard, TestNetns};

/// Path of the `netshim` binary the tests run: [`TEST_BIN_ENV`]'s, or [`CARGO_BIN_ENV`]'s.
static BIN: OnceLock<PathBuf> = OnceLock::new();

/// `NETSHIM_TEST_BIN`, when set, is the `netshim` binary the tests run instead of this
/// workspace's (to run a test against another version, e.g. the base commit's build, and
/// show that it fails there).
pub const TEST_BIN_ENV: &str = "NETSHIM_TEST_BIN";

/// Where cargo tells an integration test of the netshim package the path of the `netshim`
/// binary it built for it, from the same sources, before running the test (cargo sets it
/// when it builds and when it runs the test). The tests that run netshim are that package's
/// targets (netshim/Cargo.toml) for this reason: the binary cannot be stale.
pub const CARGO_BIN_ENV: &str = "CARGO_BIN_EXE_netshim";

pub fn netshim_bin() -> PathBuf {
    BIN.get_or_init(|| {
        std::env::var_os(TEST_BIN_ENV)
            .or_else(|| std::env::var_os(CARGO_BIN_ENV))
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "neither {TEST_BIN_ENV} nor {CARGO_BIN_ENV} is set: run the tests with \
                     `cargo test` (a test that runs netshim must be a [[test]] of the netshim \
                     package, netshim/Cargo.toml), or name a binary in {TEST_BIN_ENV}"
                )
            })
    })
    .clone()
}

/// Path of this workspace's `vm-standin` (the netshim-tests package's binary). A test of
/// the netshim-tests package gets it from cargo (`CARGO_BIN_EXE_vm-standin`); a test of the
/// netshim package, which cannot name another package's binary, has cargo build it here
/// (once per test process; cargo rebuilds it when its sources changed).
pub fn vm_standin_bin() -> PathBuf {
    static STANDIN: OnceLock<PathBuf> = OnceLock::new();
    STANDIN
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_vm-standin") {
                return PathBuf::from(bin);
            }
            let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let workspace = manifest.parent().expect("workspace root").to_owned();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&workspace)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "netshim-tests",
                    "--bin",
                    "vm-standin",
                ])
                .status()
                .expect("run cargo build -p netshim-tests --bin vm-standin");
            assert!(status.success(), "cargo build of vm-standin failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            target.join("debug").join("vm-standin")
        })
        .clone()
}

/// Runs `netshim args…` to completion.
pub fn netshim(args: &[&str]) -> Output {
    Command::new(netshim_bin())
        .args(args)
        .output()
        .expect("run netshim")
}

/// Runs `netshim args…`, panics unless it exits 0, returns stdout.
pub fn netshim_ok(args: &[&str]) -> String {
    assert_ok(&netshim(args), &format!("netshim {args:?}"))
}

/// Panics (with `what`, stderr and stdout) unless the process exited 0; returns stdout.
pub fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} exited {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `netshim args… --json` successfully and parses its output.
pub fn netshim_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = netshim_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("netshim {all:?}: bad JSON {e}: {out}"))
}

/// A CNI-style pod: client netns `c0` (10.123.0.1/24) ⟷ veth ⟷ sandbox netns `eth0`
/// (10.123.0.2/24). Each pod has namespaces of its own, so the addresses never meet. IPv6 is disabled on the client so that the only frames crossing
/// are the ones a test sends.
pub struct Pod {
    pub client: TestNetns,
    pub sandbox: TestNetns,
    pub client_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
    pub client_mac: [u8; 6],
    pub pod_mac: [u8; 6],
}

impl Pod {
    pub fn new(tag: &str) -> Pod {
        let client = TestNetns::new(&format!("nsh-{tag}-c"));
        let sandbox = TestNetns::new(&format!("nsh-{tag}-s"));
        let client_ip = Ipv4Addr::new(10, 123, 0, 1);
        let pod_ip = Ipv4Addr::new(10, 123, 0, 2);
        for ns in [&client, &sandbox] {
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        }
        veth_pair(&client, "c0", &sandbox, "eth0");
        client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "c0"]);
        sandbox.ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"]);
        let client_mac = parse_mac(&client.link_mac("c0")).expect("c0 mac");
        let pod_mac = parse_mac(&sandbox.link_mac("eth0")).expect("eth0 mac");
        Pod {
            client,
            sandbox,
            client_ip,
            pod_ip,
            client_mac,
            pod_mac,
        }
    }

    /// A permanent neighbour entry for the pod's address on the client, so the client sends
    /// no ARP and every frame that crosses is one a test sent.
    pub fn pin_pod_neighbor(&self) {
        crate::traffic::pin_neighbor(&self.client, "c0", self.pod_ip, &self.pod_mac);
    }

    /// Sends `count` datagrams `"{prefix} {i}"` from the client to the pod's `port`.
    pub fn send_to_pod(&self, prefix: &str, count: usize, port: u16) {
        let sender = self
            .client
            .udp_socket(self.client_ip, 0, "bind client socket");
        for i in 0..count {
            sender
                .send_to(format!("{prefix} {i}").as_bytes(), (self.pod_ip, port))
                .expect("send");
        }
    }

    /// The sandbox netns as `--netns` takes it.
    pub fn netns(&self) -> &str {
        self.sandbox.name()
    }

    /// The sandbox netns's cookie, as `netshim status` reports it.
    pub fn cookie(&self) -> u64 {
        netshim_json(&["status", "--netns", self.netns()])["netns_cookie"]
            .as_u64()
            .expect("netns_cookie in status")
    }

    /// Turns IPv6 on for `c0` and the sandbox's `eth0` (as a dual-stack CNI leaves a pod)
    /// and gives them ULA addresses ([`PodIpv6`]), without duplicate address detection so
    /// they are usable at once. Call before `netshim attach`, which records eth0's
    /// addresses for the guest.
    pub fn enable_ipv6(&self) -> PodIpv6 {
        let v6 = PodIpv6 {
            client_ip: Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 1),
            pod_ip: Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 2),
            pod_link_local: eui64_link_local(&self.pod_mac),
            client_link_local: eui64_link_local(&self.client_mac),
        };
        for (ns, dev, ip) in [
            (&self.client, "c0", v6.client_ip),
            (&self.sandbox, "eth0", v6.pod_ip),
        ] {
            ns.exec_ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.accept_dad=0"),
            ]);
            for key in ["all", "default", dev] {
                ns.exec_ok(&[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=0"),
                ]);
            }
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        let c0 = self
            .client
            .ip(&["-6", "-o", "addr", "show", "dev", "c0", "scope", "link"]);
        assert!(
            c0.contains(&format!("{}/64", v6.client_link_local)),
            "c0 has no EUI-64 link-local {}: {c0}",
            v6.client_link_local
        );
        v6
    }
}

/// The IPv6 side of a [`Pod`] ([`Pod::enable_ipv6`]): `fd00:123::1/64` on c0,
/// `fd00:123::2/64` on eth0 (the guest's), and the EUI-64 link-local addresses of both MACs
/// (what the client's kernel and the guest's give themselves).
#[derive(Debug, Clone, Copy)]
pub struct PodIpv6 {
    pub client_ip: Ipv6Addr,
    pub pod_ip: Ipv6Addr,
    pub client_link_local: Ipv6Addr,
    pub pod_link_local: Ipv6Addr,
}

/// `fe80::/64` + the modified EUI-64 interface identifier of `mac` (RFC 4291 appendix A).
pub fn eui64_link_local(mac: &[u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

impl Drop for Pod {
    /// A test that used netshim and failed half-way still leaves no pins or state files:
    /// detach runs before the namespaces go (it is a no-op when nothing is attached).
    fn drop(&mut self) {
        let Some(bin) = BIN.get() else {
            return;
        };
        match Command::new(bin)
            .args(["detach", "--netns", self.sandbox.name()])
            .output()
        {
            Ok(out) if !out.status.success() => eprintln!(
                "warning: netshim detach --netns {}: {}",
                self.sandbox.name(),
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(_) => {}
            Err(e) => eprintln!("warning: running netshim detach: {e}"),
        }
    }
}

/// The bpffs directory netshim uses for `ns`: `/sys/fs/bpf/netshim/netns-<cookie>`, with the
/// cookie as `netshim status` reports it.
pub fn pin_dir(ns: &TestNetns) -> PathBuf {
    let status = netshim_json(&["status", "--netns", ns.name()]);
    let cookie = status["netns_cookie"]
        .as_u64()
        .expect("netns_cookie in status");
    PathBuf::from(format!("/sys/fs/bpf/netshim/netns-{cookie}"))
}

/// The previous release's datapath object (commit 7fba15f; see tests/fixtures/README.md).
pub const PREVIOUS_OBJECT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/netshim-ebpf-7fba15f.o"
);

/// Attaches `pod`, then puts the previous release's program on its hooks (`upgrade
/// --object`, which also clears the taps' `PEER_GUARD`); the maps stay. Returns the pin
/// directory.
/// The program a pinned link runs, as bpftool shows it.
pub fn link_prog_id(pin: &std::path::Path) -> u64 {
    let out = Command::new("bpftool")
        .args(["link", "show", "pinned"])
        .arg(pin)
        .arg("-j")
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool link show pinned {pin:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v["prog_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("prog_id in {v}"))
}

pub fn attach_with_previous_object(pod: &Pod) -> PathBuf {
    netshim_json(&["attach", "--netns", pod.netns()]);
    let r = netshim_json(&[
        "upgrade",
        "--netns",
        pod.netns(),
        "--object",
        PREVIOUS_OBJECT,
    ]);
    assert_eq!(r["sandboxes"][0]["outcome"], "upgraded", "{r}");
    pin_dir(&pod.sandbox)
}

/// Attaches `pod` and leaves it as a netshim from before the source guard would have: the
/// previous release's program on the hooks and no guard maps pinned. Returns the pin
/// directory.
pub fn attach_as_before_the_guard(pod: &Pod) -> PathBuf {
    let dir = attach_with_previous_object(pod);
    // The previous release's guard has the `guard_events` ring where this one has
    // `guard_last`: unpin whichever of the two is there.
    let maps = netshim_common::GUARD_MAPS.into_iter();
    for map in maps.chain([netshim_common::map_names::GUARD_EVENTS]) {
        match std::fs::remove_file(dir.join(map)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("unpin {map}: {e}"),
        }
    }
    assert!(
        !netshim_common::has_guard_maps(|m| dir.join(m).exists()),
        "no guard left in {}",
        dir.display()
    );
    dir
}

/// A running `netshim logs` or `watch`, its stderr collected line by line.
pub struct Follower {
    child: ChildGuard,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    /// Starts `netshim args…` (RUST_LOG unset), collecting its stderr.
    pub fn start(args: &[&str]) -> Follower {
        let mut cmd = Command::new(netshim_bin());
        cmd.args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(cmd, &format!("netshim {}", args.join(" ")));
        let pipe = child.child_mut().stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Follower { child, stderr }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGINT, then the exit status and stdout.
    pub fn stop(self) -> (Option<i32>, String, String) {
        self.child.signal(nix::sys::signal::Signal::SIGINT).unwrap();
        let out = self.child.wait_with_output(Duration::from_secs(5));
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap().clone();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    /// The `[[test]]` paths of a manifest, as file names.
    fn test_targets(manifest: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(manifest).unwrap();
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("path = \""))
            .filter_map(|p| p.strip_suffix('"'))
            .filter(|p| p.contains("tests/"))
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    /// Neither package discovers the integration tests by itself (they are split between
    /// them by whether they run the netshim binary): a file of tests/tests that neither
    /// manifest names would never run, one both name would run twice.
    #[test]
    fn every_integration_test_is_a_target_of_exactly_one_package() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
        let ours = test_targets(&tests.join("Cargo.toml"));
        let netshim = test_targets(&tests.join("../netshim/Cargo.toml"));
        let files: BTreeSet<String> = std::fs::read_dir(tests.join("tests"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".rs"))
            .collect();
        let mut named: Vec<&String> = ours.iter().chain(&netshim).collect();
        named.sort();
        let twice: Vec<_> = named.windows(2).filter(|w| w[0] == w[1]).collect();
        assert!(twice.is_empty(), "targets of both packages: {twice:?}");
        let named: BTreeSet<String> = named.into_iter().cloned().collect();
        assert_eq!(named, files, "tests/tests against the [[test]] targets");
    }
}
