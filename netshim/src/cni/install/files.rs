//! Atomic file replacement in a directory a runtime watches: the new bytes go to a hidden
//! temporary file of the same directory (a name no CNI loader reads: it ends in none of
//! `.conf`, `.conflist`, `.json`), are synced, get the mode and owner asked for, and are
//! renamed over the target; then the directory is synced. A reader sees the old file or the
//! new one, never a part; a plugin process running from the old binary keeps its inode.

use std::{
    fs,
    io::Write,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use super::error::{io, InstallError};

/// Mode, owner and group a written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Attrs {
    /// `path`'s own (permission bits only), or `None` when it does not exist.
    pub fn of(path: &Path) -> Result<Option<Attrs>, InstallError> {
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(Attrs {
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("stat", path)(e)),
        }
    }

    /// A new file of this process's owner with `mode`.
    pub fn new_file(mode: u32) -> Attrs {
        Attrs {
            mode,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

/// The hidden temporary name beside `target` (unique per process).
fn temporary(target: &Path) -> std::path::PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.netshim-tmp", std::process::id()))
}

/// Replaces `target` with `bytes` atomically (see the module docs).
pub fn write_atomic(target: &Path, bytes: &[u8], attrs: Attrs) -> Result<(), InstallError> {
    replace(target, bytes, attrs, None)
}

/// [`write_atomic`], unless `target` no longer holds `expected` just before the rename (the
/// primary CNI wrote it meanwhile): then nothing is changed and `Ok(false)` says to look
/// again. This narrows the window in which a write of the primary's could be lost to the
/// rename itself.
pub fn replace_if_unchanged(
    target: &Path,
    bytes: &[u8],
    attrs: Attrs,
    expected: &[u8],
) -> Result<bool, InstallError> {
    match replace(target, bytes, attrs, Some(expected)) {
        Ok(()) => Ok(true),
        Err(InstallError::Io { op: CHANGED, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The `op` of the error that says the target changed under [`replace_if_unchanged`].
const CHANGED: &str = "changed meanwhile:";

fn replace(
    target: &Path,
    bytes: &[u8],
    attrs: Attrs,
    expected: Option<&[u8]>,
) -> Result<(), InstallError> {
    let tmp = temporary(target);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        // fchown before fchmod: a chown clears set-id bits.
        nix::unistd::fchown(&f, Some(attrs.uid.into()), Some(attrs.gid.into()))
            .map_err(|e| io("chown", &tmp)(e.into()))?;
        f.set_permissions(fs::Permissions::from_mode(attrs.mode))
            .map_err(io("chmod", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        if let Some(expected) = expected {
            if read(target)?.as_deref() != Some(expected) {
                return Err(io(CHANGED, target)(std::io::ErrorKind::Interrupted.into()));
            }
        }
        fs::rename(&tmp, target).map_err(io("rename into place", target))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(target)
}

/// Removes `path` (fine when it is gone) and syncs its directory.
pub fn remove(path: &Path) -> Result<bool, InstallError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove", path)(e)),
    }
}

fn sync_dir(path: &Path) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

/// The bytes of `path`, `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Whether `a` and `b` hold the same bytes (sizes first, so that a different binary is
/// usually told apart without reading it).
pub fn same_content(a: &Path, b: &Path) -> Result<bool, InstallError> {
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else {
        return Ok(false);
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(fs::read(a).map_err(io("read", a))? == fs::read(b).map_err(io("read", b))?)
}
