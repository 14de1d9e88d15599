//! netshim under a real container runtime: podman 4.3 (Debian) with its CNI backend and
//! runc, netshim chained after bridge + host-local in a conflist, installed the way a podman
//! user installs a CNI plugin (a plugin directory holding the reference plugins and netshim).
//! podman drives the plugins through libcni: VERSION, then ADD of each plugin with the
//! previous one's result; DEL in reverse order; never CHECK.
//!
//! Nothing of the host's podman setup is used or changed: podman, its CNI dirs and
//! host-local's leases live in a temporary directory, and podman runs inside a network
//! namespace the test creates ([`netshim_tests::podman_env`]). Containers run from a
//! busybox-static rootfs (`podman run --rootfs`).
//!
//! Every CNI call is logged in order (the plugin directory holds wrappers that append
//! `<plugin> <CNI_COMMAND> <CNI_IFNAME>` to a file before they exec the real plugin).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Output,
    sync::MutexGuard,
};

use netshim_tests::{
    leaks::netshim_dirs,
    netns_fixture::{random_u32, unique_octet},
    netshim_cli::{netshim_bin, netshim_json},
    podman_env::{podman_missing, serial, PodmanEnv, PLUGIN_DIR},
    tap_reader::{parse_mac, TapQueue},
    traffic::{probe_path, ProbePath},
    TestNetns,
};
use serde_json::{json, Value};

/// The container interface podman asks for.
const IFNAME: &str = "eth0";

/// A podman of its own, in a temporary directory, with one CNI network. Drop (of `env`)
/// removes its containers, the directory and libcni's cache entries of the network, then
/// the host netns.
struct Podman {
    env: PodmanEnv,
    bridge: String,
    /// The network is 10.a.b.0/24, gateway 10.a.b.1 on the bridge.
    subnet: (u8, u8),
    /// podman tests run one at a time (see [`serial`]).
    _serial: MutexGuard<'static, ()>,
}

impl Podman {
    /// A podman whose network `nsh-pm-<n>` is bridge + host-local + netshim, in
    /// `cni_version`, with `netshim_keys` added to netshim's entry.
    fn new(tag: &str, cni_version: &str, netshim_keys: Value) -> Podman {
        let serial = serial();
        let n = random_u32();
        let dir = std::env::temp_dir().join(format!(
            "netshim-podman-{tag}-{}-{n:08x}",
            std::process::id()
        ));
        let host = TestNetns::new(&format!("nsh-pm-{tag}-h"));
        let podman = Podman {
            env: PodmanEnv::new(dir, host, format!("nsh-pm-{n:08x}")),
            bridge: format!("nshbr{:04x}", n & 0xffff),
            subnet: (unique_octet(), unique_octet()),
            _serial: serial,
        };
        podman.write_plugins();
        podman.write_conflist(cni_version, netshim_keys);
        podman
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.env.path(rel)
    }

    fn host(&self) -> &TestNetns {
        &self.env.host
    }

    fn network(&self) -> &str {
        &self.env.network
    }

    /// The CNI plugin directory: a logging wrapper per plugin that execs the real one.
    fn write_plugins(&self) {
        let log = self.path("calls.log");
        let plugins = [
            ("bridge", Path::new(PLUGIN_DIR).join("bridge")),
            ("host-local", Path::new(PLUGIN_DIR).join("host-local")),
            ("netshim", netshim_bin()),
        ];
        for (name, real) in plugins {
            let script = format!(
                "#!/bin/sh\nprintf '%s %s %s\\n' {name} \"$CNI_COMMAND\" \"$CNI_IFNAME\" >> '{}'\n\
                 exec '{}'\n",
                log.display(),
                real.display()
            );
            let path = self.path("bin").join(name);
            std::fs::write(&path, script).expect("write a plugin wrapper");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod a plugin wrapper");
        }
    }

