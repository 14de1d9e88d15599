//! What netshim can leave behind in a netns, captured with `ip`, `tc` and a TCX query
//! (BPF_PROG_QUERY, which this machine's bpftool 7.1 cannot show), so a test can compare a
//! namespace before attach and after detach (or after a crash and gc).

use std::{collections::BTreeSet, path::PathBuf};

use aya::programs::{SchedClassifier, TcAttachType};

use crate::{on_netns_thread, TestNetns};

/// Everything observable that attach changes in a netns. Each entry is a line naming the
/// object (device, kind, and what identifies it), so a difference reads as a leak report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetnsSnapshot {
    /// `name kind mac mtu`.
    pub links: BTreeSet<String>,
    /// `dev addr/prefix`.
    pub addresses: BTreeSet<String>,
    /// `dev kind handle parent`.
    pub qdiscs: BTreeSet<String>,
    /// `dev ingress|egress <tc filter line>`.
    pub filters: BTreeSet<String>,
    /// `dev tcx/ingress program-name` (program ids left out: a new attach has new ones).
    pub tcx: BTreeSet<String>,
}

fn json(out: &str, what: &str) -> serde_json::Value {
    if out.trim().is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{what}: bad JSON ({e}): {out}"))
}

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

impl NetnsSnapshot {
    pub fn take(ns: &TestNetns) -> NetnsSnapshot {
        let mut snap = NetnsSnapshot::default();
        let links = json(&ns.ip(&["-j", "-d", "link", "show"]), "ip link");
        let mut names = Vec::new();
        for l in links.as_array().into_iter().flatten() {
            let name = str_of(l, "ifname").to_owned();
            snap.links.insert(format!(
                "{name} {} {} {}",
                l["linkinfo"]["info_kind"].as_str().unwrap_or("-"),
                str_of(l, "address"),
                l["mtu"]
            ));
            names.push(name);
        }
        let addrs = json(&ns.ip(&["-j", "addr", "show"]), "ip addr");
        for l in addrs.as_array().into_iter().flatten() {
            for a in l["addr_info"].as_array().into_iter().flatten() {
                snap.addresses.insert(format!(
                    "{} {}/{}",
                    str_of(l, "ifname"),
                    str_of(a, "local"),
                    a["prefixlen"]
                ));
            }
        }
        let qdiscs = json(&ns.tc(&["-j", "qdisc", "show"]), "tc qdisc");
        for q in qdiscs.as_array().into_iter().flatten() {
            snap.qdiscs.insert(format!(
                "{} {} {} {}",
                str_of(q, "dev"),
                str_of(q, "kind"),
                str_of(q, "handle"),
                str_of(q, "parent")
            ));
        }
        for name in &names {
            for hook in ["ingress", "egress"] {
                let out = ns.try_tc(&["filter", "show", "dev", name, hook]);
                for line in out.lines().filter(|l| !l.trim().is_empty()) {
                    snap.filters
                        .insert(format!("{name} {hook} {}", line.trim()));
                }
            }
        }
        for (dev, hook, _, name) in tcx_programs(ns, &names) {
            snap.tcx.insert(format!("{dev} tcx/{hook} {name}"));
        }
        snap
    }

    /// What is in `self` (after) and not in `before`, and what went missing, one line each.
    pub fn diff(&self, before: &NetnsSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let sets = [
            ("link", &before.links, &self.links),
            ("address", &before.addresses, &self.addresses),
            ("qdisc", &before.qdiscs, &self.qdiscs),
            ("filter", &before.filters, &self.filters),
            ("tcx", &before.tcx, &self.tcx),
        ];
        for (what, b, a) in sets {
            out.extend(a.difference(b).map(|x| format!("leaked {what}: {x}")));
            out.extend(b.difference(a).map(|x| format!("lost {what}: {x}")));
        }
        out
    }
}

/// netshim's files for a netns cookie: the bpffs pin directory, the /run state directory and
/// the sandbox's lock file. Returns those that exist.
pub fn netshim_dirs(cookie: u64) -> Vec<PathBuf> {
    [
        PathBuf::from(format!("/sys/fs/bpf/netshim/netns-{cookie}")),
        PathBuf::from(format!("/run/netshim/netns-{cookie}")),
        PathBuf::from(format!("/run/netshim/netns-{cookie}.lock")),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .collect()
}

/// What sits at the root of bpffs outside netshim's own directories (`netshim*`): pins a
/// load without a pin directory of its own would leave there (its maps, by name).
pub fn bpffs_root_strays() -> BTreeSet<String> {
    std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("netshim") && !n.ends_with(".debug"))
        .collect()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of this process in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether a BPF program id is still loaded.
pub fn prog_loaded(id: u64) -> bool {
    std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The programs on the TCX ingress and egress hooks of `devices` in a netns, in hook order:
/// (device, "ingress"|"egress", program id, program name).
pub fn tcx_programs(
    ns: &TestNetns,
    devices: &[String],
) -> Vec<(String, &'static str, u32, String)> {
    let devices = devices.to_vec();
    on_netns_thread(ns.path(), move || {
        let mut out = Vec::new();
        for dev in &devices {
            for (hook, attach) in [
                ("ingress", TcAttachType::Ingress),
                ("egress", TcAttachType::Egress),
            ] {
                // A device that went away meanwhile has no programs.
                let Ok((_, progs)) = SchedClassifier::query_tcx(dev, attach) else {
                    continue;
                };
                for p in progs {
                    let name = p.name_as_str().unwrap_or("?").to_owned();
                    out.push((dev.clone(), hook, p.id(), name));
                }
            }
        }
        out
    })
}

/// Ids of the programs on the TCX hooks of a netns's devices.
pub fn tcx_prog_ids(ns: &TestNetns) -> Vec<u64> {
    let links = json(&ns.ip(&["-j", "link", "show"]), "ip link");
    let names: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| str_of(l, "ifname").to_owned())
        .collect();
    tcx_programs(ns, &names)
        .into_iter()
        .map(|(_, _, id, _)| u64::from(id))
        .collect()
}

/// A test size from the environment (CI runs reduced versions), or `default`.
pub fn size_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
