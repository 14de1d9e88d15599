//! The VMM's side of a tap: opening queues of a tap (or a new non-persistent one) the way
//! QEMU, Cloud Hypervisor or Firecracker do, with `TUNSETIFF` on fds of their own, offloads
//! (`TUNSETOFFLOAD`), virtio-net header size and send buffer. Not netshim's job (netshim
//! creates the persistent tap, [`netshim::tap`]); the tests, `vm-standin` and the tap readers
//! play the VMM with it.
//!
//! Like everything on taps, these act in the CALLING THREAD's network namespace (see
//! [`crate::on_netns_thread`]).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use netshim::tap::{self, TapError, TunMode};

/// Size of the virtio-net header on netshim's taps (`IFF_VNET_HDR`: `struct virtio_net_hdr`,
/// without `num_buffers`); this is also the kernel's default `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;

/// Read-only `ifr_flags` bit: the device is persistent (reported by TUNGETIFF).
pub const IFF_PERSIST: u16 = libc::IFF_PERSIST as u16;
/// `ifr_flags` bit: fail TUNSETIFF with EBUSY if the device already exists.
pub const IFF_TUN_EXCL: u16 = libc::IFF_TUN_EXCL as u16;
pub use netshim::tap::{IFF_MULTI_QUEUE, IFF_VNET_HDR};

/// The offloads a virtio-net VMM (QEMU, Cloud Hypervisor, Firecracker) typically enables on
/// its tap queues: checksum offload and TSO for IPv4/IPv6 with ECN (libc's `TUN_F_*`). With
/// these set, GSO skbs cross the tap whole instead of being segmented in software.
pub const VMM_OFFLOADS: u32 =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

/// The raw ioctls (nix generates `unsafe fn`s) on libc's request codes and `struct ifreq`.
mod sys {
    nix::ioctl_read_bad!(tun_get_iff, libc::TUNGETIFF, libc::ifreq);
    // By number, so that the argument is the `unsigned long` the kernel reads.
    nix::ioctl_write_int!(tun_set_offload, b'T', 208);
    nix::ioctl_write_ptr_bad!(tun_set_vnet_hdr_sz, libc::TUNSETVNETHDRSZ, libc::c_int);
    nix::ioctl_read_bad!(tun_get_vnet_hdr_sz, libc::TUNGETVNETHDRSZ, libc::c_int);
    nix::ioctl_write_ptr_bad!(tun_set_sndbuf, libc::TUNSETSNDBUF, libc::c_int);

    const _: () = assert!(
        nix::request_code_write!(b'T', 208, std::mem::size_of::<libc::c_uint>())
            == libc::TUNSETOFFLOAD
    );
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
    tap::validate_name(name)?;
    if !tap::device_exists(name)? {
        return Err(TapError::NotFound {
            name: name.to_owned(),
        });
    }
    tap::check_existing_is_tap(name)?;
    attach_queue(name, tap::tap_flags(multi_queue), offloads, true)
}

/// Creates a NEW, non-persistent tap in the calling thread's network namespace and returns
/// its (first) queue, with the given offloads. The device goes away when the last fd closes.
/// Fails with [`TapError::Busy`] if a device of that name exists (`IFF_TUN_EXCL`).
pub fn create_tap_queue(
    name: &str,
    multi_queue: bool,
    offloads: Option<u32>,
) -> Result<OwnedFd, TapError> {
    tap::validate_name(name)?;
    attach_queue(
        name,
        tap::tap_flags(multi_queue) | IFF_TUN_EXCL,
        offloads,
        false,
    )
}

fn attach_queue(
    name: &str,
    flags: u16,
    offloads: Option<u32>,
    existed: bool,
) -> Result<OwnedFd, TapError> {
    let fd = tap::attach(name, flags, existed)?;
    if let Some(off) = offloads {
        tun_set_offload(fd.as_raw_fd(), off)
            .map_err(|e| TapError::ioctl("TUNSETOFFLOAD", name, e))?;
    }
    Ok(fd)
}

