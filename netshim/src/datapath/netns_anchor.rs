//! The netns anchor of a cls_bpf sandbox: how gc tells a live netns from a dead one when no
//! path to it is left.
//!
//! gc looks for a sandbox's netns by path (`/run/netns`, bind mounts, `/proc/*/ns/net`,
//! `/proc/*/fd`). A netns held only by a socket has no such path. With TCX, the sandbox's
//! pinned links answer (a link on a device that still exists means the netns lives). cls_bpf
//! filters live inside the netns, invisible from outside, so a cls_bpf sandbox pins one more
//! link: a two-instruction `SK_LOOKUP` program (`r0 = SK_PASS`, it changes no lookup)
//! attached to the netns itself. The kernel sets that link's `netns_ino` to 0 when the
//! namespace is destroyed, so the pin answers "alive?" from any process, and costs no
//! RCU grace period (unlike a TCX link). Removing the pin (detach, gc) releases it.
//!
//! The program is the same for every netns: it is loaded once for the node and pinned at
//! [`pins::anchor_program_pin`], and each anchor links that one (4 KiB of kernel memory
//! and a `BPF_PROG_LOAD` less per sandbox).

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use super::bpf_sys;
use crate::pins;

/// Creating the anchor failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} of the netns anchor {path}: {source}")]
pub struct AnchorError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

/// What the pinned anchor of a sandbox directory says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// No anchor pinned (a TCX sandbox, or one attached before anchors existed).
    Missing,
    /// The netns with this inode still exists.
    Alive(u32),
    /// The netns is gone.
    Dead,
}

/// Pins the anchor of the netns the calling thread is in at `dir`'s [`pins::netns_anchor_pin`],
/// unless one is pinned there. A kernel without `SK_LOOKUP` links (before 5.9) gets a
/// warning and no anchor: gc then cannot tell such a sandbox's netns alive when only a
/// socket holds it.
pub fn ensure(dir: &Path) -> Result<(), AnchorError> {
    let pin = pins::netns_anchor_pin(dir);
    if pin.exists() {
        return Ok(());
    }
    let err = |op, source| AnchorError {
        op,
        path: pin.clone(),
        source,
    };
    let netns: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| err("open /proc/thread-self/ns/net", e))?
        .into();
    if let Ok(prog) = bpf_sys::obj_get(&pins::anchor_program_pin()) {
        // Whatever is pinned there, a link it cannot make is made below with a fresh load.
        if let Ok(link) = bpf_sys::link_create_netns(prog.as_fd(), netns.as_fd()) {
            return bpf_sys::obj_pin(link.as_fd(), &pin).map_err(|e| err("BPF_OBJ_PIN", e));
        }
    }
    let prog = match bpf_sys::load_sk_lookup_pass() {
        Ok(prog) => prog,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
            tracing::warn!(
                "this kernel has no SK_LOOKUP programs ({e}): no netns anchor at {}; gc cannot \
                 see this sandbox's netns alive if only a socket holds it",
                pin.display()
            );
            return Ok(());
        }
        Err(e) => return Err(err("BPF_PROG_LOAD (SK_LOOKUP)", e)),
    };
    let link = bpf_sys::link_create_netns(prog.as_fd(), netns.as_fd())
        .map_err(|e| err("BPF_LINK_CREATE (SK_LOOKUP)", e))?;
    bpf_sys::obj_pin(link.as_fd(), &pin).map_err(|e| err("BPF_OBJ_PIN", e))?;
    share_program(&prog);
    Ok(())
}

/// Pins `prog` as the node's anchor program for the next anchors, over a stale pin (one
/// that could not be linked). Best effort: without it the next anchor loads its own.
fn share_program(prog: &OwnedFd) {
    let node_pin = pins::anchor_program_pin();
    let _ = std::fs::remove_file(&node_pin);
    match bpf_sys::obj_pin(prog.as_fd(), &node_pin) {
        Ok(()) => {}
        // Another attach pinned its own meanwhile: as good as ours.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => tracing::warn!(
            "BPF_OBJ_PIN of the netns anchor program at {}: {e}; each sandbox loads its own",
            node_pin.display()
        ),
    }
}

/// Reads the anchor pinned in `dir`.
pub fn read(dir: &Path) -> Anchor {
    let Ok(fd) = bpf_sys::obj_get(&pins::netns_anchor_pin(dir)) else {
        return Anchor::Missing;
    };
    match bpf_sys::link_info(fd.as_fd()) {
        Ok(info) if info.link_type == bpf_sys::BPF_LINK_TYPE_NETNS => match info.netns_ino {
            0 => Anchor::Dead,
            ino => Anchor::Alive(ino),
        },
        _ => Anchor::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anchor is alive while its netns is, and reads dead once the netns is destroyed.
    /// Runs in a netns of its own made by `unshare` on a thread (root only).
    #[test]
    fn the_anchor_follows_its_netns() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        /// A directory in bpffs of this test, removed with what is pinned in it.
        struct TestDir(PathBuf);
        impl TestDir {
            fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for TestDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
                // The node's program pin, which this anchor may have made: not left behind
                // when no sandbox is there to use it.
                if pins::sandbox_cookies().is_ok_and(|c| c.is_empty()) {
                    let _ = std::fs::remove_file(pins::anchor_program_pin());
                }
            }
        }
        let dir = TestDir(
            Path::new(pins::BPFFS).join(format!("netshim-anchor-test-{}", std::process::id())),
        );
        std::fs::create_dir(dir.path()).expect("a directory in bpffs");
        let d = dir.path().to_owned();
        let ino = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            ensure(&d).expect("anchor");
            ensure(&d).expect("a second ensure keeps the first anchor");
            use std::os::unix::fs::MetadataExt;
            let ino = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
            assert_eq!(
                read(&d),
                Anchor::Alive(ino as u32),
                "alive while the thread is in it"
            );
            ino
        })
        .join()
        .unwrap();
        // The thread is gone, and with it the only reference to its netns; the kernel
        // destroys a netns asynchronously (cleanup_net), so wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut last = read(dir.path());
        while last != Anchor::Dead && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            last = read(dir.path());
        }
        assert_eq!(last, Anchor::Dead, "the netns {ino} was destroyed");
    }
}
