//! The two topologies, their paths, and building / tearing down one path.
//!
//! ```text
//! pair:    client [eth0 10.201.0.1] <-veth-> shim [c0 ==path== s0] <-veth-> server [eth0 10.201.0.2]
//!          (direct: client eth0 <-veth-> server eth0, no shim netns in between)
//! sandbox: client [eth0 10.202.0.1] <-veth-> sandbox [eth0 ==netshim attach== tap0_kata]
//!          <-> vm-standin <-> guest [eth0 10.202.0.2, eth0's MAC]
//! ```
//!
//! The eBPF paths come in twins without and with netshim's source guard (`<path>+guard`):
//! `connect --guard enforce --guard-mac <server eth0's MAC> --guard-allow 10.201.0.2` guards
//! what the server sends (s0 is connect's "VM" side), attach's default (`enforce`) what the
//! guest sends; the unguarded twin is connect's default (off) or `attach --guard off`. The guard sees the server → client
//! direction only: the reverse runs (TCP and UDP `-R`) are the ones that cross it.
//!
//! The namespaces live for the whole run; each path's links, datapath and stand-in are made
//! fresh for every (round, path) and removed right after its measurements, so no path
//! inherits state (neighbour entries, learned MACs, GRO or offload changes, pins) from another.
//! Every undo step is registered with the cleanup registry before the thing it undoes.

use crate::bench::measure::{run_bounded, Endpoints};
use crate::cmd;
use crate::standin::{self, Queue, StandIn};
use crate::topology::{self, Action, Token};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod setup;
pub(super) use setup::quiet;
pub use setup::setup;

pub const PAIR_CLIENT_ADDR: &str = "10.201.0.1/24";
pub const PAIR_SERVER_ADDR: &str = "10.201.0.2/24";
pub const PAIR_SERVER_IP: &str = "10.201.0.2";
pub const SANDBOX_CLIENT_ADDR: &str = "10.202.0.1/24";
pub const SANDBOX_POD_ADDR: &str = "10.202.0.2/24";
pub const SANDBOX_POD_IP: &str = "10.202.0.2";
pub const PAIR_CLIENT_IP: &str = "10.201.0.1";
pub const SANDBOX_CLIENT_IP: &str = "10.202.0.1";
/// An address the server (pair) or guest (sandbox) does not own, for the guard probe.
pub const PAIR_SPOOFED_IP: &str = "10.201.0.99";
pub const SANDBOX_SPOOFED_IP: &str = "10.202.0.99";
const IFNAME: &str = "eth0";
const SHIM_CLIENT_SIDE: &str = "c0";
const SHIM_SERVER_SIDE: &str = "s0";
const BRIDGE: &str = "br0";
const BRIDGE_NF_OFF: &str = "for f in /proc/sys/net/bridge/bridge-nf-call-*; do \
    if [ -w \"$f\" ]; then echo 0 > \"$f\"; fi; done";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topo {
    Pair,
    Sandbox,
}

impl Topo {
    pub fn name(self) -> &'static str {
        match self {
            Topo::Pair => "pair",
            Topo::Sandbox => "sandbox",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    /// client eth0 <-> server eth0, one veth pair (the floor).
    Direct,
    /// A linux bridge in the shim netns with c0 and s0.
    Bridge,
    /// `netshim connect --netns shim c0 s0`.
    Connect {
        backend: &'static str,
        fast_path: Option<&'static str>,
        /// The source guard on what s0 receives from the server (eBPF only).
        guard: bool,
    },
    /// `netshim attach --netns sandbox`, then the VM stand-in.
    Attach {
        model: &'static str,
        backend: Option<&'static str>,
        fast_path: Option<&'static str>,
        /// The source guard on what the guest sends (eBPF only).
        guard: bool,
    },
}

#[derive(Clone, Debug)]
pub struct PathSpec {
    pub topo: Topo,
    pub name: &'static str,
    pub kind: Kind,
    pub about: &'static str,
    /// A `+guard` path: the name of its twin without the guard (same topology).
    pub guard_twin_of: Option<&'static str>,
}

impl PathSpec {
    pub fn id(&self) -> String {
        format!("{}/{}", self.topo.name(), self.name)
    }

