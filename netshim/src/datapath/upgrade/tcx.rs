//! Step 3 for TCX hooks: `BPF_LINK_UPDATE` of every pinned link (see [`super`]).

use std::{
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use netshim_common::PROGRAM_NAME;

use super::{HookSwap, Loaded, SkippedHook, Swapped, UpgradeError};
use crate::{datapath::bpf_sys, pins};

/// A pinned TCX link, opened and checked.
pub(super) struct OpenLink {
    pub(super) device: String,
    pub(super) path: PathBuf,
    pub(super) fd: OwnedFd,
    pub(super) link_id: u32,
    pub(super) old_prog_id: u32,
    pub(super) old_prog: OwnedFd,
}

/// Moves every TCX link pinned in `dir` to the loaded program. No netns needed: the links
/// are reached through their pins.
pub fn swap_tcx_links(dir: &Path, loaded: &mut Loaded) -> Result<Swapped, UpgradeError> {
    let mut out = Swapped::default();
    let mut links = Vec::new();
    for (device, path) in pins::link_pins(dir)? {
        let link_err = |call| {
            let path = path.clone();
            move |source| UpgradeError::Link { call, path, source }
        };
        let fd = match bpf_sys::obj_get(&path) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.skipped.push(SkippedHook {
                    device,
                    reason: "the link pin was removed meanwhile".into(),
                });
                continue;
            }
            Err(e) => return Err(link_err("BPF_OBJ_GET")(e)),
        };
        let info = bpf_sys::link_info(fd.as_fd()).map_err(link_err("BPF_OBJ_GET_INFO_BY_FD"))?;
        if info.link_type != bpf_sys::BPF_LINK_TYPE_TCX {
            return Err(UpgradeError::NotTcx {
                path,
                link_type: info.link_type,
            });
        }
        if info.tcx_ifindex == 0 {
            out.skipped.push(SkippedHook {
                device,
                reason: format!(
                    "link {} is defunct: its device is gone (detach removes the pin)",
                    info.id
                ),
            });
            continue;
        }
        let old_prog =
            bpf_sys::prog_fd_by_id(info.prog_id).map_err(link_err("BPF_PROG_GET_FD_BY_ID"))?;
        links.push(OpenLink {
            device,
            path,
            fd,
            link_id: info.id,
            old_prog_id: info.prog_id,
            old_prog,
        });
    }
    let new_prog_id = loaded.prog_id;
    let program = loaded.program();
    let new_prog = program
        .fd()
        .map_err(|source| UpgradeError::ProgramLoad {
            object: PROGRAM_NAME.into(),
            source: Box::new(source),
        })?
        .as_fd();
    for (i, link) in links.iter().enumerate() {
        if let Err(source) =
            bpf_sys::link_update(link.fd.as_fd(), new_prog, Some(link.old_prog.as_fd()))
        {
            let rollback = roll_back(&links[..i], new_prog);
            return Err(if source.raw_os_error() == Some(libc::EPERM) {
                UpgradeError::LinkChanged {
                    dev: link.device.clone(),
                    path: link.path.clone(),
                    old_prog_id: link.old_prog_id,
                    rollback,
                }
            } else {
                UpgradeError::Update {
                    dev: link.device.clone(),
                    path: link.path.clone(),
                    old_prog_id: link.old_prog_id,
                    new_prog_id,
                    source,
                    rollback,
                }
            });
        }
    }
    for link in &links {
        let info = bpf_sys::link_info(link.fd.as_fd()).map_err(|source| UpgradeError::Link {
            call: "BPF_OBJ_GET_INFO_BY_FD",
            path: link.path.clone(),
            source,
        })?;
        if info.prog_id != new_prog_id {
            return Err(UpgradeError::NotUpdated {
                dev: link.device.clone(),
                path: link.path.clone(),
                expected: new_prog_id,
                found: info.prog_id,
            });
        }
        out.swapped.push(HookSwap {
            device: link.device.clone(),
            link_id: Some(link.link_id),
            prio: None,
            handle: None,
            old_prog_id: link.old_prog_id,
            new_prog_id,
        });
    }
    Ok(out)
}

/// Puts `done` back on their old programs; says how that went, for the error message.
pub(super) fn roll_back(done: &[OpenLink], new_prog: std::os::fd::BorrowedFd<'_>) -> String {
    if done.is_empty() {
        return "; no link was changed".into();
    }
    let mut failed = Vec::new();
    for link in done {
        if let Err(e) = bpf_sys::link_update(link.fd.as_fd(), link.old_prog.as_fd(), Some(new_prog))
        {
            failed.push(format!("{}: {e}", link.device));
        }
    }
    if failed.is_empty() {
        format!(
            "; the {} link(s) already changed were put back on their old program",
            done.len()
        )
    } else {
        format!(
            "; putting the changed links back failed on {} (they run the new program, \
             which uses the same maps)",
            failed.join(", ")
        )
    }
}
