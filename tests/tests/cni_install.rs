//! `netshim cni install` / `cni uninstall` on the configuration shapes nodes really have:
//! the reference bridge + portmap list in cniVersion 0.3.1, 0.4.0 and 1.0.0, flannel's
//! `10-flannel.conflist` (kube-flannel.yml's cni-conf.json), Calico's `10-calico.conflist`
//! (as its install-cni container writes it, with `calico-kubeconfig` beside it) and a
//! single-plugin `.conf`. Each is installed, installed again (no byte may change), and
//! uninstalled: the directories must then be what they were, byte for byte and mode for
//! mode. Then the installed list is run as a runtime runs it, from the bin directory
//! install filled: the pod gets its tap.

use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Output,
};

use netshim_tests::{
    cni_runtime::{
        data_dir, ipam, namespaces, ok_json, plugins_missing, subnet, Runtime, PLUGIN_DIR,
    },
    netshim_cli::{netshim, netshim_bin, netshim_json},
};
use serde_json::{json, Value};

/// A node's two CNI directories in a temporary directory.
struct Node {
    _tmp: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("netshim-install-")
            .tempdir()
            .unwrap();
        let conf = tmp.path().join("net.d");
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&conf).unwrap();
        std::fs::create_dir(&bin).unwrap();
        Node {
            _tmp: tmp,
            conf,
            bin,
        }
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.conf.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn dirs(&self) -> [String; 4] {
        [
            "--conf-dir".into(),
            self.conf.display().to_string(),
            "--bin-dir".into(),
            self.bin.display().to_string(),
        ]
    }

    fn run(&self, sub: &str, extra: &[&str]) -> Output {
        let dirs = self.dirs();
        let mut args = vec!["cni", sub];
        args.extend(dirs.iter().map(String::as_str));
        args.extend(extra);
        netshim(&args)
    }

    fn install(&self, extra: &[&str]) -> Value {
        let dirs = self.dirs();
        let mut args = vec!["cni", "install"];
        args.extend(dirs.iter().map(String::as_str));
        args.extend(extra);
        netshim_json(&args)
    }

    fn uninstall(&self) -> Value {
        let dirs = self.dirs();
        let mut args = vec!["cni", "uninstall"];
        args.extend(dirs.iter().map(String::as_str));
        netshim_json(&args)
    }

    /// Every file of both directories (hidden ones too): bytes, mode, inode, mtime.
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32, u64, i64)> {
        let mut files = BTreeMap::new();
        for dir in [&self.conf, &self.bin] {
            for path in netshim_tests::cni_runtime::walk(dir) {
                let m = std::fs::metadata(&path).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path, (bytes, m.mode(), m.ino(), m.mtime_nsec()));
            }
        }
        files
    }
}

/// Bytes and modes only (a restored file is a new inode).
fn contents(s: &BTreeMap<PathBuf, (Vec<u8>, u32, u64, i64)>) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    s.iter()
        .map(|(p, (b, m, _, _))| (p.clone(), (b.clone(), *m)))
        .collect()
}

fn bridge_portmap(version: &str) -> String {
    // As containerd's and podman's examples write it (host-local IPAM, portmap chained).
    format!(
        r#"{{
  "cniVersion": "{version}",
  "name": "containerd-net",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "promiscMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "10.88.0.0/16"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{
      "type": "portmap",
      "capabilities": {{"portMappings": true}}
    }}
  ]
}}
"#
    )
}

const FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "flannel",
      "delegate": {
        "hairpinMode": true,
        "isDefaultGateway": true
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
"#;

const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {
      "type": "calico",
      "log_level": "info",
      "log_file_path": "/var/log/calico/cni/cni.log",
      "datastore_type": "kubernetes",
      "nodename": "node-1",
      "mtu": 0,
      "ipam": {
          "type": "calico-ipam"
      },
      "policy": {
          "type": "k8s"
      },
      "kubernetes": {
          "kubeconfig": "/etc/cni/net.d/calico-kubeconfig"
      }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {"portMappings": true}
    },
    {
      "type": "bandwidth",
      "capabilities": {"bandwidth": true}
    }
  ]
}"#;

const BRIDGE_CONF: &str = r#"{
	"cniVersion": "0.4.0",
	"name": "mynet",
	"type": "bridge",
	"bridge": "cni0",
	"isGateway": true,
	"ipMasq": true,
	"ipam": {
		"type": "host-local",
		"subnet": "10.22.0.0/16",
		"routes": [ { "dst": "0.0.0.0/0" } ]
	}
}
"#;