    /// Whether the path is set up by netshim (what `--compare-netshim` runs twice).
    pub fn uses_netshim(&self) -> bool {
        matches!(self.kind, Kind::Connect { .. } | Kind::Attach { .. })
    }

    /// Whether the path's datapath is netshim's eBPF program.
    pub fn runs_netshim_ebpf(&self) -> bool {
        match self.kind {
            Kind::Connect { backend, .. } => backend == "ebpf",
            Kind::Attach { model, backend, .. } => {
                model == "tcfilter" && backend.is_none_or(|b| b == "ebpf")
            }
            Kind::Direct | Kind::Bridge => false,
        }
    }

    /// Whether the path runs netshim's source guard.
    pub fn guarded(&self) -> bool {
        matches!(
            self.kind,
            Kind::Connect { guard: true, .. } | Kind::Attach { guard: true, .. }
        )
    }
}

/// Every path, in the order a round runs them.
pub fn all_paths() -> Vec<PathSpec> {
    let p = |topo, name, kind, about| PathSpec {
        topo,
        name,
        kind,
        about,
        guard_twin_of: None,
    };
    let guarded = |spec: &PathSpec, name, about| {
        let mut kind = spec.kind.clone();
        if let Kind::Connect { guard, .. } | Kind::Attach { guard, .. } = &mut kind {
            *guard = true;
        }
        PathSpec {
            name,
            kind,
            about,
            guard_twin_of: Some(spec.name),
            ..spec.clone()
        }
    };
    let pair_ebpf = p(
        Topo::Pair,
        "ebpf",
        Kind::Connect {
            backend: "ebpf",
            fast_path: Some("off"),
            guard: false,
        },
        "netshim connect --tc-backend ebpf --fast-path off (bpf_redirect; guard off, connect's default)",
    );
    let pair_peer = p(
        Topo::Pair,
        "ebpf-peer",
        Kind::Connect {
            backend: "ebpf",
            fast_path: Some("auto"),
            guard: false,
        },
        "netshim connect --tc-backend ebpf --fast-path auto (bpf_redirect_peer; guard off)",
    );
    let sandbox_ebpf = p(
        Topo::Sandbox,
        "ebpf",
        Kind::Attach {
            model: "tcfilter",
            backend: Some("ebpf"),
            fast_path: Some("off"),
            guard: false,
        },
        "netshim attach --tc-backend ebpf --fast-path off --guard off",
    );
    let sandbox_peer = p(
        Topo::Sandbox,
        "ebpf-peer",
        Kind::Attach {
            model: "tcfilter",
            backend: Some("ebpf"),
            fast_path: Some("auto"),
            guard: false,
        },
        "netshim attach --tc-backend ebpf --fast-path auto --guard off",
    );
    vec![
        p(
            Topo::Pair,
            "direct",
            Kind::Direct,
            "client and server on one veth pair (floor)",
        ),
        p(
            Topo::Pair,
            "bridge",
            Kind::Bridge,
            "linux bridge in the shim netns",
        ),
        p(
            Topo::Pair,
            "mirred",
            Kind::Connect {
                backend: "mirred",
                fast_path: None,
                guard: false,
            },
            "netshim connect --tc-backend mirred (kata's u32 + mirred)",
        ),
        pair_ebpf.clone(),
        guarded(
            &pair_ebpf,
            "ebpf+guard",
            "netshim connect --tc-backend ebpf --fast-path off --guard enforce --guard-mac \
             <server MAC> --guard-allow 10.201.0.2",
        ),
        pair_peer.clone(),
        guarded(
            &pair_peer,
            "ebpf-peer+guard",
            "netshim connect --tc-backend ebpf --fast-path auto --guard enforce --guard-mac \
             <server MAC> --guard-allow 10.201.0.2",
        ),
        p(
            Topo::Sandbox,
            "mirred",
            Kind::Attach {
                model: "tcfilter",
                backend: Some("mirred"),
                fast_path: None,
                guard: false,
            },
            "netshim attach --tc-backend mirred (kata's tcfilter)",
        ),
        sandbox_ebpf.clone(),
        guarded(
            &sandbox_ebpf,
            "ebpf+guard",
            "netshim attach --tc-backend ebpf --fast-path off (the guard's default: enforce)",
        ),
        sandbox_peer.clone(),
        guarded(
            &sandbox_peer,
            "ebpf-peer+guard",
            "netshim attach --tc-backend ebpf --fast-path auto (the guard's default: enforce)",
        ),
        p(
            Topo::Sandbox,
            "macvtap",
            Kind::Attach {
                model: "macvtap",
                backend: None,
                fast_path: None,
                guard: false,
            },
            "netshim attach --model macvtap; stand-in on /dev/tap<ifindex>",
        ),
    ]
}

/// What the netshim binary at hand supports (read from its `--help`), so a bench against a
/// netshim without `connect` or `--fast-path` reports those paths as unavailable.
#[derive(Debug, Default, Clone)]
pub struct Caps {
    pub connect: bool,
    pub connect_fast_path: bool,
    pub attach_fast_path: bool,
    pub attach_macvtap: bool,
    /// `connect --guard MODE --guard-mac MAC --guard-allow CIDR`.
    pub connect_guard: bool,
    /// `attach --guard MODE` (and enforce by default on the eBPF backend).
    pub attach_guard: bool,
}

impl Caps {
    pub fn probe(netshim: &Path) -> Result<Caps> {
        let help = |sub: &str| -> Result<Option<String>> {
            let out = cmd::capture(Command::new(netshim).args([sub, "--help"]))?;
            Ok(out
                .status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
        };
        let connect = help("connect")?;
        let attach = help("attach")?.context("`netshim attach --help` failed")?;
        Ok(Caps {
            connect: connect.is_some(),
            connect_fast_path: connect
                .as_deref()
                .is_some_and(|h| h.contains("--fast-path")),
            attach_fast_path: attach.contains("--fast-path"),
            attach_macvtap: attach.contains("macvtap"),
            connect_guard: connect
                .as_deref()
                .is_some_and(|h| h.contains("--guard-mac")),
            attach_guard: attach.contains("--guard-allow"),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "connect": self.connect,
            "connect_fast_path": self.connect_fast_path,
            "attach_fast_path": self.attach_fast_path,
            "attach_macvtap": self.attach_macvtap,
            "connect_guard": self.connect_guard,
            "attach_guard": self.attach_guard,
        })
    }

    /// Why this netshim cannot run `spec`, if it cannot.
    pub fn unavailable(&self, spec: &PathSpec) -> Option<String> {
        match &spec.kind {
            Kind::Direct | Kind::Bridge => None,
            Kind::Connect {
                fast_path, guard, ..
            } => {
                if !self.connect {
                    Some("this netshim has no `connect` subcommand".into())
                } else if fast_path == &Some("auto") && !self.connect_fast_path {
                    Some("this netshim's `connect` has no --fast-path".into())
                } else if *guard && !self.connect_guard {
                    Some("this netshim's `connect` has no --guard-mac (no source guard)".into())
                } else {
                    None
                }
            }
            Kind::Attach {
                model,
                fast_path,
                guard,
                ..
            } => {
                if *model == "macvtap" && !self.attach_macvtap {
                    Some("this netshim's `attach` has no macvtap model".into())
                } else if fast_path == &Some("auto") && !self.attach_fast_path {
                    Some("this netshim's `attach` has no --fast-path".into())
                } else if *guard && !self.attach_guard {
                    Some("this netshim's `attach` has no --guard (no source guard)".into())
                } else {
                    None
                }
            }
        }
    }

    /// `--fast-path X` when this netshim knows the flag (`off` is its only behaviour otherwise).
    fn fast_path_args(&self, spec: &PathSpec) -> Vec<String> {
        let (known, fast) = match &spec.kind {
            Kind::Connect { fast_path, .. } => (self.connect_fast_path, fast_path),
            Kind::Attach { fast_path, .. } => (self.attach_fast_path, fast_path),
            _ => return Vec::new(),
        };
        match fast {
            Some(f) if known => vec!["--fast-path".into(), f.to_string()],
            _ => Vec::new(),
        }
    }

    /// The guard flags of an eBPF path: `+guard` connect: enforce on what `guest_mac` (the
    /// server's MAC) sends from `guest_ip`; `+guard` attach: none (enforce is the default);
    /// unguarded attach: `--guard off` when this netshim has a guard to turn off; unguarded
    /// connect: none (off is connect's default, and `--guard` there needs `--guard-mac`).
    fn guard_args(&self, spec: &PathSpec, guest_mac: &str, guest_ip: &str) -> Vec<String> {
        let known = match spec.kind {
            Kind::Connect { .. } => self.connect_guard,
            Kind::Attach { .. } => self.attach_guard,
            _ => false,
        };
        if !spec.runs_netshim_ebpf() || !known {
            return Vec::new();
        }
        let args: &[&str] = match (&spec.kind, spec.guarded()) {
            (Kind::Connect { .. }, true) => &[
                "--guard",
                "enforce",
                "--guard-mac",
                guest_mac,
                "--guard-allow",
                guest_ip,
            ],
            (Kind::Attach { .. }, false) => &["--guard", "off"],
            _ => &[],
        };
        args.iter().map(|a| a.to_string()).collect()
    }
}

/// The namespaces of a run, one set per topology in use.
pub struct Namespaces {
    pub tag: String,
    pub pair: Option<[String; 3]>,
    pub sandbox: Option<[String; 3]>,
}

impl Namespaces {
    /// Create uniquely named namespaces (registered for deletion) for the topologies in use.
    pub fn create(pair: bool, sandbox: bool) -> Result<Namespaces> {
        let tag = format!("nsbench-{}", std::process::id());
        let make = |roles: [&str; 3]| -> Result<[String; 3]> {
            let names = roles.map(|r| format!("{tag}-{r}"));
            for n in &names {
                topology::add_netns(n)?;
            }
            Ok(names)
        };
        let pair = if pair {
            let names = make(["pc", "shim", "srv"])?;
            // The bridge path measures the bridge, not iptables: where br_netfilter is loaded
            // (its sysctls are per netns), bridged frames skip netfilter in the shim netns.
            quiet(&mut topology::exec_in(
                &names[1],
                "sh",
                &["-c", BRIDGE_NF_OFF],
            ))?;
            Some(names)
        } else {
            None
        };
        let sandbox = if sandbox {
            Some(make(["sc", "sbx", "guest"])?)
        } else {
            None
        };
        Ok(Namespaces { tag, pair, sandbox })
    }
}

/// A device whose offloads are recorded: (role, netns, ifname).
#[derive(Clone, Debug)]
pub struct Device {
    pub role: String,
    pub netns: String,
    pub ifname: String,
    /// veth, tap or macvtap.
    pub kind: &'static str,
}

impl Device {
    /// `role:ifname (kind)`, the key offloads are compared by across paths.
    pub fn label(&self) -> String {
        format!("{}:{} ({})", self.role, self.ifname, self.kind)
    }
}

/// One path, set up and carrying traffic.
pub struct Live {
    pub client: String,
    pub server: String,
    pub server_ip: &'static str,
    pub client_ip: &'static str,
    /// An address the server does not own (see [`guard_probe`]).
    pub spoofed_ip: &'static str,
    pub devices: Vec<Device>,
    /// netns to read `netshim stats` from.
    pub stats_netns: Option<String>,
    /// What netshim printed on connect/attach (JSON when it printed JSON).
    pub setup_output: Option<Value>,
    undo: Vec<(Token, Action)>,
    standin: Option<StandIn>,
}

impl Live {
    /// Where the load runs; `pin` = the CPUs of its client and server.
    pub fn endpoints(&self, pin: Option<(u32, u32)>) -> Endpoints<'_> {
        Endpoints {
            client: &self.client,
            server: &self.server,
            server_ip: self.server_ip,
            client_cpu: pin.map(|p| p.0),
            server_cpu: pin.map(|p| p.1),
        }
    }