    fn write_conflist(&self, cni_version: &str, netshim_keys: Value) {
        let (a, b) = self.subnet;
        let mut netshim = json!({"type": "netshim"});
        for (k, v) in netshim_keys
            .as_object()
            .expect("netshim keys are an object")
        {
            netshim[k] = v.clone();
        }
        let list = json!({
            "cniVersion": cni_version,
            "name": self.network(),
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "dataDir": self.path("leases"),
                          "ranges": [[{"subnet": format!("10.{a}.{b}.0/24")}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                netshim,
            ]
        });
        std::fs::write(
            self.path("net.d")
                .join(format!("{}.conflist", self.network())),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .expect("write the conflist");
    }

    /// Runs `podman args…` from a thread inside the host netns.
    fn podman(&self, args: &[&str]) -> Output {
        self.env.podman(args)
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?} exited {}: {}{}\nCNI calls:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.calls().join("\n")
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `podman run -d` of a container sleeping in the busybox rootfs, on the network;
    /// `ifname`: the container interface's name (podman's default: eth0).
    fn run(&self, name: &str, ifname: Option<&str>) -> Output {
        let rootfs = self.path("rootfs").display().to_string();
        let network = match ifname {
            Some(i) => format!("{}:interface_name={i}", self.network()),
            None => self.network().to_owned(),
        };
        self.podman(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &network,
            "--rootfs",
            &rootfs,
            "/bin/busybox",
            "sleep",
            "3600",
        ])
    }

    /// Runs a container and returns what the test needs of it.
    fn container(&self, name: &str, ifname: Option<&str>) -> Container {
        let out = self.run(name, ifname);
        assert!(
            out.status.success(),
            "podman run exited {}: {}\nCNI calls:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.calls().join("\n")
        );
        let key = self.podman_ok(&[
            "inspect",
            name,
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
        ]);
        let ip = self.podman_ok(&[
            "inspect",
            name,
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network()
            ),
        ]);
        let netns = TestNetns::existing(&key);
        let cookie = netshim_json(&["status", "--netns", &key])["netns_cookie"]
            .as_u64()
            .expect("netns_cookie");
        Container {
            name: name.to_owned(),
            netns,
            ip: ip
                .parse()
                .unwrap_or_else(|e| panic!("container IP {ip:?}: {e}")),
            cookie,
        }
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 1)
    }

    /// The CNI calls so far, one `<plugin> <command> <ifname>` line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.path("calls.log"));
    }

    /// host-local's leases: the files of its data dir named by an IP address.
    fn leases(&self) -> Vec<String> {
        self.env.leases()
    }

    /// `podman rm -f`: afterwards netshim has no pin, state or lock file of the container's
    /// netns, host-local no lease, and podman's netns is gone.
    fn remove(&self, c: &Container) {
        self.podman_ok(&["rm", "--force", "--time", "0", &c.name]);
        assert_eq!(
            netshim_dirs(c.cookie),
            Vec::<PathBuf>::new(),
            "netshim left state"
        );
        assert_eq!(self.leases(), Vec::<String>::new(), "host-local lease left");
        assert!(!c.netns.path().exists(), "podman's netns is gone");
    }

    /// Datagrams both ways between the bridge (the gateway's address) and `tap` of the
    /// container's pod interface `pod_dev`.
    fn assert_traffic(&self, c: &Container, pod_dev: &str, tap: &str) {
        let path = ProbePath {
            client: self.host(),
            client_dev: &self.bridge,
            client_ip: self.gateway(),
            client_mac: parse_mac(&self.host().link_mac(&self.bridge)).unwrap(),
            sandbox: &c.netns,
            pod_ip: c.ip,
            pod_mac: parse_mac(&c.netns.link_mac(pod_dev)).unwrap(),
        };
        let forwarded = probe_path(&path, tap, 5);
        assert_eq!(
            (forwarded.to_vm, forwarded.from_vm),
            (5, 5),
            "through {tap} of {} ({pod_dev})",
            c.name
        );
    }
}