/// One shape: installed, installed again, uninstalled.
fn round_trip(node: &Node, file: &str, chained_file: &str, version: &str, network: &str) {
    let before = node.snapshot();
    let original: Value =
        serde_json::from_slice(&std::fs::read(node.conf.join(file)).unwrap()).unwrap();
    let mode = std::fs::metadata(node.conf.join(file)).unwrap().mode() & 0o7777;

    let r = node.install(&[]);
    let chained = node.conf.join(chained_file);
    assert_eq!(r["chain"]["path"], chained.display().to_string(), "{r}");
    assert_eq!(r["chain"]["network"], network, "{r}");
    assert_eq!(r["chain"]["cni_version"], version, "{r}");
    assert_eq!(r["chain"]["changed"], true, "{r}");
    assert_eq!(r["binary"]["changed"], true, "{r}");
    let list: Value = serde_json::from_slice(&std::fs::read(&chained).unwrap()).unwrap();
    assert_eq!(
        list["cniVersion"], version,
        "{file}: the list keeps its version"
    );
    assert_eq!(list["name"], network);
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(
        plugins.last().unwrap(),
        &json!({"type": "netshim"}),
        "{list}"
    );
    // The primary's plugins are untouched, in their order.
    let theirs: Vec<Value> = match original.get("plugins") {
        Some(p) => p.as_array().unwrap().clone(),
        None => vec![original.clone()],
    };
    assert_eq!(plugins[..plugins.len() - 1], theirs[..], "{file}");
    assert_eq!(
        std::fs::metadata(&chained).unwrap().mode() & 0o7777,
        mode,
        "{file}: the mode is kept"
    );
    if chained_file != file {
        assert!(
            !node.conf.join(file).exists(),
            "{file} went: the runtimes would read it before the .conflist"
        );
    }
    let bin = node.bin.join("netshim");
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(netshim_bin()).unwrap(),
        "the binary copied"
    );
    assert_eq!(std::fs::metadata(&bin).unwrap().mode() & 0o777, 0o755);

    // Idempotent: nothing is written, not even the same bytes again.
    let installed = node.snapshot();
    let again = node.install(&[]);
    assert_eq!(again["chain"]["changed"], false, "{again}");
    assert_eq!(again["binary"]["changed"], false, "{again}");
    assert_eq!(
        node.snapshot(),
        installed,
        "{file}: a second install changed a file"
    );

    let u = node.uninstall();
    assert_eq!(u["binary_removed"], bin.display().to_string(), "{u}");
    assert_eq!(
        contents(&node.snapshot()),
        contents(&before),
        "{file}: uninstall left the directories other than they were"
    );
}

#[test]
fn every_published_shape_is_chained_idempotently_and_given_back_byte_for_byte() {
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        let node = Node::new();
        node.write(
            "10-containerd-net.conflist",
            &bridge_portmap(version),
            0o644,
        );
        round_trip(
            &node,
            "10-containerd-net.conflist",
            "10-containerd-net.conflist",
            version,
            "containerd-net",
        );
    }
    let node = Node::new();
    node.write("10-flannel.conflist", FLANNEL, 0o644);
    round_trip(
        &node,
        "10-flannel.conflist",
        "10-flannel.conflist",
        "0.3.1",
        "cbr0",
    );

    let node = Node::new();
    node.write("10-calico.conflist", CALICO, 0o600);
    node.write("calico-kubeconfig", "apiVersion: v1\nkind: Config\n", 0o600);
    round_trip(
        &node,
        "10-calico.conflist",
        "10-calico.conflist",
        "0.3.1",
        "k8s-pod-network",
    );

    let node = Node::new();
    node.write("10-mynet.conf", BRIDGE_CONF, 0o640);
    // A later file the runtimes do not read first stays as it is.
    node.write(
        "99-loopback.conf",
        r#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#,
        0o644,
    );
    round_trip(
        &node,
        "10-mynet.conf",
        "10-mynet.conflist",
        "0.4.0",
        "mynet",
    );
}

