//! An aya `EbpfLoader` that has not read the kernel's BTF.
//!
//! The datapath needs no CO-RE relocation, so the kernel's BTF (/sys/kernel/btf/vmlinux, a
//! few MB read in 4 KiB pieces and parsed) is of no use to it; parsing it was the largest
//! part of an attach. aya 0.14's `EbpfLoader::new()` parses it eagerly, before `.btf(None)`
//! can say not to (that only drops the result). So the loader is made on a short-lived
//! thread that has a mount namespace of its own (`unshare(CLONE_NEWNS)` applies to the
//! calling thread only) in which an empty tmpfs covers /sys/kernel/btf: `new()` finds no
//! file and moves on. Nothing of it is visible to the rest of the process or the host (the
//! namespace's mounts are made private first, and it goes with the thread). If any of that
//! is refused, the loader is made as aya makes it, and the load only costs more time.

use aya::EbpfLoader;
use nix::{
    mount::{mount, MsFlags},
    sched::{unshare, CloneFlags},
};

const KERNEL_BTF_DIR: &str = "/sys/kernel/btf";

/// An `EbpfLoader` with no kernel BTF (`.btf(None)`), made without reading it.
pub fn without_kernel_btf() -> EbpfLoader<'static> {
    let made = std::thread::Builder::new()
        .name("netshim-loader".into())
        .spawn(|| {
            hide_kernel_btf()?;
            Ok::<_, nix::Error>(EbpfLoader::new())
        })
        .map(|t| t.join());
    let mut loader = match made {
        Ok(Ok(Ok(loader))) => loader,
        Ok(Ok(Err(e))) => {
            tracing::debug!("hiding {KERNEL_BTF_DIR} from the eBPF loader: {e}; aya parses it");
            EbpfLoader::new()
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => {
            tracing::debug!("starting the eBPF loader's thread: {e}; aya parses the kernel BTF");
            EbpfLoader::new()
        }
    };
    loader.btf(None);
    loader
}

/// Gives the calling thread a mount namespace of its own, with an empty /sys/kernel/btf.
fn hide_kernel_btf() -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    // Private before anything is mounted: no mount made here may propagate to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("none"),
        KERNEL_BTF_DIR,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mountinfo() -> String {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap()
    }

    /// The process (and so the host) keeps its mounts and its view of the kernel's BTF.
    #[test]
    fn the_loader_thread_changes_no_mount_of_the_process() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (unshare, mount)");
            return;
        }
        let vmlinux = std::path::Path::new("/sys/kernel/btf/vmlinux");
        let (before, had_btf) = (mountinfo(), vmlinux.exists());
        let _loader = without_kernel_btf();
        assert_eq!(mountinfo(), before);
        assert_eq!(
            vmlinux.exists(),
            had_btf,
            "the kernel's BTF stays for everyone else"
        );
        // On the thread itself, the file is hidden.
        let hidden = std::thread::spawn(|| {
            hide_kernel_btf().unwrap();
            std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        })
        .join()
        .unwrap();
        assert!(!hidden, "vmlinux hidden on the loader's thread");
        assert_eq!(mountinfo(), before);
    }
}
