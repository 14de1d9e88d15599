//! The host's mount namespace: where netshim's bpffs pins and `/run/netshim` are.
//!
//! `ip netns exec NS netshim …` runs netshim in a mount namespace of its own with a fresh
//! `/sys` (so that `/sys/class/net` shows NS's devices): a bpffs netshim mounted there, and
//! the pins it made in it, would vanish when the process exits, taking the datapath with
//! them, and the host's pins would not be seen at all. So before anything else (while the
//! process is still single-threaded: `setns(CLONE_NEWNS)` refuses a threaded process),
//! [`join_host`] compares this process's mount namespace and `/sys/fs/bpf` with the host's
//! (PID 1's, see [`super::host_pid`]) and, when both differ and no bpffs is mounted at this
//! one's `/sys/fs/bpf`, joins the host's mount namespace, keeping the working directory (as
//! `nsenter --wd` does) so that relative paths the user typed mean what they meant. The
//! network namespace is not changed.
//!
//! Nothing changes when the mount namespace is the host's, when `/sys/fs/bpf` is the same
//! directory as the host's (a container with the host's bpffs bind-mounted), nor when a
//! bpffs of this mount namespace's own is mounted there (someone set up a private one on
//! purpose; `ip netns exec` leaves a bare sysfs directory there).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    sched::{setns, CloneFlags},
    sys::stat::Mode,
    unistd::fchdir,
};

/// This process's mount namespace.
const SELF_MNT: &str = "/proc/self/ns/mnt";
/// Where bpffs is in this mount namespace.
const SELF_BPFFS: &str = crate::pins::BPFFS;

/// The host's mount namespace (that of [`super::host_pid`]).
fn host_mnt(pid: u32) -> String {
    format!("/proc/{pid}/ns/mnt")
}

/// The host's `/sys/fs/bpf`, through the root of [`super::host_pid`].
fn host_bpffs(pid: u32) -> String {
    format!("/proc/{pid}/root/sys/fs/bpf")
}

/// How this process sees the host's bpffs and `/run/netshim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// It runs in the host's mount namespace.
    Host,
    /// Its own mount namespace, with the host's `/sys/fs/bpf` (bind-mounted, say).
    SharedBpffs,
    /// Its own mount namespace with a bpffs of its own mounted at `/sys/fs/bpf` (on
    /// purpose: `ip netns exec` mounts none): that one is used.
    OwnBpffs,
    /// It was in another mount namespace (`ip netns exec`) and joined the host's.
    Joined,
}

/// Why the host's mount namespace could not be joined (or told apart).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MntnsError {
    #[error("cannot compare this mount namespace with the host's: {op} {path}: {errno}")]
    Inspect {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error(
        "this process runs in a mount namespace other than the host's whose /sys/fs/bpf is \
         not the host's (as under `ip netns exec`), and joining the host's failed: {op} \
         {path}: {errno}"
    )]
    Join {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

static OUTCOME: OnceLock<Result<View, MntnsError>> = OnceLock::new();

/// Makes this process see the host's bpffs and `/run/netshim` (see the module docs), once;
/// later calls return the first outcome. Call it first thing in `main`: joining needs a
/// single-threaded process.
pub fn join_host() -> Result<View, MntnsError> {
    OUTCOME.get_or_init(join_host_now).clone()
}

/// The outcome of [`join_host`]; `None` when it was never called.
pub fn outcome() -> Option<Result<View, MntnsError>> {
    OUTCOME.get().cloned()
}

/// Logs (at debug) what [`join_host`] did, once logging is set up.
pub fn log_outcome() {
    match outcome() {
        Some(Ok(View::Joined)) => tracing::debug!(
            "joined the host's mount namespace: this one's /sys/fs/bpf was not the host's \
             (ip netns exec?)"
        ),
        Some(Ok(View::SharedBpffs)) => {
            tracing::debug!("own mount namespace, with the host's /sys/fs/bpf: staying in it")
        }
        Some(Ok(View::OwnBpffs)) => tracing::debug!(
            "own mount namespace with a bpffs of its own at /sys/fs/bpf: using that one"
        ),
        Some(Err(e)) => tracing::debug!("{e}"),
        _ => {}
    }
}

fn join_host_now() -> Result<View, MntnsError> {
    let pid = super::host_pid().map_err(|(path, errno)| MntnsError::Inspect {
        op: "stat",
        path,
        errno,
    })?;
    let host_mnt = host_mnt(pid);
    if same_file(SELF_MNT, &host_mnt)? {
        return Ok(View::Host);
    }
    // bpffs may be mounted in neither yet (netshim mounts it on first attach): the
    // directories are compared, whatever is mounted on them.
    if same_file(SELF_BPFFS, &host_bpffs(pid)).unwrap_or(false) {
        return Ok(View::SharedBpffs);
    }
    // A bpffs someone mounted in this mount namespace on purpose (`unshare --mount` and
    // `mount -t bpf`, for a private set of sandboxes) is theirs to use. `ip netns exec`
    // mounts none: its /sys/fs/bpf is a bare sysfs directory.
    if crate::pins::is_bpffs(Path::new(SELF_BPFFS)).unwrap_or(false) {
        return Ok(View::OwnBpffs);
    }
    let join_err = |op, path: &str| {
        let path = PathBuf::from(path);
        move |errno| MntnsError::Join { op, path, errno }
    };
    let cwd = open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(join_err("open", "."))?;
    let host = open(
        host_mnt.as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(join_err("open", &host_mnt))?;
    setns(&host, CloneFlags::CLONE_NEWNS).map_err(join_err("setns(CLONE_NEWNS)", &host_mnt))?;
    // setns moved the root and the working directory to the new namespace's root.
    fchdir(&cwd).map_err(join_err("fchdir to the working directory", "."))?;
    Ok(View::Joined)
}

/// Whether two paths name the same file (device and inode, following links).
fn same_file(a: &str, b: &str) -> Result<bool, MntnsError> {
    let stat = |path: &str| {
        std::fs::metadata(path).map_err(|e| MntnsError::Inspect {
            op: "stat",
            path: Path::new(path).to_owned(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    };
    let (a, b) = (stat(a)?, stat(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_process_sees_the_hosts_bpffs_without_joining() {
        // The tests run on the host (as root): nothing to join, nothing changed.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let view = join_host().unwrap();
        assert!(
            matches!(view, View::Host | View::SharedBpffs | View::OwnBpffs),
            "{view:?}"
        );
        assert_eq!(outcome(), Some(Ok(view)));
    }
}
