//! netshim's own paths of a sandbox that are not what netshim makes there: a directory
//! where a pin or a state file should be, a plain file (or anything else) where the pin or
//! state directory should be, a lock "file" that is a directory, a commit file that does
//! not parse. Every operation would trip over them forever (EISDIR, ENOTDIR), and a commit
//! file that cannot be read would make attach take a live sandbox for a dead run's leftovers.
//!
//! [`check`] finds them; attach refuses them (exit 3: it changes nothing over state it
//! cannot trust), status reports them, and detach and gc, which own these paths, remove
//! them ([`repair`]): what belonged there is gone already, and the paths are the sandbox's
//! alone (named by its netns cookie).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use crate::{
    pins,
    state::{self, lock},
    Error, Result,
};

/// One of netshim's paths of a sandbox that is wrong, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct BadPath {
    pub path: PathBuf,
    pub problem: String,
    pub damage: Damage,
}

/// What kind of wrong a [`BadPath`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// Not the file type netshim makes there: gc and detach remove it.
    WrongType,
    /// The commit file does not parse: detach takes the sandbox down (gc leaves a live
    /// sandbox's commit file alone).
    Unreadable,
}

/// A file type, as a word.
fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a plain file"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

/// What is at `path`, without following a symlink (`None`: nothing).
fn lstat(path: &Path) -> Option<fs::Metadata> {
    fs::symlink_metadata(path).ok()
}

/// The lock file of sandbox `cookie`, when it is not a plain file.
pub(crate) fn bad_lock_file(cookie: u64) -> Option<BadPath> {
    let path = lock::lock_path(cookie);
    let meta = lstat(&path)?;
    (!meta.is_file()).then(|| BadPath {
        problem: format!("is {}, not the sandbox's lock file", kind(&meta)),
        path,
        damage: Damage::WrongType,
    })
}

/// Every wrong path of sandbox `cookie` (see the module docs). Reads only.
pub fn check(cookie: u64) -> Vec<BadPath> {
    let mut bad: Vec<BadPath> = bad_lock_file(cookie).into_iter().collect();
    let state_dir = state::sandbox_dir(cookie);
    match lstat(&state_dir) {
        Some(m) if !m.is_dir() => push(
            &mut bad,
            state_dir.clone(),
            format!("is {}, not netshim's state directory", kind(&m)),
            Damage::WrongType,
        ),
        Some(_) => {
            for name in [state::INTENT_FILE, state::COMMIT_FILE] {
                let path = state_dir.join(name);
                match lstat(&path) {
                    Some(m) if !m.is_file() => {
                        let problem = format!("is {}, not a state file", kind(&m));
                        push(&mut bad, path, problem, Damage::WrongType)
                    }
                    Some(_) if name == state::COMMIT_FILE => {
                        if let Err(e) = parse_commit(&path) {
                            let problem = format!("cannot be read as an attach report ({e})");
                            push(&mut bad, path, problem, Damage::Unreadable)
                        }
                    }
                    _ => {}
                }
            }
        }
        None => {}
    }
    let pin_dir = pins::sandbox_dir(cookie);
    match lstat(&pin_dir) {
        Some(m) if !m.is_dir() => push(
            &mut bad,
            pin_dir.clone(),
            format!("is {}, not netshim's pin directory", kind(&m)),
            Damage::WrongType,
        ),
        Some(_) => {
            let entries = fs::read_dir(&pin_dir).into_iter().flatten().flatten();
            for e in entries {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let problem = "is a directory where a pin should be".into();
                    push(&mut bad, e.path(), problem, Damage::WrongType);
                }
            }
        }
        None => {}
    }
    bad
}

fn push(bad: &mut Vec<BadPath>, path: PathBuf, problem: String, damage: Damage) {
    bad.push(BadPath {
        path,
        problem,
        damage,
    });
}

fn parse_commit(path: &Path) -> std::result::Result<(), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice::<super::AttachReport>(&bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Attach's answer to wrong paths: a conflict naming the first, and the repair.
pub(crate) fn refuse(netns: &crate::netns::Netns, bad: &[BadPath]) -> Result<()> {
    match bad.first() {
        None => Ok(()),
        Some(b) => Err(Error::DamagedState {
            netns: netns.to_string(),
            path: b.path.clone(),
            problem: b.problem.clone(),
            more: bad.len() - 1,
        }),
    }
}

/// Removes the wrong paths (a directory with everything in it); returns those removed.
/// Only for the sandbox's owner operations (detach, gc), under its lock (the lock file
/// itself before: nobody can hold a lock on a directory).
pub(crate) fn repair(bad: &[BadPath]) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for b in bad {
        let Some(meta) = lstat(&b.path) else {
            continue;
        };
        let result = if meta.is_dir() {
            fs::remove_dir_all(&b.path)
        } else {
            fs::remove_file(&b.path)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(pins::HostFileError::Io {
                    op: if meta.is_dir() { "rm -r" } else { "unlink" },
                    path: b.path.clone(),
                    source,
                }
                .into())
            }
        }
        tracing::debug!(path = %b.path.display(), problem = %b.problem, "repaired");
        removed.push(b.path.clone());
    }
    Ok(removed)
}
