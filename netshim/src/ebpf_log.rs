//! Forwarding the datapath's own log records (aya-log) into `tracing`.
//!
//! `netshim_redirect` logs with aya-log-ebpf into its `AYA_LOGS` ring buffer, only for a
//! packet it does not redirect although its device has a `peers` entry (flags it does not
//! know: the version skew guard; or a helper refusal). Every load of the program has a ring buffer of its own, found from the
//! program id with [`aya_log::EbpfLogger::init_from_id_with_logger`]. Records are emitted as
//! `tracing` events with target [`TARGET`] at the level the program logged them, with the
//! program id and the sandbox's netns as fields.
//!
//! Which programs: the loaded programs named `netshim_redirec` (the kernel keeps 15
//! characters of a name) that use a sandbox's pinned `peers` map. That covers TCX links and
//! cls_bpf filters alike, and the new program after an `upgrade` (which keeps the maps).
//!
//! The source guard's refusals are not aya-log records: the datapath writes fixed-size
//! records into each sandbox's pinned `guard_events` ring buffer, which the same follower
//! reads (see [`crate::guard::events`]; target `netshim::guard`).
//!
//! The ring buffers are polled on the runtime of the caller (tokio `AsyncFd` on the ring
//! buffer's fd); nothing here enters a netns: program and map ids are global. A ring buffer
//! has one consumer position, so two followers of one datapath (`watch` and `logs` at once)
//! each see part of the records.

use std::{collections::BTreeMap, future::Future, os::fd::AsRawFd, path::PathBuf, time::Duration};

use aya::maps::MapData;
use aya_log::EbpfLogger;
use netshim_common::{from_fixed, map_names, PROGRAM_NAME};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{datapath::ebpf, guard::events as guard_events, netns::Netns, pins};

/// The `tracing` target of forwarded datapath records.
pub const TARGET: &str = "netshim::ebpf";

/// How often a follower looks for programs loaded since (hotplug, upgrade).
pub const RESCAN: Duration = Duration::from_secs(1);

/// The name the kernel keeps for the datapath program (`BPF_OBJ_NAME_LEN` - 1 characters).
pub fn kernel_program_name() -> &'static str {
    &PROGRAM_NAME[..PROGRAM_NAME.len().min(15)]
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfLogError {
    #[error("netns {netns} has no netshim eBPF datapath (no map pinned at {path}): not attached with the ebpf tc backend")]
    NotAttached { netns: String, path: PathBuf },
    #[error("reading the pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        source: Box<aya::maps::MapError>,
    },
    #[error(transparent)]
    Pins(#[from] pins::PinError),
    #[error("starting the log follower's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Whose datapath programs to follow.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every netshim datapath program loaded on the host.
    All,
    /// The programs of one sandbox (by its pin directory).
    Sandbox { netns: String, dir: PathBuf },
}

impl Scope {
    pub fn sandbox(netns: &Netns) -> Self {
        Scope::Sandbox {
            netns: netns.arg.clone(),
            dir: pins::sandbox_dir(netns.cookie),
        }
    }
}

/// A loaded datapath program and the netns it serves (`?` when no pinned sandbox uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathProgram {
    pub prog_id: u32,
    pub netns: String,
}

fn peers_map_id(dir: &std::path::Path, netns: &str) -> Result<u32, EbpfLogError> {
    let path = dir.join(map_names::PEERS);
    let data = MapData::from_pin(&path).map_err(|source| match &source {
        aya::maps::MapError::SyscallError(e)
            if e.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            EbpfLogError::NotAttached {
                netns: netns.to_owned(),
                path: path.clone(),
            }
        }
        _ => EbpfLogError::Map {
            path: path.clone(),
            source: Box::new(source),
        },
    })?;
    data.info()
        .map(|i| i.id())
        .map_err(|source| EbpfLogError::Map {
            path,
            source: Box::new(source),
        })
}

/// A sandbox in scope: its pin directory, netns label and `peers` map id.
#[derive(Debug, Clone)]
struct PinnedSandbox {
    dir: PathBuf,
    netns: String,
    peers_id: u32,
}

