//! Creating (and removing) the persistent taps handed to the VMM.
//!
//! Everything here talks to the kernel through `/dev/net/tun` ioctls (no `ip tuntap`, no
//! sysfs). A tun/tap device is created in the network namespace of the thread that opens
//! `/dev/net/tun`, and every name lookup (`if_nametoindex`, `SIOCETHTOOL`) also happens in the
//! calling thread's network namespace; callers that work on a sandbox netns must call these
//! functions from a thread that has `setns`'d into it (see [`crate::netns`]).
//!
//! Taps are created the way kata's tcfilter model does: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`
//! (plus `IFF_MULTI_QUEUE` for more than one queue), persistent, so that the device outlives
//! netshim and the VMM attaches its queues to it later with `TUNSETIFF` on its own fds
//! ([`attach`]; the VMM's side, queues with offloads and vnet header sizes, is not netshim's
//! and lives with the test support that plays the VMM). The ioctls are in [`ioctl`].

pub mod ioctl;
pub mod name;
pub mod qdisc;

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

pub use ioctl::ethtool_drvinfo;

/// The tun/tap clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

// `ifr_flags` of TUNSETIFF / TUNGETIFF (linux/if_tun.h): libc's constants, as the 16 bits
// of the kernel's `short ifr_flags` they fit in.
/// Layer-3 tun device.
pub const IFF_TUN: u16 = libc::IFF_TUN as u16;
/// Layer-2 tap device.
pub const IFF_TAP: u16 = libc::IFF_TAP as u16;
/// One queue per attached fd.
pub const IFF_MULTI_QUEUE: u16 = libc::IFF_MULTI_QUEUE as u16;
/// No `struct tun_pi` in front of frames.
pub const IFF_NO_PI: u16 = libc::IFF_NO_PI as u16;
/// A `struct virtio_net_hdr` in front of every frame.
pub const IFF_VNET_HDR: u16 = libc::IFF_VNET_HDR as u16;
/// Mask of the device type bits (`IFF_TUN` / `IFF_TAP`).
pub const TUN_TYPE_MASK: u16 = libc::TUN_TYPE_MASK as u16;

/// How to create a tap for the VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Interface name, e.g. `tap0_kata` (at most 15 bytes, see [`validate_name`]).
    pub name: String,
    /// 0 or 1 = single queue; >1 = `IFF_MULTI_QUEUE`.
    pub queues: u32,
    /// `TUNSETOWNER` uid.
    pub owner: Option<u32>,
    /// `TUNSETGROUP` gid.
    pub group: Option<u32>,
}

impl TapSpec {
    /// A single-queue tap without owner/group.
    pub fn new(name: impl Into<String>) -> Self {
        TapSpec {
            name: name.into(),
            queues: 1,
            owner: None,
            group: None,
        }
    }

    /// Whether this spec asks for a multi-queue tap.
    pub fn multi_queue(&self) -> bool {
        self.queues > 1
    }

    /// The `ifr_flags` used for `TUNSETIFF` on this tap.
    pub fn flags(&self) -> u16 {
        tap_flags(self.multi_queue())
    }
}

/// Errors of tap operations; each names the ioctl/syscall that failed and the tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be a Linux interface name (or is a `%d` template).
    #[error("invalid tap name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Opening `/dev/net/tun` failed.
    #[error("open {TUN_DEVICE} for tap {name}: {source}")]
    Open {
        /// The tap name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// An ioctl or syscall failed.
    #[error("{op} on tap {name}: {source}")]
    Ioctl {
        /// The ioctl or syscall, e.g. `TUNSETIFF`.
        op: &'static str,
        /// The tap name (or `fd N` when only an fd was given).
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A device of that name exists in the netns but is not a tap we can attach to.
    #[error("device {name} exists and is not a compatible tap: {reason}")]
    Incompatible {
        /// The device name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `TUNSETIFF` returned EBUSY: another fd already holds the only queue of a single-queue
    /// tap (a running VMM), or `IFF_TUN_EXCL` was asked and the device exists.
    #[error(
        "TUNSETIFF on tap {name}: device busy (already attached by another process, or exists)"
    )]
    Busy {
        /// The tap name.
        name: String,
    },
    /// No device of that name in the calling thread's network namespace.
    #[error("tap {name} not found in the calling thread's network namespace")]
    NotFound {
        /// The tap name.
        name: String,
    },
}

