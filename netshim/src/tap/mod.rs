//! Creating and opening the taps handed to the VMM.
//!
//! Everything here talks to the kernel through `/dev/net/tun` ioctls (no `ip tuntap`, no
//! sysfs). A tun/tap device is created in the network namespace of the thread that opens
//! `/dev/net/tun`, and every name lookup (`if_nametoindex`, `SIOCETHTOOL`) also happens in the
//! calling thread's network namespace; callers that work on a sandbox netns must call these
//! functions from a thread that has `setns`'d into it (see [`crate::netns`]).
//!
//! Taps are created the way kata's tcfilter model does: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`
//! (plus `IFF_MULTI_QUEUE` for more than one queue), persistent, so that the device outlives
//! netshim and the VMM attaches its queues to it later with `TUNSETIFF` on its own fds.

pub mod name;

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// The tun/tap clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// Size of `ifr_name` including the terminating NUL (so names are at most 15 bytes).
pub const IFNAMSIZ: usize = 16;

/// Size of the virtio-net header netshim uses on its taps (`struct virtio_net_hdr`, without
/// `num_buffers`); this is also the kernel's default `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;

// `ifr_flags` of TUNSETIFF / TUNGETIFF (linux/if_tun.h).
/// Layer-3 tun device.
pub const IFF_TUN: u16 = 0x0001;
/// Layer-2 tap device.
pub const IFF_TAP: u16 = 0x0002;
/// NAPI on the write path.
pub const IFF_NAPI: u16 = 0x0010;
/// NAPI with frags on the write path.
pub const IFF_NAPI_FRAGS: u16 = 0x0020;
/// Bring up without carrier.
pub const IFF_NO_CARRIER: u16 = 0x0040;
/// One queue per attached fd.
pub const IFF_MULTI_QUEUE: u16 = 0x0100;
/// Read-only: the device is persistent (reported by TUNGETIFF).
pub const IFF_PERSIST: u16 = 0x0800;
/// No `struct tun_pi` in front of frames.
pub const IFF_NO_PI: u16 = 0x1000;
/// A `struct virtio_net_hdr` in front of every frame.
pub const IFF_VNET_HDR: u16 = 0x4000;
/// Fail TUNSETIFF with EBUSY if the device already exists.
pub const IFF_TUN_EXCL: u16 = 0x8000;
/// Mask of the device type bits (`IFF_TUN` / `IFF_TAP`).
pub const TUN_TYPE_MASK: u16 = 0x000f;

// TUNSETOFFLOAD flags (linux/if_tun.h).
/// The reader can take frames with partial checksums.
pub const TUN_F_CSUM: u32 = 0x01;
/// The reader can take TSO over IPv4 frames.
pub const TUN_F_TSO4: u32 = 0x02;
/// The reader can take TSO over IPv6 frames.
pub const TUN_F_TSO6: u32 = 0x04;
/// The reader can take TSO frames with ECN.
pub const TUN_F_TSO_ECN: u32 = 0x08;
/// UDP fragmentation offload (removed from the kernel; kept for completeness).
pub const TUN_F_UFO: u32 = 0x10;
/// The reader can take USO over IPv4 frames (kernel >= 6.2).
pub const TUN_F_USO4: u32 = 0x20;
/// The reader can take USO over IPv6 frames (kernel >= 6.2).
pub const TUN_F_USO6: u32 = 0x40;
/// The offloads a virtio-net VMM (QEMU, Cloud Hypervisor, Firecracker) typically enables on
/// its tap queues: checksum offload and TSO for IPv4/IPv6 with ECN. With these set, GSO skbs
/// cross the tap whole instead of being segmented in software.
pub const VMM_OFFLOADS: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

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
    fn ioctl(op: &'static str, name: &str, source: io::Error) -> Self {
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

/// What TUNGETIFF says about the device an fd is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunInfo {
    /// The interface name.
    pub name: String,
    /// The tun flags (`IFF_TAP`, `IFF_NO_PI`, `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`, `IFF_PERSIST`...).
    pub flags: u16,
}

