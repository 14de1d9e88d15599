//! The kernel the real-VMM test boots (tests/src/qemu.rs): Debian's kernel image package,
//! downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into
//! `<cache>/guest-kernel/`, never installed. Installing `linux-image-amd64` would change
//! /boot and run initramfs generation on the host for a file only QEMU reads.
//!
//! Kept: `boot/vmlinuz-<ver>`, and of `lib/modules/<ver>/` the `modules.*` lists and the
//! directories that hold the guest's virtio-net modules (tests/src/qemu.rs `GUEST_MODULES`:
//! `kernel/drivers/virtio`, the top of `kernel/drivers/net`, `kernel/net/core`). The tests
//! find it through `NETSHIM_GUEST_KERNEL_DIR` (`cargo xtask test` sets it) or this default
//! place, before the host's /boot.

use super::Report;
use crate::cmd;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage whose dependency is the current kernel image package.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// What of `lib/modules/<ver>/kernel/` is kept: (directory, with its subdirectories).
pub const KEPT_MODULE_DIRS: &[(&str, bool)] = &[
    ("drivers/virtio", true),
    ("drivers/net", false),
    ("net/core", true),
];

/// `<cache>/guest-kernel`: the root the tests look in (`boot/`, `lib/modules/`).
pub fn dir(cache: &Path) -> PathBuf {
    cache.join("guest-kernel")
}

/// The `boot/vmlinuz-*` under `root`, if any.
fn kernel_in(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// The kernel image package `linux-image-amd64` depends on (`apt-cache depends` output).
pub fn image_package(depends: &str) -> Option<String> {
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|d| d.trim().trim_start_matches('|').trim())
        .find(|d| d.starts_with("linux-image-"))
        .map(|d| d.split_whitespace().next().unwrap_or(d).to_owned())
}

/// Unpacks the guest kernel into `<cache>/guest-kernel` unless it is there.
pub fn ensure(cache: &Path, report: &mut Report) -> Result<()> {
    let root = dir(cache);
    if let Some(k) = kernel_in(&root) {
        report.note(format!("guest kernel: skipped, {} present", k.display()));
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "the tests' guest kernel is missing in {}; run as root to fetch it",
            root.display()
        );
    }
    let depends = || {
        cmd::output(Command::new("apt-cache").args(["depends", "--important", KERNEL_METAPACKAGE]))
            .ok()
            .and_then(|d| image_package(&d))
    };
    let package = match depends() {
        Some(p) => p,
        None => {
            cmd::run(Command::new("apt-get").arg("update"))?;
            depends().with_context(|| format!("apt knows no {KERNEL_METAPACKAGE} dependency"))?
        }
    };
    let staging = cache.join("guest-kernel.staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = fetch_and_keep(&package, &staging, &root);
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    let kernel = kernel_in(&root).context("the package holds no boot/vmlinuz-*")?;
    report.note(format!(
        "guest kernel: unpacked {package} into {} ({})",
        root.display(),
        kernel.display()
    ));
    Ok(())
}

/// `apt-get download` + `dpkg-deb -x` into `staging`, then what the guest needs into `root`.
fn fetch_and_keep(package: &str, staging: &Path, root: &Path) -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            // Into root's own cache dir, which apt's sandbox user cannot write.
            .args(["-o", "APT::Sandbox::User=root", "download", package])
            .current_dir(staging),
    )?;
    let deb = std::fs::read_dir(staging)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let tree = staging.join("tree");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| tree.join(m))
        .find(|m| m.is_dir())
        .context("the package has no lib/modules")?;
    let new = root.with_extension("new");
    if new.exists() {
        std::fs::remove_dir_all(&new)?;
    }
    copy_tree(&tree.join("boot"), &new.join("boot"), true)?;
    for version in std::fs::read_dir(&modules)?.filter_map(|e| e.ok()) {
        let from = version.path();
        let to = new.join("lib/modules").join(version.file_name());
        std::fs::create_dir_all(&to)?;
        for f in std::fs::read_dir(&from)?.filter_map(|e| e.ok()) {
            if f.file_type()?.is_file() && f.file_name().to_string_lossy().starts_with("modules.") {
                std::fs::copy(f.path(), to.join(f.file_name()))?;
            }
        }
        for (sub, deep) in KEPT_MODULE_DIRS {
            copy_tree(
                &from.join("kernel").join(sub),
                &to.join("kernel").join(sub),
                *deep,
            )?;
        }
    }
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::rename(&new, root)
        .with_context(|| format!("moving {} to {}", new.display(), root.display()))?;
    Ok(())
}

/// Copies the files of `from` into `to` (and its subdirectories when `deep`).
fn copy_tree(from: &Path, to: &Path, deep: bool) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        } else if t.is_dir() && deep {
            copy_tree(&e.path(), &to.join(e.file_name()), true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_package_is_the_metapackages_dependency() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            image_package(out).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let versioned = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)\n";
        assert_eq!(
            image_package(versioned).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(image_package("linux-image-amd64\n"), None);
    }

    /// What the guest loads (tests/src/qemu.rs GUEST_MODULES) lies in what is kept.
    #[test]
    fn the_kept_module_dirs_hold_the_guests_modules() {
        let qemu_rs = cmd::workspace_root().join("tests/src/qemu.rs");
        let text = std::fs::read_to_string(&qemu_rs).unwrap();
        let start = text.find("pub const GUEST_MODULES").unwrap();
        let list = &text[start..start + text[start..].find("];").unwrap()];
        let modules: Vec<&str> = list
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix("\","))
            .collect();
        assert!(modules.len() >= 5, "{modules:?}");
        for m in modules {
            let (dir, _) = m.rsplit_once('/').unwrap();
            let kept = KEPT_MODULE_DIRS
                .iter()
                .any(|(d, deep)| dir == *d || (*deep && dir.starts_with(&format!("{d}/"))));
            assert!(kept, "{m} is not under a kept directory");
        }
    }
}
