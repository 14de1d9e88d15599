//! netshim as a CNI plugin, driven the way a runtime (libcni) drives a conflist: every
//! plugin gets CNI_* in its environment and its configuration on stdin; ADD calls the
//! plugins in order, each with the previous one's result as `prevResult`; CHECK and DEL pass
//! the network's final result to every plugin, DEL in reverse order.
//!
//! The reference plugins (Debian's containernetworking-plugins in /usr/lib/cni) put the host
//! end of their veth in the netns they run in: they run in a host netns the test creates,
//! never in the root netns. host-local keeps its leases in a directory the test owns, and
//! each test has a subnet of its own. Every assertion is about this file's own namespaces.

use std::{
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use netshim_tests::{
    leaks::netshim_dirs,
    netns_fixture::{random_u32, unique_octet},
    netshim_cli::{netshim_bin, netshim_json},
    skip_unless_root,
    tap_reader::parse_mac,
    traffic::{probe_path, ProbePath},
    veth_pair, ChildGuard, TestNetns,
};
use serde_json::{json, Value};

const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The Debian plugins (v1.1.1) speak up to 1.0.0.
const CNI_VERSION: &str = "1.0.0";
const IFNAME: &str = "eth0";

/// A directory removed on Drop (host-local's dataDir).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "netshim-cni-{tag}-{}-{:08x}",
            std::process::id(),
            random_u32()
        ));
        std::fs::create_dir_all(&dir).expect("create the host-local data dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the reference plugins are installed (`cargo xtask setup` installs them).
fn plugins_missing() -> bool {
    if skip_unless_root() {
        return true;
    }
    let missing = ["ptp", "bridge", "host-local"]
        .iter()
        .any(|p| !Path::new(PLUGIN_DIR).join(p).exists());
    assert!(
        !missing,
        "{PLUGIN_DIR} lacks ptp/bridge/host-local: run `cargo xtask setup` \
         (containernetworking-plugins)"
    );
    false
}

/// A runtime's view of one container on one network.
struct Runtime<'a> {
    /// Where the plugins run (the "host" of the pod).
    host: &'a TestNetns,
    netns_path: String,
    container_id: String,
}

impl<'a> Runtime<'a> {
    fn new(host: &'a TestNetns, sandbox: &TestNetns) -> Self {
        Runtime {
            host,
            netns_path: sandbox.path().display().to_string(),
            container_id: format!("netshim-test-{:08x}", random_u32()),
        }
    }

    /// Runs one plugin in the host netns (a thread that entered it spawns the plugin, as a
    /// runtime in that netns would; `ip netns exec` would also remount /sys, hiding bpffs).
    fn call(&self, plugin: &Value, list: &Value, command: &str, prev: Option<&Value>) -> Output {
        let mut conf = plugin.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let kind = plugin["type"].as_str().expect("plugin type");
        let bin = match kind {
            "netshim" => netshim_bin(),
            other => Path::new(PLUGIN_DIR).join(other),
        };
        self.run(&bin, command, &serde_json::to_vec(&conf).unwrap(), &[])
    }

    /// Runs `bin` as a plugin with `stdin`; `env` overrides the CNI_* variables (an empty
    /// value removes one).
    fn run(&self, bin: &Path, command: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns_path)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", PLUGIN_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        self.host.run(|| {
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin:?}: {e}"));
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin)
                .expect("write the config");
            child.wait_with_output().expect("wait for the plugin")
        })
    }

    /// ADD through the whole list; returns the final result.
    fn add(&self, list: &Value) -> Value {
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().unwrap() {
            let out = self.call(plugin, list, "ADD", prev.as_ref());
            let result = ok_json(&out, &format!("ADD {}", plugin["type"]));
            prev = Some(result);
        }
        prev.expect("a result")
    }

    /// netshim's CHECK (the list's last plugin) fails with code 103 and says `why`.
    fn check_fails(&self, list: &Value, result: &Value, why: &str) {
        let netshim = list["plugins"].as_array().unwrap().last().unwrap();
        let (code, err) = cni_error(&self.call(netshim, list, "CHECK", Some(result)));
        assert_eq!(code, 103, "{err}");
        assert!(err["msg"].as_str().unwrap().contains(why), "{err}");
    }

    /// CHECK or DEL through the list (DEL in reverse), each plugin given `result`.
    fn each(&self, list: &Value, command: &str, result: &Value) {
        let mut plugins = list["plugins"].as_array().unwrap().clone();
        if command == "DEL" {
            plugins.reverse();
        }
        for plugin in &plugins {
            let out = self.call(plugin, list, command, Some(result));
            assert!(
                out.status.success(),
                "{command} {} exited {}: {}{}",
                plugin["type"],
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if command == "DEL" && plugin["type"] == "netshim" {
                assert!(out.stdout.is_empty(), "DEL prints nothing");
            }
        }
    }
}

