//! Files netshim keeps outside bpffs: `/run/netshim/netns-<cookie>/`, for what the kernel
//! does not remember itself (the macvtap model's saved pod-device MAC and addresses).
//! Directories 0700, files 0600. `/run` is a tmpfs: the state goes with a reboot, as do
//! the namespaces it describes.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::pins::PinError;

/// netshim's directory under /run.
pub const STATE_ROOT: &str = "/run/netshim";

/// The state directory of the sandbox whose netns has cookie `netns_cookie`.
pub fn sandbox_dir(netns_cookie: u64) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("netns-{netns_cookie}"))
}

/// Creates the sandbox's state directory (and the root), both 0700.
pub fn create_sandbox_dir(netns_cookie: u64) -> Result<PathBuf, PinError> {
    let dir = sandbox_dir(netns_cookie);
    crate::pins::create_private_dirs(&[Path::new(STATE_ROOT), &dir])?;
    Ok(dir)
}

/// Whether the directory holds any state file.
pub fn has_state(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

/// Removes the directory when nothing is left in it (best effort).
pub fn remove_sandbox_dir_if_empty(dir: &Path) {
    if !has_state(dir) {
        let _ = fs::remove_dir(dir);
    }
}
