//! `netshim upgrade`: a new datapath program for attached sandboxes, with no gap in
//! forwarding and the pinned maps (peers, counters) kept. See [`crate::datapath::upgrade`]
//! for how each hook is swapped.
//!
//! Scope: one netns (`--netns`), or every sandbox directory in bpffs (`--all`): each directory
//! names its netns cookie, and its pinned `sandbox` map records the netns path, which is
//! entered when device names matter (cls_bpf). When that path is gone or names another
//! namespace now, the live netns with the directory's cookie is found wherever it is (gc's
//! scan); a directory no live netns has the cookie of is skipped: it is stale, and gc
//! removes it. Each sandbox is
//! upgraded under its [`SandboxLock`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::maps::{Array, Map, MapData};
use netshim_common::{from_fixed, map_names, SandboxRecord};

use crate::{
    datapath::{
        ebpf,
        upgrade::{self as up, Object, Swapped, UpgradeError},
        AttachMode,
    },
    guard::{maps, GuardEntry, GuardMode, GuardReport},
    netns::Netns,
    pins, state, Error, Result,
};

use super::{guard::write_guard, AttachReport, EndpointGuard, NetnsFinder, Sandbox};

/// What `upgrade` loads.
#[derive(Debug, Clone, Default)]
pub struct UpgradeOptions {
    /// An eBPF object file instead of the one built into this binary.
    pub object: Option<PathBuf>,
    /// `--guard MODE`: the source guard's mode for every endpoint, over what the commit
    /// file records (absent there: enforce).
    pub guard: Option<GuardMode>,
}

/// What happened to one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpgradeOutcome {
    /// Every live hook runs the new program.
    Upgraded,
    /// Nothing was changed (stale directory, no live hook, detached meanwhile).
    Skipped,
    /// See `error`; what the error says was changed, was.
    Failed,
}

/// One sandbox's upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxUpgrade {
    pub netns: String,
    pub netns_cookie: u64,
    pub pin_dir: PathBuf,
    /// `tcx` or `cls_bpf`, when known.
    pub datapath: Option<String>,
    pub outcome: UpgradeOutcome,
    /// The program every swapped hook runs now.
    pub new_prog_id: Option<u32>,
    /// Hooks now on the new program (old → new program id each), and hooks left alone.
    #[serde(flatten)]
    pub hooks: Swapped,
    /// Maps the new object declares that the sandbox had not pinned (it was attached by an
    /// older netshim): created and pinned into its directory.
    pub created_maps: Vec<String>,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// The source guard of each endpoint after the upgrade, read back from the maps.
    pub guard: Vec<EndpointGuard>,
    /// Why the guard was not set up (no commit file: pairs of `netshim connect`), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_reason: Option<String>,
}

/// The result of `upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpgradeReport {
    /// `embedded` or the object file's path.
    pub object: String,
    pub sandboxes: Vec<SandboxUpgrade>,
}

impl UpgradeReport {
    pub fn failed(&self) -> usize {
        self.sandboxes
            .iter()
            .filter(|s| s.outcome == UpgradeOutcome::Failed)
            .count()
    }
}

fn object(options: &UpgradeOptions) -> Result<Arc<Object>> {
    let object = match &options.object {
        Some(path) => Object::from_file(path),
        None => Object::embedded(),
    };
    object.map(Arc::new).map_err(|source| Error::UpgradeObject {
        source: Box::new(source),
    })
}

fn not_attached(netns: &Netns, dir: &Path) -> Error {
    Error::NotAttached {
        netns: netns.to_string(),
        detail: format!("no pin directory {}", dir.display()),
    }
}

/// Upgrades the sandbox of `netns`. Not attached with the eBPF datapath (no pin directory)
/// is an error ([`Error::NotAttached`]).
pub fn upgrade(netns: &Netns, options: &UpgradeOptions) -> Result<UpgradeReport> {
    let object = object(options)?;
    let sandbox = Sandbox::of(netns);
    if !sandbox.pin_dir.exists() {
        return Err(not_attached(netns, &sandbox.pin_dir));
    }
    let upgraded = upgrade_sandbox(&sandbox, &object, options.guard)?;
    Ok(UpgradeReport {
        object: object.name.clone(),
        sandboxes: vec![upgraded],
    })
}

