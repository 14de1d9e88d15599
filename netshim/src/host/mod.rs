//! What a command needs of the host before it looks at any sandbox: the host's view of
//! bpffs and `/run/netshim` ([`mntns`]) and the privileges to use them ([`caps`]).
//! [`require`] checks both; the CLI calls it for every command but completions, man and
//! CNI VERSION.

pub mod caps;
pub mod mntns;

/// Why a command cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error(
        "netshim {command} needs root (or {}); missing {}",
        required_list(),
        missing.join(", ")
    )]
    Privileges {
        command: String,
        missing: Vec<&'static str>,
    },
    #[error("netshim {command} cannot read its own capabilities: {detail}")]
    Capabilities { command: String, detail: String },
    #[error(
        "netshim {command} refused: {source}. Pins made in this mount namespace would \
         vanish when netshim exits (`ip netns exec` mounts a fresh /sys), and the host's \
         would not be seen. Run it from the host's mount namespace, entering only the \
         network namespace (`nsenter --net=/run/netns/NS netshim …`), or give netshim \
         CAP_SYS_ADMIN and CAP_SYS_CHROOT so that it can join the host's mount namespace itself"
    )]
    NotHostMounts {
        command: String,
        source: mntns::MntnsError,
    },
}

/// The process whose namespaces are the host's: PID 1; or, where PID 1's namespace links
/// cannot be read even by root (a microVM's agent running as PID 1 that refuses ptrace
/// access), the kernel's `kthreadd` (PID 2 with parent 0), which runs in the initial
/// namespaces. `Err` names PID 1's link and why it could not be read.
pub fn host_pid() -> Result<u32, (std::path::PathBuf, nix::errno::Errno)> {
    let pid1 = std::path::PathBuf::from("/proc/1/ns/mnt");
    let errno = match std::fs::metadata(&pid1) {
        Ok(_) => return Ok(1),
        Err(e) => nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    let status = std::fs::read_to_string("/proc/2/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let kthreadd = field("Name:") == Some("kthreadd") && field("PPid:") == Some("0");
    if kthreadd && std::fs::metadata("/proc/2/ns/mnt").is_ok() {
        return Ok(2);
    }
    Err((pid1, errno))
}

fn required_list() -> String {
    let names: Vec<&str> = caps::REQUIRED.iter().map(|(_, n)| *n).collect();
    names.join(" + ")
}

/// Checks that `command` (its name, for the message) can do its work here: the effective
/// capabilities of [`caps::REQUIRED`], and the host's mount namespace (joined by
/// [`mntns::join_host`] if need be, which the caller ran first thing).
pub fn require(command: &str) -> Result<(), HostError> {
    let cap_eff = caps::effective().map_err(|e| HostError::Capabilities {
        command: command.to_owned(),
        detail: e.to_string(),
    })?;
    let missing = caps::missing(cap_eff);
    if !missing.is_empty() {
        return Err(HostError::Privileges {
            command: command.to_owned(),
            missing,
        });
    }
    match mntns::outcome().unwrap_or_else(mntns::join_host) {
        Ok(_) => Ok(()),
        Err(source) => Err(HostError::NotHostMounts {
            command: command.to_owned(),
            source,
        }),
    }
}
