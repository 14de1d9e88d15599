//! Throw-away network namespaces for tests, demos and benchmarks.
//!
//! [`TestNetns`] creates a uniquely named netns with `ip netns add` and deletes it on Drop (also
//! when a test panics). Processes that must outlive a statement (iperf3 servers, the
//! stand-in) are held in a [`ChildGuard`] that kills them on Drop; declare guards AFTER the
//! namespaces they run in, so they are dropped (killed) first.
//!
//! Network namespaces are per thread: [`on_netns_thread`] runs a closure on a fresh thread that
//! has `setns`'d into a netns. The calling thread (e.g. the test harness thread) never changes
//! its namespace.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the process runs as root (tests that need namespaces skip otherwise).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// For tests that need root: true (after printing why) when the test must be skipped.
pub fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping: needs root (network namespaces)");
    true
}

/// The first line of a test that needs root: returns from it (the test passes, after
/// [`skip_unless_root`] said why) when the process is not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if $crate::skip_unless_root() {
            return;
        }
    };
}

/// A random u32 (std's per-process random hash keys mixed with the time; not cryptographic).
pub fn random_u32() -> u32 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u32
}

/// A value in 1..=254 that differs between calls in a process and is likely to differ between
/// processes; handy for picking a private /24 (`10.77.<n>.0/24`) per test.
pub fn unique_octet() -> u8 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7) ^ random_u32();
    ((base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 254) + 1) as u8
}

/// Runs `f` on a new thread that has `setns`'d into the network namespace at `path`
/// (`/run/netns/NAME` or `/proc/PID/ns/net`) and returns its result. Panics if the netns cannot
/// be entered (see [`try_on_netns_thread`]). Sockets and tun fds created inside `f` stay bound
/// to that netns and may be used from any thread afterwards; processes spawned inside `f`
/// start in that netns.
pub fn on_netns_thread<T, F>(path: impl AsRef<Path>, f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = path.as_ref();
    try_on_netns_thread(path, f).unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()))
}

/// Like [`on_netns_thread`], but returns an error if the netns cannot be entered.
pub fn try_on_netns_thread<T, F>(path: impl AsRef<Path>, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = path.as_ref();
    let ns = std::fs::File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            drop(ns);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A uniquely named network namespace, deleted on Drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
    /// Made by this handle (and deleted on Drop), or someone else's (a runtime's).
    owned: bool,
}

impl TestNetns {
    /// Creates `<prefix>-<pid>-<counter>-<random>` and brings its `lo` up. Panics on failure.
    pub fn new(prefix: &str) -> TestNetns {
        let name = format!(
            "{prefix}-{}-{}-{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            random_u32()
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = TestNetns {
            path: PathBuf::from(format!("/run/netns/{name}")),
            name,
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A handle on a named netns someone else made (a container runtime's, say): the same
    /// helpers, but Drop leaves the netns alone. `path` must be `/run/netns/NAME`.
    pub fn existing(path: impl AsRef<Path>) -> TestNetns {
        let path = path.as_ref();
        assert_eq!(
            path.parent(),
            Some(Path::new("/run/netns")),
            "{} is not a named netns (ip -n needs /run/netns/NAME)",
            path.display()
        );
        let name = path
            .file_name()
            .expect("a netns name")
            .to_string_lossy()
            .into_owned();
        TestNetns {
            name,
            path: path.to_owned(),
            owned: false,
        }
    }

    /// The netns name (as used by `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `ip netns exec NAME args...` and returns its output (no check).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    /// Runs `ip netns exec NAME args...`, panics with stderr on failure, returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        checked(
            self.exec(args),
            &format!("ip netns exec {} {args:?}", self.name),
        )
    }

    /// A `Command` for `ip netns exec NAME args...` (to customise stdio before spawning).
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `ip -n NAME args...`; panics with stderr on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        checked(self.try_ip(args), &format!("ip -n {} {args:?}", self.name))
    }

    /// Runs `ip -n NAME neigh ENTRY` (checked), ENTRY split at white space: e.g.
    /// `add 10.0.0.9 lladdr 02:00:00:00:00:09 dev eth0 nud permanent`.
    pub fn neigh(&self, entry: &str) -> String {
        let mut args = vec!["neigh"];
        args.extend(entry.split_whitespace());
        self.ip(&args)
    }

    /// Runs `ip -n NAME args...` and returns its output (no check).
    pub fn try_ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip")
    }

    /// Runs `tc -n NAME args...`; panics with stderr on failure; returns stdout.
    pub fn tc(&self, args: &[&str]) -> String {
        checked(
            self.tc_output(args),
            &format!("tc -n {} {args:?}", self.name),
        )
    }

