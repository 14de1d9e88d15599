//! `netshim cni install` / `cni uninstall`: netshim on a node's CNI configuration, as
//! istio-cni and Cilium's chaining mode install themselves.
//!
//! Install copies the binary into the bin directory first (atomically: a plugin running from
//! the old file keeps it), then chains netshim as the last plugin of the primary network
//! ([`conf_dir`]: the first configuration file as the runtimes pick it, or `--chain-into`),
//! in that list's `cniVersion` ([`conflist`]); a `.conf` becomes a `.conflist` of the same
//! stem. Every write is atomic and keeps the file's mode and owner ([`files`]). Before the
//! first change the original bytes are kept ([`record`]), so that uninstall puts them back
//! byte for byte. A run that finds netshim chained as asked writes nothing.
//!
//! When the primary CNI rewrites its file (an upgrade, a restart of its installer), the file
//! no longer holds the bytes netshim wrote: the new bytes become the original and netshim is
//! chained into them again. When another file becomes the first, the previous one is put
//! back and the new one chained. Uninstall puts the original back when the file still holds
//! what netshim wrote; when it was changed since, it only takes netshim's entry out.

pub mod conf_dir;
pub mod conflist;
pub mod error;
pub mod files;
pub mod record;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

pub use error::InstallError;

use conf_dir::Target;
use conflist::NetworkConf;
use files::Attrs;
use record::{Original, Record, RecordDir};

/// The binary's name in the bin directory: the `type` of netshim's entry.
pub const BINARY_NAME: &str = conflist::PLUGIN_TYPE;

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// `--chain-into`: a file or a network name; the first file when `None`.
    pub chain_into: Option<String>,
    /// netshim's entry (see [`conflist::plugin_entry`]).
    pub plugin: Map<String, Value>,
    /// The binary to copy (this process's own when `None`).
    pub binary: Option<PathBuf>,
}

impl InstallOptions {
    fn target(&self) -> Target {
        Target::parse(&self.conf_dir, self.chain_into.as_deref())
    }

    fn bin_path(&self) -> PathBuf {
        self.bin_dir.join(BINARY_NAME)
    }
}

/// The binary in the bin directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct BinaryReport {
    pub path: PathBuf,
    /// It was written now (it was missing or held other bytes).
    pub changed: bool,
}

/// The chained configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ChainReport {
    /// The file netshim is chained in.
    pub path: PathBuf,
    pub network: String,
    pub cni_version: String,
    /// It was written now.
    pub changed: bool,
    /// The `.conf` (or `.json`) it was made from, now removed (its bytes are kept).
    pub converted_from: Option<PathBuf>,
    /// A file netshim was chained in before, put back (another file became the primary).
    pub released: Option<PathBuf>,
}

/// What `netshim cni install` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InstallReport {
    pub binary: BinaryReport,
    pub chain: ChainReport,
}

/// What `netshim cni uninstall` did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
pub struct UninstallReport {
    /// Files given back their original bytes.
    pub restored: Vec<PathBuf>,
    /// Files netshim wrote that are gone again (a `.conflist` made from a `.conf`).
    pub removed: Vec<PathBuf>,
    /// Files changed since install: only netshim's entry was taken out.
    pub unchained: Vec<PathBuf>,
    /// The binary removed, if it was there.
    pub binary_removed: Option<PathBuf>,
}

/// Copies the binary, then chains netshim (see the module docs).
pub fn install(options: &InstallOptions) -> Result<InstallReport, InstallError> {
    // A configuration that cannot be chained is refused before anything is written.
    let dir = &options.conf_dir;
    let path = conf_dir::select(dir, &conf_dir::conf_files(dir)?, &options.target())?;
    let bytes = files::read(&path)?.ok_or_else(|| InstallError::NoPrimary { dir: dir.clone() })?;
    conflist::check_entry(
        &options.plugin,
        &NetworkConf::parse(&path, &bytes)?.cni_version,
    )?;
    let binary = install_binary(options)?;
    let chain = chain(options, binary.changed)?;
    Ok(InstallReport { binary, chain })
}