fn ok_json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} exited {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: bad JSON {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The CNI error result of a failed call: (code, whole JSON).
fn cni_error(out: &Output) -> (u64, Value) {
    assert!(!out.status.success(), "expected a failure");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "error result is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v["code"].as_u64().expect("code"), v)
}

/// Two namespaces of a test: the plugins' host and the pod sandbox, IPv6 off in both so
/// only the frames a test sends cross.
fn namespaces(tag: &str) -> (TestNetns, TestNetns) {
    let host = TestNetns::new(&format!("nsh-cni-{tag}-h"));
    let sandbox = TestNetns::new(&format!("nsh-cni-{tag}-s"));
    for ns in [&host, &sandbox] {
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    }
    (host, sandbox)
}

/// A test's namespaces joined by a veth made without a plugin: `h0` (10.`a`.0.1/24) in the
/// host, IFNAME (10.`a`.0.2/24) in the sandbox.
fn veth_pod(tag: &str, a: u8) -> (TestNetns, TestNetns) {
    let (host, sandbox) = namespaces(tag);
    veth_pair(&host, "h0", &sandbox, IFNAME);
    host.ip(&["addr", "add", &format!("10.{a}.0.1/24"), "dev", "h0"]);
    sandbox.ip(&["addr", "add", &format!("10.{a}.0.2/24"), "dev", IFNAME]);
    (host, sandbox)
}

fn subnet() -> (u8, u8) {
    (unique_octet(), unique_octet())
}

fn ipam(data_dir: &Path, (a, b): (u8, u8)) -> Value {
    json!({
        "type": "host-local",
        "dataDir": data_dir,
        "ranges": [[{"subnet": format!("10.{a}.{b}.0/24")}]],
        "routes": [{"dst": "0.0.0.0/0"}]
    })
}

fn cookie(sandbox: &TestNetns) -> u64 {
    netshim_json(&["status", "--netns", sandbox.name()])["netns_cookie"]
        .as_u64()
        .expect("netns_cookie")
}

/// The interface `name` of a result, with its index.
fn interface<'v>(result: &'v Value, name: &str) -> (usize, &'v Value) {
    result["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .enumerate()
        .find(|(_, i)| i["name"] == name)
        .unwrap_or_else(|| panic!("no interface {name} in {result}"))
}

/// Checks the shape of ADD's result: prevResult's pod interface and IP kept, the tap `tap`
/// added last with the pod interface's MAC in the sandbox. Returns (pod IP, gateway).
fn check_result(
    result: &Value,
    sandbox: &TestNetns,
    (a, b): (u8, u8),
    tap: &str,
) -> (Ipv4Addr, Ipv4Addr) {
    let netns_path = sandbox.path().display().to_string();
    assert_eq!(result["cniVersion"], CNI_VERSION, "{result}");
    let (pod_index, pod) = interface(result, IFNAME);
    assert_eq!(pod["sandbox"], netns_path.as_str(), "{result}");
    let pod_mac = sandbox.link_mac(IFNAME);
    assert_eq!(pod["mac"], pod_mac.as_str(), "{result}");
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(
        interfaces.last().unwrap(),
        &json!({"name": tap, "mac": pod_mac, "sandbox": netns_path}),
        "{result}"
    );
    assert!(sandbox.link_exists(tap));
    let ip = &result["ips"][0];
    assert_eq!(ip["interface"], pod_index, "{result}");
    let address = ip["address"].as_str().expect("ips[0].address");
    let (addr, prefix) = address.split_once('/').expect("CIDR");
    assert_eq!(prefix, "24");
    let pod_ip: Ipv4Addr = addr.parse().unwrap();
    assert_eq!(pod_ip.octets()[..3], [10, a, b], "{result}");
    let gateway: Ipv4Addr = ip["gateway"].as_str().expect("gateway").parse().unwrap();
    assert!(!result["routes"].as_array().unwrap().is_empty(), "{result}");
    (pod_ip, gateway)
}

/// Datagrams both ways between the host device (with the gateway address) and the tap.
fn assert_traffic(
    host: &TestNetns,
    host_dev: &str,
    sandbox: &TestNetns,
    ips: (Ipv4Addr, Ipv4Addr),
    tap: &str,
) {
    let (pod_ip, gateway) = ips;
    let path = ProbePath {
        client: host,
        client_dev: host_dev,
        client_ip: gateway,
        client_mac: parse_mac(&host.link_mac(host_dev)).unwrap(),
        sandbox,
        pod_ip,
        pod_mac: parse_mac(&sandbox.link_mac(IFNAME)).unwrap(),
    };
    let forwarded = probe_path(&path, tap, 5);
    assert_eq!(
        (forwarded.to_vm, forwarded.from_vm),
        (5, 5),
        "through {tap}"
    );
}

/// A VMM on the tap, as a runtime would run one: vm-standin opens `tap` in the sandbox and
/// relays its frames to a "guest" netns whose interface has the pod's MAC, IP and gateway
/// (what the CNI result tells the VM). The host pings the guest through the whole chain:
/// ptp's veth, netshim's datapath, the tap and the stand-in. Returns the stand-in's summary.
fn ping_guest_through_vm_standin(
    host: &TestNetns,
    sandbox: &TestNetns,
    tap: &str,
    (pod_ip, gateway): (Ipv4Addr, Ipv4Addr),
) -> Value {
    let guest = TestNetns::new("nsh-cni-gu");
    let mac = sandbox.link_mac(IFNAME);
    let mtu = sandbox.link_mtu(IFNAME).to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vm-standin"));
    cmd.arg("--sandbox-netns")
        .arg(sandbox.path())
        .args(["--tap", tap])
        .arg("--guest-netns")
        .arg(guest.path())
        .args([
            "--guest-ifname",
            "eth0",
            "--guest-mac",
            &mac,
            "--guest-mtu",
            &mtu,
        ])
        .args(["--guest-addr", &format!("{pod_ip}/24")])
        .args(["--guest-gw", &gateway.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut standin = ChildGuard::spawn(cmd, "vm-standin");
    let mut lines = BufReader::new(standin.child_mut().stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(|l| l.ok());
    assert_eq!(ready.as_deref(), Some("ready"), "vm-standin did not start");
    let ping = host.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &pod_ip.to_string(),
    ]);
    assert!(
        ping.status.success(),
        "host -> guest through ptp, netshim, {tap} and vm-standin: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    drop(standin.child_mut().stdin.take());
    let out = standin.wait_with_output(Duration::from_secs(5));
    assert!(out.status.success(), "vm-standin exit: {}", out.status);
    let summary: Value = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| serde_json::from_str(&l).ok())
        .expect("vm-standin summary line");
    for dir in ["sandbox_to_guest", "guest_to_sandbox"] {
        assert!(
            summary[dir]["frames"].as_u64().unwrap_or(0) >= 3,
            "{dir}: {summary}"
        );
    }
    summary
}

/// After DEL: no tap, no netshim pins/state for the netns, no host-local lease.
fn assert_nothing_left(
    sandbox: &TestNetns,
    cookie: u64,
    data_dir: &Path,
    pod_ip: Ipv4Addr,
    tap: &str,
) {
    assert!(!sandbox.link_exists(tap), "{tap} left after DEL");
    assert!(!sandbox.link_exists(IFNAME), "{IFNAME} left after DEL");
    assert_eq!(
        netshim_dirs(cookie),
        Vec::<PathBuf>::new(),
        "netshim state left"
    );
    let leases: Vec<String> = walk(data_dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == pod_ip.to_string().as_str())
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(leases.is_empty(), "host-local lease left: {leases:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A test's namespaces, host-local data directory, subnet, and conflist: `first` (given
/// host-local IPAM in the test's subnet) then netshim with `netshim_keys`.
struct Chain {
    host: TestNetns,
    sandbox: TestNetns,
    data: TempDir,
    net: (u8, u8),
    list: Value,
}

fn chain(tag: &str, mut first: Value, mut netshim_keys: Value) -> Chain {
    let (host, sandbox) = namespaces(tag);
    let data = TempDir::new(tag);
    let net = subnet();
    first["ipam"] = ipam(&data.0, net);
    netshim_keys["type"] = json!("netshim");
    let list = json!({
        "cniVersion": CNI_VERSION,
        "name": format!("nsh-{tag}-{:08x}", random_u32()),
        "plugins": [first, netshim_keys]
    });
    Chain {
        host,
        sandbox,
        data,
        net,
        list,
    }
}

/// ptp + host-local + netshim with `netshim_keys`, the way firecracker-containerd runs
/// tc-redirect-tap: ADD (the result lists `tap`), traffic both ways through `tap`, CHECK,
/// `attached` (the test's own checks of the attached netns), DEL (nothing left), CHECK
/// after DEL fails, DEL again succeeds.
fn ptp_chain(
    tag: &str,
    netshim_keys: Value,
    tap: &str,
    attached: impl FnOnce(&Runtime, &Value, &Value, &TestNetns),
) {
    if plugins_missing() {
        return;
    }
    let c = chain(tag, json!({"type": "ptp", "ipMasq": false}), netshim_keys);
    let (host, sandbox, data, net, list) = (c.host, c.sandbox, c.data, c.net, c.list);
    let rt = Runtime::new(&host, &sandbox);
    let result = rt.add(&list);
    eprintln!("ADD result: {result:#}");
    let ips = check_result(&result, &sandbox, net, tap);
    // ptp's host end: the one interface without a sandbox, in the host netns.
    let host_veth = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none())
        .and_then(|i| i["name"].as_str())
        .expect("ptp's host veth")
        .to_owned();
    assert!(host.link_exists(&host_veth));
    assert_traffic(&host, &host_veth, &sandbox, ips, tap);
    let relayed = ping_guest_through_vm_standin(&host, &sandbox, tap, ips);
    eprintln!("vm-standin relayed: {relayed}");

    rt.each(&list, "CHECK", &result);
    attached(&rt, &list, &result, &sandbox);
    let cookie = cookie(&sandbox);
    rt.each(&list, "DEL", &result);
    assert_nothing_left(&sandbox, cookie, &data.0, ips.0, tap);
    assert!(!host.link_exists(&host_veth), "ptp's host veth left");

    // CHECK after DEL: netshim says what is missing.
    rt.check_fails(&list, &result, "not attached");
    // DEL again: still success.
    rt.each(&list, "DEL", &result);
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new());
}

#[test]
fn ptp_host_local_then_netshim() {
    ptp_chain(
        "ptp",
        json!({"tc_backend": "ebpf"}),
        "tap0_kata",
        |_, _, _, _| {},
    );
}

/// tc-redirect-tap's `tap_name`: CNI_IFNAME's tap is `vmtap0` (and no `tap0_kata`). ADD
/// reports it, traffic crosses it, status and CHECK find it, a retried ADD returns the
/// recorded result, another `tap_name` is a conflict (ADD) or a failure (CHECK), and DEL
/// leaves nothing (no tap, no pins, state or lock file).
#[test]
fn ptp_host_local_then_netshim_with_tap_name() {
    let keys = json!({"tc_backend": "ebpf", "tap_name": "vmtap0"});
    ptp_chain("tapname", keys, "vmtap0", |rt, list, result, sandbox| {
        assert!(!sandbox.link_exists("tap0_kata"), "tap0_kata made as well");
        let status = netshim_json(&["status", "--netns", sandbox.name()]);
        assert_eq!(status["endpoints"].as_array().unwrap().len(), 1, "{status}");
        assert_eq!(status["endpoints"][0]["tap"], "vmtap0", "{status}");
        assert_eq!(status["endpoints"][0]["connected"], true, "{status}");

        // A retried ADD (the last plugin again, with ptp's result): the recorded attach.
        let netshim = list["plugins"][1].clone();
        let mut ptp_result = result.clone();
        ptp_result["interfaces"].as_array_mut().unwrap().pop();
        let again = ok_json(
            &rt.call(&netshim, list, "ADD", Some(&ptp_result)),
            "ADD again",
        );
        assert_eq!(&again, result);
        // The same netns asked for under another tap name: a conflict, nothing changed.
        let mut other = netshim.clone();
        other["tap_name"] = json!("vmtap1");
        let (code, err) = cni_error(&rt.call(&other, list, "ADD", Some(&ptp_result)));
        assert_eq!(code, 101, "{err}");
        let details = err["details"].as_str().unwrap();
        assert!(details.contains("tap name vmtap1 for eth0"), "{err}");
        assert!(sandbox.link_exists("vmtap0") && !sandbox.link_exists("vmtap1"));
        // CHECK with another tap_name says which one is attached.
        let mut other_list = list.clone();
        other_list["plugins"][1] = other;
        rt.check_fails(&other_list, result, "attached with tap vmtap0");
    });
}

#[test]
fn bridge_host_local_then_netshim() {
    if plugins_missing() {
        return;
    }
    let c = chain(
        "br",
        json!({"type": "bridge", "bridge": "nshbr0", "isGateway": true, "ipMasq": false}),
        json!({"tc_backend": "mirred"}),
    );
    let (host, sandbox, data, net, list) = (c.host, c.sandbox, c.data, c.net, c.list);
    let rt = Runtime::new(&host, &sandbox);
    let result = rt.add(&list);
    let ips = check_result(&result, &sandbox, net, "tap0_kata");
    assert_eq!(interface(&result, "nshbr0").1.get("sandbox"), None);
    assert_traffic(&host, "nshbr0", &sandbox, ips, "tap0_kata");
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");
    rt.each(&list, "CHECK", &result);
    // A tap that went away behind netshim's back: CHECK says so; DEL still cleans up.
    // (The cookie is read first: `status` of the broken sandbox exits 4.)
    let cookie = cookie(&sandbox);
    sandbox.ip(&["link", "del", "tap0_kata"]);
    rt.check_fails(&list, &result, "tap0_kata of eth0");
    rt.each(&list, "DEL", &result);
    assert_nothing_left(&sandbox, cookie, &data.0, ips.0, "tap0_kata");
}

/// An ADD killed right after it made the custom-named tap (debug builds:
/// NETSHIM_TEST_KILL_AT=tap-created) leaves `vmtap0`, found by no `tap<N>_kata` pattern:
/// `netshim gc` finds it through the intent file and takes it away, with the state.
#[test]
fn a_killed_add_with_tap_name_is_cleaned_up_by_gc() {
    if skip_unless_root() {
        return;
    }
    let (host, sandbox) = veth_pod("tnkill", 202);
    let rt = Runtime::new(&host, &sandbox);
    let conf = serde_json::to_vec(&json!({
        "cniVersion": "1.1.0", "name": "nsh-kill", "type": "netshim", "tap_name": "vmtap0"
    }))
    .unwrap();
    let cookie = cookie(&sandbox);
    let out = rt.run(
        &netshim_bin(),
        "ADD",
        &conf,
        &[("NETSHIM_TEST_KILL_AT", "tap-created")],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGKILL),
        "ADD with NETSHIM_TEST_KILL_AT=tap-created did not die by SIGKILL: {out:?}"
    );
    assert!(
        sandbox.link_exists("vmtap0"),
        "the killed ADD made no vmtap0"
    );
    assert!(!netshim_dirs(cookie).is_empty(), "no intent file left");
    // The tap is netshim's, not a tuntap endpoint: status does not offer it to the VM.
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["endpoints"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["endpoints"][0]["name"], IFNAME, "{status}");
    assert_eq!(
        status["attached"], true,
        "vmtap0 is not seen as netshim's: {status}"
    );
    let skipped = status["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["name"] == "vmtap0" && s["reason"] == "netshim-tap"),
        "{status}"
    );

    let gc = netshim_json(&["gc"]);
    eprintln!("gc: {gc:#}");
    assert!(
        gc["cleaned_half_made"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["netns_cookie"] == cookie),
        "gc did not clean netns cookie {cookie}: {gc}"
    );
    assert!(!sandbox.link_exists("vmtap0"), "gc left vmtap0: {gc}");
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "gc: {gc}");
    assert!(sandbox.link_exists(IFNAME), "gc took the pod device");
}

fn netshim_conf(version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"cniVersion": version, "name": "nsh-err", "type": "netshim"}))
        .unwrap()
}

