//! The bpffs layout that keeps a sandbox's datapath alive after `netshim` exits.
//!
//! ```text
//! /sys/fs/bpf/netshim/                 0700, created on first attach
//!   netns-<cookie>/                    0700, one per attached network namespace
//!     peers counters unmatched         maps of the datapath (see netshim-common::map_names)
//!     endpoints sandbox                maps that describe the sandbox to later processes
//!     guard guard_v4 guard_v6 ...      the source guard's maps (see the guard module)
//!     link_<ifname>                    one TCX link per device ingress (kernel >= 6.6)
//!     program                          the verified `netshim_redirect` every later connect
//!                                      of the sandbox attaches (no second BPF_PROG_LOAD);
//!                                      sandboxes of releases before it have none
//!     netns_anchor                     a cls_bpf sandbox's link on its netns (gc's "alive?")
//!   netns_anchor_program               the SK_LOOKUP program every netns anchor links, loaded
//!                                      once for the node; unpinned with the last sandbox
//! ```
//! The directory is named after the namespace's cookie (`SO_NETNS_COOKIE`), so `--netns NAME`
//! and `--netns /proc/<pid>/ns/net` of the same namespace find the same pins, and a new
//! namespace can never inherit a dead one's pins (inode numbers are reused; cookies are not).

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, BPF_FS_MAGIC},
};

/// Where bpffs is (or gets) mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// netshim's directory in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/netshim";
/// Prefix of a sandbox's directory name; the rest is the netns cookie.
pub const SANDBOX_DIR_PREFIX: &str = "netns-";
/// Prefix of a pinned TCX link; the rest is the interface name.
pub const LINK_PIN_PREFIX: &str = "link_";
/// The sandbox's loaded datapath program (not a map: readers open maps by name).
pub const PROGRAM_PIN: &str = "program";
/// The sandbox's netns anchor: a bpf_link on the network namespace itself (see
/// [`crate::datapath::netns_anchor`]), which tells gc whether the netns still exists.
pub const NETNS_ANCHOR_PIN: &str = "netns_anchor";

/// The program of every sandbox's netns anchor, one for the node (under [`PIN_ROOT`]).
pub const ANCHOR_PROGRAM_PIN: &str = "netns_anchor_program";