    /// Runs `tc -n NAME args...` and returns its stdout, whatever the exit status.
    pub fn try_tc(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.tc_output(args).stdout).into_owned()
    }

    fn tc_output(&self, args: &[&str]) -> Output {
        Command::new("tc")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run tc")
    }

    /// Spawns `ip netns exec NAME args...` (stdout/stderr discarded) as a guard that kills
    /// it on Drop.
    pub fn spawn(&self, args: &[&str]) -> ChildGuard {
        let mut c = self.exec_cmd(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::spawn(c, &format!("{args:?} in {}", self.name))
    }

    /// Runs `f` on a thread inside this netns (see [`on_netns_thread`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        on_netns_thread(&self.path, f)
    }

    /// A UDP socket bound to `ip:port` in this netns; `what` is the panic message if the
    /// bind fails.
    pub fn udp_socket(&self, ip: Ipv4Addr, port: u16, what: &str) -> UdpSocket {
        self.run(|| UdpSocket::bind((ip, port)).expect(what))
    }

    /// [`TestNetns::udp_socket`] with a read timeout.
    pub fn udp_receiver(&self, ip: Ipv4Addr, port: u16, what: &str, wait: Duration) -> UdpSocket {
        let socket = self.udp_socket(ip, port, what);
        socket.set_read_timeout(Some(wait)).unwrap();
        socket
    }

    /// The MAC address of an interface (`ip -j link show`).
    pub fn link_mac(&self, ifname: &str) -> String {
        self.link_json(ifname)["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {ifname} in {}", self.name))
            .to_owned()
    }

    /// The MTU of an interface.
    pub fn link_mtu(&self, ifname: &str) -> u32 {
        self.link_json(ifname)["mtu"]
            .as_u64()
            .unwrap_or_else(|| panic!("no mtu for {ifname} in {}", self.name)) as u32
    }

    /// The names of this netns's links (`ip -j link show`), for "nothing was created" checks.
    pub fn link_names(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ip(&["-j", "link", "show"])).expect("ip -j output");
        v.as_array()
            .map(|links| {
                links
                    .iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether an interface exists in this netns.
    pub fn link_exists(&self, ifname: &str) -> bool {
        self.try_ip(&["link", "show", "dev", ifname])
            .status
            .success()
    }

    /// Waits until `ifname`'s operstate is UP; false after `timeout`. A tap's carrier comes
    /// on when a queue is attached, but its qdisc is activated later by linkwatch (which
    /// needs rtnl, so it lags while other tests create namespaces); frames sent to the tap
    /// before that are dropped. Linkwatch sets operstate UP in the same step.
    pub fn wait_oper_up(&self, ifname: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.link_json(ifname)["operstate"] == "UP" {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `ip -j -d -s link show dev IFNAME` as JSON (the first element).
    pub fn link_json(&self, ifname: &str) -> serde_json::Value {
        let out = self.ip(&["-j", "-d", "-s", "link", "show", "dev", ifname]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        v.get(0)
            .cloned()
            .unwrap_or_else(|| panic!("no link {ifname} in {}", self.name))
    }

    /// Adds a `u32` match-all + `mirred egress redirect` filter from `from`'s ingress to `to`
    /// (kata's tcfilter datapath), creating the ingress qdisc on `from` if needed.
    pub fn mirred_redirect(&self, from: &str, to: &str) {
        let has_ingress = self
            .tc(&["qdisc", "show", "dev", from])
            .contains("qdisc ingress");
        if !has_ingress {
            self.tc(&["qdisc", "add", "dev", from, "ingress"]);
        }
        self.tc(&[
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ]);
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}

/// Three netns `nsh-TAG-c`, `nsh-TAG-m`, `nsh-TAG-s`, as client, shim and server: client
/// `c0`–`ma0` shim `mb0`–`s0` server, with `client_ip`/24 on `c0` and `server_ip`/24 on `s0`.
pub fn client_shim_server(tag: &str, client_ip: &str, server_ip: &str) -> [TestNetns; 3] {
    let client = TestNetns::new(&format!("nsh-{tag}-c"));
    let shim = TestNetns::new(&format!("nsh-{tag}-m"));
    let server = TestNetns::new(&format!("nsh-{tag}-s"));
    veth_pair(&client, "c0", &shim, "ma0");
    veth_pair(&server, "s0", &shim, "mb0");
    client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "c0"]);
    server.ip(&["addr", "add", &format!("{server_ip}/24"), "dev", "s0"]);
    [client, shim, server]
}

/// Two veth pairs, `p0`–`ma0` and `p1`–`mb0`, from `far` to `ns`: two devices in `ns` whose
/// peers are elsewhere (the two ends of one pair in `ns` would loop).
pub fn two_veths_from(far: &TestNetns, ns: &TestNetns) {
    veth_pair(far, "p0", ns, "ma0");
    veth_pair(far, "p1", ns, "mb0");
}

/// Creates a veth pair `a_if` (in `a`) <-> `b_if` (in `b`) and brings both ends up.
pub fn veth_pair(a: &TestNetns, a_if: &str, b: &TestNetns, b_if: &str) {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

fn checked(out: Output, what: &str) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process that is killed (SIGKILL) and reaped on Drop unless it already exited or
/// was taken with [`ChildGuard::wait_with_output`] / [`ChildGuard::into_inner`].
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd`; panics if it cannot be started.
    pub fn spawn(mut cmd: Command, what: &str) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        ChildGuard {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    /// Wraps an already spawned child.
    pub fn new(child: Child, what: &str) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    /// The child (e.g. to take its stdin/stdout).
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child taken")
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child taken").id()
    }

    /// Sends a signal (e.g. SIGTERM) to the child.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> nix::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.id() as i32), sig)
    }

    /// Waits up to `timeout` for the child to exit on its own and returns its output
    /// (whatever of stdout/stderr was piped and not taken); kills it after the timeout.
    pub fn wait_with_output(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("child taken");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!(
                        "warning: {} did not exit in {timeout:?}, killing",
                        self.what
                    );
                    let _ = child.kill();
                    break;
                }
            }
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait {}: {e}", self.what))
    }

    /// Gives up the guard.
    pub fn into_inner(mut self) -> Child {
        self.child.take().expect("child taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}