#[test]
fn chain_into_picks_a_network_by_name_or_file_and_bad_input_changes_nothing() {
    let node = Node::new();
    node.write("10-a.conflist", &bridge_portmap("1.0.0"), 0o644);
    node.write(
        "20-b.conflist",
        r#"{"cniVersion":"0.4.0","name":"b","plugins":[{"type":"ptp"}]}"#,
        0o644,
    );
    let before = node.snapshot();
    for chain_into in ["b", "20-b.conflist"] {
        let r = node.install(&["--chain-into", chain_into]);
        assert_eq!(r["chain"]["network"], "b", "{r}");
        assert_eq!(
            std::fs::read(node.conf.join("10-a.conflist")).unwrap(),
            bridge_portmap("1.0.0").as_bytes(),
            "the first file is not the one named"
        );
        node.uninstall();
        assert_eq!(contents(&node.snapshot()), contents(&before));
    }

    // Refused with exit 2, naming what is wrong, and nothing written (the files put back
    // above are new inodes).
    let before = node.snapshot();
    let refused = |extra: &[&str], needle: &str| {
        let out = node.run("install", extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
        assert_eq!(node.snapshot(), before, "{extra:?} changed a file");
    };
    refused(&["--chain-into", "nosuch"], "no configuration");
    refused(
        &["--plugin-json", r#"{"model": "bogus"}"#],
        "Unknown type bogus",
    );
    refused(&["--plugin-json", r#"{"type": "bridge"}"#], "\"type\"");
    refused(&["--plugin-json", "{"], "not JSON");

    // What the runtimes cannot read either: the first file names it.
    for (text, needle) in [
        ("{ not json", "not JSON"),
        (
            r#"{"cniVersion":"0.2.0","name":"old","plugins":[{"type":"ptp"}]}"#,
            "0.2.0",
        ),
        (r#"{"cniVersion":"1.0.0","name":"e","plugins":[]}"#, "empty"),
        (
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}"#,
            "name",
        ),
    ] {
        let bad = Node::new();
        bad.write("05-bad.conflist", text, 0o644);
        let snap = bad.snapshot();
        let out = bad.run("install", &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains("05-bad.conflist") && stderr.contains(needle),
            "{stderr}"
        );
        assert_eq!(bad.snapshot(), snap, "{text}: something was written");
    }
    // No configuration at all, and a symlinked one.
    let empty = Node::new();
    let out = empty.run("install", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no CNI network configuration"));
    std::os::unix::fs::symlink(
        node.conf.join("10-a.conflist"),
        empty.conf.join("10-link.conflist"),
    )
    .unwrap();
    let out = empty.run("install", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
    assert!(!empty.bin.join("netshim").exists());

    // Uninstall of a node netshim was never installed on changes nothing.
    let out = node.run("uninstall", &[]);
    assert!(out.status.success());
    assert_eq!(node.snapshot(), before);
}

#[test]
fn a_pod_gets_its_tap_through_the_installed_list_and_binary() {
    if plugins_missing() {
        return;
    }
    let node = Node::new();
    // The bin directory a node has: the reference plugins (install adds netshim).
    for plugin in ["bridge", "host-local", "portmap"] {
        std::fs::copy(Path::new(PLUGIN_DIR).join(plugin), node.bin.join(plugin)).unwrap();
    }
    let (host, sandbox) = namespaces("inst");
    let data = data_dir("inst");
    let net = subnet();
    let mut list: Value = serde_json::from_str(&bridge_portmap("1.0.0")).unwrap();
    list["plugins"][0]["bridge"] = json!(format!("nshib{:02x}{:02x}", net.0, net.1));
    list["plugins"][0]["ipam"] = ipam(data.path(), net);
    list["plugins"][0]["ipMasq"] = json!(false);
    node.write(
        "10-net.conflist",
        &serde_json::to_string_pretty(&list).unwrap(),
        0o644,
    );
    let before = node.snapshot();
    node.install(&[]);
    let installed: Value =
        serde_json::from_slice(&std::fs::read(node.conf.join("10-net.conflist")).unwrap()).unwrap();

    // ADD through the list as libcni runs it, every plugin from the bin directory.
    let rt = Runtime::new(&host, &sandbox);
    let mut prev: Option<Value> = None;
    let plugins = installed["plugins"].as_array().unwrap();
    for plugin in plugins {
        let mut conf = plugin.clone();
        conf["cniVersion"] = installed["cniVersion"].clone();
        conf["name"] = installed["name"].clone();
        if let Some(p) = &prev {
            conf["prevResult"] = p.clone();
        }
        let bin = node.bin.join(plugin["type"].as_str().unwrap());
        let out = rt.run(&bin, "ADD", &serde_json::to_vec(&conf).unwrap(), &[]);
        prev = Some(ok_json(&out, &format!("ADD {}", plugin["type"])));
    }
    let result = prev.unwrap();
    assert!(
        result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "tap0_kata"),
        "{result}"
    );
    assert!(
        sandbox.link_exists("tap0_kata"),
        "the pod's netns has its tap"
    );
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["endpoints"][0]["tap"], "tap0_kata", "{status}");
    assert_eq!(status["health"], "ok", "{status}");

    // DEL in reverse takes it away; uninstall leaves the node as it was.
    for plugin in plugins.iter().rev() {
        let mut conf = plugin.clone();
        conf["cniVersion"] = installed["cniVersion"].clone();
        conf["name"] = installed["name"].clone();
        conf["prevResult"] = result.clone();
        let bin = node.bin.join(plugin["type"].as_str().unwrap());
        let out = rt.run(&bin, "DEL", &serde_json::to_vec(&conf).unwrap(), &[]);
        assert!(out.status.success(), "DEL {}: {out:?}", plugin["type"]);
    }
    assert!(!sandbox.link_exists("tap0_kata"));
    node.uninstall();
    assert_eq!(contents(&node.snapshot()), contents(&before));
}