impl TunInfo {
    /// tun or tap.
    pub fn mode(&self) -> Option<TunMode> {
        TunMode::from_flags(self.flags)
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
    if name.len() >= IFNAMSIZ {
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
    let fd = open_tun(name)?;
    set_iff(fd.as_fd(), name, spec.flags(), existed)?;
    if let Some(uid) = spec.owner {
        ioctl_val(fd.as_fd(), libc::TUNSETOWNER, uid as libc::c_ulong)
            .map_err(|e| TapError::ioctl("TUNSETOWNER", name, e))?;
    }
    if let Some(gid) = spec.group {
        ioctl_val(fd.as_fd(), libc::TUNSETGROUP, gid as libc::c_ulong)
            .map_err(|e| TapError::ioctl("TUNSETGROUP", name, e))?;
    }
    ioctl_val(fd.as_fd(), libc::TUNSETPERSIST, 1)
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
    let fd = open_tun(name)?;
    set_iff(fd.as_fd(), name, tap_flags(multi_queue), true)?;
    ioctl_val(fd.as_fd(), libc::TUNSETPERSIST, 0)
        .map_err(|e| TapError::ioctl("TUNSETPERSIST", name, e))?;
    drop(fd);
    Ok(())
}

/// Opens one queue of an EXISTING tap in the calling thread's network namespace (what a VMM
/// does): attaches with `TUNSETIFF` using `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR [|IFF_MULTI_QUEUE]`
/// and, if `offloads` is given, enables those `TUN_F_*` offloads with `TUNSETOFFLOAD`
/// (usually [`VMM_OFFLOADS`]). The returned fd is blocking; frames read from and written to it
/// carry a [`VNET_HDR_LEN`]-byte virtio-net header.
pub fn open_tap_queue(
    name: &str,
    multi_queue: bool,
    offloads: Option<u32>,
) -> Result<OwnedFd, TapError> {
    validate_name(name)?;
    if !device_exists(name)? {
        return Err(TapError::NotFound {
            name: name.to_owned(),
        });
    }
    check_existing_is_tap(name)?;
    attach_queue(name, tap_flags(multi_queue), offloads, true)
}

/// Creates a NEW, non-persistent tap in the calling thread's network namespace and returns
/// its (first) queue, with the given offloads. The device goes away when the last fd closes.
/// Fails with [`TapError::Busy`] if a device of that name exists (`IFF_TUN_EXCL`).
pub fn create_tap_queue(
    name: &str,
    multi_queue: bool,
    offloads: Option<u32>,
) -> Result<OwnedFd, TapError> {
    validate_name(name)?;
    attach_queue(name, tap_flags(multi_queue) | IFF_TUN_EXCL, offloads, false)
}

fn attach_queue(
    name: &str,
    flags: u16,
    offloads: Option<u32>,
    existed: bool,
) -> Result<OwnedFd, TapError> {
    let fd = open_tun(name)?;
    set_iff(fd.as_fd(), name, flags, existed)?;
    if let Some(off) = offloads {
        ioctl_val(fd.as_fd(), libc::TUNSETOFFLOAD, off as libc::c_ulong)
            .map_err(|e| TapError::ioctl("TUNSETOFFLOAD", name, e))?;
    }
    Ok(fd)
}

/// Enables `TUN_F_*` offloads on an attached tap fd (`TUNSETOFFLOAD`).
pub fn set_offloads(fd: BorrowedFd<'_>, offloads: u32) -> Result<(), TapError> {
    ioctl_val(fd, libc::TUNSETOFFLOAD, offloads as libc::c_ulong)
        .map_err(|e| TapError::ioctl("TUNSETOFFLOAD", &fd_label(fd), e))
}

/// Reads the tun flags of the device an fd is attached to (`TUNGETIFF`): type
/// (`IFF_TAP`/`IFF_TUN`), `IFF_NO_PI`, `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`, `IFF_PERSIST`.
pub fn tun_flags(fd: BorrowedFd<'_>) -> Result<u16, TapError> {
    tun_info(fd).map(|i| i.flags)
}

/// Name and tun flags of the device an fd is attached to (`TUNGETIFF`).
pub fn tun_info(fd: BorrowedFd<'_>) -> Result<TunInfo, TapError> {
    let mut ifr = IfReq::zeroed();
    ioctl_ptr(fd, libc::TUNGETIFF, &mut ifr as *mut IfReq)
        .map_err(|e| TapError::ioctl("TUNGETIFF", &fd_label(fd), e))?;
    // SAFETY: TUNGETIFF fills ifr_flags.
    let flags = unsafe { ifr.ifru.flags } as u16;
    Ok(TunInfo {
        name: ifr.name_string(),
        flags,
    })
}

/// The features `/dev/net/tun` supports (`TUNGETFEATURES`): the `IFF_*` flags it accepts.
pub fn tun_features() -> Result<u32, TapError> {
    let fd = open_tun("-")?;
    let mut features: libc::c_uint = 0;
    ioctl_ptr(fd.as_fd(), libc::TUNGETFEATURES, &mut features as *mut _)
        .map_err(|e| TapError::ioctl("TUNGETFEATURES", "-", e))?;
    Ok(features)
}

/// Sets the virtio-net header size of an attached tap fd (`TUNSETVNETHDRSZ`; the kernel
/// accepts >= 10, default 10; 12 = `virtio_net_hdr_mrg_rxbuf`).
pub fn set_vnet_hdr_size(fd: BorrowedFd<'_>, size: usize) -> Result<(), TapError> {
    let mut sz: libc::c_int = libc::c_int::try_from(size).map_err(|_| {
        TapError::ioctl(
            "TUNSETVNETHDRSZ",
            &fd_label(fd),
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    ioctl_ptr(fd, libc::TUNSETVNETHDRSZ, &mut sz as *mut _)
        .map_err(|e| TapError::ioctl("TUNSETVNETHDRSZ", &fd_label(fd), e))
}

/// Reads the virtio-net header size of an attached tap fd (`TUNGETVNETHDRSZ`).
pub fn vnet_hdr_size(fd: BorrowedFd<'_>) -> Result<usize, TapError> {
    let mut sz: libc::c_int = 0;
    ioctl_ptr(fd, libc::TUNGETVNETHDRSZ, &mut sz as *mut _)
        .map_err(|e| TapError::ioctl("TUNGETVNETHDRSZ", &fd_label(fd), e))?;
    Ok(sz as usize)
}

/// Sets the send buffer of an attached tap fd (`TUNSETSNDBUF`, bytes).
pub fn set_sndbuf(fd: BorrowedFd<'_>, bytes: i32) -> Result<(), TapError> {
    let mut v: libc::c_int = bytes;
    ioctl_ptr(fd, libc::TUNSETSNDBUF, &mut v as *mut _)
        .map_err(|e| TapError::ioctl("TUNSETSNDBUF", &fd_label(fd), e))
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

/// Returns ethtool's (driver, bus_info) for a device in the calling thread's netns.
pub fn ethtool_drvinfo(name: &str) -> io::Result<(String, String)> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    let mut info = EthtoolDrvinfo::zeroed();
    info.cmd = ETHTOOL_GDRVINFO;
    let mut ifr = IfReq::with_name(name)?;
    ifr.ifru.data = (&mut info as *mut EthtoolDrvinfo).cast();
    ioctl_ptr(sock.as_fd(), libc::SIOCETHTOOL, &mut ifr as *mut IfReq)?;
    Ok((cstr_field(&info.driver), cstr_field(&info.bus_info)))
}

// ---------------------------------------------------------------------------------------------
// internals

fn check_existing_is_tap(name: &str) -> Result<(), TapError> {
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
    let mut ifr = IfReq::with_name(name).map_err(|e| TapError::ioctl("TUNSETIFF", name, e))?;
    ifr.ifru.flags = flags as libc::c_short;
    match ioctl_ptr(fd, libc::TUNSETIFF, &mut ifr as *mut IfReq) {
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

fn fd_label(fd: BorrowedFd<'_>) -> String {
    format!("fd {}", fd.as_raw_fd())
}

fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::Ioctl, arg: *mut T) -> io::Result<()> {
    // SAFETY: callers pass a request whose argument is a pointer to a live, correctly sized T.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn ioctl_val(fd: BorrowedFd<'_>, req: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: requests used with this take their argument by value (TUNSETPERSIST, ...).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `struct ifreq`: name[16] followed by a 24-byte union (flags short / data pointer).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; IFNAMSIZ],
    ifru: IfrIfru,
}

#[repr(C)]
#[derive(Clone, Copy)]
union IfrIfru {
    flags: libc::c_short,
    data: *mut libc::c_void,
    _pad: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

impl IfReq {
    fn zeroed() -> Self {
        IfReq {
            name: [0; IFNAMSIZ],
            ifru: IfrIfru { _pad: [0; 24] },
        }
    }

    fn with_name(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.as_bytes().contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut ifr = Self::zeroed();
        for (d, s) in ifr.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(ifr)
    }

    fn name_string(&self) -> String {
        let bytes: Vec<u8> = self.name.iter().map(|&c| c as u8).collect();
        cstr_field(&bytes)
    }
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const _: () = assert!(std::mem::size_of::<EthtoolDrvinfo>() == 196);

impl EthtoolDrvinfo {
    fn zeroed() -> Self {
        EthtoolDrvinfo {
            cmd: 0,
            driver: [0; 32],
            version: [0; 32],
            fw_version: [0; 32],
            bus_info: [0; 32],
            erom_version: [0; 32],
            reserved2: [0; 12],
            n_priv_flags: 0,
            n_stats: 0,
            testinfo_len: 0,
            eedump_len: 0,
            regdump_len: 0,
        }
    }
}

fn cstr_field(bytes: &[u8]) -> String {
    match CStr::from_bytes_until_nul(bytes) {
        Ok(c) => c.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
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
        assert_eq!(VMM_OFFLOADS, 0x0f);
        // Our constants agree with libc's.
        assert_eq!(IFF_TAP as libc::c_int, libc::IFF_TAP);
        assert_eq!(IFF_TUN as libc::c_int, libc::IFF_TUN);
        assert_eq!(IFF_NO_PI as libc::c_int, libc::IFF_NO_PI);
        assert_eq!(IFF_VNET_HDR as libc::c_int, libc::IFF_VNET_HDR);
        assert_eq!(IFF_MULTI_QUEUE as libc::c_int, libc::IFF_MULTI_QUEUE);
        assert_eq!(IFF_PERSIST as libc::c_int, libc::IFF_PERSIST);
        assert_eq!(IFF_TUN_EXCL as libc::c_int, libc::IFF_TUN_EXCL);
        assert_eq!(TUN_F_CSUM, libc::TUN_F_CSUM);
        assert_eq!(TUN_F_TSO4, libc::TUN_F_TSO4);
        assert_eq!(TUN_F_TSO6, libc::TUN_F_TSO6);
        assert_eq!(TUN_F_TSO_ECN, libc::TUN_F_TSO_ECN);
        assert_eq!(TUN_F_USO4, libc::TUN_F_USO4);
        assert_eq!(TUN_F_USO6, libc::TUN_F_USO6);
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
        let ifr = IfReq::with_name("tap0_kata").unwrap();
        assert_eq!(ifr.name_string(), "tap0_kata");
        assert!(IfReq::with_name("1234567890123456").is_err());
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