/// The sandboxes in scope.
fn sandboxes(scope: &Scope) -> Result<Vec<PinnedSandbox>, EbpfLogError> {
    let mut out = Vec::new();
    match scope {
        Scope::Sandbox { netns, dir } => out.push(PinnedSandbox {
            dir: dir.clone(),
            netns: netns.clone(),
            peers_id: peers_map_id(dir, netns)?,
        }),
        Scope::All => {
            for cookie in pins::sandbox_cookies()? {
                let dir = pins::sandbox_dir(cookie);
                let label = match ebpf::recorded_sandbox(&dir) {
                    Ok(r) if r.netns_cookie != 0 => {
                        String::from_utf8_lossy(from_fixed(&r.netns_path)).into_owned()
                    }
                    _ => format!("netns cookie {cookie}"),
                };
                // A sandbox half made or half taken down has no peers map: nothing to follow.
                if let Ok(peers_id) = peers_map_id(&dir, &label) {
                    out.push(PinnedSandbox {
                        dir,
                        netns: label,
                        peers_id,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The datapath programs in `scope` that are loaded now. A sandbox scope whose netns is not
/// attached with the eBPF backend is [`EbpfLogError::NotAttached`].
pub fn datapath_programs(scope: &Scope) -> Result<Vec<DatapathProgram>, EbpfLogError> {
    programs_of(scope, &sandboxes(scope)?)
}

fn programs_of(
    scope: &Scope,
    sandboxes: &[PinnedSandbox],
) -> Result<Vec<DatapathProgram>, EbpfLogError> {
    let sandboxes: BTreeMap<u32, String> = sandboxes
        .iter()
        .map(|s| (s.peers_id, s.netns.clone()))
        .collect();
    let mut out = Vec::new();
    // A program unloaded while we iterate is an Err item: skipped.
    for info in aya::programs::loaded_programs().flatten() {
        if info.name_as_str() != Some(kernel_program_name()) {
            continue;
        }
        let maps = info.map_ids().ok().flatten().unwrap_or_default();
        let netns = maps.iter().find_map(|id| sandboxes.get(id)).cloned();
        match (scope, netns) {
            (_, Some(netns)) => out.push(DatapathProgram {
                prog_id: info.id(),
                netns,
            }),
            (Scope::All, None) => out.push(DatapathProgram {
                prog_id: info.id(),
                netns: "?".into(),
            }),
            (Scope::Sandbox { .. }, None) => {}
        }
    }
    Ok(out)
}

/// A `log::Log` that turns the records aya-log parses out of one program's ring buffer into
/// `tracing` events.
#[derive(Debug, Clone)]
pub struct Forward {
    pub prog_id: u32,
    pub netns: String,
}

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let (prog_id, netns) = (self.prog_id, self.netns.as_str());
        let source = match (record.file(), record.line()) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            _ => String::new(),
        };
        let message = record.args();
        // tracing needs the level at compile time: one call per level.
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: TARGET, $level, prog_id, netns, source, "{message}")
            };
        }
        match record.level() {
            log::Level::Error => emit!(tracing::Level::ERROR),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Trace => emit!(tracing::Level::TRACE),
        }
    }

    fn flush(&self) {}
}

/// Calls `drain` on `ring` at once (what was written before we came) and then whenever its
/// fd is readable, until aborted; `what` names the ring buffer in warnings.
///
/// # Safety
/// `ring` must own the fd it returns (for aya: a value holding the map's `MapData`): the
/// AsyncFd owns `ring` from here on, so the fd stays open and the same for its whole life.
pub(crate) async unsafe fn drain_when_readable<T: AsRawFd>(
    ring: T,
    what: &str,
    mut drain: impl FnMut(&mut T),
) {
    // SAFETY: the caller's promise above.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot poll {what}: {e}");
            return;
        }
    };
    drain(fd.get_mut());
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("polling {what}: {e}");
                return;
            }
        };
        drain(guard.get_inner_mut());
        guard.clear_ready();
    }
}

/// Reads one program's ring buffer whenever it is readable, until aborted.
async fn pump(logger: EbpfLogger<Forward>, prog_id: u32) {
    let what = format!("the datapath log ring buffer of program {prog_id}");
    // SAFETY: the fd is the ring buffer map's, owned by `logger` (its `MapData`).
    unsafe { drain_when_readable(logger, &what, |l| l.flush()) }.await;
}

/// The programs being followed, and the sandboxes' `guard_events` ring buffers, each by a
/// task on the current tokio runtime.
pub struct Follower {
    scope: Scope,
    followed: BTreeMap<u32, tokio::task::JoinHandle<()>>,
    /// By the ring buffer's map id (a sandbox keeps it across `upgrade`; one created by an
    /// `upgrade` of an older sandbox is a new id).
    guard_events: BTreeMap<u32, tokio::task::JoinHandle<()>>,
    last_error: Option<String>,
}