/// Upgrades every sandbox pinned in bpffs. Per-sandbox failures are in the report (see
/// [`UpgradeReport::failed`]); none at all is an empty report.
pub fn upgrade_all(options: &UpgradeOptions) -> Result<UpgradeReport> {
    upgrade_where(options, |_| true)
}

/// [`upgrade_all`] of the sandboxes whose netns cookie `wanted` keeps (the agent's: those
/// on another program).
pub fn upgrade_where(
    options: &UpgradeOptions,
    wanted: impl Fn(u64) -> bool,
) -> Result<UpgradeReport> {
    let object = object(options)?;
    let mut sandboxes = Vec::new();
    let finder = NetnsFinder::default();
    for cookie in pins::sandbox_cookies()?.into_iter().filter(|&c| wanted(c)) {
        let dir = pins::sandbox_dir(cookie);
        let entry = |netns: String, outcome, reason: String| SandboxUpgrade {
            netns,
            netns_cookie: cookie,
            pin_dir: dir.clone(),
            datapath: None,
            outcome,
            new_prog_id: None,
            hooks: Swapped::default(),
            created_maps: Vec::new(),
            reason: Some(reason),
            guard: Vec::new(),
            guard_reason: None,
        };
        let netns = match sandbox_netns(&dir, cookie, &finder) {
            Ok(netns) => netns,
            Err((path, reason)) => {
                sandboxes.push(entry(path, UpgradeOutcome::Skipped, reason));
                continue;
            }
        };
        match upgrade_sandbox(&Sandbox::of(&netns), &object, options.guard) {
            Ok(s) => sandboxes.push(s),
            Err(Error::NotAttached { .. }) => sandboxes.push(entry(
                netns.to_string(),
                UpgradeOutcome::Skipped,
                "detached meanwhile".into(),
            )),
            Err(e) => sandboxes.push(entry(
                netns.to_string(),
                UpgradeOutcome::Failed,
                e.to_string(),
            )),
        }
    }
    Ok(UpgradeReport {
        object: object.name.clone(),
        sandboxes,
    })
}

/// The netns a sandbox directory serves: the one its `sandbox` map records the path of, or
/// (that path is gone or names another netns now) the live one with its cookie;
/// `Err((path, why))` when no live netns has the cookie.
fn sandbox_netns(
    dir: &Path,
    cookie: u64,
    finder: &NetnsFinder,
) -> std::result::Result<Netns, (String, String)> {
    let record = read_record(dir).map_err(|e| (String::new(), e))?;
    let path = String::from_utf8_lossy(from_fixed(&record.netns_path)).into_owned();
    if path.is_empty() {
        return Err((path, "no netns recorded in the sandbox map".into()));
    }
    finder
        .find(cookie, Path::new(&path))
        .map_err(|why| (path, why))
}

fn read_record(dir: &Path) -> std::result::Result<SandboxRecord, String> {
    let path = dir.join(map_names::SANDBOX);
    let data =
        MapData::from_pin(&path).map_err(|e| format!("BPF_OBJ_GET {}: {e}", path.display()))?;
    let array: Array<MapData, SandboxRecord> =
        Map::from_map_data(data)
            .and_then(Array::try_from)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
    array
        .get(&0, 0)
        .map_err(|e| format!("BPF_MAP_LOOKUP_ELEM {}: {e}", path.display()))
}

