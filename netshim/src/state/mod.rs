//! Files netshim keeps outside bpffs: `/run/netshim/netns-<cookie>/`, for what the kernel
//! does not remember itself. Directories 0700, files 0600. `/run` is a tmpfs: the state goes
//! with a reboot, as do the namespaces it describes.
//!
//! ```text
//! /run/netshim/
//!   netns-<cookie>.lock        the sandbox's flock (see [`lock`]); beside the directory
//!   netns-<cookie>/
//!     attaching.json           intent: an attach (or detach) is changing this sandbox (`sandbox::Intent`)
//!     attached.json            commit: the AttachReport of a complete attach
//!     macvtap-<ifindex>.json   the macvtap model's saved pod device
//! ```
//!
//! Crash safety: every operation that changes a sandbox holds its lock, writes the intent
//! file before its first change, and removes it after its last one; a complete attach writes
//! the commit file (atomically) just before removing the intent. An intent file without a
//! commit file whose lock is free is therefore a run that died half-way: what it made is
//! garbage, and the next attach, detach or `netshim gc` takes it away.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::pins::HostFileError;

mod health;
pub mod lock;
pub use health::Health;

/// netshim's directory under /run.
pub const STATE_ROOT: &str = "/run/netshim";
/// Prefix of a sandbox's directory (and lock file) name; the rest is the netns cookie.
pub const SANDBOX_DIR_PREFIX: &str = "netns-";
/// Suffix of a sandbox's lock file.
pub const LOCK_SUFFIX: &str = ".lock";
/// The intent file: written before an operation changes anything, removed after.
pub const INTENT_FILE: &str = "attaching.json";
/// The commit file: the report of a complete attach.
pub const COMMIT_FILE: &str = "attached.json";

/// The state directory of the sandbox whose netns has cookie `netns_cookie`.
pub fn sandbox_dir(netns_cookie: u64) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("{SANDBOX_DIR_PREFIX}{netns_cookie}"))
}

/// Creates the sandbox's state directory (and the root), both 0700.
pub fn create_sandbox_dir(netns_cookie: u64) -> Result<PathBuf, HostFileError> {
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

/// Removes the directory when nothing is left in it (best effort). Returns whether it did.
pub fn remove_sandbox_dir_if_empty(dir: &Path) -> bool {
    !has_state(dir) && fs::remove_dir(dir).is_ok()
}

/// The cookies of the sandboxes that have a state directory or a lock file, sorted.
pub fn sandbox_cookies() -> Result<Vec<u64>, HostFileError> {
    let entries = match fs::read_dir(STATE_ROOT) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HostFileError::Io {
                op: "readdir",
                path: STATE_ROOT.into(),
                source,
            })
        }
    };
    let mut cookies: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(SANDBOX_DIR_PREFIX)?;
            rest.strip_suffix(LOCK_SUFFIX).unwrap_or(rest).parse().ok()
        })
        .collect();
    cookies.sort_unstable();
    cookies.dedup();
    Ok(cookies)
}

/// Writes `bytes` to `path` atomically: a temporary file (0600) in the same directory,
/// fsync, rename over `path`, fsync of the directory.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), HostFileError> {
    place_file(path, bytes, Placement::Replace)
}

/// How [`place_file`] puts the finished temporary file at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// rename over whatever is there.
    Replace,
    /// link to the path, which fails with `AlreadyExists` (op "link into") when it exists.
    Exclusive,
}

/// Writes `bytes` to a temporary file (0600) next to `path`, fsyncs it, places it at
/// `path` as `placement` says, and fsyncs the directory. The temporary file never stays.
pub fn place_file(path: &Path, bytes: &[u8], placement: Placement) -> Result<(), HostFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}{TEMP_INFIX}{}", std::process::id()));
    let written = (|| -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A leftover temporary file keeps its old mode through open(O_CREAT).
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(HostFileError::Io {
            op: "write",
            path: tmp,
            source,
        });
    }
    let (op, placed) = match placement {
        Placement::Replace => ("rename into", fs::rename(&tmp, path)),
        Placement::Exclusive => ("link into", fs::hard_link(&tmp, path)),
    };
    let _ = fs::remove_file(&tmp);
    placed.map_err(|source| HostFileError::Io {
        op,
        path: path.to_owned(),
        source,
    })?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What temporary files are called: `.<name>.tmp-<pid>` (also the macvtap model's).
const TEMP_INFIX: &str = ".tmp-";

/// Removes temporary files a killed writer left in `dir`.
pub fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(TEMP_INFIX) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Removes a file; one that is not there is fine. Returns whether it was there.
pub fn remove_file_if_exists(path: &Path) -> Result<bool, HostFileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(HostFileError::Io {
            op: "unlink",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads a JSON state file: `None` when it is missing or unreadable as `T` (a file a killed
/// writer could not have left, since writes are atomic, but one never trusted blindly).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{}: {e}; ignored", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn atomic_write_is_0600_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("netshim-state-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(COMMIT_FILE);
        write_file_atomic(&path, b"{\"a\":1}").unwrap();
        write_file_atomic(&path, b"{\"a\":2}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":2}");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(COMMIT_FILE)]);
        let v: Option<serde_json::Value> = read_json(&path);
        assert_eq!(v.unwrap()["a"], 2);
        fs::write(dir.join(".attached.json.tmp-1"), b"x").unwrap();
        remove_temp_files(&dir);
        assert!(!dir.join(".attached.json.tmp-1").exists());
        assert!(remove_file_if_exists(&path).unwrap());
        assert!(!remove_file_if_exists(&path).unwrap());
        assert!(read_json::<serde_json::Value>(&path).is_none());
        fs::remove_dir(&dir).unwrap();
    }
}