impl TapError {
    /// [`TapError::Ioctl`]: `op` on the tap `name` failed with `source`.
    pub fn ioctl(op: &'static str, name: &str, source: io::Error) -> Self {
        TapError::Ioctl {
            op,
            name: name.to_owned(),
            source,
        }
    }

    /// The errno behind this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            TapError::Open { source, .. } | TapError::Ioctl { source, .. } => source.raw_os_error(),
            TapError::Busy { .. } => Some(libc::EBUSY),
            TapError::NotFound { .. } => Some(libc::ENODEV),
            TapError::InvalidName { .. } | TapError::Incompatible { .. } => None,
        }
    }
}

/// Device type of a tun/tap device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunMode {
    /// Layer 3 (`IFF_TUN`): kata refuses these ("tun networking device not yet supported").
    Tun,
    /// Layer 2 (`IFF_TAP`).
    Tap,
}

impl TunMode {
    /// The mode encoded in tun `ifr_flags` (as returned by TUNGETIFF or sysfs `tun_flags`).
    pub fn from_flags(flags: u16) -> Option<TunMode> {
        match flags & TUN_TYPE_MASK {
            IFF_TUN => Some(TunMode::Tun),
            IFF_TAP => Some(TunMode::Tap),
            _ => None,
        }
    }

    /// `"tun"` or `"tap"` (kata's spelling of the mode).
    pub fn as_str(self) -> &'static str {
        match self {
            TunMode::Tun => "tun",
            TunMode::Tap => "tap",
        }
    }
}

impl std::fmt::Display for TunMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks that `name` is usable as a (fixed) interface name, with the kernel's rules
/// (`dev_valid_name`): 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace. Templates
/// (`%d`) are rejected too, because netshim must know the exact name of the tap it creates.
pub fn validate_name(name: &str) -> Result<(), TapError> {
    let bad = |reason| {
        Err(TapError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    if name.contains('%') {
        return bad("'%' templates are not supported; give the exact name");
    }
    Ok(())
}

/// The `ifr_flags` netshim uses for its taps: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, plus
/// `IFF_MULTI_QUEUE` if `multi_queue`.
pub fn tap_flags(multi_queue: bool) -> u16 {
    let mut flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if multi_queue {
        flags |= IFF_MULTI_QUEUE;
    }
    flags
}

/// Whether a queue count means a multi-queue tap (0 and 1 mean single queue).
pub fn is_multi_queue(queues: u32) -> bool {
    queues > 1
}

/// Creates a persistent tap (`IFF_TAP|IFF_NO_PI|IFF_VNET_HDR [|IFF_MULTI_QUEUE]`) in the
/// network namespace of the CALLING THREAD, sets `TUNSETPERSIST 1` and the owner/group if
/// given, then closes the fd.
///
/// If a compatible tap of that name already exists (e.g. left behind by an earlier run, kata
/// #6339), it is adopted: flags, owner/group and persistence are set again. Fails with
/// [`TapError::Incompatible`] if the name is taken by something else (a veth, a tun, a tap
/// with a different queue mode), and with [`TapError::Busy`] if a VMM holds the only queue.
pub fn create_persistent_tap(spec: &TapSpec) -> Result<(), TapError> {
    let name = spec.name.as_str();
    validate_name(name)?;
    let existed = device_exists(name)?;
    if existed {
        check_existing_is_tap(name)?;
    }
    let fd = attach(name, spec.flags(), existed)?;
    if let Some(uid) = spec.owner {
        ioctl::tun_set_owner(fd.as_fd(), uid)
            .map_err(|e| TapError::ioctl("TUNSETOWNER", name, e))?;
    }
    if let Some(gid) = spec.group {
        ioctl::tun_set_group(fd.as_fd(), gid)
            .map_err(|e| TapError::ioctl("TUNSETGROUP", name, e))?;
    }
    ioctl::tun_set_persist(fd.as_fd(), true)
        .map_err(|e| TapError::ioctl("TUNSETPERSIST", name, e))?;
    drop(fd);
    Ok(())
}

/// Makes the tap non-persistent (`TUNSETPERSIST 0`) so that it disappears when the last fd
/// attached to it closes (immediately, if no VMM holds a queue). An alternative to netlink
/// `RTM_DELLINK`. Works in the calling thread's network namespace.
///
/// `multi_queue` must match the tap's mode (the kernel refuses the attach otherwise; this is
/// reported as [`TapError::Incompatible`]). For a single-queue tap still held by a VMM this
/// fails with [`TapError::Busy`].
pub fn remove_persistent_tap(name: &str, multi_queue: bool) -> Result<(), TapError> {
    validate_name(name)?;
    if !device_exists(name)? {
        return Err(TapError::NotFound {
            name: name.to_owned(),
        });
    }
    check_existing_is_tap(name)?;
    let fd = attach(name, tap_flags(multi_queue), true)?;
    ioctl::tun_set_persist(fd.as_fd(), false)
        .map_err(|e| TapError::ioctl("TUNSETPERSIST", name, e))?;
    drop(fd);
    Ok(())
}

/// Whether an interface of that name exists in the calling thread's network namespace.
pub fn device_exists(name: &str) -> Result<bool, TapError> {
    validate_name(name)?;
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENODEV) | Err(nix::errno::Errno::ENXIO) => Ok(false),
        Err(e) => Err(TapError::ioctl("if_nametoindex", name, e.into())),
    }
}