/// A failure on one of netshim's own files on the host: the bpffs pins (and the bpffs mount),
/// the state files under /run/netshim and the sandbox lock files.
#[derive(Debug, thiserror::Error)]
pub enum HostFileError {
    #[error("mount -t bpf bpf {BPFFS}: {0}")]
    Mount(nix::Error),
    #[error("statfs {path}: {source}")]
    Statfs { path: PathBuf, source: nix::Error },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Mounts bpffs at /sys/fs/bpf unless one is mounted there already. Returns whether it
/// mounted.
pub fn ensure_bpffs() -> Result<bool, HostFileError> {
    if is_bpffs(Path::new(BPFFS))? {
        return Ok(false);
    }
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(HostFileError::Mount)?;
    Ok(true)
}

/// Whether `path` is a bpffs mount (false when it does not exist).
pub fn is_bpffs(path: &Path) -> Result<bool, HostFileError> {
    match statfs(path) {
        Ok(s) => Ok(s.filesystem_type() == BPF_FS_MAGIC),
        Err(nix::Error::ENOENT) => Ok(false),
        Err(source) => Err(HostFileError::Statfs {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The pin directory of the sandbox whose netns has cookie `netns_cookie`.
pub fn sandbox_dir(netns_cookie: u64) -> PathBuf {
    Path::new(PIN_ROOT).join(format!("{SANDBOX_DIR_PREFIX}{netns_cookie}"))
}

/// The pin of the TCX link on `ifname`'s ingress.
pub fn link_pin(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("{LINK_PIN_PREFIX}{ifname}"))
}

/// The pin of the sandbox's datapath program.
pub fn program_pin(dir: &Path) -> PathBuf {
    dir.join(PROGRAM_PIN)
}

/// The pin of the node's netns anchor program.
pub fn anchor_program_pin() -> PathBuf {
    Path::new(PIN_ROOT).join(ANCHOR_PROGRAM_PIN)
}

/// The pin of the sandbox's netns anchor link.
pub fn netns_anchor_pin(dir: &Path) -> PathBuf {
    dir.join(NETNS_ANCHOR_PIN)
}

/// Creates the sandbox's pin directory (and netshim's root), both 0700.
pub fn create_sandbox_dir(netns_cookie: u64) -> Result<PathBuf, HostFileError> {
    ensure_bpffs()?;
    let dir = sandbox_dir(netns_cookie);
    create_private_dirs(&[Path::new(PIN_ROOT), &dir])?;
    Ok(dir)
}

/// Creates each directory (parents first, as given) if missing, and makes it 0700: only
/// root may read netshim's state.
pub(crate) fn create_private_dirs(dirs: &[&Path]) -> Result<(), HostFileError> {
    for d in dirs {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(HostFileError::Io {
                    op: "mkdir",
                    path: d.to_path_buf(),
                    source,
                })
            }
        }
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(|source| {
            HostFileError::Io {
                op: "chmod 0700",
                path: d.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Entries of `dir`; a directory that does not exist has none.
fn read_dir_if_exists(dir: &Path) -> Result<Vec<fs::DirEntry>, HostFileError> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(HostFileError::Io {
            op: "readdir",
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Netns cookies of every sandbox directory under [`PIN_ROOT`], sorted.
pub fn sandbox_cookies() -> Result<Vec<u64>, HostFileError> {
    let mut cookies: Vec<u64> = read_dir_if_exists(Path::new(PIN_ROOT))?
        .into_iter()
        .filter_map(|e| parse_sandbox_dir_name(&e.file_name().to_string_lossy()))
        .collect();
    cookies.sort_unstable();
    Ok(cookies)
}

/// The netns cookie a sandbox directory name stands for.
pub fn parse_sandbox_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix(SANDBOX_DIR_PREFIX)?.parse().ok()
}

/// Pinned link files in a sandbox directory, as (interface name, path).
pub fn link_pins(dir: &Path) -> Result<Vec<(String, PathBuf)>, HostFileError> {
    let mut pins: Vec<_> = read_dir_if_exists(dir)?
        .into_iter()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ifname = name.strip_prefix(LINK_PIN_PREFIX)?.to_owned();
            Some((ifname, e.path()))
        })
        .collect();
    pins.sort();
    Ok(pins)
}

/// Removes a sandbox directory and every pin in it. Removing a link pin detaches the link
/// once no process holds it; removing a map pin frees the map once nothing uses it.
pub fn remove_sandbox_dir(dir: &Path) -> Result<(), HostFileError> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in read_dir_if_exists(dir)? {
        let path = entry.path();
        fs::remove_file(&path).map_err(|source| HostFileError::Io {
            op: "unlink",
            path: path.clone(),
            source,
        })?;
    }
    fs::remove_dir(dir).map_err(|source| HostFileError::Io {
        op: "rmdir",
        path: dir.to_owned(),
        source,
    })?;
    if dir.parent() == Some(Path::new(PIN_ROOT)) && sandbox_cookies()?.is_empty() {
        // The last sandbox went: the node's anchor program goes too (the links hold the
        // program they run; the next anchor loads and pins it again).
        match fs::remove_file(anchor_program_pin()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HostFileError::Io {
                    op: "unlink",
                    path: anchor_program_pin(),
                    source,
                })
            }
        }
    }
    Ok(())
}

/// A private directory at the root of bpffs that one process makes for itself
/// (`<prefix><pid>-<n>`: an upgrade's staging, an attach's preloaded datapath) and removes
/// when done. One left by a dead process with that prefix is removed first
/// ([`remove_stale_process_dirs`]).
pub fn create_process_dir(prefix: &str) -> Result<PathBuf, HostFileError> {
    ensure_bpffs()?;
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = Path::new(BPFFS).join(format!(
        "{prefix}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    // A dead run of ours with the same pid left it: its pins are stale.
    remove_sandbox_dir(&dir)?;
    remove_stale_process_dirs(prefix);
    create_private_dirs(&[&dir])?;
    Ok(dir)
}

/// Removes the directories of [`create_process_dir`] with `prefix` whose process is gone
/// (best effort: their pins hold objects pinned elsewhere too, or that nothing uses).
pub fn remove_stale_process_dirs(prefix: &str) {
    let Ok(entries) = fs::read_dir(BPFFS) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            .map_or_else(|e| e != nix::errno::Errno::ESRCH, |()| true);
        if !alive {
            let _ = remove_sandbox_dir(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names() {
        let dir = sandbox_dir(4026532000);
        assert_eq!(dir, PathBuf::from("/sys/fs/bpf/netshim/netns-4026532000"));
        assert_eq!(
            link_pin(&dir, "eth0"),
            PathBuf::from("/sys/fs/bpf/netshim/netns-4026532000/link_eth0")
        );
        assert_eq!(
            program_pin(&dir),
            PathBuf::from("/sys/fs/bpf/netshim/netns-4026532000/program")
        );
        assert_eq!(parse_sandbox_dir_name("netns-42"), Some(42));
        assert_eq!(parse_sandbox_dir_name("netns-x"), None);
        assert_eq!(parse_sandbox_dir_name("peers"), None);
    }
}
