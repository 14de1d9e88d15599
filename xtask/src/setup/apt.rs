//! Installing the missing Debian packages with apt-get, never removing one to do it.
//!
//! Every `apt-get install` runs with `--no-remove`: when a package can only be installed by
//! removing another (a newer `qemu-utils` that bookworm's `qemu-system-x86` Breaks, say),
//! apt fails and setup says what to install by hand instead of taking the other away.
//!
//! QEMU: this machine family ships qemu-utils from bookworm-backports with no backports
//! source configured. When an installed package built from the `qemu` source is newer than
//! the archive's `qemu-system-x86` ([`qemu_source`]), qemu-system-x86 is installed from
//! `<codename>-backports` at that same version, through a private source list and lists
//! directory under netshim's cache dir (`-o Dir::Etc::SourceList=...`): /etc/apt is never
//! edited.

use super::{debversion, packages::AptPackage, Report};
use crate::cmd;
use anyhow::{bail, ensure, Context, Result};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a missing QEMU package comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuSource {
    /// The configured archive's candidate.
    Archive,
    /// `<codename>-backports` at `version`: the installed QEMU is newer than the archive's,
    /// which would Break it.
    Backports { version: String },
}

/// Where to take a missing QEMU package from, given the installed packages of the `qemu`
/// source package (`(name, version)`) and the archive's newest version of the one to
/// install (`None`: the archive has none).
pub fn qemu_source(installed: &[(String, String)], archive: Option<&str>) -> QemuSource {
    let newest = installed
        .iter()
        .map(|(_, v)| v.as_str())
        .max_by(|a, b| debversion::cmp(a, b));
    match (newest, archive) {
        (Some(v), Some(a)) if debversion::cmp(v, a) == Ordering::Greater => {
            QemuSource::Backports { version: v.into() }
        }
        (Some(v), None) => QemuSource::Backports { version: v.into() },
        _ => QemuSource::Archive,
    }
}

fn probe_exists(probe: &str) -> bool {
    if probe.starts_with('/') {
        Path::new(probe).exists()
    } else {
        cmd::which(probe).is_some()
    }
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// `apt-get [options] install --no-remove ...`; a clear error when apt refuses.
fn install(options: &[String], names: &[String]) -> Result<()> {
    let mut c = apt_get();
    for o in options {
        c.args(["-o", o]);
    }
    c.args(["install", "-y", "--no-install-recommends", "--no-remove"])
        .args(names);
    cmd::run(&mut c).with_context(|| {
        format!(
            "apt-get could not install {} without removing an installed package (setup never \
             lets apt remove one; see apt's output above): install them by hand, or remove \
             the package that conflicts yourself",
            names.join(" ")
        )
    })
}

/// Installs what of `wanted` is missing.
pub fn install_missing(wanted: &[AptPackage], report: &mut Report) -> Result<()> {
    let missing: Vec<&AptPackage> = wanted.iter().filter(|p| !probe_exists(p.probe)).collect();
    if missing.is_empty() {
        if !wanted.is_empty() {
            let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
            report.note(format!("apt: skipped, present: {}", names.join(" ")));
        }
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    ensure!(
        cmd::is_root(),
        "apt packages missing ({}); run as root to install them",
        names.join(" ")
    );
    cmd::run(apt_get().arg("update"))?;
    let installed_qemu = installed_of_source("qemu")?;
    let mut from_archive = Vec::new();
    let mut from_backports = Vec::new();
    for p in &missing {
        if !p.name.starts_with("qemu-") {
            from_archive.push(p.name.to_owned());
            continue;
        }
        let archive = archive_version(p.name)?;
        match qemu_source(&installed_qemu, archive.as_deref()) {
            QemuSource::Archive => from_archive.push(p.name.to_owned()),
            QemuSource::Backports { version } => {
                report.note(format!(
                    "apt: {} from backports at {version}: the installed QEMU ({}) is newer \
                     than the archive's {}, which would Break it",
                    p.name,
                    installed_qemu
                        .iter()
                        .map(|(n, v)| format!("{n} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    archive.as_deref().unwrap_or("(none)")
                ));
                from_backports.push(format!("{}={version}", p.name));
            }
        }
    }
    if !from_archive.is_empty() {
        install(&[], &from_archive)?;
    }
    if !from_backports.is_empty() {
        install_from_backports(&super::cache_dir()?, &from_backports)?;
    }
    let still: Vec<&str> = missing
        .iter()
        .filter(|p| !probe_exists(p.probe))
        .map(|p| p.probe)
        .collect();
    ensure!(
        still.is_empty(),
        "installed, yet still not found: {}",
        still.join(" ")
    );
    report.note(format!("apt: installed {}", names.join(" ")));
    Ok(())
}

/// The installed packages built from source package `source`, as (name, version).
fn installed_of_source(source: &str) -> Result<Vec<(String, String)>> {
    let out = cmd::capture(Command::new("dpkg-query").args([
        "-W",
        "-f",
        "${source:Package}\t${Package}\t${Version}\t${db:Status-Abbrev}\n",
    ]))?;
    ensure!(
        out.status.success(),
        "dpkg-query -W failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(parse_installed(
        &String::from_utf8_lossy(&out.stdout),
        source,
    ))
}

/// `dpkg-query` lines `source\tname\tversion\tstatus` of installed (`ii`) packages of
/// `source`.
fn parse_installed(text: &str, source: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (src, name, version, status) = (f.next()?, f.next()?, f.next()?, f.next()?);
            (src == source && status.starts_with("ii"))
                .then(|| (name.to_owned(), version.to_owned()))
        })
        .collect()
}

/// The newest version of `name` the configured sources offer (`apt-cache madison`).
fn archive_version(name: &str) -> Result<Option<String>> {
    let text = cmd::output(Command::new("apt-cache").args(["madison", name]))?;
    Ok(parse_madison(&text, name))
}

/// `apt-cache madison` lines `name | version | source`: the newest version.
fn parse_madison(text: &str, name: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            (f.next()? == name).then_some(f.next()?.to_owned())
        })
        .max_by(|a, b| debversion::cmp(a, b))
}

