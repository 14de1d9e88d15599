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
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::fs::MetadataExt,
    },
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
    #[error("getsockopt(SO_NETNS_COOKIE) in netns {path}: {source}")]
    Cookie {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the thread working in netns {path} panicked")]
    Panicked { path: PathBuf },
}

impl NetnsError {
    /// The namespace file does not exist (ENOENT): the netns is gone, or never was.
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A resolved, verified network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// What the user typed.
    pub arg: String,
    /// The path that was opened.
    pub path: PathBuf,
    /// The namespace's inode number (what `lsns` and `ls -iL /run/netns` show). The kernel
    /// may give it to a new namespace once this one is gone.
    pub inode: u64,
    /// The namespace's cookie (`SO_NETNS_COOKIE`): unique for the life of the system, never
    /// reused, so bpffs state keyed by it cannot be mistaken for another namespace's.
    pub cookie: u64,
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

/// The canonical absolute form of a namespace path, as netshim records it: a relative path
/// is joined to the working directory; under `/proc`, `self` becomes `<pid>` and
/// `thread-self` `<pid>/task/<tid>`, and nothing else is followed (`/proc/<pid>/root/…` and
/// `/proc/<pid>/ns/net` are magic links that name another mount namespace's file, or no
/// file at all); elsewhere the parent directory is canonicalized (symlinks and `..`:
/// `/var/run/netns/x` becomes `/run/netns/x`) and the last component is kept. A parent
/// that cannot be canonicalized (it does not exist) leaves the absolute path as it is.
pub fn canonical_path(path: &Path) -> PathBuf {
    let absolute = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_owned(),
    };
    if let Ok(rest) = absolute.strip_prefix("/proc") {
        let pid = std::process::id();
        let mut parts = rest.components();
        let own = match parts
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
        {
            Some(first) if first == "self" => format!("/proc/{pid}"),
            Some(first) if first == "thread-self" => {
                format!("/proc/{pid}/task/{}", nix::unistd::gettid())
            }
            _ => return absolute,
        };
        return Path::new(&own).join(parts.as_path());
    }
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => match std::fs::canonicalize(parent) {
            Ok(parent) => parent.join(name),
            Err(_) => absolute,
        },
        // `/` or a path ending in `..`: a directory, never a namespace file.
        _ => std::fs::canonicalize(&absolute).unwrap_or(absolute),
    }
}

/// Whether a canonical path is under `/proc/<pid>/` of this process (or of one of its
/// threads, `/proc/<tid>/`): the caller's own namespace named by path.
pub fn is_own_proc_path(path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix("/proc") else {
        return false;
    };
    let Some(first) = rest.components().next() else {
        return false;
    };
    let first = first.as_os_str().to_string_lossy();
    match first.parse::<u32>() {
        Ok(pid) if pid == std::process::id() => true,
        Ok(tid) => Path::new(&format!("/proc/self/task/{tid}")).exists(),
        Err(_) => first == "self" || first == "thread-self",
    }
}

impl Netns {
    /// Resolves and verifies `arg`: the file must exist and be a network namespace
    /// (`ioctl(NS_GET_NSTYPE) == CLONE_NEWNET`). `path` is the canonical absolute path
    /// ([`canonical_path`]), `arg` stays as typed. Nothing is changed.
    pub fn resolve(arg: &str) -> Result<Self, NetnsError> {
        let path = canonical_path(&netns_path(arg)?);
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
        let cookie = cookie_of(&file, &path)?;
        Ok(Self {
            arg: arg.to_owned(),
            path,
            inode,
            cookie,
        })
    }

    /// Whether this is the calling process's own netns named by path (`/proc/self/…`,
    /// `/proc/thread-self/…`, `/proc/<own pid>/…`).
    pub fn is_callers_own_by_path(&self) -> bool {
        is_own_proc_path(&self.path)
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
        // The caller's tracing span (attach, detach, watch ...) goes on on the netns thread.
        let span = tracing::Span::current();
        let joined = std::thread::Builder::new()
            .name("netshim-netns".into())
            .spawn(move || -> Result<T, E> {
                let _span = span.entered();
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    path: thread_path.clone(),
                    source,
                })?;
                drop(file);
                tracing::trace!(path = %thread_path.display(), "entered the netns");
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

/// `SO_NETNS_COOKIE` (asm-generic; the same on x86 and arm).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the netns the calling thread is in (from a socket made here).
pub fn current_cookie() -> std::io::Result<u64> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the out pointer and length describe `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Reads the cookie of the namespace `file` refers to, from a socket made inside it on a
/// short-lived thread.
fn cookie_of(file: &File, path: &Path) -> Result<u64, NetnsError> {
    let file = file.try_clone().map_err(|source| NetnsError::Runtime {
        path: path.to_owned(),
        source,
    })?;
    let thread_path = path.to_owned();
    std::thread::Builder::new()
        .name("netshim-netns-cookie".into())
        .spawn(move || -> Result<u64, NetnsError> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: thread_path.clone(),
                source,
            })?;
            current_cookie().map_err(|source| NetnsError::Cookie {
                path: thread_path.clone(),
                source,
            })
        })
        .map_err(|source| NetnsError::Runtime {
            path: path.to_owned(),
            source,
        })?
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::Panicked {
                path: path.to_owned(),
            })
        })
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
    fn recorded_paths_are_canonical_and_absolute() {
        let pid = std::process::id();
        let ns = Netns::resolve("/proc/self/ns/net").unwrap();
        assert_eq!(ns.arg, "/proc/self/ns/net");
        assert_eq!(ns.path, PathBuf::from(format!("/proc/{pid}/ns/net")));
        assert!(ns.is_callers_own_by_path());
        let tid = nix::unistd::gettid();
        let ns = Netns::resolve("/proc/thread-self/ns/net").unwrap();
        assert_eq!(
            ns.path,
            PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net"))
        );
        assert!(ns.is_callers_own_by_path());
        // Relative to the working directory, `..` and symlinks resolved in the parent.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            canonical_path(Path::new("./x")),
            cwd.canonicalize().unwrap().join("x")
        );
        assert_eq!(
            canonical_path(Path::new("/proc/1/root/run/netns/x")),
            PathBuf::from("/proc/1/root/run/netns/x"),
            "another mount namespace's path is not followed"
        );
        assert_eq!(
            canonical_path(Path::new("/etc/../etc/x")),
            PathBuf::from("/etc/x"),
            "`..` in the parent"
        );
        assert!(!is_own_proc_path(Path::new("/proc/1/ns/net")) || pid == 1);
        assert!(!is_own_proc_path(Path::new("/run/netns/x")));
        assert_eq!(
            canonical_path(Path::new("/no/such/dir/x")),
            PathBuf::from("/no/such/dir/x")
        );
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
        assert!(err.is_gone());
        assert!(!Netns::resolve("/proc/self/status").unwrap_err().is_gone());
    }

    #[test]
    fn current_cookie_is_the_resolved_one() {
        let ns = Netns::resolve("/proc/thread-self/ns/net").unwrap();
        assert_eq!(current_cookie().unwrap(), ns.cookie);
    }

    #[test]
    fn own_netns_resolves() {
        let ns = Netns::resolve("/proc/self/ns/net").unwrap();
        assert!(ns.inode > 0);
        assert!(ns.cookie > 0);
        let again = Netns::resolve("/proc/thread-self/ns/net").unwrap();
        assert_eq!(ns.cookie, again.cookie, "same netns, same cookie");
    }
}