#[test]
fn bad_input_gets_cni_error_codes() {
    if skip_unless_root() {
        return;
    }
    let (host, sandbox) = namespaces("err");
    let rt = Runtime::new(&host, &sandbox);
    let bin = netshim_bin();

    let (code, err) = cni_error(&rt.run(&bin, "ADD", b"{\"cniVersion\": ", &[]));
    assert_eq!(code, 6, "{err}");
    let (code, err) = cni_error(&rt.run(&bin, "ADD", &netshim_conf("0.3.1"), &[]));
    assert_eq!(code, 1, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("0.3.1"), "{err}");
    let (code, err) = cni_error(&rt.run(&bin, "ADD", &netshim_conf("1.1.0"), &[("CNI_NETNS", "")]));
    assert_eq!(code, 4, "{err}");
    assert_eq!(err["cniVersion"], "1.1.0");
    assert!(err["msg"].as_str().unwrap().contains("CNI_NETNS"), "{err}");
    let gone = format!("/run/netns/nsh-cni-gone-{:08x}", random_u32());
    let (code, err) =
        cni_error(&rt.run(&bin, "ADD", &netshim_conf("1.0.0"), &[("CNI_NETNS", &gone)]));
    assert_eq!(code, 3, "{err}");
    let tap_name = |name: &str| {
        serde_json::to_vec(
            &json!({"cniVersion": "1.0.0", "name": "n", "type": "netshim", "tap_name": name}),
        )
        .unwrap()
    };
    let (code, err) = cni_error(&rt.run(&bin, "ADD", &tap_name("vm/0"), &[]));
    assert_eq!(code, 7, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("tap_name"), "{err}");
    // A tap name an interface of the netns already has: refused before any change.
    veth_pair(&host, "h0", &sandbox, IFNAME);
    sandbox.ip(&["addr", "add", "10.203.0.2/24", "dev", IFNAME]);
    let (code, err) = cni_error(&rt.run(&bin, "ADD", &tap_name(IFNAME), &[]));
    assert_eq!(code, 7, "{err}");
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains("tap name eth0 for eth0 is taken"),
        "{err}"
    );
    assert_eq!(netshim_dirs(cookie(&sandbox)), Vec::<PathBuf>::new());
    // Nothing of that reached the sandbox.
    assert!(!sandbox.link_exists("tap0_kata"));

    let out = rt.run(&bin, "DEL", &netshim_conf("1.0.0"), &[("CNI_NETNS", &gone)]);
    assert!(out.status.success(), "DEL of a gone netns: {out:?}");
    assert!(out.stdout.is_empty());
    let out = rt.run(&bin, "DEL", &netshim_conf("1.0.0"), &[("CNI_NETNS", "")]);
    assert!(out.status.success(), "DEL without CNI_NETNS: {out:?}");

    let version = ok_json(
        &rt.run(&bin, "VERSION", b"{\"cniVersion\":\"1.0.0\"}", &[]),
        "VERSION",
    );
    assert_eq!(version["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    let out = rt.run(&bin, "STATUS", &netshim_conf("1.1.0"), &[]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "STATUS: {out:?}"
    );
}

