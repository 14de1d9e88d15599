//! The few `bpf(2)` commands `netshim upgrade` needs that aya 0.14 has no public API for.
//!
//! aya's `PinnedLink`/`FdLink` never hand out the link's fd, and its `bpf_link_update` (used
//! by `SchedClassifier::attach_to_link`) never passes `BPF_F_REPLACE`. So the link side of a
//! live upgrade is done here, with the attr layouts of `include/uapi/linux/bpf.h` written out
//! as `#[repr(C)]` structs. Each struct is the prefix of `union bpf_attr` a command reads;
//! the kernel zero-fills the rest of the union when `size` is smaller than its own.
//!
//! | command                  | attr prefix used                                                   |
//! |--------------------------|--------------------------------------------------------------------|
//! | `BPF_OBJ_GET` (7)        | `__u64 pathname; __u32 bpf_fd; __u32 file_flags;`                  |
//! | `BPF_PROG_GET_FD_BY_ID` (13) | `__u32 prog_id; __u32 next_id; __u32 open_flags;`              |
//! | `BPF_OBJ_GET_INFO_BY_FD` (15) | `__u32 bpf_fd; __u32 info_len; __u64 info;`                   |
//! | `BPF_LINK_UPDATE` (29)   | `__u32 link_fd; __u32 new_prog_fd; __u32 flags; __u32 old_prog_fd;` |
//!
//! `BPF_OBJ_GET_INFO_BY_FD` on a link fills `struct bpf_link_info`: `__u32 type; __u32 id;
//! __u32 prog_id;` then an 8-byte aligned union at offset 16, whose `tcx` member is
//! `__u32 ifindex; __u32 attach_type;`.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `BPF_F_REPLACE`: BPF_LINK_UPDATE fails with `EPERM` unless the link still runs
/// `old_prog_fd`'s program.
pub const BPF_F_REPLACE: u32 = 1 << 2;
/// `enum bpf_link_type`: `BPF_LINK_TYPE_TCX`.
pub const BPF_LINK_TYPE_TCX: u32 = 11;

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `struct bpf_link_info` up to the `tcx` member, with room for the rest of the union (the
/// kernel copies back at most `info_len` bytes, and at most its own size).
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    type_: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    tcx_ifindex: u32,
    tcx_attach_type: u32,
    _rest: [u64; 8],
}

/// What the kernel says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// `enum bpf_link_type`.
    pub link_type: u32,
    pub id: u32,
    /// The program the link runs now.
    pub prog_id: u32,
    /// TCX links: the device (0 once the device is gone: the link is defunct).
    pub tcx_ifindex: u32,
}

/// # Safety
/// `attr` must be the attr prefix the kernel expects for `cmd`, and any pointers in it must
/// be valid for the call.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: per the caller; the size passed is the size of the struct pointed to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the commands that call this return a new fd that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// `BPF_OBJ_GET`: a new fd for the object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        ..ObjGetAttr::default()
    };
    // SAFETY: ObjGetAttr is BPF_OBJ_GET's attr; `path` outlives the call.
    unsafe { sys_bpf(BPF_OBJ_GET, &mut attr) }.map(owned_fd)
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub fn prog_fd_by_id(prog_id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id: prog_id,
        ..GetFdByIdAttr::default()
    };
    // SAFETY: GetFdByIdAttr is BPF_PROG_GET_FD_BY_ID's attr.
    unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }.map(owned_fd)
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link fd.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = RawLinkInfo::default();
    let mut attr = InfoByFdAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    // SAFETY: InfoByFdAttr is BPF_OBJ_GET_INFO_BY_FD's attr; `info` is writable for
    // `info_len` bytes and outlives the call.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(LinkInfo {
        link_type: info.type_,
        id: info.id,
        prog_id: info.prog_id,
        tcx_ifindex: info.tcx_ifindex,
    })
}

/// `BPF_LINK_UPDATE`: the link runs `new_prog` from the next packet on. With `old_prog`,
/// `BPF_F_REPLACE` makes the kernel refuse (`EPERM`) unless the link still runs that program,
/// so a change made by someone else in between is detected instead of overwritten.
pub fn link_update(
    link: BorrowedFd<'_>,
    new_prog: BorrowedFd<'_>,
    old_prog: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: new_prog.as_raw_fd() as u32,
        ..LinkUpdateAttr::default()
    };
    if let Some(old) = old_prog {
        attr.flags = BPF_F_REPLACE;
        attr.old_prog_fd = old.as_raw_fd() as u32;
    }
    // SAFETY: LinkUpdateAttr is BPF_LINK_UPDATE's attr.
    unsafe { sys_bpf(BPF_LINK_UPDATE, &mut attr) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_uapi() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(ObjGetAttr, bpf_fd), 8);
        assert_eq!(offset_of!(ObjGetAttr, file_flags), 12);
        assert_eq!(offset_of!(InfoByFdAttr, info), 8);
        assert_eq!(offset_of!(LinkUpdateAttr, old_prog_fd), 12);
        assert_eq!(size_of::<GetFdByIdAttr>(), 12);
        assert_eq!(offset_of!(RawLinkInfo, prog_id), 8);
        assert_eq!(offset_of!(RawLinkInfo, tcx_ifindex), 16);
    }

    #[test]
    fn a_missing_pin_is_not_found() {
        let err = obj_get(Path::new("/sys/fs/bpf/netshim-no-such-pin-xyz")).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ),
            "{err}"
        );
    }
}