/// The tun/tap mode of an existing device in the calling thread's network namespace, without
/// sysfs and without attaching to it: the ethtool driver info of a tun device reads
/// `driver = "tun"` and `bus_info = "tun"` or `"tap"`. `Ok(None)` if the device exists but is
/// not a tun/tap device; [`TapError::NotFound`] if there is no such device.
pub fn tun_mode_by_name(name: &str) -> Result<Option<TunMode>, TapError> {
    validate_name(name)?;
    match ethtool_drvinfo(name) {
        Ok((driver, bus)) => Ok(mode_from_drvinfo(&driver, &bus)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(TapError::NotFound {
            name: name.to_owned(),
        }),
        // Devices without ethtool driver info (e.g. some virtual devices) are not tun/tap.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(TapError::ioctl("SIOCETHTOOL(ETHTOOL_GDRVINFO)", name, e)),
    }
}

/// Maps ethtool `driver`/`bus_info` strings to a tun mode (tun devices report driver `tun`).
pub fn mode_from_drvinfo(driver: &str, bus_info: &str) -> Option<TunMode> {
    if driver != "tun" {
        return None;
    }
    match bus_info {
        "tap" => Some(TunMode::Tap),
        "tun" => Some(TunMode::Tun),
        _ => None,
    }
}

/// Checks that the existing device `name` is a tap (not a tun, not another kind of device):
/// [`TapError::Incompatible`] otherwise. A device gone in between passes (`TUNSETIFF` then
/// decides).
pub fn check_existing_is_tap(name: &str) -> Result<(), TapError> {
    match tun_mode_by_name(name) {
        Ok(Some(TunMode::Tap)) => Ok(()),
        Ok(Some(TunMode::Tun)) => Err(TapError::Incompatible {
            name: name.to_owned(),
            reason: "it is a tun (layer 3) device".into(),
        }),
        Ok(None) => {
            let driver = ethtool_drvinfo(name)
                .map(|(d, _)| d)
                .unwrap_or_else(|_| "unknown".into());
            Err(TapError::Incompatible {
                name: name.to_owned(),
                reason: format!("it is not a tun/tap device (driver {driver})"),
            })
        }
        // Raced with a delete: let TUNSETIFF decide.
        Err(TapError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens `/dev/net/tun` and attaches the fd to the device `name` with `TUNSETIFF` and
/// `flags` (creating the device unless it exists): the step under
/// [`create_persistent_tap`], and the one a VMM takes for each queue. `existed` says that the
/// device was there before, so that `EINVAL` means [`TapError::Incompatible`]; `EBUSY` is
/// [`TapError::Busy`]. Works in the calling thread's network namespace.
pub fn attach(name: &str, flags: u16, existed: bool) -> Result<OwnedFd, TapError> {
    let fd = open_tun(name)?;
    set_iff(fd.as_fd(), name, flags, existed)?;
    Ok(fd)
}

// ---------------------------------------------------------------------------------------------
// internals

fn open_tun(name: &str) -> Result<OwnedFd, TapError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|source| TapError::Open {
            name: name.to_owned(),
            source,
        })?;
    Ok(OwnedFd::from(f))
}

fn set_iff(fd: BorrowedFd<'_>, name: &str, flags: u16, existed: bool) -> Result<(), TapError> {
    let mut ifr =
        ioctl::ifreq_with_name(name).map_err(|e| TapError::ioctl("TUNSETIFF", name, e))?;
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    match ioctl::tun_set_iff(fd, &mut ifr) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(TapError::Busy {
            name: name.to_owned(),
        }),
        Err(e) if existed && e.raw_os_error() == Some(libc::EINVAL) => {
            Err(TapError::Incompatible {
                name: name.to_owned(),
                reason: format!(
                    "TUNSETIFF with flags {flags:#06x} refused (EINVAL): queue mode \
                     (IFF_MULTI_QUEUE) or device type differs"
                ),
            })
        }
        Err(e) => Err(TapError::ioctl("TUNSETIFF", name, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("tap0_kata").is_ok());
        assert!(validate_name("a").is_ok());
        assert!(validate_name("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0b",
            "tap%d_kata",
        ] {
            let e = validate_name(bad).unwrap_err();
            assert!(matches!(e, TapError::InvalidName { .. }), "{bad:?}: {e}");
        }
        let e = validate_name("this_name_is_too_long").unwrap_err();
        assert!(e.to_string().contains("this_name_is_too_long"), "{e}");
    }

    #[test]
    fn flags() {
        assert_eq!(tap_flags(false), 0x5002);
        assert_eq!(tap_flags(true), 0x5102);
        assert_eq!(TapSpec::new("t").flags(), 0x5002);
        let spec = TapSpec {
            queues: 4,
            ..TapSpec::new("t")
        };
        assert!(spec.multi_queue());
        assert_eq!(spec.flags(), 0x5102);
        assert!(!is_multi_queue(0));
        assert!(!is_multi_queue(1));
        assert!(is_multi_queue(2));
        // Our constants agree with libc's.
        assert_eq!(IFF_TAP as libc::c_int, libc::IFF_TAP);
        assert_eq!(IFF_TUN as libc::c_int, libc::IFF_TUN);
        assert_eq!(IFF_NO_PI as libc::c_int, libc::IFF_NO_PI);
        assert_eq!(IFF_VNET_HDR as libc::c_int, libc::IFF_VNET_HDR);
        assert_eq!(TUN_TYPE_MASK as libc::c_short, libc::TUN_TYPE_MASK);
        assert_eq!(IFF_MULTI_QUEUE as libc::c_int, libc::IFF_MULTI_QUEUE);
    }

    #[test]
    fn modes() {
        assert_eq!(TunMode::from_flags(0x5002), Some(TunMode::Tap));
        assert_eq!(TunMode::from_flags(0x1001), Some(TunMode::Tun));
        assert_eq!(TunMode::from_flags(0), None);
        assert_eq!(mode_from_drvinfo("tun", "tap"), Some(TunMode::Tap));
        assert_eq!(mode_from_drvinfo("tun", "tun"), Some(TunMode::Tun));
        assert_eq!(mode_from_drvinfo("veth", ""), None);
        assert_eq!(TunMode::Tap.to_string(), "tap");
    }

    #[test]
    fn ifreq_name() {
        let ifr = ioctl::ifreq_with_name("tap0_kata").unwrap();
        assert_eq!(ioctl::ifreq_name(&ifr), "tap0_kata");
        assert!(ioctl::ifreq_with_name("1234567890123456").is_err());
    }

    #[test]
    fn errors_name_the_op_and_tap() {
        let e = TapError::ioctl(
            "TUNSETIFF",
            "tap0_kata",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let s = e.to_string();
        assert!(s.starts_with("TUNSETIFF on tap tap0_kata: "), "{s}");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }

    // The root-only test on a real netns (create / adopt / open / remove taps) lives in
    // tests/tests/tap_device.rs.
}
