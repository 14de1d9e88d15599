//! One netshim operation per sandbox at a time.
//!
//! attach, detach, connect, upgrade, watch and gc of the same netns take an exclusive
//! `flock` on `/run/netshim/netns-<cookie>.lock` for as long as they change it. The kernel
//! drops the lock when the holder dies (even by SIGKILL), so a lock never outlives a crashed
//! run, and a lock that is held means the work under it is still in progress: gc skips it.
//!
//! Lock files live beside the sandbox directories, not inside them (detach removes the
//! directory). A lock file does not outlive its sandbox: whoever drops the lock of a
//! sandbox that has nothing left (no pin directory, no state directory) removes the file,
//! and gc removes the lock files of dead namespaces. The file is only ever unlinked by the
//! holder of its lock, before it lets go; a process that was waiting on the file meanwhile
//! gets its lock on an orphan inode, notices (the path no longer names the file it locked)
//! and retries on the path, so two processes never both hold "the" lock of a sandbox.
//! A waiter that retried made a new file at the path; it removes it in turn when it drops
//! the lock (an upgrade or watch that finds the sandbox detached meanwhile, say).

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

/// An exclusive lock on one sandbox; released on drop (or when the process dies). Dropping
/// it also removes the lock file when the sandbox has nothing left (see the module docs).
#[derive(Debug)]
pub struct SandboxLock {
    file: File,
    path: PathBuf,
    netns_cookie: u64,
    /// The file was unlinked already ([`SandboxLock::remove_file`]).
    removed: bool,
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
                        file,
                        path,
                        netns_cookie,
                        removed: false,
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
    /// file. Best effort. The same as dropping it; named for the callers that read better
    /// with it.
    pub fn release(self) {}

    /// Removes the lock file while holding the lock (gc of a dead namespace). Waiters then
    /// find the path gone or renewed and retry.
    pub fn remove_file(mut self) -> Result<(), HostFileError> {
        self.removed = true;
        self.unlink()
    }

    /// Unlinks the lock file, still locked: only when the path names the file this lock is
    /// on (a file that is not ours stays).
    fn unlink(&self) -> Result<(), HostFileError> {
        let io_err = |op: &'static str| {
            let path = self.path.clone();
            move |source| HostFileError::Io { op, path, source }
        };
        let held = self.file.metadata().map_err(io_err("fstat"))?;
        match std::fs::symlink_metadata(&self.path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("stat")(e)),
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_err("unlink")(source)),
        }
    }
}

impl Drop for SandboxLock {
    /// Removes the lock file when the sandbox has nothing left, then (when the file is
    /// closed, after this) lets go of the lock: unlinked while still locked, so that a
    /// waiter that gets the lock next finds the path gone and retries.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let left = crate::pins::sandbox_dir(self.netns_cookie).exists()
            || super::sandbox_dir(self.netns_cookie).exists();
        if !left {
            if let Err(e) = self.unlink() {
                tracing::warn!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    /// A cookie no netns has (the kernel counts them up from 1), one per test and test
    /// process, and its lock path; `None` (skipped) without root, which /run/netshim needs.
    fn test_sandbox(salt: u64) -> Option<(u64, PathBuf)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (/run/netshim)");
            return None;
        }
        let cookie = u64::MAX - 2 * u64::from(std::process::id()) - salt;
        Some((cookie, lock_path(cookie)))
    }

    /// Whether `/proc/locks` shows a flock of this process waiting on inode `ino`.
    fn someone_waits_on(ino: u64) -> bool {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        let pid = std::process::id().to_string();
        locks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // `N: -> FLOCK ADVISORY WRITE <pid> <maj:min:ino> 0 EOF`
            f.get(1) == Some(&"->")
                && f.get(2) == Some(&"FLOCK")
                && f.get(5) == Some(&pid.as_str())
                && f.get(6).and_then(|d| d.rsplit(':').next()) == Some(&ino.to_string())
        })
    }

    /// What detach and a concurrent upgrade (or watch) do to one sandbox: the detach
    /// removes the sandbox and lets go of its lock while the other waits for it; the waiter
    /// gets the lock on the unlinked inode, retries on a new file at the path, finds the
    /// sandbox gone and gives up. While it holds that lock nobody else gets one, and once
    /// it drops it no lock file is left.
    #[test]
    fn a_waiter_that_outlives_the_sandbox_leaves_no_lock_file() {
        let Some((cookie, path)) = test_sandbox(0) else {
            return;
        };
        let detach = SandboxLock::acquire(cookie).expect("first lock");
        let first = std::fs::metadata(&path).expect("lock file").ino();

        let (got_tx, got_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            let lock = SandboxLock::acquire(cookie).expect("second lock");
            got_tx.send(std::fs::metadata(lock.path()).ok()).unwrap();
            done_rx.recv().unwrap();
            // The sandbox was detached meanwhile: the lock goes as upgrade's does.
            drop(lock);
        });
        // Until the waiter blocks on the first file (a wait for a state, not a timing).
        let mut waited = Duration::ZERO;
        while !someone_waits_on(first) {
            assert!(waited < Duration::from_secs(30), "the waiter never blocked");
            std::thread::sleep(Duration::from_millis(5));
            waited += Duration::from_millis(5);
        }
        // The sandbox has nothing left (its cookie names no directory): the file goes.
        detach.release();

        // (tmpfs may give the new file the old one's inode number: that one is freed.)
        got_rx
            .recv()
            .unwrap()
            .expect("the waiter holds the lock of a file at the path");
        assert!(
            SandboxLock::try_acquire(cookie).unwrap().is_none(),
            "a third process got the lock while the waiter holds it"
        );
        done_tx.send(()).unwrap();
        waiter.join().unwrap();
        assert!(
            !path.exists(),
            "{} outlived its sandbox (the last holder dropped the lock of a sandbox with \
             nothing left)",
            path.display()
        );
    }

    /// The holder's removal never takes away a file someone else locks: a lock file that
    /// is not the one this lock is on stays.
    #[test]
    fn removal_leaves_a_file_that_is_not_the_holders() {
        let Some((cookie, path)) = test_sandbox(1) else {
            return;
        };
        let lock = SandboxLock::acquire(cookie).expect("lock");
        // Replaced behind the holder's back (not by netshim: it only unlinks under the lock).
        std::fs::remove_file(&path).unwrap();
        let other = SandboxLock::acquire(cookie).expect("lock on the new file");
        lock.remove_file().unwrap();
        assert!(path.exists(), "the other holder's file was removed");
        assert!(SandboxLock::try_acquire(cookie).unwrap().is_none());
        other.remove_file().unwrap();
        assert!(!path.exists());
    }
}
