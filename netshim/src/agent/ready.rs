//! The agent's readiness: netshim chained into the primary network (its binary in place)
//! and the datapath loadable by this kernel. `GET /readyz` answers it, and the ready file
//! exists exactly while it holds (for node scripts and other DaemonSets; kubelet treats the
//! CNI configuration itself as the node's network readiness, which the primary CNI owns).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::Serialize;

#[derive(Debug, Clone)]
struct Facts {
    chained: Result<PathBuf, String>,
    datapath: Result<u64, String>,
}

/// What the ready file holds.
#[derive(Debug, Serialize)]
struct ReadyFile<'a> {
    chained: &'a Path,
    datapath_tag: String,
    pid: u32,
}

pub struct Readiness {
    facts: Mutex<Facts>,
    file: PathBuf,
    /// The ready file's directory, when the agent made it (removed again on exit).
    made_dir: Mutex<Option<PathBuf>>,
}

impl Readiness {
    pub fn new(file: PathBuf) -> Readiness {
        Readiness {
            facts: Mutex::new(Facts {
                chained: Err("starting".into()),
                datapath: Err("starting".into()),
            }),
            file,
            made_dir: Mutex::new(None),
        }
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok(what is ready)` or `Err(why not)`.
    pub fn probe(&self) -> Result<String, String> {
        let f = self.facts();
        match (&f.chained, &f.datapath) {
            (Ok(path), Ok(tag)) => Ok(format!(
                "chained in {}, datapath {tag:016x} loads",
                path.display()
            )),
            (Err(e), _) => Err(format!("not chained: {e}")),
            (_, Err(e)) => Err(e.clone()),
        }
    }

    pub fn set_chained(&self, chained: Result<PathBuf, String>) {
        self.facts().chained = chained;
        self.sync_file();
    }

    pub fn set_datapath(&self, datapath: Result<u64, String>) {
        self.facts().datapath = datapath;
        self.sync_file();
    }

    pub fn datapath(&self) -> Result<u64, String> {
        self.facts().datapath.clone()
    }

    /// Writes the ready file when ready (and it says something else), removes it otherwise.
    fn sync_file(&self) {
        let f = self.facts().clone();
        let (Ok(chained), Ok(tag)) = (&f.chained, &f.datapath) else {
            self.remove_file();
            return;
        };
        let mut json = serde_json::to_vec_pretty(&ReadyFile {
            chained,
            datapath_tag: format!("{tag:016x}"),
            pid: std::process::id(),
        })
        .expect("the ready file serializes");
        json.push(b'\n');
        if std::fs::read(&self.file).ok().as_deref() == Some(&json[..]) {
            return;
        }
        if let Some(dir) = self.file.parent().filter(|d| !d.exists()) {
            if std::fs::create_dir_all(dir).is_ok() {
                *self.made_dir.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_owned());
            }
        }
        let attrs = crate::cni::install::files::Attrs::new_file(0o644);
        if let Err(e) = crate::cni::install::files::write_atomic(&self.file, &json, attrs) {
            tracing::warn!("agent: writing the ready file: {e}");
        }
    }

    pub fn remove_file(&self) {
        match std::fs::remove_file(&self.file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("agent: removing {}: {e}", self.file.display()),
        }
    }

    /// On exit: the ready file, and its directory if the agent made it (and it is empty).
    pub fn remove_all(&self) {
        self.remove_file();
        if let Some(dir) = self
            .made_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