/// Upgrades one sandbox under its lock.
fn upgrade_sandbox(
    sandbox: &Sandbox,
    object: &Arc<Object>,
    guard: Option<GuardMode>,
) -> Result<SandboxUpgrade> {
    let (netns, dir) = (&sandbox.netns, sandbox.pin_dir.as_path());
    let _lock = sandbox.lock()?;
    // Detached while we waited for the lock?
    if !dir.exists() {
        return Err(not_attached(netns, dir));
    }
    let upgrade_err = |netns: &Netns| {
        let netns = netns.to_string();
        move |source| Error::Upgrade {
            netns: netns.clone(),
            source: Box::new(source),
        }
    };
    let mode = ebpf::recorded_mode(dir)
        .map_err(UpgradeError::from)
        .map_err(upgrade_err(netns))?;
    // An object without the guard (an older datapath) would pass every packet of a tap
    // whose entry has PEER_GUARD to the stack: the flag goes first, and comes back if the
    // swap fails.
    let unguarded = match object.has_guard() {
        true => Vec::new(),
        false => clear_peer_guards(netns, dir)?,
    };
    let swapped = swap(netns, dir, object, mode);
    if swapped.is_err() {
        for tap in &unguarded {
            if let Err(e) = maps::set_peer_guard(dir, *tap, true) {
                tracing::warn!("netns {netns}: putting PEER_GUARD back on ifindex {tap}: {e}");
            }
        }
    }
    let (new_prog_id, hooks, created_maps) = swapped?;
    let (mut outcome, mut reason) = if hooks.swapped.is_empty() {
        (
            UpgradeOutcome::Skipped,
            Some("no live hook to upgrade".to_owned()),
        )
    } else {
        (UpgradeOutcome::Upgraded, None)
    };
    // Only now that every hook runs a program that knows PEER_GUARD: an older program
    // passes a packet whose entry has a flag it does not know to the stack.
    let (mut guards, mut guard_reason) = (Vec::new(), None);
    if outcome == UpgradeOutcome::Upgraded && !object.has_guard() {
        guard_reason = Some(format!(
            "the object {} has no source guard: the taps' entries no longer ask for it",
            object.name
        ));
    } else if outcome == UpgradeOutcome::Upgraded {
        match fill_guard(sandbox, guard) {
            Ok(Ok(filled)) => guards = filled,
            Ok(Err(why)) => guard_reason = Some(why),
            Err(e) => {
                outcome = UpgradeOutcome::Failed;
                reason = Some(format!(
                    "every hook runs the new program, but setting up the source guard failed: \
                     {e}"
                ));
            }
        }
    }
    Ok(SandboxUpgrade {
        guard: guards,
        guard_reason,
        netns: netns.to_string(),
        netns_cookie: netns.cookie,
        pin_dir: dir.to_owned(),
        datapath: Some(mode.as_str().to_owned()),
        outcome,
        new_prog_id: (outcome == UpgradeOutcome::Upgraded).then_some(new_prog_id),
        hooks,
        created_maps,
        reason,
    })
}

/// Loads `object` against the sandbox's maps and moves every hook to it: the new program's
/// id, the hooks, the maps it created.
fn swap(
    netns: &Netns,
    dir: &Path,
    object: &Arc<Object>,
    mode: AttachMode,
) -> Result<(u32, Swapped, Vec<String>)> {
    let upgrade_err = |netns: &Netns| {
        let netns = netns.to_string();
        move |source| Error::Upgrade {
            netns: netns.clone(),
            source: Box::new(source),
        }
    };
    Ok(match mode {
        // Links are reached through their pins: no need to enter the netns.
        AttachMode::Tcx => {
            let mut loaded = up::load_against(dir, object).map_err(upgrade_err(netns))?;
            let hooks = up::swap_tcx_links(dir, &mut loaded).map_err(|e| {
                loaded.discard_created();
                upgrade_err(netns)(e)
            })?;
            repin(dir, &mut loaded);
            (loaded.prog_id, hooks, loaded.created_maps.clone())
        }
        // Filters are found and replaced by device, over netlink in the netns.
        AttachMode::ClsBpf => {
            let (dir, object, err) = (dir.to_owned(), object.clone(), upgrade_err(netns));
            netns.run(move |handle| async move {
                let mut loaded = up::load_against(&dir, &object).map_err(&err)?;
                let hooks = match up::swap_cls_bpf_filters(&handle, &dir, &mut loaded).await {
                    Ok(hooks) => hooks,
                    Err(e) => {
                        loaded.discard_created();
                        return Err(err(e));
                    }
                };
                repin(&dir, &mut loaded);
                Ok::<_, Error>((loaded.prog_id, hooks, loaded.created_maps.clone()))
            })?
        }
    })
}

/// Moves the sandbox's program pin to the program every hook now runs. The upgrade is done
/// whatever happens here; a pin that cannot be moved is removed instead (a later connect
/// then loads this binary's program and pins it) and the failure is a warning.
fn repin(dir: &Path, loaded: &mut up::Loaded) {
    if let Err(e) = up::repin_program(dir, loaded) {
        let pin = crate::pins::program_pin(dir);
        tracing::warn!("{e}; removing {} instead", pin.display());
        if let Err(e) = std::fs::remove_file(&pin) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("unlink {}: {e}", pin.display());
            }
        }
    }
}

