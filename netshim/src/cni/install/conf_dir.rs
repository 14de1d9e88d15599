//! Which file of a CNI configuration directory is the primary network, as the runtimes
//! pick it: libcni's `ConfFiles` lists the regular files ending `.conf`, `.conflist` or
//! `.json` (directories and other names are not read), sorted by name (byte order, Go's
//! `sort.Strings`); containerd's CRI (and CRI-O, podman) take the first that loads.

use std::path::{Path, PathBuf};

use super::error::{io, InstallError};

/// The extensions libcni reads.
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// The configuration files of `dir` in the order the runtimes read them.
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(InstallError::NoPrimary {
                dir: dir.to_owned(),
            })
        }
        Err(e) => return Err(io("read directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("read directory", dir))?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !EXTENSIONS.contains(&ext) {
            continue;
        }
        // libcni follows symlinks (os.Stat) and skips directories.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// What `--chain-into` names: a file (a path, or a name in the directory) or a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The first file, as the runtimes pick it.
    First,
    File(PathBuf),
    Network(String),
}

impl Target {
    /// `--chain-into`'s value: a path with a `/`, or a name with a CNI extension, is a
    /// file; anything else a network name.
    pub fn parse(dir: &Path, value: Option<&str>) -> Target {
        match value {
            None => Target::First,
            Some(v) if v.contains('/') => Target::File(PathBuf::from(v)),
            Some(v)
                if Path::new(v)
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e)) =>
            {
                Target::File(dir.join(v))
            }
            Some(v) => Target::Network(v.to_owned()),
        }
    }
}

/// The network name of a configuration's bytes, if it has one.
pub fn network_name(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("name")?.as_str().map(str::to_owned)
}

/// The file to chain into, among `files` (see [`conf_files`]). A file of netshim's own
/// conversion (`<stem>.conflist` beside the `.conf` it replaced) is found like any other.
pub fn select(dir: &Path, files: &[PathBuf], target: &Target) -> Result<PathBuf, InstallError> {
    let there = || {
        files
            .iter()
            .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match target {
        Target::First => files
            .first()
            .cloned()
            .ok_or_else(|| InstallError::NoPrimary {
                dir: dir.to_owned(),
            }),
        Target::File(path) => {
            if path.is_file() {
                Ok(path.clone())
            } else {
                Err(InstallError::NoSuchNetwork {
                    dir: dir.to_owned(),
                    wanted: path.display().to_string(),
                    there: there(),
                })
            }
        }
        Target::Network(name) => files
            .iter()
            .find(|f| {
                std::fs::read(f)
                    .ok()
                    .and_then(|b| network_name(&b))
                    .as_deref()
                    == Some(name)
            })
            .cloned()
            .ok_or_else(|| InstallError::NoSuchNetwork {
                dir: dir.to_owned(),
                wanted: name.clone(),
                there: there(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_as_libcni_lists_them() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "99-z.conf",
            "10-b.conflist",
            "10-a.json",
            "05-x.yaml",
            "10-b.conf",
        ] {
            std::fs::write(d.path().join(name), "{}").unwrap();
        }
        std::fs::create_dir(d.path().join("00-dir.conf")).unwrap();
        std::fs::create_dir(d.path().join(".netshim")).unwrap();
        let names: Vec<_> = conf_files(d.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["10-a.json", "10-b.conf", "10-b.conflist", "99-z.conf"]
        );
    }

    #[test]
    fn chain_into_names_a_file_or_a_network() {
        let d = Path::new("/etc/cni/net.d");
        assert_eq!(Target::parse(d, None), Target::First);
        assert_eq!(
            Target::parse(d, Some("10-calico.conflist")),
            Target::File(d.join("10-calico.conflist"))
        );
        assert_eq!(
            Target::parse(d, Some("/x/y.conf")),
            Target::File("/x/y.conf".into())
        );
        assert_eq!(
            Target::parse(d, Some("k8s-pod-network")),
            Target::Network("k8s-pod-network".into())
        );
    }
}
