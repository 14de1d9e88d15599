//! A new sandbox's eBPF datapath, loaded while attach does everything else.
//!
//! Loading the datapath (the object parsed, the maps made, `BPF_PROG_LOAD` and its
//! verifier) is the longest step of an eBPF attach, and it needs nothing from the pod
//! netns: only the sandbox's identity and the attach options. So an attach of a netns that
//! has no sandbox directory yet starts it on a thread of its own as soon as it holds the
//! sandbox lock, in a private bpffs directory (`netshim-preload-<pid>-<n>`, see
//! [`pins::create_process_dir`]), while the main path enters the netns, lists and checks
//! the interfaces, writes the intent file and makes the taps. When the datapath is
//! connected, the directory is renamed into place as the sandbox's pin directory
//! ([`Preload::install`]): the same maps and program, pinned where a later process looks.
//!
//! The speculation costs nothing when it is wrong: a preload not installed (the attach
//! failed, found the netns attached, or needs more room than [`DEFAULT_CAPACITY`]
//! endpoints) is joined and its directory removed when it is dropped, and one left by a
//! killed attach is removed by the next attach (or gc) once its process is gone. Nothing of
//! it is in the pod netns or in the sandbox's pin directory before it is installed, so the
//! crash safety of attach (intent file, undo) is as before.

use std::path::{Path, PathBuf};

use super::{
    capacity::DEFAULT_CAPACITY,
    ebpf::{EbpfDatapath, EbpfError, EbpfObject},
    AttachMode,
};
use crate::pins;

/// Prefix of a preload's directory at the root of bpffs.
pub const PRELOAD_PREFIX: &str = "netshim-preload-";

/// A datapath being loaded (or loaded) for a new sandbox.
pub struct Preload {
    mode: AttachMode,
    /// The object's path (`attach --object`), to check the preload is the one asked for.
    object: Option<PathBuf>,
    capacity: u32,
    thread: Option<std::thread::JoinHandle<Result<(PathBuf, EbpfDatapath), EbpfError>>>,
}

impl Preload {
    /// Starts loading a datapath hooked with `mode` from `object` (else the built-in one),
    /// with room for [`DEFAULT_CAPACITY`] endpoints, unless the sandbox of `netns_cookie`
    /// has a pin directory already (its datapath is the pinned one).
    pub fn start(netns_cookie: u64, mode: AttachMode, object: Option<&EbpfObject>) -> Option<Self> {
        if pins::sandbox_dir(netns_cookie).exists() {
            return None;
        }
        let owned = object.cloned();
        let thread = std::thread::Builder::new()
            .name("netshim-preload".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let dir = pins::create_process_dir(PRELOAD_PREFIX)?;
                let loaded = EbpfDatapath::load(&dir, mode, owned.as_ref(), DEFAULT_CAPACITY);
                tracing::debug!(elapsed = ?started.elapsed(), ok = loaded.is_ok(), "datapath preloaded");
                match loaded {
                    Ok(datapath) => Ok((dir, datapath)),
                    Err(e) => {
                        let _ = pins::remove_sandbox_dir(&dir);
                        Err(e)
                    }
                }
            });
        match thread {
            Ok(thread) => Some(Self {
                mode,
                object: object.map(|o| o.path.clone()),
                capacity: DEFAULT_CAPACITY,
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::debug!("starting the preload thread: {e}; the datapath loads in line");
                None
            }
        }
    }

    /// Whether this preload is what a new sandbox hooked with `mode`, loaded from `object`
    /// with room for `capacity` endpoints needs.
    pub fn fits(&self, mode: AttachMode, object: Option<&EbpfObject>, capacity: u32) -> bool {
        self.mode == mode
            && self.object.as_deref() == object.map(|o| o.path.as_path())
            && capacity <= self.capacity
    }

    /// Waits for the load and moves its directory to `dir` (which must not exist yet), the
    /// sandbox's pin directory. A load that failed fails here, with its error.
    pub fn install(mut self, dir: &Path) -> Result<EbpfDatapath, EbpfError> {
        let thread = self.thread.take().expect("installed once");
        let (staging, mut datapath) = match thread.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if let Err(source) = std::fs::rename(&staging, dir) {
            let _ = pins::remove_sandbox_dir(&staging);
            return Err(EbpfError::HostFile(pins::HostFileError::Io {
                op: "rename",
                path: staging,
                source,
            }));
        }
        datapath.moved_to(dir);
        Ok(datapath)
    }
}

impl Drop for Preload {
    /// A preload not installed: its load is waited for and its directory removed.
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Ok(Ok((staging, datapath))) = thread.join() {
            drop(datapath);
            if let Err(e) = pins::remove_sandbox_dir(&staging) {
                tracing::warn!("removing the unused preloaded datapath: {e}");
            }
        }
    }
}
