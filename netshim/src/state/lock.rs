//! One netshim operation per sandbox at a time.
//!
//! attach, detach, connect, upgrade, watch and gc of the same netns take an exclusive
//! `flock` on `/run/netshim/netns-<cookie>.lock` for as long as they change it. The kernel
//! drops the lock when the holder dies (even by SIGKILL), so a lock never outlives a crashed
//! run, and a lock that is held means the work under it is still in progress: gc skips it.
//!
//! Lock files live beside the sandbox directories, not inside them (detach removes the
//! directory). gc removes the lock files of dead namespaces; a process that was waiting on a
//! file that got removed notices (the path no longer names the file it locked) and retries.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use super::STATE_ROOT;
use crate::pins::HostFileError;

/// The lock file of the sandbox whose netns has cookie `netns_cookie`.
pub fn lock_path(netns_cookie: u64) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("netns-{netns_cookie}.lock"))
}

/// An exclusive lock on one sandbox; released on drop (or when the process dies).
#[derive(Debug)]
pub struct SandboxLock {
    _file: File,
    path: PathBuf,
    netns_cookie: u64,
}

impl SandboxLock {
    /// Waits for the lock.
    pub fn acquire(netns_cookie: u64) -> Result<Self, HostFileError> {
        Ok(Self::lock(netns_cookie, true)?.expect("a blocking flock returns only when locked"))
    }

    /// Takes the lock if nobody holds it; `None` when someone does.
    pub fn try_acquire(netns_cookie: u64) -> Result<Option<Self>, HostFileError> {
        Self::lock(netns_cookie, false)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(netns_cookie: u64, wait: bool) -> Result<Option<Self>, HostFileError> {
        crate::pins::create_private_dirs(&[Path::new(STATE_ROOT)])?;
        let path = lock_path(netns_cookie);
        let io_err = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| HostFileError::Io { op, path, source }
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err("open", &path))?;
            let op = if wait {
                libc::LOCK_EX
            } else {
                libc::LOCK_EX | libc::LOCK_NB
            };
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => return Err(io_err("flock", &path)(e)),
                }
            }
            // gc may have removed the file while we waited on it: then the lock we hold is
            // on an orphan inode and someone else may lock a new file at the same path.
            let held = file.metadata().map_err(io_err("fstat", &path))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(Self {
                        _file: file,
                        path,
                        netns_cookie,
                    }))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &path)(e)),
            }
        }
    }

    /// Releases the lock, and removes the lock file as well when the sandbox has nothing
    /// left (no pin directory, no state directory): a netns netshim is done with keeps no
    /// file. Best effort.
    pub fn release(self) {
        let left = crate::pins::sandbox_dir(self.netns_cookie).exists()
            || super::sandbox_dir(self.netns_cookie).exists();
        if !left {
            if let Err(e) = self.remove_file() {
                tracing::warn!("{e}");
            }
        }
    }

    /// Removes the lock file while holding the lock (gc of a dead namespace). Waiters then
    /// find the path gone or renewed and retry.
    pub fn remove_file(self) -> Result<(), HostFileError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(HostFileError::Io {
                op: "unlink",
                path: self.path.clone(),
                source,
            }),
        }
    }
}
