//! What an install changed, kept so that uninstall can put it back byte for byte: the
//! directory `.netshim/` of the configuration directory (libcni and the runtimes read no
//! directory there) holds `install.json` (which file was chained, from which file, with
//! which mode and owner), `original` (that file's bytes before netshim) and `written` (the
//! bytes netshim wrote, to tell whether anyone changed the file since).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    error::{io, InstallError},
    files::{self, Attrs},
};

/// The record's directory in the configuration directory.
pub const RECORD_DIR: &str = ".netshim";

/// The file the chained one was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// Its name in the configuration directory.
    pub file: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The file netshim wrote, in the configuration directory.
    pub chained: String,
    /// The file it was made from, whose bytes are in `original` (`None`: it was chained
    /// already when the record was made, by hand or by a netshim whose record was lost).
    pub original: Option<Original>,
    /// Whether the binary in the bin directory was put there by an install.
    pub binary_installed: bool,
}

/// The record of a configuration directory.
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    pub fn of(conf_dir: &Path) -> RecordDir {
        RecordDir {
            dir: conf_dir.join(RECORD_DIR),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn load(&self) -> Result<Option<Record>, InstallError> {
        let path = self.file("install.json");
        let Some(bytes) = files::read(&path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| InstallError::Record {
                path: path.clone(),
                reason: e.to_string(),
            })
    }

    /// The original bytes, checked to be there when the record names an original.
    pub fn original(&self) -> Result<Vec<u8>, InstallError> {
        let path = self.file("original");
        files::read(&path)?.ok_or(InstallError::Record {
            path,
            reason: "the original bytes are missing".into(),
        })
    }

    /// The bytes netshim last wrote (empty when unknown).
    pub fn written(&self) -> Result<Vec<u8>, InstallError> {
        Ok(files::read(&self.file("written"))?.unwrap_or_default())
    }

    fn ensure_dir(&self) -> Result<(), InstallError> {
        match std::fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create directory", &self.dir)(e)),
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod", &self.dir))
    }

    /// Saves the original's bytes (before the record that names them).
    pub fn save_original(&self, bytes: &[u8]) -> Result<(), InstallError> {
        self.ensure_dir()?;
        files::write_atomic(&self.file("original"), bytes, Attrs::new_file(0o600))
    }

    /// Saves the bytes about to be written, then the record.
    pub fn save(&self, record: &Record, written: &[u8]) -> Result<(), InstallError> {
        self.ensure_dir()?;
        files::write_atomic(&self.file("written"), written, Attrs::new_file(0o600))?;
        let mut json = serde_json::to_vec_pretty(record).expect("the record serializes");
        json.push(b'\n');
        files::write_atomic(&self.file("install.json"), &json, Attrs::new_file(0o600))
    }

    /// Removes the record and its directory.
    pub fn remove(&self) -> Result<(), InstallError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &self.dir)(e)),
        }
    }
}