/// netshim alone (no prevResult) in a netns that is deleted before DEL: DEL succeeds and
/// what the attach left is collected.
#[test]
fn del_after_the_netns_is_gone() {
    if skip_unless_root() {
        return;
    }
    let (host, sandbox) = veth_pod("gone", 201);
    let rt = Runtime::new(&host, &sandbox);
    let bin = netshim_bin();
    let result = ok_json(&rt.run(&bin, "ADD", &netshim_conf("1.1.0"), &[]), "ADD");
    assert_eq!(
        result,
        json!({"cniVersion": "1.1.0", "interfaces": [{
            "name": "tap0_kata", "mac": sandbox.link_mac(IFNAME), "sandbox": rt.netns_path}]})
    );
    // ADD again (a runtime retrying): the same result, nothing new.
    let again = ok_json(
        &rt.run(&bin, "ADD", &netshim_conf("1.1.0"), &[]),
        "ADD again",
    );
    assert_eq!(again, result);
    let cookie = cookie(&sandbox);
    assert!(!netshim_dirs(cookie).is_empty());
    drop(sandbox);
    // The kernel frees a netns in a worker shortly after its last reference; until then its
    // pins are not collectable, and DEL (which succeeds anyway) is called again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = rt.run(&bin, "DEL", &netshim_conf("1.1.0"), &[]);
        assert!(out.status.success(), "DEL of a gone netns: {out:?}");
        if netshim_dirs(cookie).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {:?}",
            netshim_dirs(cookie)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
