//! What the agent must see of the host before it acts for it: the host's pid namespace
//! (gc judges a netns alive from every process's namespaces and mount tables, and the
//! leftovers of killed runs by their pid), and the host's `/run/netshim` (the sandboxes'
//! locks and state) and `/run/netns` (named namespaces, appearing after the agent started:
//! mount propagation from the host). bpffs is checked by [`crate::host`] like for every
//! command. Run on the host itself, all of it holds trivially.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::AgentError;

/// The inode of the initial pid namespace (the kernel's `PROC_PID_INIT_INO`).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// The directories that must be the host's, and the propagation their volume needs.
const HOST_DIRS: [(&str, &str); 2] = [
    (crate::state::STATE_ROOT, ""),
    ("/run/netns", ", with mountPropagation: HostToContainer"),
];

fn ino(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether this process is in the host's (the initial) pid namespace.
pub fn in_host_pid_ns() -> bool {
    ino(Path::new("/proc/self/ns/pid")).map(|(_, i)| i) == Some(INIT_PID_NS_INO)
}

/// Checks the pid namespace and the host directories (see the module docs).
pub fn check() -> Result<(), AgentError> {
    if !in_host_pid_ns() {
        return Err(AgentError::NotHostPid { command: "agent" });
    }
    let host = crate::host::host_pid().map_err(|(path, errno)| AgentError::Io {
        what: format!("reading {}", path.display()),
        source: std::io::Error::from(errno),
    })?;
    let host_root = PathBuf::from(format!("/proc/{host}/root"));
    for (dir, propagation) in HOST_DIRS {
        let theirs = ino(&host_root.join(dir.trim_start_matches('/')));
        let ours = ino(Path::new(dir));
        let detail = match (theirs, ours) {
            (None, _) if dir == "/run/netns" => continue,
            (None, _) => {
                // Not made on the host yet: make it there, so that both can be compared.
                let on_host = host_root.join(dir.trim_start_matches('/'));
                std::fs::create_dir_all(&on_host).map_err(|source| AgentError::Io {
                    what: format!("creating {} on the host", on_host.display()),
                    source,
                })?;
                match (ino(&on_host), ino(Path::new(dir))) {
                    (Some(a), Some(b)) if a == b => continue,
                    (_, None) => "it is missing here".to_owned(),
                    _ => "another directory than the host's".to_owned(),
                }
            }
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), None) => "it is missing here".to_owned(),
            (Some(_), Some(_)) => "another directory than the host's".to_owned(),
        };
        return Err(AgentError::NotHostDir {
            path: dir.into(),
            detail,
            propagation,
        });
    }
    Ok(())
}
