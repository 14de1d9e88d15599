//! One sandbox as netshim keeps it: its netns, and netshim's directories and files for it
//! (the state directory under /run/netshim, the pin directory in bpffs, the lock). Made once
//! at the start of an operation and handed down, instead of each step recomputing the paths
//! from the netns cookie.

use std::path::PathBuf;

use crate::{
    netns::Netns,
    pins,
    state::{self, lock::SandboxLock},
    Result,
};

#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub netns: Netns,
    /// `/run/netshim/netns-<cookie>` (see [`crate::state`]).
    pub state_dir: PathBuf,
    /// `/sys/fs/bpf/netshim/netns-<cookie>` (see [`crate::pins`]).
    pub pin_dir: PathBuf,
}

impl Sandbox {
    pub fn of(netns: &Netns) -> Self {
        let files = SandboxFiles::of(netns.cookie);
        Sandbox {
            netns: netns.clone(),
            state_dir: files.state_dir,
            pin_dir: files.pin_dir,
        }
    }

    /// The intent file of the operation under way (or of one that died).
    pub fn intent_file(&self) -> PathBuf {
        self.state_dir.join(state::INTENT_FILE)
    }

    /// The commit file of the attach that made the sandbox.
    pub fn commit_file(&self) -> PathBuf {
        self.state_dir.join(state::COMMIT_FILE)
    }

    /// One operation per sandbox at a time (see [`crate::state::lock`]): waits for the lock.
    pub fn lock(&self) -> Result<SandboxLock> {
        Ok(SandboxLock::acquire(self.netns.cookie)?)
    }
}

/// netshim's directories and files for the sandbox of netns cookie `cookie`, for the work
/// that has no [`Netns`] to make a [`Sandbox`] of: gc of a netns that is gone, or not yet
/// found.
#[derive(Debug, Clone)]
pub(crate) struct SandboxFiles {
    pub cookie: u64,
    /// `/run/netshim/netns-<cookie>` (see [`crate::state`]).
    pub state_dir: PathBuf,
    /// `/sys/fs/bpf/netshim/netns-<cookie>` (see [`crate::pins`]).
    pub pin_dir: PathBuf,
}

impl SandboxFiles {
    pub fn of(cookie: u64) -> Self {
        SandboxFiles {
            cookie,
            state_dir: state::sandbox_dir(cookie),
            pin_dir: pins::sandbox_dir(cookie),
        }
    }

    /// The intent file of the operation under way (or of one that died).
    pub fn intent_file(&self) -> PathBuf {
        self.state_dir.join(state::INTENT_FILE)
    }

    /// The commit file of the attach that made the sandbox.
    pub fn commit_file(&self) -> PathBuf {
        self.state_dir.join(state::COMMIT_FILE)
    }
}
