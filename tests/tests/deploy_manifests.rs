//! The manifests of deploy/ against the binary they run: every YAML parses, the kinds are
//! there, the DaemonSet gives the agent what it refuses to run without (hostPID, the host's
//! network, the hostPaths at the paths its arguments name), its probes and Service reach
//! the port it listens on, its image is this version's, its program is the Containerfile's
//! entrypoint, and its arguments are ones the real binary's CLI takes. The examples parse
//! and chain netshim last.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use netshim_tests::netshim_cli::netshim_bin;
use serde::Deserialize;
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn all_documents() -> Vec<Value> {
    let mut docs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        docs.extend(documents(&f));
    }
    docs
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// The value after `flag` in `args`.
fn arg<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[i + 1]
}

/// The Containerfile's instruction `name` (its rest of line).
fn instruction(containerfile: &str, name: &str) -> String {
    containerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Containerfile"))
        .trim()
        .to_owned()
}

#[test]
fn the_daemonset_gives_the_agent_what_it_needs_and_runs_a_command_the_binary_takes() {
    let docs = all_documents();
    for kind in [
        "ServiceAccount",
        "DaemonSet",
        "Service",
        "ServiceMonitor",
        "RuntimeClass",
    ] {
        assert!(!of_kind(&docs, kind).is_empty(), "no {kind} in deploy/");
    }
    let ds = of_kind(&docs, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["hostPID"], true,
        "the agent refuses a pid namespace of its own"
    );
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "the selector matches the pods"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["privileged"], true);

    // Image: this version's.
    let image = c["image"].as_str().unwrap();
    assert_eq!(
        image.rsplit_once(':').map(|(_, tag)| tag),
        Some(env!("CARGO_PKG_VERSION")),
        "{image}"
    );

    // Command: the Containerfile's program, and arguments the CLI takes.
    let command = strings(&c["command"]);
    let containerfile = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    let entrypoint: Vec<String> =
        serde_json::from_str(&instruction(&containerfile, "ENTRYPOINT")).unwrap();
    assert_eq!(
        command[0], entrypoint[0],
        "the DaemonSet runs the image's binary"
    );
    let copy = instruction(&containerfile, "COPY");
    assert!(copy.ends_with(&format!(" {}", command[0])), "{copy}");
    assert_eq!(instruction(&containerfile, "FROM"), "scratch");
    let args = &command[1..];
    assert_eq!(args[0], "agent");
    let accepts = |args: &[String]| {
        let out = Command::new(netshim_bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = accepts(args);
    assert_eq!(code, Some(0), "netshim {args:?} --help: {stderr}");
    // The check can fail: a misspelled flag or a bad value is exit 2.
    let mut wrong = args.to_vec();
    wrong[1] = "--conf-directory".into();
    assert_eq!(accepts(&wrong).0, Some(2), "{wrong:?}");
    let mut wrong = args.to_vec();
    let listen = args.iter().position(|a| a == "--listen").unwrap();
    wrong[listen + 1] = "not-an-address".into();
    assert_eq!(accepts(&wrong).0, Some(2), "{wrong:?}");
    // The Containerfile's default command too.
    let cmd: Vec<String> = serde_json::from_str(&instruction(&containerfile, "CMD")).unwrap();
    assert_eq!(accepts(&cmd).0, Some(0), "CMD {cmd:?}");

    // Mounts: the host paths the agent and the plugin share, where the arguments say.
    let volumes: Vec<&Value> = pod["volumes"].as_array().unwrap().iter().collect();
    let mounts: Vec<&Value> = c["volumeMounts"].as_array().unwrap().iter().collect();
    let mounted_at = |host: &str| -> (String, Option<String>) {
        let volume = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume of {host}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("volume {} is not mounted", volume["name"]));
        (
            mount["mountPath"].as_str().unwrap().to_owned(),
            mount["mountPropagation"].as_str().map(str::to_owned),
        )
    };
    assert_eq!(mounted_at("/etc/cni/net.d").0, arg(args, "--conf-dir"));
    assert_eq!(mounted_at("/opt/cni/bin").0, arg(args, "--bin-dir"));
    for same in ["/sys/fs/bpf", "/run/netshim", "/run/netns"] {
        assert_eq!(
            mounted_at(same).0,
            same,
            "{same} is where netshim looks for it"
        );
    }
    assert_eq!(
        mounted_at("/run/netns").1.as_deref(),
        Some("HostToContainer"),
        "namespaces made after the agent started must show"
    );

    // Port: probes, container port, Service and the scrape annotation agree with --listen.
    let port: u64 = arg(args, "--listen")
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port);
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    let svc = of_kind(&docs, "Service")[0];
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port);
    assert_eq!(
        svc["spec"]["selector"], ds["spec"]["template"]["metadata"]["labels"],
        "the Service selects the agents"
    );
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        svc["metadata"]["labels"]
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn the_example_conflist_chains_netshim_last_and_the_plugin_takes_its_keys() {
    let path = deploy().join("examples/fcnet.conflist");
    let list: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let plugins = list["plugins"].as_array().unwrap();
    let netshim = plugins.last().unwrap();
    assert_eq!(netshim["type"], "netshim", "{list}");
    assert!(
        !plugins.iter().any(|p| p["type"] == "tc-redirect-tap"),
        "netshim replaces tc-redirect-tap"
    );
    // The installer's own check of an entry (the plugin's parser) takes it.
    let mut entry = netshim.as_object().unwrap().clone();
    entry.remove("type");
    let out = Command::new(netshim_bin())
        .args(["cni", "install", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("bin")).unwrap();
    let mut primary = list.clone();
    primary["plugins"] = Value::Array(plugins[..plugins.len() - 1].to_vec());
    std::fs::write(
        tmp.path().join("10-fcnet.conflist"),
        serde_json::to_vec_pretty(&primary).unwrap(),
    )
    .unwrap();
    let out = Command::new(netshim_bin())
        .args(["cni", "install", "--json", "--conf-dir"])
        .arg(tmp.path())
        .arg("--bin-dir")
        .arg(tmp.path().join("bin"))
        .arg("--plugin-json")
        .arg(serde_json::to_string(netshim).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chained: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("10-fcnet.conflist")).unwrap())
            .unwrap();
    assert_eq!(
        chained, list,
        "the installer makes the example from its primary"
    );

    // The containerd example is TOML with the CRI's CNI table.
    let toml_text =
        std::fs::read_to_string(deploy().join("examples/containerd-config.toml")).unwrap();
    let cfg: toml::Value = toml::from_str(&toml_text).unwrap();
    let cni = &cfg["plugins"]["io.containerd.grpc.v1.cri"]["cni"];
    assert_eq!(cni["conf_dir"].as_str(), Some("/etc/cni/net.d"));
    assert_eq!(cni["bin_dir"].as_str(), Some("/opt/cni/bin"));
}
