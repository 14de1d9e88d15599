//! A CNI runtime for tests: conflists driven the way libcni drives them. Every plugin gets
//! CNI_* in its environment and its configuration on stdin; ADD calls the plugins in order,
//! each with the previous one's result as `prevResult`; CHECK and DEL pass the network's
//! final result to every plugin, DEL in reverse order.
//!
//! The reference plugins (Debian's containernetworking-plugins in /usr/lib/cni, v1.1.1:
//! cniVersion 0.1.0 to 1.0.0) put the host end of their veth in the netns they run in: they
//! run in a host netns the test creates, never in the root netns. host-local keeps its leases
//! in a directory the test owns ([`data_dir`]), and each test has a subnet of its own.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::{json, Value};

use crate::{
    netns_fixture::{random_u32, unique_octet},
    netshim_cli::{netshim_bin, netshim_json},
    skip_unless_root, veth_pair, TestNetns,
};

pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The newest version the Debian plugins (v1.1.1) speak.
pub const CNI_VERSION: &str = "1.0.0";
/// CNI_IFNAME of every call unless a test says otherwise.
pub const IFNAME: &str = "eth0";

/// A directory removed on Drop (host-local's dataDir): `/tmp/netshim-cni-<tag>-<random>`.
pub fn data_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("netshim-cni-{tag}-"))
        .tempdir()
        .expect("create the host-local data dir")
}

/// Whether the test must skip (not root). Panics when the reference plugins are missing
/// (`cargo xtask setup` installs them).
pub fn plugins_missing() -> bool {
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
pub struct Runtime<'a> {
    /// Where the plugins run (the "host" of the pod).
    pub host: &'a TestNetns,
    pub netns_path: String,
    /// CNI_CONTAINERID (the VM id, for firecracker-containerd).
    pub container_id: String,
}

impl<'a> Runtime<'a> {
    pub fn new(host: &'a TestNetns, sandbox: &TestNetns) -> Self {
        Runtime {
            host,
            netns_path: sandbox.path().display().to_string(),
            container_id: format!("netshim-test-{:08x}", random_u32()),
        }
    }