impl Follower {
    pub fn new(scope: Scope) -> Self {
        Self {
            scope,
            followed: BTreeMap::new(),
            guard_events: BTreeMap::new(),
            last_error: None,
        }
    }

    /// How many programs and guard ring buffers are followed.
    pub fn len(&self) -> usize {
        self.followed.len() + self.guard_events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts following the guard ring buffers of the sandboxes in scope pinned since the
    /// last call, and stops following those unpinned since.
    fn refresh_guard_events(&mut self, sandboxes: &[PinnedSandbox]) {
        let mut present = Vec::new();
        for s in sandboxes {
            match guard_events::pinned(&s.dir) {
                Ok(Some((map, id))) => {
                    present.push(id);
                    // Followed already (or its pump ended after a warning: not retried).
                    if self.guard_events.contains_key(&id) {
                        continue;
                    }
                    tracing::info!(
                        netns = %s.netns,
                        map_id = id,
                        "following the source guard's records"
                    );
                    let task =
                        tokio::spawn(guard_events::pump(map, s.dir.clone(), s.netns.clone()));
                    self.guard_events.insert(id, task);
                }
                // Attached by a netshim without the guard (`upgrade` adds it), or taken
                // down in between.
                Ok(None) => {}
                Err(e) => tracing::debug!(netns = %s.netns, "not following its guard records: {e}"),
            }
        }
        self.guard_events.retain(|id, task| {
            let keep = present.contains(id);
            if !keep {
                task.abort();
            }
            keep
        });
    }

    /// Starts following the programs in scope loaded since the last call and stops following
    /// those unloaded since; the same for the sandboxes' guard ring buffers. Must be called
    /// inside a tokio runtime (with IO enabled).
    pub fn refresh(&mut self) -> Result<(), EbpfLogError> {
        let sandboxes = sandboxes(&self.scope)?;
        self.refresh_guard_events(&sandboxes);
        let programs = programs_of(&self.scope, &sandboxes)?;
        self.followed.retain(|id, task| {
            let keep = programs.iter().any(|p| p.prog_id == *id);
            if !keep {
                tracing::debug!(
                    prog_id = *id,
                    "datapath program unloaded: no longer followed"
                );
                task.abort();
            }
            keep
        });
        for p in programs {
            if self.followed.contains_key(&p.prog_id) {
                continue;
            }
            let forward = Forward {
                prog_id: p.prog_id,
                netns: p.netns.clone(),
            };
            match EbpfLogger::init_from_id_with_logger(p.prog_id, forward) {
                Ok(logger) => {
                    tracing::info!(
                        prog_id = p.prog_id,
                        netns = %p.netns,
                        "following the datapath's log records"
                    );
                    let task = tokio::spawn(pump(logger, p.prog_id));
                    self.followed.insert(p.prog_id, task);
                }
                // Unloaded in between, or built without aya-log: nothing to follow.
                Err(e) => tracing::debug!(prog_id = p.prog_id, "not following: {e}"),
            }
        }
        Ok(())
    }

    /// [`Self::refresh`], reporting an error at debug level once per distinct error.
    fn refresh_quietly(&mut self) {
        match self.refresh() {
            Ok(()) => self.last_error = None,
            Err(e) => {
                let e = e.to_string();
                if self.last_error.as_deref() != Some(e.as_str()) {
                    tracing::debug!("looking for datapath programs: {e}");
                    self.last_error = Some(e);
                }
            }
        }
    }

    /// Refreshes every [`RESCAN`] until `stop` completes.
    pub async fn run_until<S: Future<Output = ()>>(&mut self, stop: S) {
        let mut stop = std::pin::pin!(stop);
        loop {
            self.refresh_quietly();
            tokio::select! {
                _ = stop.as_mut() => return,
                _ = tokio::time::sleep(RESCAN) => {}
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        for task in self.followed.values().chain(self.guard_events.values()) {
            task.abort();
        }
    }
}

/// Follows the datapath logs of `scope` in the background on the current runtime (for
/// `watch`), until the returned guard is dropped. Errors are debug events, not failures.
pub fn spawn_follower(scope: Scope) -> FollowerGuard {
    let task = tokio::spawn(async move {
        let mut follower = Follower::new(scope);
        follower.run_until(std::future::pending()).await;
    });
    FollowerGuard(task)
}

/// Stops the background follower when dropped.
pub struct FollowerGuard(tokio::task::JoinHandle<()>);

impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `netshim logs`: follows the datapath logs of `scope` until `stop` completes, on a
/// runtime of its own on this thread. A sandbox scope must be attached (eBPF backend) at
/// start.
pub fn follow<S: Future<Output = ()>>(scope: &Scope, stop: S) -> Result<(), EbpfLogError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EbpfLogError::Runtime)?;
    runtime.block_on(async {
        let mut stop = std::pin::pin!(stop);
        // Installs the signal handlers before anything else.
        if futures::poll!(stop.as_mut()).is_ready() {
            return Ok(());
        }
        let mut follower = Follower::new(scope.clone());
        follower.refresh()?;
        if follower.is_empty() {
            tracing::info!("no datapath program loaded yet; waiting for one");
        }
        follower.run_until(stop).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use log::Log;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn captured(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_become_events_with_their_level_program_and_netns() {
        let forward = Forward {
            prog_id: 42,
            netns: "pod-a".into(),
        };
        let out = captured(|| {
            for (level, text) in [
                (log::Level::Warn, "peers entry of ifindex 7 has flags 0x80"),
                (log::Level::Debug, "a debug record"),
            ] {
                forward.log(
                    &log::Record::builder()
                        .level(level)
                        .target("netshim_ebpf")
                        .file(Some("src/main.rs"))
                        .line(Some(60))
                        .args(format_args!("{text}"))
                        .build(),
                );
            }
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines[0].contains("WARN"), "{out}");
        assert!(lines[0].contains(TARGET), "{out}");
        assert!(
            lines[0].contains("peers entry of ifindex 7 has flags 0x80"),
            "{out}"
        );
        assert!(lines[0].contains("prog_id=42"), "{out}");
        assert!(lines[0].contains("netns=\"pod-a\""), "{out}");
        assert!(lines[0].contains("src/main.rs:60"), "{out}");
        assert!(
            lines[1].contains("DEBUG") && lines[1].contains("a debug record"),
            "{out}"
        );
    }

    #[test]
    fn guard_refusals_become_warn_events_with_their_fields() {
        let mut ev = netshim_common::GuardEvent {
            reason: netshim_common::GUARD_SOURCE_IP as u8,
            mode: netshim_common::GUARD_MODE_ENFORCE as u8,
            kind: netshim_common::GUARD_EVENT_V4,
            mac: [2, 0, 0, 0, 0, 0x66],
            ..Default::default()
        };
        ev.addr[..4].copy_from_slice(&[10, 77, 0, 99]);
        let ep = netshim_common::EndpointRecord {
            in_use: 1,
            pod_name: netshim_common::to_fixed(b"eth0"),
            tap_name: netshim_common::to_fixed(b"tap0_kata"),
            ..Default::default()
        };
        let out = captured(|| guard_events::Refusal::new(&ev, Some(&ep)).emit("pod-a"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        for want in [
            "WARN",
            guard_events::TARGET,
            "guard: endpoint 0 (eth0 / tap0_kata) dropped a packet from the VM: source_ip 10.77.0.99, source MAC 02:00:00:00:00:66",
            "netns=\"pod-a\"",
            "endpoint=eth0",
            "reason=\"source_ip\"",
            "address=10.77.0.99",
        ] {
            assert!(lines[0].contains(want), "{want} missing in {out}");
        }
    }

    #[test]
    fn the_kernel_name_is_the_first_15_characters() {
        assert_eq!(kernel_program_name(), "netshim_redirec");
    }

    #[test]
    fn a_sandbox_without_pins_is_not_attached() {
        let scope = Scope::Sandbox {
            netns: "x".into(),
            dir: PathBuf::from("/sys/fs/bpf/netshim/netns-no-such-sandbox"),
        };
        match datapath_programs(&scope) {
            Err(EbpfLogError::NotAttached { netns, .. }) => assert_eq!(netns, "x"),
            // Without bpffs access (not root) the pin cannot be read either way.
            Err(EbpfLogError::Map { .. }) if !nix::unistd::geteuid().is_root() => {}
            other => panic!("{other:?}"),
        }
    }
}