/// Enables `TUN_F_*` offloads on an attached tap fd (`TUNSETOFFLOAD`).
pub fn set_offloads(fd: BorrowedFd<'_>, offloads: u32) -> Result<(), TapError> {
    tun_set_offload(fd.as_raw_fd(), offloads)
        .map_err(|e| TapError::ioctl("TUNSETOFFLOAD", &fd_label(fd), e))
}

fn tun_set_offload(fd: libc::c_int, offloads: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    unsafe { sys::tun_set_offload(fd, offloads.into()) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Reads the tun flags of the device an fd is attached to (`TUNGETIFF`): type
/// (`IFF_TAP`/`IFF_TUN`), `IFF_NO_PI`, `IFF_VNET_HDR`, `IFF_MULTI_QUEUE`, `IFF_PERSIST`.
pub fn tun_flags(fd: BorrowedFd<'_>) -> Result<u16, TapError> {
    tun_info(fd).map(|i| i.flags)
}

/// Name and tun flags of the device an fd is attached to (`TUNGETIFF`).
pub fn tun_info(fd: BorrowedFd<'_>) -> Result<TunInfo, TapError> {
    let mut ifr = tap::ioctl::ifreq_zeroed();
    // SAFETY: TUNGETIFF writes one `struct ifreq`, which `ifr` is.
    unsafe { sys::tun_get_iff(fd.as_raw_fd(), &mut ifr) }
        .map_err(|e| TapError::ioctl("TUNGETIFF", &fd_label(fd), e.into()))?;
    // SAFETY: TUNGETIFF fills ifr_flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags } as u16;
    Ok(TunInfo {
        name: tap::ioctl::ifreq_name(&ifr),
        flags,
    })
}

/// Sets the virtio-net header size of an attached tap fd (`TUNSETVNETHDRSZ`; the kernel
/// accepts >= 10, default 10; 12 = `virtio_net_hdr_mrg_rxbuf`).
pub fn set_vnet_hdr_size(fd: BorrowedFd<'_>, size: usize) -> Result<(), TapError> {
    let sz: libc::c_int = libc::c_int::try_from(size).map_err(|_| {
        TapError::ioctl(
            "TUNSETVNETHDRSZ",
            &fd_label(fd),
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    // SAFETY: TUNSETVNETHDRSZ reads one int, which `sz` is.
    unsafe { sys::tun_set_vnet_hdr_sz(fd.as_raw_fd(), &sz) }
        .map(drop)
        .map_err(|e| TapError::ioctl("TUNSETVNETHDRSZ", &fd_label(fd), e.into()))
}

/// Reads the virtio-net header size of an attached tap fd (`TUNGETVNETHDRSZ`).
pub fn vnet_hdr_size(fd: BorrowedFd<'_>) -> Result<usize, TapError> {
    let mut sz: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int, which `sz` is.
    unsafe { sys::tun_get_vnet_hdr_sz(fd.as_raw_fd(), &mut sz) }
        .map_err(|e| TapError::ioctl("TUNGETVNETHDRSZ", &fd_label(fd), e.into()))?;
    Ok(sz as usize)
}

/// Sets the send buffer of an attached tap fd (`TUNSETSNDBUF`, bytes).
pub fn set_sndbuf(fd: BorrowedFd<'_>, bytes: i32) -> Result<(), TapError> {
    let v: libc::c_int = bytes;
    // SAFETY: TUNSETSNDBUF reads one int, which `v` is.
    unsafe { sys::tun_set_sndbuf(fd.as_raw_fd(), &v) }
        .map(drop)
        .map_err(|e| TapError::ioctl("TUNSETSNDBUF", &fd_label(fd), e.into()))
}

fn fd_label(fd: BorrowedFd<'_>) -> String {
    format!("fd {}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        // (These were netshim::tap's unit test before the VMM's side moved here.)
        assert_eq!(VMM_OFFLOADS, 0x0f);
        assert_eq!(IFF_PERSIST as libc::c_int, libc::IFF_PERSIST);
        assert_eq!(IFF_TUN_EXCL as libc::c_int, libc::IFF_TUN_EXCL);
        assert_eq!(IFF_PERSIST, 0x0800);
        assert_eq!(IFF_TUN_EXCL, 0x8000);
    }
}
