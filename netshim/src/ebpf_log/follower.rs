//! Following the datapath's log records and the sandboxes' guard records as programs and
//! pins come and go, each ring buffer by a task on the current tokio runtime.

use std::{collections::BTreeMap, future::Future};

use aya_log::EbpfLogger;

use super::{
    errors::{self, Errors},
    polled::Polled,
    programs::{programs_of, sandboxes, PinnedSandbox},
    EbpfLogError, Forward, Scope, RESCAN,
};
use crate::{guard::events as guard_events, ring_drain::drain_when_readable};

/// Reads one program's ring buffer whenever it is readable, until aborted.
async fn pump(logger: EbpfLogger<Forward>, prog_id: u32) {
    let what = format!("the datapath log ring buffer of program {prog_id}");
    // SAFETY: the fd is the ring buffer map's, owned by `logger` (its `MapData`).
    unsafe { drain_when_readable(logger, &what, |l| l.flush()) }.await;
}

/// The programs being followed (those with an aya-log ring by a task on the current tokio
/// runtime, the others through their sandbox's `errors` array), the sandboxes' `errors`
/// arrays and `guard_last` arrays (polled at each refresh) and the `guard_events` ring
/// buffers of older datapaths (a task each).
pub struct Follower {
    scope: Scope,
    /// By program id; `None`: a program without aya-log, whose records are in `errors`.
    followed: BTreeMap<u32, Option<tokio::task::JoinHandle<()>>>,
    /// The sandboxes' `errors` arrays (records older than the follower's start were there
    /// before it).
    errors: Polled<Errors>,
    /// By the ring buffer's map id (a sandbox keeps it across `upgrade`; one created by an
    /// `upgrade` of an older sandbox is a new id).
    guard_events: BTreeMap<u32, tokio::task::JoinHandle<()>>,
    /// The sandboxes' `guard_last` arrays.
    guard_last: Polled<guard_events::LastRefusals>,
    last_error: Option<String>,
}

impl Follower {
    pub fn new(scope: Scope) -> Self {
        let since = errors::monotonic_ns();
        Self {
            scope,
            followed: BTreeMap::new(),
            errors: Polled::new(since),
            guard_events: BTreeMap::new(),
            guard_last: Polled::new(since),
            last_error: None,
        }
    }

    /// How many programs, `errors` arrays and guard ring buffers are followed.
    pub fn len(&self) -> usize {
        self.followed.len() + self.errors.len() + self.guard_events.len() + self.guard_last.len()
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
    /// those unloaded since; the same for the sandboxes' guard ring buffers; reports the
    /// records of their `errors` arrays. Must be called inside a tokio runtime (with IO
    /// enabled).
    pub fn refresh(&mut self) -> Result<(), EbpfLogError> {
        let sandboxes = sandboxes(&self.scope)?;
        self.refresh_guard_events(&sandboxes);
        let pinned = || {
            sandboxes
                .iter()
                .map(|s| (s.dir.as_path(), s.netns.as_str()))
        };
        self.guard_last.poll(pinned());
        self.errors.poll(pinned());
        let programs = programs_of(&self.scope, &sandboxes)?;
        self.followed.retain(|id, task| {
            let keep = programs.iter().any(|p| p.prog_id == *id);
            if !keep {
                tracing::debug!(
                    prog_id = *id,
                    "datapath program unloaded: no longer followed"
                );
                if let Some(task) = task {
                    task.abort();
                }
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
                    self.followed.insert(p.prog_id, Some(task));
                }
                // A datapath since issue 13: its records are in its sandbox's `errors`
                // array, which `self.errors` polls.
                Err(aya_log::Error::MapNotFound) => {
                    tracing::info!(
                        prog_id = p.prog_id,
                        netns = %p.netns,
                        "following the datapath's log records (its sandbox's errors map)"
                    );
                    self.followed.insert(p.prog_id, None);
                }
                // Unloaded in between: nothing to follow.
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
        let programs = self.followed.values().flatten();
        for task in programs.chain(self.guard_events.values()) {
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