/// A running container.
struct Container {
    name: String,
    /// Its netns (podman's `/run/netns/netns-<uuid>`; the handle never deletes it).
    netns: TestNetns,
    ip: Ipv4Addr,
    cookie: u64,
}

/// netshim's view of the container's netns: (pod device, its tap, connected) per endpoint.
fn endpoints(c: &Container) -> Vec<(String, String, bool)> {
    let status = netshim_json(&["status", "--netns", &c.netns.path().display().to_string()]);
    status["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_owned(),
                e["tap"].as_str().unwrap_or_default().to_owned(),
                e["connected"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The ADD and DEL calls of a call log (libcni also asks every plugin for VERSION).
fn adds_and_dels(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .map(|c| c.trim_end())
        .filter(|c| !c.contains(" VERSION"))
        .collect()
}

/// `podman run` on bridge + host-local + netshim: the container's netns has its pod
/// interface connected to tap0_kata, frames cross both ways through the tap, and
/// `podman rm -f` leaves no pin, state, lock or lease.
fn run_and_remove(cni_version: &str) {
    if podman_missing() {
        return;
    }
    let podman = Podman::new("run", cni_version, json!({}));
    let c = podman.container("nsh-pm-run", None);
    assert_eq!(
        endpoints(&c),
        vec![(IFNAME.to_owned(), "tap0_kata".to_owned(), true)],
        "CNI calls:\n{}",
        podman.calls().join("\n")
    );
    podman.assert_traffic(&c, IFNAME, "tap0_kata");
    assert_eq!(podman.leases(), vec![c.ip.to_string()]);
    // podman's view: the container's address and MAC are the pod interface's.
    let network = format!("(index .NetworkSettings.Networks \"{}\")", podman.network());
    let mac = podman.podman_ok(&[
        "inspect",
        &c.name,
        "--format",
        &format!("{{{{{network}.MacAddress}}}}"),
    ]);
    assert_eq!(mac, c.netns.link_mac(IFNAME), "podman inspect's MacAddress");
    let prefix = podman.podman_ok(&[
        "inspect",
        &c.name,
        "--format",
        &format!("{{{{{network}.IPPrefixLen}}}}"),
    ]);
    assert_eq!(prefix, "24", "podman inspect's IPPrefixLen");
    assert_eq!(
        adds_and_dels(&podman.calls()),
        ["bridge ADD eth0", "host-local ADD eth0", "netshim ADD eth0"],
        "libcni's ADD chain"
    );
    podman.remove(&c);
}

#[test]
fn podman_run_and_rm_in_cni_0_4_0() {
    run_and_remove("0.4.0");
}

#[test]
fn podman_run_and_rm_in_cni_1_0_0() {
    run_and_remove("1.0.0");
}

/// podman network reload (DEL then ADD on the live netns) 20 times in a row, with a VMM
/// holding the tap: every reload succeeds, runs DEL then ADD through the whole chain in
/// libcni's order, and leaves the pod interface connected to a tap that carries frames both
/// ways.
///
/// netshim runs with `"report_tap": false`, as docs/cni.md tells podman users: podman takes
/// the interface name of a reload's ADD from the previous result, at random among the
/// interfaces that have a `sandbox`, and tears down under the name it stored when the
/// container was made, so a result that lists netshim's tap (and firecracker's VM
/// interface) makes one reload in a few fail and leak host-local's lease.
#[test]
fn podman_network_reload_20_times() {
    if podman_missing() {
        return;
    }
    let podman = Podman::new("reload", "1.0.0", json!({"report_tap": false}));
    let c = podman.container("nsh-pm-reload", None);
    for round in 1..=20 {
        let before = endpoints(&c);
        let (pod, tap) = (&before[0].0, &before[0].1);
        // A VMM holds the tap; its queue goes dead when DEL removes the tap.
        let vmm = TapQueue::open_in(c.netns.path(), tap, false, None).expect("a VMM's queue");
        podman.clear_calls();
        let out = podman.podman(&["network", "reload", &c.name]);
        drop(vmm);
        let calls = podman.calls();
        assert!(
            out.status.success(),
            "reload {round} exited {}: {}\nCNI calls in order:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            calls.join("\n")
        );
        let after = endpoints(&c);
        assert_eq!(after.len(), 1, "reload {round}: {after:?}");
        let (new_pod, new_tap, connected) = &after[0];
        assert!(connected, "reload {round}: not connected: {after:?}");
        let order: Vec<String> = ["netshim DEL", "bridge DEL", "host-local DEL"]
            .iter()
            .map(|c| format!("{c} {pod}"))
            .chain(
                ["bridge ADD", "host-local ADD", "netshim ADD"]
                    .iter()
                    .map(|c| format!("{c} {new_pod}")),
            )
            .collect();
        assert_eq!(adds_and_dels(&calls), order, "reload {round}");
        assert_eq!(
            (new_pod.as_str(), new_tap.as_str()),
            (IFNAME, "tap0_kata"),
            "reload {round}"
        );
        assert_eq!(podman.leases(), vec![c.ip.to_string()], "reload {round}");
        podman.assert_traffic(&c, new_pod, new_tap);
    }
}

/// A netshim option netshim refuses: `podman run` fails (ADD is refused), and libcni's DEL of
/// the whole chain still reaches bridge and host-local, so no lease, veth or netshim state
/// is left behind.
fn refused_option_leaks_nothing(netshim_keys: Value) {
    if podman_missing() {
        return;
    }
    let podman = Podman::new("bad", "1.0.0", netshim_keys.clone());
    let out = podman.run("nsh-pm-bad", None);
    let calls = podman.calls();
    assert!(
        !out.status.success(),
        "podman run with netshim {netshim_keys} succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("netshim"),
        "podman's error names netshim: {stderr}"
    );
    assert_eq!(
        adds_and_dels(&calls),
        [
            "bridge ADD eth0",
            "host-local ADD eth0",
            "netshim ADD eth0",
            "netshim DEL eth0",
            "bridge DEL eth0",
            "host-local DEL eth0",
        ],
        "libcni ran the whole DEL chain after the refused ADD"
    );
    assert_eq!(
        podman.leases(),
        Vec::<String>::new(),
        "host-local lease leaked"
    );
    let bridge_ports = podman
        .host()
        .ip(&["-o", "link", "show", "master", &podman.bridge]);
    assert_eq!(
        bridge_ports.trim(),
        "",
        "a container veth is left on the bridge"
    );
}

#[test]
fn podman_run_with_an_invalid_tap_name_leaks_no_lease() {
    refused_option_leaks_nothing(json!({"tap_name": "bad/name"}));
}

#[test]
fn podman_run_with_macvtap_and_tap_name_leaks_no_lease() {
    refused_option_leaks_nothing(json!({"model": "macvtap", "tap_name": "vm0"}));
}

/// A container interface that has the name netshim gives the tap (what podman's reload
/// does at random, here asked for): the tap goes beside it as `tap0_kata-vm`, connected.
#[test]
fn podman_container_interface_named_like_the_tap() {
    if podman_missing() {
        return;
    }
    let podman = Podman::new("named", "1.0.0", json!({}));
    let c = podman.container("nsh-pm-named", Some("tap0_kata"));
    assert_eq!(
        endpoints(&c),
        vec![("tap0_kata".to_owned(), "tap0_kata-vm".to_owned(), true)],
        "CNI calls:\n{}",
        podman.calls().join("\n")
    );
    assert_eq!(
        c.netns.link_json("tap0_kata")["linkinfo"]["info_kind"],
        "veth",
        "the pod interface is the bridge plugin's veth"
    );
    podman.assert_traffic(&c, "tap0_kata", "tap0_kata-vm");
    podman.remove(&c);
}
