//! The macvtap's char device `/dev/tap<ifindex>`: its device number (read from a sysfs mounted
//! in a private mount namespace for the sandbox netns), whose node `/dev/tap<N>` is, and mknod.

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::MacvtapError;

/// A char device number, `major:minor` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNumber {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for DevNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl std::str::FromStr for DevNumber {
    type Err = String;

    /// Parses sysfs' `dev` attribute: `major:minor`, trailing newline allowed.
    fn from_str(s: &str) -> Result<Self, String> {
        let (major, minor) = s
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not major:minor"))?;
        let num = |x: &str| x.parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
        Ok(DevNumber {
            major: num(major)?,
            minor: num(minor)?,
        })
    }
}

impl DevNumber {
    pub(super) fn rdev(self) -> u64 {
        libc::makedev(self.major, self.minor)
    }
}

impl Serialize for DevNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DevNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Reads `class/net/<name>/macvtap/tap<ifindex>/dev` from a sysfs mounted for the caller's
/// netns: on a new thread (it inherits the calling thread's netns), in a private mount
/// namespace (unshare CLONE_NEWNS, `/` made rslave so nothing propagates back), where a fresh
/// sysfs is mounted over /sys. The thread's mount namespace, and the mount, die with it.
pub(super) fn read_dev_number(name: &str, ifindex: u32) -> Result<DevNumber, MacvtapError> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};

    let attr = format!("/sys/class/net/{name}/macvtap/tap{ifindex}/dev");
    let err = |step: String, source: io::Error| MacvtapError::DevNumber {
        name: name.to_owned(),
        ifindex,
        step,
        source,
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| err("unshare(CLONE_NEWNS)".into(), e.into()))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&str>,
            )
            .map_err(|e| err("mount --make-rslave /".into(), e.into()))?;
            mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| err("mount -t sysfs (private) /sys".into(), e.into()))?;
            let text = fs::read_to_string(&attr).map_err(|e| err(format!("read {attr}"), e))?;
            text.parse::<DevNumber>().map_err(|e| {
                err(
                    format!("parse {attr}"),
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(err(
                "sysfs reader thread".into(),
                io::Error::other("panicked"),
            ))
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeStatus {
    /// A char device node with this device number.
    Ours,
    /// Nothing at the path.
    Missing,
    /// Something else (another device's node, or not a char device).
    Foreign,
}

pub(super) fn node_status(path: &Path, dev: DevNumber) -> io::Result<NodeStatus> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_char_device() && meta.rdev() == dev.rdev() => {
            Ok(NodeStatus::Ours)
        }
        Ok(_) => Ok(NodeStatus::Foreign),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeStatus::Missing),
        Err(e) => Err(e),
    }
}

/// `mknod path c major minor`, mode 0600 (what devtmpfs gives a macvtap), root-owned.
pub(super) fn make_node(path: &Path, dev: DevNumber) -> io::Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        dev.rdev(),
    )?;
    // mknod's mode is filtered by the umask.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}