    /// Runs one plugin of `list` in the host netns (a thread that entered it spawns the
    /// plugin, as a runtime in that netns would; under `ip netns exec` see host_view.rs).
    pub fn call(
        &self,
        plugin: &Value,
        list: &Value,
        command: &str,
        prev: Option<&Value>,
    ) -> Output {
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
    pub fn run(&self, bin: &Path, command: &str, stdin: &[u8], env: &[(&str, &str)]) -> Output {
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

    /// netshim alone: `conf` (a netshim plugin configuration with `cniVersion`) on stdin.
    pub fn netshim(&self, command: &str, conf: &Value, env: &[(&str, &str)]) -> Output {
        self.run(
            &netshim_bin(),
            command,
            &serde_json::to_vec(conf).unwrap(),
            env,
        )
    }

    /// ADD through the whole list; returns the final result.
    pub fn add(&self, list: &Value) -> Value {
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().unwrap() {
            let out = self.call(plugin, list, "ADD", prev.as_ref());
            let result = ok_json(&out, &format!("ADD {}", plugin["type"]));
            prev = Some(result);
        }
        prev.expect("a result")
    }

    /// netshim's CHECK (the list's last plugin) fails with code 103 and says `why`.
    pub fn check_fails(&self, list: &Value, result: &Value, why: &str) {
        let netshim = list["plugins"].as_array().unwrap().last().unwrap();
        let (code, err) = cni_error(&self.call(netshim, list, "CHECK", Some(result)));
        assert_eq!(code, 103, "{err}");
        assert!(err["msg"].as_str().unwrap().contains(why), "{err}");
    }

    /// CHECK or DEL through the list (DEL in reverse), each plugin given `result`; every
    /// plugin must succeed (libcni stops at the first failure), netshim's DEL printing
    /// nothing.
    pub fn each(&self, list: &Value, command: &str, result: &Value) {
        self.each_with(list, command, Some(result));
    }

    /// [`Runtime::each`] with no `prevResult` at all (libcni's DEL after a failed ADD: no
    /// result was cached).
    pub fn each_with(&self, list: &Value, command: &str, result: Option<&Value>) {
        let mut plugins = list["plugins"].as_array().unwrap().clone();
        if command == "DEL" {
            plugins.reverse();
        }
        for plugin in &plugins {
            let out = self.call(plugin, list, command, result);
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

/// The JSON a successful call printed.
pub fn ok_json(out: &Output, what: &str) -> Value {
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
pub fn cni_error(out: &Output) -> (u64, Value) {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "error result is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v["code"].as_u64().expect("code"), v)
}

/// A netshim configuration of `version` with netshim's `keys`.
pub fn netshim_conf(version: &str, keys: Value) -> Value {
    let mut conf = json!({"cniVersion": version, "name": "nsh-test", "type": "netshim"});
    for (k, v) in keys.as_object().expect("keys object") {
        conf[k] = v.clone();
    }
    conf
}

/// Two namespaces of a test: the plugins' host and the pod sandbox, IPv6 off in both so
/// only the frames a test sends cross.
pub fn namespaces(tag: &str) -> (TestNetns, TestNetns) {
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
pub fn veth_pod(tag: &str, a: u8) -> (TestNetns, TestNetns) {
    let (host, sandbox) = namespaces(tag);
    veth_pair(&host, "h0", &sandbox, IFNAME);
    host.ip(&["addr", "add", &format!("10.{a}.0.1/24"), "dev", "h0"]);
    sandbox.ip(&["addr", "add", &format!("10.{a}.0.2/24"), "dev", IFNAME]);
    (host, sandbox)
}

/// A subnet of its own for a test: 10.a.b.0/24.
pub fn subnet() -> (u8, u8) {
    (unique_octet(), unique_octet())
}

/// host-local in `subnet`, leases in `data_dir`, a default route.
pub fn ipam(data_dir: &Path, (a, b): (u8, u8)) -> Value {
    json!({
        "type": "host-local",
        "dataDir": data_dir,
        "ranges": [[{"subnet": format!("10.{a}.{b}.0/24")}]],
        "routes": [{"dst": "0.0.0.0/0"}]
    })
}

/// netshim's cookie of a netns (the key of its pins, state and lock file).
pub fn cookie(sandbox: &TestNetns) -> u64 {
    netshim_json(&["status", "--netns", sandbox.name()])["netns_cookie"]
        .as_u64()
        .expect("netns_cookie")
}

/// The interface `name` of a result, with its index (the first of that name).
pub fn interface<'v>(result: &'v Value, name: &str) -> (usize, &'v Value) {
    result["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .enumerate()
        .find(|(_, i)| i["name"] == name)
        .unwrap_or_else(|| panic!("no interface {name} in {result}"))
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// host-local's leases in `data_dir` held by `container_id` (a lease file is named by its
/// address and holds the container id, then the interface name).
pub fn leases_of(data_dir: &Path, container_id: &str) -> Vec<PathBuf> {
    walk(data_dir)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .is_ok_and(|s| s.lines().next().map(str::trim) == Some(container_id))
        })
        .collect()
}

/// A test's namespaces, host-local data directory, subnet, and conflist: `first` (given
/// host-local IPAM in the test's subnet) then netshim with `netshim_keys`.
pub struct Chain {
    pub host: TestNetns,
    pub sandbox: TestNetns,
    pub data: tempfile::TempDir,
    pub net: (u8, u8),
    pub list: Value,
}

/// A [`Chain`] whose conflist says `cniVersion` [`CNI_VERSION`].
pub fn chain(tag: &str, first: Value, netshim_keys: Value) -> Chain {
    chain_in(CNI_VERSION, tag, first, netshim_keys)
}

/// A [`Chain`] whose conflist says `cniVersion` `version`.
pub fn chain_in(version: &str, tag: &str, mut first: Value, mut netshim_keys: Value) -> Chain {
    let (host, sandbox) = namespaces(tag);
    let data = data_dir(tag);
    let net = subnet();
    first["ipam"] = ipam(data.path(), net);
    netshim_keys["type"] = json!("netshim");
    let list = json!({
        "cniVersion": version,
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