/// The suite codename of this Debian (`VERSION_CODENAME` in /etc/os-release).
fn codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME")
}

/// A private source list: this Debian's own archive entries as apt reads them
/// (`apt-get indextargets`: `repo-uri\trelease\tcomponent` per line) plus
/// `<codename>-backports` from the archive that serves `<codename>`. Only the Debian
/// suites of this codename, signed with Debian's archive keyring when it is there.
pub fn backports_source_list(indextargets: &str, codename: &str, keyring: Option<&str>) -> String {
    let opts = keyring.map_or(String::new(), |k| format!("[signed-by={k}] "));
    let mut lines: Vec<String> = Vec::new();
    let mut push = |line: String| {
        if !lines.contains(&line) {
            lines.push(line);
        }
    };
    let backports = format!("{codename}-backports");
    for l in indextargets.lines() {
        let mut f = l.split('\t');
        let (Some(uri), Some(release), Some(component)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let ours = release == codename || release.starts_with(&format!("{codename}-"));
        if !ours || release == backports {
            continue;
        }
        push(format!("deb {opts}{uri} {release} {component}"));
        if release == codename {
            push(format!("deb {opts}{uri} {backports} {component}"));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `apt-get` options that read the private source list and lists under `dir`.
fn private_sources(dir: &Path) -> Vec<String> {
    vec![
        format!(
            "Dir::Etc::SourceList={}",
            dir.join("sources.list").display()
        ),
        "Dir::Etc::SourceParts=/dev/null".into(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!(
            "Dir::Cache::pkgcache={}",
            dir.join("pkgcache.bin").display()
        ),
        format!(
            "Dir::Cache::srcpkgcache={}",
            dir.join("srcpkgcache.bin").display()
        ),
        // The lists dir is under root's cache dir, which apt's sandbox user cannot write.
        "APT::Sandbox::User=root".into(),
    ]
}

/// Installs `pins` (`name=version`) from `<codename>-backports` through a private source
/// list and lists directory under `cache/apt-backports`.
fn install_from_backports(cache: &Path, pins: &[String]) -> Result<()> {
    let codename = codename()?;
    let dir: PathBuf = cache.join("apt-backports");
    std::fs::create_dir_all(dir.join("lists/partial"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let targets = cmd::output(Command::new("apt-get").args([
        "indextargets",
        "--format",
        "$(REPO_URI)\t$(RELEASE)\t$(COMPONENT)\t$(TARGET_OF)\t$(IDENTIFIER)",
    ]))?;
    let debs: String = targets
        .lines()
        .filter(|l| l.ends_with("\tdeb\tPackages"))
        .map(|l| format!("{l}\n"))
        .collect();
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let list = backports_source_list(
        &debs,
        &codename,
        Path::new(keyring).exists().then_some(keyring),
    );
    if !list.contains("-backports") {
        bail!(
            "no Debian archive for {codename} among apt's sources: cannot add {codename}-backports"
        );
    }
    let list_path = dir.join("sources.list");
    std::fs::write(&list_path, &list)
        .with_context(|| format!("writing {}", list_path.display()))?;
    println!(
        "setup: private apt sources {}:\n{list}",
        list_path.display()
    );
    let options = private_sources(&dir);
    let mut update = apt_get();
    for o in &options {
        update.args(["-o", o]);
    }
    cmd::run(update.arg("update"))?;
    let mut with_release = options.clone();
    with_release.push(format!("APT::Default-Release={codename}-backports"));
    install(&with_release, pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu(pkgs: &[(&str, &str)]) -> Vec<(String, String)> {
        pkgs.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    const BPO: &str = "1:10.0.2+ds-2+deb13u1~bpo12+1";
    const BOOKWORM: &str = "1:7.2+dfsg-7+deb12u18+b3";

    #[test]
    fn a_newer_installed_qemu_takes_qemu_from_backports_at_its_version() {
        // This machine family: qemu-utils from backports, no backports source configured.
        let installed = qemu(&[("qemu-utils", BPO)]);
        assert_eq!(
            qemu_source(&installed, Some(BOOKWORM)),
            QemuSource::Backports {
                version: BPO.into()
            }
        );
        // The newest of several installed ones.
        let installed = qemu(&[("qemu-system-common", BOOKWORM), ("qemu-utils", BPO)]);
        assert_eq!(
            qemu_source(&installed, Some(BOOKWORM)),
            QemuSource::Backports {
                version: BPO.into()
            }
        );
        assert!(matches!(
            qemu_source(&installed, None),
            QemuSource::Backports { .. }
        ));
    }

    #[test]
    fn otherwise_qemu_comes_from_the_archive() {
        assert_eq!(qemu_source(&[], Some(BOOKWORM)), QemuSource::Archive);
        assert_eq!(qemu_source(&[], None), QemuSource::Archive);
        let same = qemu(&[("qemu-utils", BOOKWORM)]);
        assert_eq!(qemu_source(&same, Some(BOOKWORM)), QemuSource::Archive);
        let older = qemu(&[("qemu-utils", "1:7.2+dfsg-7+deb12u15")]);
        assert_eq!(qemu_source(&older, Some(BOOKWORM)), QemuSource::Archive);
    }

    #[test]
    fn installed_and_archive_versions_are_read() {
        let dpkg = "qemu\tqemu-utils\t1:10.0.2+ds-2+deb13u1~bpo12+1\tii \n\
                    qemu\tqemu-system-x86\t1:7.2+dfsg-7\trc \n\
                    ipxe\tipxe-qemu\t1.0.0+git-20190125.36a4c85-5.1\tii \n";
        assert_eq!(
            parse_installed(dpkg, "qemu"),
            qemu(&[("qemu-utils", BPO)]),
            "removed (rc) and other sources' packages do not count"
        );
        let madison = " qemu-system-x86 | 1:7.2+dfsg-7+deb12u15 | http://a.example/debian-security bookworm-security/main amd64 Packages\n \
                        qemu-system-x86 | 1:7.2+dfsg-7+deb12u18+b3 | http://a.example/debian bookworm/main amd64 Packages\n";
        assert_eq!(
            parse_madison(madison, "qemu-system-x86").as_deref(),
            Some(BOOKWORM)
        );
        assert_eq!(parse_madison("", "qemu-system-x86"), None);
    }

    #[test]
    fn the_private_source_list_adds_backports_of_this_codename_only() {
        let targets = "http://a.example/debian/\tbookworm\tmain\tdeb\tPackages\n\
                       http://a.example/debian/\tbookworm-updates\tmain\tdeb\tPackages\n\
                       http://a.example/debian-security/\tbookworm-security\tmain\tdeb\tPackages\n\
                       https://third.example/apt\tnodistro\tmain\tdeb\tPackages\n";
        let list = backports_source_list(targets, "bookworm", Some("/k.gpg"));
        assert_eq!(
            list,
            "deb [signed-by=/k.gpg] http://a.example/debian/ bookworm main\n\
             deb [signed-by=/k.gpg] http://a.example/debian/ bookworm-backports main\n\
             deb [signed-by=/k.gpg] http://a.example/debian/ bookworm-updates main\n\
             deb [signed-by=/k.gpg] http://a.example/debian-security/ bookworm-security main\n"
        );
        let options = private_sources(Path::new("/c/apt-backports"));
        assert!(options.contains(&"Dir::Etc::SourceParts=/dev/null".to_owned()));
        assert!(options
            .iter()
            .all(|o| !o.contains("/etc/apt") && !o.contains("/var/lib/apt")));
    }
}