    /// Stop the stand-in, then undo everything, newest first. Returns the stand-in's summary.
    pub fn teardown(mut self) -> Result<Option<Value>> {
        let mut first_err = None;
        let summary = match self.standin.take() {
            Some(s) => match s.stop() {
                Ok(v) => v,
                Err(e) => {
                    first_err = Some(e);
                    None
                }
            },
            None => None,
        };
        while let Some((token, action)) = self.undo.pop() {
            topology::disarm(token);
            if let Err(e) = run_action(&action) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // An error part-way through: undo now rather than at the end of the run.
        drop(self.standin.take());
        while let Some((token, action)) = self.undo.pop() {
            topology::disarm(token);
            let _ = run_action(&action);
        }
    }
}

fn run_action(action: &Action) -> Result<()> {
    let argv: Vec<String> = match action {
        Action::Command { argv } => argv.clone(),
        Action::Detach { netshim, netns } => vec![
            netshim.display().to_string(),
            "detach".into(),
            "--netns".into(),
            netns.clone(),
        ],
        _ => bail!("not an undo step"),
    };
    quiet(Command::new(&argv[0]).args(&argv[1..])).map(|_| ())
}

/// Offload features recorded per device (`ethtool -k` names).
pub const OFFLOAD_FEATURES: &[(&str, &str)] = &[
    ("rx-checksumming", "rxcsum"),
    ("tx-checksumming", "txcsum"),
    ("scatter-gather", "sg"),
    ("tcp-segmentation-offload", "tso"),
    ("generic-segmentation-offload", "gso"),
    ("generic-receive-offload", "gro"),
    ("large-receive-offload", "lro"),
    ("rx-gro-list", "grolist"),
    ("rx-udp-gro-forwarding", "udpgrofwd"),
];

/// `ethtool -k` (the features above, `on`/`off`) plus the queue counts of `ip -d link`.
pub fn offloads(dev: &Device) -> Result<BTreeMap<String, String>> {
    let text = quiet(&mut topology::exec_in(
        &dev.netns,
        "ethtool",
        &["-k", &dev.ifname],
    ))?;
    let mut map = parse_ethtool_k(&text);
    let link = quiet(&mut topology::ip(
        &dev.netns,
        &["-d", "-j", "link", "show", "dev", &dev.ifname],
    ))?;
    if let Ok(v) = serde_json::from_str::<Value>(&link) {
        let q = |k: &str| v[0][k].as_u64().map_or("?".into(), |n| n.to_string());
        map.insert(
            "queues".into(),
            format!("{}/{}", q("num_rx_queues"), q("num_tx_queues")),
        );
    }
    Ok(map)
}

pub fn parse_ethtool_k(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            OFFLOAD_FEATURES.iter().find(|(name, _)| *name == k)?;
            let v = v.split_whitespace().next().unwrap_or("?");
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `netshim stats --netns NS --json` (raw; null when it fails).
pub fn stats(netshim: &Path, netns: &str) -> Value {
    let mut cmd = Command::new(netshim);
    cmd.args(["stats", "--netns", netns, "--json"]);
    match quiet(&mut cmd) {
        Ok(out) => serde_json::from_str(&out).unwrap_or(Value::String(out)),
        Err(e) => json!({ "error": format!("{e:#}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethtool_k_keeps_the_listed_features() {
        let text = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: on\n\
            \ttx-checksum-ip-generic: on\nscatter-gather: on\n\
            tcp-segmentation-offload: on\ngeneric-receive-offload: off\n\
            large-receive-offload: off [fixed]\nrx-gro-list: off\n";
        let m = parse_ethtool_k(text);
        assert_eq!(m["generic-receive-offload"], "off");
        assert_eq!(m["large-receive-offload"], "off");
        assert_eq!(m["rx-checksumming"], "on");
        assert!(!m.contains_key("tx-checksum-ip-generic"));
    }

    /// A netshim with every capability.
    fn all_caps() -> Caps {
        Caps {
            connect: true,
            connect_fast_path: true,
            attach_fast_path: true,
            attach_macvtap: true,
            connect_guard: true,
            attach_guard: true,
        }
    }

    #[test]
    fn paths_are_unique_and_caps_gate_them() {
        let paths = all_paths();
        let mut ids: Vec<String> = paths.iter().map(PathSpec::id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), paths.len());
        let none = Caps::default();
        let gated: Vec<String> = paths
            .iter()
            .filter(|p| none.unavailable(p).is_some())
            .map(PathSpec::id)
            .collect();
        assert_eq!(
            gated,
            [
                "pair/mirred",
                "pair/ebpf",
                "pair/ebpf+guard",
                "pair/ebpf-peer",
                "pair/ebpf-peer+guard",
                "sandbox/ebpf+guard",
                "sandbox/ebpf-peer",
                "sandbox/ebpf-peer+guard",
                "sandbox/macvtap"
            ]
        );
        // Without the flag, `ebpf` runs netshim's only behaviour (plain bpf_redirect).
        let sandbox_ebpf = paths.iter().find(|p| p.id() == "sandbox/ebpf").unwrap();
        assert!(none.fast_path_args(sandbox_ebpf).is_empty());
        let all = all_caps();
        assert_eq!(all.fast_path_args(sandbox_ebpf), ["--fast-path", "off"]);
        assert!(paths.iter().all(|p| all.unavailable(p).is_none()));
    }

    #[test]
    fn guard_twins_differ_only_in_the_guard() {
        let paths = all_paths();
        let get = |id: &str| paths.iter().find(|p| p.id() == id).unwrap();
        let all = all_caps();
        let mac = "02:00:00:00:00:02";
        for base in [
            "pair/ebpf",
            "pair/ebpf-peer",
            "sandbox/ebpf",
            "sandbox/ebpf-peer",
        ] {
            let (plain, guarded) = (get(base), get(&format!("{base}+guard")));
            assert_eq!(guarded.guard_twin_of, Some(plain.name));
            assert!(guarded.guarded() && !plain.guarded());
            assert_eq!(
                all.fast_path_args(plain),
                all.fast_path_args(guarded),
                "{base}"
            );
            let off = all.guard_args(plain, mac, PAIR_SERVER_IP);
            match plain.topo {
                Topo::Pair => assert!(off.is_empty(), "{base}: connect's default is off"),
                Topo::Sandbox => assert_eq!(off, ["--guard", "off"], "{base}"),
            }
        }
        assert_eq!(
            all.guard_args(get("pair/ebpf-peer+guard"), mac, PAIR_SERVER_IP),
            [
                "--guard",
                "enforce",
                "--guard-mac",
                mac,
                "--guard-allow",
                "10.201.0.2"
            ]
        );
        // attach: the default is enforce; mirred and macvtap paths get no guard flag.
        assert!(all
            .guard_args(get("sandbox/ebpf+guard"), mac, PAIR_SERVER_IP)
            .is_empty());
        for id in ["pair/mirred", "sandbox/mirred", "sandbox/macvtap"] {
            assert!(
                all.guard_args(get(id), mac, PAIR_SERVER_IP).is_empty(),
                "{id}"
            );
        }
        // A netshim without a guard: the unguarded twins run as before, without a flag.
        let old = Caps {
            connect_guard: false,
            attach_guard: false,
            ..all
        };
        assert!(old
            .guard_args(get("sandbox/ebpf"), mac, PAIR_SERVER_IP)
            .is_empty());
        assert!(old.unavailable(get("sandbox/ebpf+guard")).is_some());
    }
}
