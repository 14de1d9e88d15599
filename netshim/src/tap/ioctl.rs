//! The tun/tap and ethtool ioctls of the product's taps, declared with nix's ioctl macros on
//! libc's `struct ifreq` and request codes, each wrapped in a safe function.
//!
//! The integer-by-value requests (`TUNSETPERSIST`, `TUNSETOWNER`, `TUNSETGROUP`) are declared
//! by number (`_IOW('T', n, int)`), so that their argument is the `unsigned long` the kernel
//! reads; the request codes nix computes are checked against libc's below.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// The raw ioctls (nix generates `unsafe fn`s).
mod sys {
    nix::ioctl_readwrite_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_int!(tun_set_persist, b'T', 203);
    nix::ioctl_write_int!(tun_set_owner, b'T', 204);
    nix::ioctl_write_int!(tun_set_group, b'T', 206);
    nix::ioctl_readwrite_bad!(siocethtool, libc::SIOCETHTOOL, libc::ifreq);

    /// `_IOW('T', nr, int)`.
    macro_rules! iow_int {
        ($nr:expr) => {
            nix::request_code_write!(b'T', $nr, std::mem::size_of::<libc::c_int>())
        };
    }
    const _: () = assert!(iow_int!(203) == libc::TUNSETPERSIST);
    const _: () = assert!(iow_int!(204) == libc::TUNSETOWNER);
    const _: () = assert!(iow_int!(206) == libc::TUNSETGROUP);
}

/// `TUNSETIFF`: attaches the `/dev/net/tun` fd to the device named in `ifr` (creating it if
/// there is none) with `ifr_flags`.
pub(super) fn tun_set_iff(fd: BorrowedFd<'_>, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: TUNSETIFF reads and writes back one `struct ifreq`, which `ifr` is.
    unsafe { sys::tun_set_iff(fd.as_raw_fd(), ifr) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Calls one of the tun ioctls that take their argument by value.
fn tun_write_int(
    ioctl: unsafe fn(libc::c_int, libc::c_ulong) -> nix::Result<libc::c_int>,
    fd: BorrowedFd<'_>,
    value: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: only the by-value requests below are passed here (no pointer is involved).
    unsafe { ioctl(fd.as_raw_fd(), value) }
        .map(drop)
        .map_err(io::Error::from)
}

/// `TUNSETPERSIST`: whether the device outlives its last fd.
pub(super) fn tun_set_persist(fd: BorrowedFd<'_>, persist: bool) -> io::Result<()> {
    tun_write_int(sys::tun_set_persist, fd, persist.into())
}

/// `TUNSETOWNER`: the uid that may attach to the device.
pub(super) fn tun_set_owner(fd: BorrowedFd<'_>, uid: u32) -> io::Result<()> {
    tun_write_int(sys::tun_set_owner, fd, uid.into())
}

/// `TUNSETGROUP`: the gid that may attach to the device.
pub(super) fn tun_set_group(fd: BorrowedFd<'_>, gid: u32) -> io::Result<()> {
    tun_write_int(sys::tun_set_group, fd, gid.into())
}

/// A zeroed `struct ifreq` naming `name` (EINVAL if it cannot be an interface name).
pub fn ifreq_with_name(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut ifr = ifreq_zeroed();
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// A zeroed `struct ifreq`, for the kernel to fill in.
pub fn ifreq_zeroed() -> libc::ifreq {
    // SAFETY: struct ifreq is plain old data (a name and a union of integers, addresses and
    // a pointer); all zeroes is a valid value of each.
    unsafe { std::mem::zeroed() }
}

/// The interface name in `ifr_name`.
pub fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr.ifr_name.iter().map(|&c| c as u8).collect();
    cstr_field(&bytes)
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h; libc has no binding of it).
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
    let mut ifr = ifreq_with_name(name)?;
    ifr.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: SIOCETHTOOL reads `ifr`, whose data points at `info`, a live ethtool_drvinfo
    // of the size ETHTOOL_GDRVINFO writes.
    unsafe { sys::siocethtool(sock.as_fd().as_raw_fd(), &mut ifr) }.map_err(io::Error::from)?;
    Ok((cstr_field(&info.driver), cstr_field(&info.bus_info)))
}

fn cstr_field(bytes: &[u8]) -> String {
    match CStr::from_bytes_until_nul(bytes) {
        Ok(c) => c.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