/// Puts the binary into the bin directory unless it holds these bytes already.
pub fn install_binary(options: &InstallOptions) -> Result<BinaryReport, InstallError> {
    let source = options
        .binary
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let path = options.bin_path();
    if !options.bin_dir.is_dir() {
        return Err(InstallError::Io {
            op: "open the bin directory",
            path: options.bin_dir.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    if files::same_content(&source, &path)? {
        return Ok(BinaryReport {
            path,
            changed: false,
        });
    }
    let bytes = std::fs::read(&source).map_err(error::io("read", &source))?;
    let attrs = Attrs::of(&path)?.map_or(Attrs::new_file(0o755), |a| Attrs { mode: 0o755, ..a });
    files::write_atomic(&path, &bytes, attrs)?;
    Ok(BinaryReport {
        path,
        changed: true,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Chains netshim into the primary network (the binary is in place). `binary_written`: the
/// binary was just put there (uninstall removes it).
pub fn chain(options: &InstallOptions, binary_written: bool) -> Result<ChainReport, InstallError> {
    chain_attempt(options, binary_written, RACE_RETRIES)
}

/// Times the primary CNI may write its file during one chain before netshim gives up
/// (the agent tries again on the next change).
const RACE_RETRIES: u32 = 5;

fn chain_attempt(
    options: &InstallOptions,
    binary_written: bool,
    retries: u32,
) -> Result<ChainReport, InstallError> {
    let dir = &options.conf_dir;
    let records = RecordDir::of(dir);
    let mut record = records.load()?;
    let files = conf_dir::conf_files(dir)?;
    let mut path = conf_dir::select(dir, &files, &options.target())?;
    let mut released = None;
    let mut binary_carried = false;
    // The primary is another file now: put back the one chained before.
    if let Some(r) = record.take_if(|r| r.chained != file_name(&path)) {
        let gone = release(dir, &records, &r)?;
        released = Some(dir.join(&r.chained));
        if gone
            .removed
            .iter()
            .chain(&gone.restored)
            .any(|p| p == &path)
        {
            // Selection saw the file just put back or removed: look again.
            path = conf_dir::select(dir, &conf_dir::conf_files(dir)?, &options.target())?;
        }
        // The binary stays netshim's to remove.
        binary_carried = r.binary_installed;
    }
    let bytes = files::read(&path)?.ok_or_else(|| InstallError::NoPrimary { dir: dir.clone() })?;
    let conf = NetworkConf::parse(&path, &bytes)?;
    conflist::check_entry(&options.plugin, &conf.cni_version)?;
    let binary_installed =
        binary_written || binary_carried || record.as_ref().is_some_and(|r| r.binary_installed);
    let report = |path: PathBuf, changed, converted_from| ChainReport {
        path,
        network: conf.network.clone(),
        cni_version: conf.cni_version.clone(),
        changed,
        converted_from,
        released: released.clone(),
    };
    if conf.is_chained_with(&options.plugin) {
        let wanted = Record {
            chained: file_name(&path),
            original: record.as_ref().and_then(|r| r.original.clone()),
            binary_installed,
        };
        if record.as_ref() != Some(&wanted) {
            records.save(&wanted, &bytes)?;
        }
        return Ok(report(path, false, None));
    }
    // What uninstall will put back: the bytes now there, unless they are netshim's own.
    let ours = record.is_some() && bytes == records.written()?;
    let original = if ours {
        record.as_ref().and_then(|r| r.original.clone())
    } else if conf.has_netshim() {
        None
    } else {
        let attrs = Attrs::of(&path)?.unwrap_or(Attrs::new_file(0o644));
        records.save_original(&bytes)?;
        Some(Original {
            file: file_name(&path),
            mode: attrs.mode,
            uid: attrs.uid,
            gid: attrs.gid,
        })
    };
    let target = if conf.is_list {
        path.clone()
    } else {
        path.with_extension("conflist")
    };
    if target != path && target.exists() {
        return Err(InstallError::BadConf {
            path: path.clone(),
            reason: format!(
                "it is not a list, and the .conflist netshim would make of it, {}, exists \
                 already",
                target.display()
            ),
        });
    }
    let attrs = Attrs::of(&path)?.unwrap_or(Attrs::new_file(0o644));
    let chained = conf.chained(&options.plugin);
    // The record first: a crash after it leaves a file uninstall can still put back.
    records.save(
        &Record {
            chained: file_name(&target),
            original,
            binary_installed,
        },
        &chained,
    )?;
    if target == path {
        if !files::replace_if_unchanged(&target, &chained, attrs, &bytes)? {
            // The primary wrote the file meanwhile: chain into what it wrote.
            if retries == 0 {
                return Err(InstallError::BadConf {
                    path: target,
                    reason: format!(
                        "rewritten by someone else {RACE_RETRIES} times while netshim chained \
                         it; run again when the primary CNI is done"
                    ),
                });
            }
            return chain_attempt(options, binary_written, retries - 1);
        }
    } else {
        files::write_atomic(&target, &chained, attrs)?;
    }
    let converted_from = if target != path {
        files::remove(&path)?;
        Some(path)
    } else {
        None
    };
    Ok(report(target, true, converted_from))
}

/// Whether netshim is chained as `options` asks, into the file the runtimes read first
/// (or the one named), with its binary in place: the agent's readiness.
pub fn is_chained(options: &InstallOptions) -> Result<PathBuf, InstallError> {
    let dir = &options.conf_dir;
    let path = conf_dir::select(dir, &conf_dir::conf_files(dir)?, &options.target())?;
    let bytes = files::read(&path)?.ok_or_else(|| InstallError::NoPrimary { dir: dir.clone() })?;
    let conf = NetworkConf::parse(&path, &bytes)?;
    if !conf.is_chained_with(&options.plugin) {
        return Err(InstallError::BadConf {
            path,
            reason: "netshim is not its last plugin (the agent chains it again)".into(),
        });
    }
    if !options.bin_path().is_file() {
        return Err(InstallError::Io {
            op: "find the plugin binary",
            path: options.bin_path(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Ok(path)
}

/// Gives back the file a record names (see the module docs) and removes the record.
fn release(
    dir: &Path,
    records: &RecordDir,
    record: &Record,
) -> Result<UninstallReport, InstallError> {
    let mut report = UninstallReport::default();
    let chained = dir.join(&record.chained);
    if let Some(current) = files::read(&chained)? {
        let untouched = current == records.written()?;
        match (&record.original, untouched) {
            (Some(original), true) => {
                let bytes = records.original()?;
                let attrs = Attrs {
                    mode: original.mode,
                    uid: original.uid,
                    gid: original.gid,
                };
                let original_path = dir.join(&original.file);
                if original.file == record.chained {
                    files::write_atomic(&chained, &bytes, attrs)?;
                    report.restored.push(chained);
                } else {
                    // A .conf made into a .conflist. If the primary wrote its .conf again
                    // meanwhile, that one is newer than the kept bytes: it stays.
                    if !original_path.exists() {
                        files::write_atomic(&original_path, &bytes, attrs)?;
                        report.restored.push(original_path);
                    }
                    files::remove(&chained)?;
                    report.removed.push(chained);
                }
            }
            _ => {
                if let Some(unchained) = NetworkConf::parse(&chained, &current)
                    .ok()
                    .and_then(|c| c.unchained())
                {
                    let attrs = Attrs::of(&chained)?.unwrap_or(Attrs::new_file(0o644));
                    files::write_atomic(&chained, &unchained, attrs)?;
                    report.unchained.push(chained);
                }
            }
        }
    }
    records.remove()?;
    Ok(report)
}

/// Puts the configuration back and removes the binary (see the module docs). Without a
/// record, netshim's entries are taken out of every file that has one.
pub fn uninstall(conf_dir: &Path, bin_dir: &Path) -> Result<UninstallReport, InstallError> {
    let records = RecordDir::of(conf_dir);
    let record = records.load()?;
    let mut report = match &record {
        Some(r) => release(conf_dir, &records, r)?,
        None => {
            let mut report = UninstallReport::default();
            for path in conf_dir::conf_files(conf_dir)? {
                let Some(bytes) = files::read(&path)? else {
                    continue;
                };
                let Some(unchained) = NetworkConf::parse(&path, &bytes)
                    .ok()
                    .and_then(|c| c.unchained())
                else {
                    continue;
                };
                let attrs = Attrs::of(&path)?.unwrap_or(Attrs::new_file(0o644));
                files::write_atomic(&path, &unchained, attrs)?;
                report.unchained.push(path);
            }
            report
        }
    };
    let binary = bin_dir.join(BINARY_NAME);
    if record.is_none_or(|r| r.binary_installed) && files::remove(&binary)? {
        report.binary_removed = Some(binary);
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
