//! Operator-facing metrics: the counters of every sandbox collected in one pass
//! ([`collect`]), rendered as Prometheus text ([`prometheus`]), turned into per-second rates
//! ([`rates`], every interval by [`watch`]) and served over HTTP ([`server`]).
//!
//! Collection reads the pinned maps directly (no netns is entered for the eBPF backend);
//! mirred sandboxes need rtnetlink inside their netns, which [`crate::sandbox::stats`] does
//! on a dedicated thread per netns ([`crate::netns::Netns::run`]). [`collect`] blocks, so
//! async callers run it with `spawn_blocking`.

pub mod prometheus;
pub mod rates;
pub mod server;
pub mod watch;

use std::path::Path;

use crate::{
    datapath::{ebpf, TcBackend},
    netns::Netns,
    pins, sandbox, state,
    stats::{self, SandboxStats},
};

/// Why metrics cannot be served or watched (reading a sandbox is not among them: see
/// [`Collection::errors`]).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("creating the metrics runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The counters of one sandbox and how its datapath is hooked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    #[serde(flatten)]
    pub stats: SandboxStats,
    /// `tcx`, `cls_bpf` or `mirred`.
    pub datapath: String,
}

impl Sample {
    /// The sample of `stats`, with the datapath read from its pins (eBPF).
    pub fn new(stats: SandboxStats) -> Self {
        Self {
            datapath: datapath_of(&stats),
            stats,
        }
    }
}

/// Which sandboxes to collect.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every sandbox: those pinned in bpffs (eBPF) and those whose commit file under
    /// `/run/netshim` says mirred.
    All,
    /// One netns (whatever its backend).
    Netns(Netns),
}

/// What one collection found: the sandboxes that could be read, and why others could not.
#[derive(Debug, Default)]
pub struct Collection {
    pub samples: Vec<Sample>,
    /// One message per sandbox (or directory) that could not be read.
    pub errors: Vec<String>,
}

/// How an eBPF sandbox is hooked, from its pin directory (`unknown` when its sandbox
/// record cannot be read).
fn pinned_datapath(dir: &Path) -> String {
    ebpf::recorded_mode(dir)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn datapath_of(stats: &SandboxStats) -> String {
    match stats.backend {
        TcBackend::Ebpf => pinned_datapath(&pins::sandbox_dir(stats.netns_cookie)),
        TcBackend::Mirred => "mirred".into(),
    }
}

/// Reads the counters of `scope` now. Never fails as a whole: what cannot be read is listed
/// in [`Collection::errors`].
pub fn collect(scope: &Scope) -> Collection {
    let mut out = Collection::default();
    // No bpffs in the host's mount namespace (netshim joins it: see crate::host): no eBPF
    // sandbox could be read, and none must look unattached silently.
    match pins::is_bpffs(Path::new(pins::BPFFS)) {
        Ok(true) => {}
        Ok(false) => out.errors.push(format!(
            "no bpffs mounted at {} (netshim mounts it on its first eBPF attach): eBPF \
             sandboxes cannot be read",
            pins::BPFFS
        )),
        Err(e) => out.errors.push(e.to_string()),
    }
    match scope {
        Scope::Netns(netns) => match sandbox::stats(netns) {
            Ok(Some(stats)) => out.samples.push(Sample::new(stats)),
            Ok(None) => {}
            Err(e) => out.errors.push(e.to_string()),
        },
        Scope::All => {
            collect_pinned(&mut out);
            collect_mirred(&mut out);
        }
    }
    out
}

fn collect_pinned(out: &mut Collection) {
    let cookies = match pins::sandbox_cookies() {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(e.to_string());
            return;
        }
    };
    for cookie in cookies {
        let files = sandbox::SandboxFiles::of(cookie);
        let dir = &files.pin_dir;
        // An attach that has made the directory and not yet pinned the maps (its intent
        // file is there): nothing to count yet, and nothing wrong.
        let intent = files.intent_file();
        if !dir.join(netshim_common::map_names::SANDBOX).exists() && intent.exists() {
            continue;
        }
        // Entered through the path its sandbox record names, for the devices' drops and
        // health; a netns that cannot be entered still has its pinned counters.
        let entered = ebpf::recorded_sandbox(dir)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let path =
                    String::from_utf8_lossy(netshim_common::from_fixed(&r.netns_path)).into_owned();
                let netns = Netns::resolve(&path).map_err(|e| e.to_string())?;
                if netns.cookie == cookie {
                    Ok(netns)
                } else {
                    Err(format!("{path} names another netns now"))
                }
            });
        let result = match entered {
            Ok(netns) => sandbox::stats(&netns).map_err(|e| e.to_string()),
            Err(why) => stats::read_pinned(dir)
                .map(|mut s| {
                    s.device_drops_unknown(format!("its netns cannot be entered ({why})"));
                    Some(s)
                })
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(Some(stats)) => out.samples.push(Sample {
                datapath: pinned_datapath(dir),
                stats,
            }),
            Ok(None) => {}
            Err(e) => out.errors.push(e),
        }
    }
}

/// The commit file of a sandbox attached with mirred: (netns path, cookie).
fn mirred_commit(files: &sandbox::SandboxFiles) -> Option<(String, u64)> {
    let report: serde_json::Value = state::read_json(&files.commit_file())?;
    if report.get("backend")?.as_str()? != TcBackend::Mirred.as_str() {
        return None;
    }
    let path = report.get("netns_path")?.as_str()?.to_owned();
    Some((path, report.get("netns_cookie")?.as_u64()?))
}

/// Mirred sandboxes have no pins; their attach commit file names the netns (found by cookie
/// when that path is gone or names another netns now). A sandbox no live netns has the
/// cookie of is not an error: it has no counters.
fn collect_mirred(out: &mut Collection) {
    let cookies = match state::sandbox_cookies() {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(e.to_string());
            return;
        }
    };
    let finder = sandbox::NetnsFinder::default();
    for cookie in cookies {
        let files = sandbox::SandboxFiles::of(cookie);
        if files.pin_dir.exists() {
            continue;
        }
        let Some((path, recorded)) = mirred_commit(&files) else {
            continue;
        };
        if recorded != cookie {
            continue;
        }
        // The recorded path, or wherever the live netns with the cookie is now.
        let Ok(netns) = finder.find(cookie, Path::new(&path)) else {
            continue;
        };
        match sandbox::stats(&netns) {
            Ok(Some(stats)) => out.samples.push(Sample {
                datapath: "mirred".into(),
                stats,
            }),
            Ok(None) => {}
            Err(e) => out.errors.push(e.to_string()),
        }
    }
}
