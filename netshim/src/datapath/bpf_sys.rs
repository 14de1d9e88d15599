//! The few `bpf(2)` commands `netshim upgrade` needs that aya 0.14 has no public API for.
//!
//! aya's `PinnedLink`/`FdLink` never hand out the link's fd, and its `bpf_link_update` (used
//! by `SchedClassifier::attach_to_link`) never passes `BPF_F_REPLACE`. So the link side of a
//! live upgrade is done here: `BPF_OBJ_GET`, `BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`
//! (of a link: `struct bpf_link_info`, whose `tcx` member holds the device) and
//! `BPF_LINK_UPDATE`. The attr layouts are `aya_obj::generated`'s bindgen of
//! `include/uapi/linux/bpf.h`, the same `union bpf_attr` aya itself passes: zeroed, the
//! command's member filled in, and the whole union's size given (the kernel accepts a union
//! smaller or larger than its own as long as the rest is zero).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type, bpf_prog_type,
};

/// `BPF_F_REPLACE`: BPF_LINK_UPDATE fails with `EPERM` unless the link still runs
/// `old_prog_fd`'s program.
pub const BPF_F_REPLACE: u32 = aya_obj::generated::BPF_F_REPLACE;
/// `enum bpf_link_type`: `BPF_LINK_TYPE_NETNS` (a program attached to a network namespace).
pub const BPF_LINK_TYPE_NETNS: u32 = bpf_link_type::BPF_LINK_TYPE_NETNS as u32;
/// `enum bpf_link_type`: `BPF_LINK_TYPE_TCX`.
pub const BPF_LINK_TYPE_TCX: u32 = bpf_link_type::BPF_LINK_TYPE_TCX as u32;

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
    /// netns links (`BPF_LINK_TYPE_NETNS`): the namespace's inode (0 once it is gone).
    pub netns_ino: u32,
}

/// A zeroed `union bpf_attr`, for a command to fill in its member.
fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain old data (integers, arrays of them, unions of those); all
    // zeroes is the value the kernel expects in every field a command does not use.
    unsafe { std::mem::zeroed() }
}

/// The one `bpf(2)` call of this module.
///
/// # Safety
/// `attr`'s member for `cmd` must be filled in, and any pointers in it must be valid for
/// the call.
unsafe fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: per the caller; the size passed is the size of the union pointed to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
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
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    // SAFETY: the BPF_OBJ_GET member is filled in; `path` outlives the call.
    unsafe { sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr) }.map(owned_fd)
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub fn prog_fd_by_id(prog_id: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = prog_id;
    // SAFETY: the BPF_PROG_GET_FD_BY_ID member is filled in.
    unsafe { sys_bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr) }.map(owned_fd)
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link fd.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // SAFETY: bpf_link_info is plain old data; the kernel fills it in.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = link.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    attr.info.info = &mut info as *mut bpf_link_info as u64;
    // SAFETY: the BPF_OBJ_GET_INFO_BY_FD member is filled in; `info` is writable for
    // `info_len` bytes and outlives the call.
    unsafe { sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(LinkInfo {
        link_type: info.type_,
        id: info.id,
        prog_id: info.prog_id,
        // SAFETY: every member of the union is plain integers; for a link of another type
        // this reads that type's first field (callers check `link_type`).
        tcx_ifindex: unsafe { info.__bindgen_anon_1.tcx.ifindex },
        // SAFETY: as above.
        netns_ino: unsafe { info.__bindgen_anon_1.netns.netns_ino },
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
    let mut attr = zeroed_attr();
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = new_prog.as_raw_fd() as u32;
    if let Some(old) = old_prog {
        attr.link_update.flags = BPF_F_REPLACE;
        attr.link_update.__bindgen_anon_2.old_prog_fd = old.as_raw_fd() as u32;
    }
    // SAFETY: the BPF_LINK_UPDATE member is filled in.
    unsafe { sys_bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr) }.map(|_| ())
}

/// `BPF_PROG_LOAD` of the smallest `BPF_PROG_TYPE_SK_LOOKUP` program: `r0 = SK_PASS; exit`.
/// It decides nothing (every socket lookup goes on as without it); attached to a netns by
/// [`link_create_netns`], its link tells whether that netns still exists (the link's
/// `netns_ino` becomes 0 when the namespace is destroyed).
pub fn load_sk_lookup_pass() -> io::Result<OwnedFd> {
    // struct bpf_insn as u64 (little endian: code, dst/src registers, offset, immediate):
    // BPF_ALU64 | BPF_MOV | BPF_K into r0 with imm SK_PASS (1), then BPF_JMP | BPF_EXIT.
    const INSNS: [u64; 2] = [0xb7 | (1 << 32), 0x95];
    const LICENSE: &[u8] = b"Dual MIT/GPL\0";
    const NAME: &[u8] = b"netshim_anchor";
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the BPF_PROG_LOAD member of the union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = bpf_prog_type::BPF_PROG_TYPE_SK_LOOKUP as u32;
    load.expected_attach_type = bpf_attach_type::BPF_SK_LOOKUP as u32;
    load.insn_cnt = INSNS.len() as u32;
    load.insns = INSNS.as_ptr() as u64;
    load.license = LICENSE.as_ptr() as u64;
    for (d, s) in load.prog_name.iter_mut().zip(NAME) {
        *d = *s as libc::c_char;
    }
    // SAFETY: the BPF_PROG_LOAD member is filled in; INSNS and LICENSE are statics.
    unsafe { sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) }.map(owned_fd)
}

/// `BPF_LINK_CREATE` of an `SK_LOOKUP` program on the network namespace `netns`.
pub fn link_create_netns(prog: BorrowedFd<'_>, netns: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_fd = netns.as_raw_fd() as u32;
    attr.link_create.attach_type = bpf_attach_type::BPF_SK_LOOKUP as u32;
    // SAFETY: the BPF_LINK_CREATE member is filled in.
    unsafe { sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) }.map(owned_fd)
}

/// `BPF_OBJ_PIN`: pins the object of `fd` at `path` (in bpffs).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    // SAFETY: the BPF_OBJ_PIN member is filled in; `path` outlives the call.
    unsafe { sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_uapi() {
        use aya_obj::generated::{
            bpf_attr__bindgen_ty_15 as LinkUpdateAttr, bpf_attr__bindgen_ty_5 as ObjGetAttr,
            bpf_attr__bindgen_ty_8 as GetFdByIdAttr, bpf_attr__bindgen_ty_9 as InfoByFdAttr,
        };
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(ObjGetAttr, bpf_fd), 8);
        assert_eq!(offset_of!(ObjGetAttr, file_flags), 12);
        assert_eq!(offset_of!(InfoByFdAttr, info), 8);
        assert_eq!(offset_of!(LinkUpdateAttr, __bindgen_anon_2), 12);
        assert_eq!(size_of::<GetFdByIdAttr>(), 12);
        assert_eq!(offset_of!(bpf_link_info, prog_id), 8);
        assert_eq!(offset_of!(bpf_link_info, __bindgen_anon_1), 16);
        use aya_obj::generated::{
            bpf_attr__bindgen_ty_14 as LinkCreateAttr, bpf_attr__bindgen_ty_4 as ProgLoadAttr,
        };
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(LinkCreateAttr, attach_type), 8);
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
