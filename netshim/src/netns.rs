//! Network namespaces: resolving the `--netns` argument and running work inside one.
//!
//! A netns is a property of a thread. netshim never calls `setns` on a tokio worker: every
//! operation in a netns runs on a dedicated thread that enters the namespace first, builds its
//! own current-thread runtime, and opens its rtnetlink socket there (a netlink socket belongs
//! to the netns it was created in).

use std::{
    fmt,
    fs::File,
    future::Future,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use nix::sched::{setns, CloneFlags};

/// Where `ip netns add NAME` puts its bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest `--netns` argument accepted (PATH_MAX).
pub const MAX_NETNS_ARG: usize = 4096;

nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);

/// Why a `--netns` argument cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {arg} not found: open {path}: {source}")]
    Open {
        arg: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a network namespace ({detail})")]
    NotNetns { path: PathBuf, detail: String },
    #[error("invalid network namespace argument {arg:?}: {reason}")]
    BadArgument { arg: String, reason: &'static str },
    #[error("setns(CLONE_NEWNET) into {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("creating the runtime for netns {path}: {source}")]
    Runtime {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening an rtnetlink socket in netns {path}: {source}")]
    Netlink {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the thread working in netns {path} panicked")]
    Panicked { path: PathBuf },
}

/// A resolved, verified network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// What the user typed.
    pub arg: String,
    /// The path that was opened.
    pub path: PathBuf,
    /// The namespace's inode number: its identity while it lives.
    pub inode: u64,
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arg)
    }
}

/// Maps a `--netns` argument to a path: a bare NAME means `/run/netns/NAME`; anything with a
/// `/` is a path (for example `/proc/<pid>/ns/net`).
pub fn netns_path(arg: &str) -> Result<PathBuf, NetnsError> {
    let bad = |reason| NetnsError::BadArgument {
        arg: arg.to_owned(),
        reason,
    };
    if arg.is_empty() {
        return Err(bad("empty"));
    }
    if arg.len() > MAX_NETNS_ARG {
        return Err(bad("longer than PATH_MAX"));
    }
    if arg.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if arg.contains('/') {
        return Ok(PathBuf::from(arg));
    }
    if arg == "." || arg == ".." {
        return Err(bad("not a namespace name"));
    }
    Ok(Path::new(NETNS_RUN_DIR).join(arg))
}

impl Netns {
    /// Resolves and verifies `arg`: the file must exist and be a network namespace
    /// (`ioctl(NS_GET_NSTYPE) == CLONE_NEWNET`). Nothing is changed.
    pub fn resolve(arg: &str) -> Result<Self, NetnsError> {
        let path = netns_path(arg)?;
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            arg: arg.to_owned(),
            path: path.clone(),
            source,
        })?;
        verify_netns(&file, &path)?;
        let inode = file
            .metadata()
            .map_err(|source| NetnsError::Open {
                arg: arg.to_owned(),
                path: path.clone(),
                source,
            })?
            .ino();
        Ok(Self {
            arg: arg.to_owned(),
            path,
            inode,
        })
    }

    /// Opens the namespace file again and checks it is still the same namespace.
    pub fn open(&self) -> Result<File, NetnsError> {
        let file = File::open(&self.path).map_err(|source| NetnsError::Open {
            arg: self.arg.clone(),
            path: self.path.clone(),
            source,
        })?;
        verify_netns(&file, &self.path)?;
        Ok(file)
    }

    /// Runs `work` on a new thread inside this netns, with a current-thread tokio runtime and
    /// an rtnetlink handle whose socket lives in the netns. Blocks until it is done.
    pub fn run<T, E, F, Fut>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<NetnsError> + Send + 'static,
        F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>>,
    {
        let file = self.open()?;
        let path = self.path.clone();
        let thread_path = path.clone();
        let joined = std::thread::Builder::new()
            .name("netshim-netns".into())
            .spawn(move || -> Result<T, E> {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    path: thread_path.clone(),
                    source,
                })?;
                drop(file);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| NetnsError::Runtime {
                        path: thread_path.clone(),
                        source,
                    })?;
                runtime.block_on(async move {
                    let (connection, handle, _) =
                        rtnetlink::new_connection().map_err(|source| NetnsError::Netlink {
                            path: thread_path.clone(),
                            source,
                        })?;
                    let connection = tokio::spawn(connection);
                    let result = work(handle).await;
                    connection.abort();
                    result
                })
            })
            .map_err(|source| NetnsError::Runtime {
                path: path.clone(),
                source,
            })?
            .join();
        joined.unwrap_or_else(|_| Err(NetnsError::Panicked { path }.into()))
    }
}

fn verify_netns(file: &File, path: &Path) -> Result<(), NetnsError> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    match unsafe { ns_get_nstype(file.as_raw_fd()) } {
        Ok(t) if t == libc::CLONE_NEWNET => Ok(()),
        Ok(t) => Err(NetnsError::NotNetns {
            path: path.to_owned(),
            detail: format!("namespace type {t:#x}, not CLONE_NEWNET"),
        }),
        Err(e) => Err(NetnsError::NotNetns {
            path: path.to_owned(),
            detail: format!("ioctl NS_GET_NSTYPE: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_run_netns_and_paths_stay() {
        assert_eq!(
            netns_path("pod1").unwrap(),
            PathBuf::from("/run/netns/pod1")
        );
        assert_eq!(
            netns_path("/proc/1/ns/net").unwrap(),
            PathBuf::from("/proc/1/ns/net")
        );
        assert_eq!(netns_path("./x").unwrap(), PathBuf::from("./x"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for arg in ["", ".", "..", "a\0b"] {
            assert!(netns_path(arg).is_err(), "{arg:?}");
        }
        assert!(netns_path(&"x".repeat(MAX_NETNS_ARG + 1)).is_err());
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let err = Netns::resolve("/proc/self/status").unwrap_err();
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");
        assert!(err.to_string().contains("is not a network namespace"));
    }

    #[test]
    fn another_namespace_type_is_not_a_netns() {
        let err = Netns::resolve("/proc/self/ns/uts").unwrap_err();
        assert!(err.to_string().contains("not CLONE_NEWNET"), "{err}");
    }

    #[test]
    fn missing_names_say_not_found() {
        let err = Netns::resolve("netshim-no-such-netns-xyz").unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn own_netns_resolves() {
        let ns = Netns::resolve("/proc/self/ns/net").unwrap();
        assert!(ns.inode > 0);
    }
}