/// Clears `PEER_GUARD` on every recorded tap's entry that has it; returns those taps.
fn clear_peer_guards(netns: &Netns, dir: &Path) -> Result<Vec<u32>> {
    let records = ebpf::recorded_endpoints(dir).map_err(Error::ebpf(netns))?;
    let mut cleared = Vec::new();
    for (index, r) in records {
        let had =
            maps::peer_guard(dir, r.tap_ifindex).map_err(|s| Error::guard_map(netns, index, s))?;
        if had == Some(true) {
            maps::set_peer_guard(dir, r.tap_ifindex, false)
                .map_err(|s| Error::guard_map(netns, index, s))?;
            cleared.push(r.tap_ifindex);
        }
    }
    Ok(cleared)
}

/// Gives every endpoint of the sandbox's commit file its source guard (the recorded
/// settings, enforce where none are recorded, `mode` over either) with its recorded MAC and
/// addresses, then `PEER_GUARD` on its tap's entry while the mode is on. `Ok(Err(why))`:
/// nothing to do (no commit file, not the eBPF datapath).
fn fill_guard(
    sandbox: &Sandbox,
    mode: Option<GuardMode>,
) -> Result<std::result::Result<Vec<EndpointGuard>, String>> {
    let (netns, dir) = (&sandbox.netns, sandbox.pin_dir.as_path());
    let commit = sandbox.commit_file();
    let Some(recorded) = state::read_json::<AttachReport>(&commit) else {
        return Ok(Err(format!(
            "no commit file {}: pairs of `netshim connect` keep the guard they were \
             connected with",
            commit.display()
        )));
    };
    let records = ebpf::recorded_endpoints(dir).map_err(Error::ebpf(netns))?;
    let guard_err = |index, source| Error::guard_map(netns, index, source);
    let mut out = Vec::new();
    let mut recorded_settings = Vec::new();
    for e in &recorded.endpoints {
        let Some(tap) = &e.tap else { continue };
        let Some((index, _)) = records.iter().find(|(_, r)| r.tap_ifindex == tap.ifindex) else {
            continue;
        };
        let mut settings = e
            .guard
            .as_ref()
            .and_then(|g| g.settings().cloned())
            .unwrap_or_default();
        if let Some(mode) = mode {
            settings.mode = mode;
        }
        let guard = match e.endpoint.mac {
            Some(mac) => {
                let addresses: Vec<_> = e.endpoint.addresses.iter().map(|a| a.address).collect();
                let entry = GuardEntry::build(mac, &addresses, &settings);
                write_guard(dir, *index, tap.ifindex, &entry).map_err(|s| guard_err(*index, s))?;
                recorded_settings.push((e.endpoint.name.clone(), settings));
                GuardReport::applied(dir, *index, tap.ifindex).map_err(|s| guard_err(*index, s))?
            }
            None => GuardReport::unavailable(
                "the pod device has no MAC address, so the guest's cannot be checked",
            ),
        };
        out.push(EndpointGuard {
            index: *index,
            name: e.endpoint.name.clone(),
            tap: tap.name.clone(),
            guard,
        });
    }
    super::commit::amend_commit(sandbox, None, |report| {
        for e in &mut report.endpoints {
            if let Some((_, s)) = recorded_settings
                .iter()
                .find(|(n, _)| *n == e.endpoint.name)
            {
                e.guard = Some(GuardReport::Guard {
                    settings: s.clone(),
                    mac: None,
                    addresses: None,
                });
            }
        }
    })?;
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_counts_only_failures() {
        let entry = |outcome| SandboxUpgrade {
            netns: "x".into(),
            netns_cookie: 1,
            pin_dir: PathBuf::from("/sys/fs/bpf/netshim/netns-1"),
            datapath: None,
            outcome,
            new_prog_id: None,
            hooks: Swapped::default(),
            created_maps: Vec::new(),
            reason: None,
            guard: Vec::new(),
            guard_reason: None,
        };
        let report = UpgradeReport {
            object: "embedded".into(),
            sandboxes: vec![
                entry(UpgradeOutcome::Upgraded),
                entry(UpgradeOutcome::Skipped),
                entry(UpgradeOutcome::Failed),
            ],
        };
        assert_eq!(report.failed(), 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["sandboxes"][2]["outcome"], "failed");
        assert!(json["sandboxes"][0]["swapped"].is_array(), "{json}");
    }
}
