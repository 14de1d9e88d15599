//! The library's error type. Each variant says what failed, on which interface, in which
//! netns; [`Error::exit_code`] maps it to the CLI's documented exit codes.

use crate::{
    datapath::{ebpf::EbpfError, mirred::MirredError, upgrade::UpgradeError, UnknownBackend},
    endpoint::ClassifyError,
    metrics::MetricsError,
    model::UnknownModel,
    netns::NetnsError,
    pins::HostFileError,
    stats::StatsError,
    tap::TapError,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an operation on the system failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: invalid input, or the command cannot run here (privileges, the host's mount
/// namespace: see [`crate::host`]).
pub const EXIT_INVALID_INPUT: i32 = 2;
/// Exit code: the netns is in a state that conflicts with the request.
pub const EXIT_CONFLICT: i32 = 3;
/// Exit code: the netns is attached but broken (`status`, `stats`).
pub const EXIT_BROKEN: i32 = 4;

/// An exit code of the CLI and what it means.
#[derive(Debug, Clone, Copy)]
pub struct ExitCodeDoc {
    pub code: i32,
    /// One line per line of the `--help` table (which indents the lines after the first).
    pub meaning: &'static str,
}

/// The exit codes, documented once: `netshim --help` prints this table and docs/cli.md holds
/// it as Markdown (a unit test below fails when the two differ).
pub const EXIT_CODES: [ExitCodeDoc; 5] = [
    ExitCodeDoc {
        code: EXIT_OK,
        meaning: "success",
    },
    ExitCodeDoc {
        code: EXIT_FAILED,
        meaning: "an operation on the system failed (netlink, bpf, tap ioctl, bpffs)",
    },
    ExitCodeDoc {
        code: EXIT_INVALID_INPUT,
        meaning: "\
invalid input: bad usage, unknown model (kata's \"Unknown type <x>\"), a netns that is
missing or not a network namespace, the caller's own netns by path without
--disable-new-netns, the host's netns with a model other than none, an interface kind
kata refuses, nothing to attach to, conflicting options, a bad config file (or one that
is not a regular file), upgrade of a netns that is not attached, an eBPF object whose
maps do not match the pinned ones, two devices `connect` would join in a loop (lo, one
veth pair, macvlans on one lower, veths bridged on the far side); the source guard
asked for (--guard enforce|log, TOML or CNI key) with the mirred tc backend or a model
without the eBPF datapath, bad guard settings, `netshim guard` of a netns that is not
attached, has no eBPF datapath or no guard maps yet; not root (nor
CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN + CAP_DAC_OVERRIDE + CAP_SYS_PTRACE); started
in a mount namespace whose /sys/fs/bpf is not the host's when the host's cannot be
joined; `cni install` with no primary network, a network configuration the runtimes
cannot read, a cniVersion before 0.3.0, or a --plugin-json the plugin refuses; the
agent or gc in a pid namespace of its own, the agent without the host's /run/netshim or
/run/netns",
    },
    ExitCodeDoc {
        code: EXIT_CONFLICT,
        meaning: "\
conflict: the netns is attached with another model or tc backend, or its devices are
connected by `netshim connect` (detach or disconnect first); a device's ingress is
owned by a legacy `ingress` qdisc (kata's mirred datapath or another tool); a device
netshim did not make (a bridge, veth, tun-mode tun) has the name of a tap attach would
make (tap<N>_kata); a hook was changed by someone else during an upgrade; netshim's own
files of the sandbox are damaged (`netshim detach` repairs them)",
    },
    ExitCodeDoc {
        code: EXIT_BROKEN,
        meaning: "\
status, stats: the netns is attached but broken (a recorded tap, pod device, pin or
filter is gone or different); the report says what, and `netshim detach` repairs it",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error(transparent)]
    UnknownModel(#[from] UnknownModel),
    #[error(transparent)]
    UnknownBackend(#[from] UnknownBackend),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("{source} in netns {netns}")]
    UnsupportedInterface {
        netns: String,
        source: ClassifyError,
    },
    #[error("no usable interface in netns {netns}: {detail}")]
    NoUsableInterface { netns: String, detail: String },
    #[error("{device} in netns {netns} would get no tap: {detail}")]
    NoTapFor {
        netns: String,
        device: String,
        detail: String,
    },
    #[error("netns {netns} has {count} endpoints; netshim supports at most {max}")]
    TooManyEndpoints {
        netns: String,
        count: usize,
        max: u32,
    },
    #[error("netns {netns} is already attached ({detail}); run `netshim detach` first")]
    AlreadyAttached { netns: String, detail: String },
    #[error(
        "{dev} in netns {netns} has an `ingress` qdisc (handle ffff:) that netshim did not \
         make: kata's mirred datapath (or another tool) owns that device's ingress, and \
         {consequence}; remove that qdisc first, or use --tc-backend mirred"
    )]
    IngressQdiscTaken {
        netns: String,
        dev: String,
        consequence: &'static str,
    },
    #[error(
        "netns {netns} has {what} named {name} that netshim did not make: netshim names \
         {owner} {name}; {remedy}"
    )]
    TapNameTaken {
        netns: String,
        name: String,
        /// What has the name: `a bridge`, `a veth`, `a tun device in tun mode`, ...
        what: String,
        /// Whose name it is: `endpoint 0's tap`, `eth0's tap (the CNI tap_name)`.
        owner: String,
        /// `rename or remove it`, or (a CNI tap_name) choose another name.
        remedy: &'static str,
    },
    #[error(
        "netns {netns} has no netshim eBPF datapath ({detail}): not attached, nothing to upgrade"
    )]
    NotAttached { netns: String, detail: String },
    #[error("upgrade of netns {netns}: {source}")]
    Upgrade {
        netns: String,
        source: Box<UpgradeError>,
    },
    #[error("{source}")]
    UpgradeObject { source: Box<UpgradeError> },
    #[error("upgrade failed for {failed} of {total} sandboxes")]
    UpgradeIncomplete { failed: usize, total: usize },
    #[error(
        "netns {netns}: {} {problem}{}; attach changes nothing over state it cannot trust: \
         `netshim detach --netns {netns}` repairs it (and takes the sandbox down)",
        path.display(),
        match more { 0 => String::new(), n => format!(" (and {n} more)") }
    )]
    DamagedState {
        netns: String,
        path: std::path::PathBuf,
        problem: String,
        more: usize,
    },
    #[error(
        "netns {netns} is attached but broken: {}; {}",
        problems.join("; "),
        crate::sandbox::repair_hint(netns)
    )]
    Broken {
        netns: String,
        problems: Vec<String>,
    },
    #[error("{op} for {target} in netns {netns}: {source}")]
    Netlink {
        op: &'static str,
        target: String,
        netns: String,
        source: Box<rtnetlink::Error>,
    },
    #[error("{source} (netns {netns})")]
    Tap {
        netns: String,
        source: Box<TapError>,
    },
    #[error("{source} (netns {netns})")]
    Ebpf {
        netns: String,
        source: Box<EbpfError>,
    },
    #[error("{source} (netns {netns})")]
    Mirred {
        netns: String,
        source: Box<MirredError>,
    },
    #[error("{source} (netns {netns})")]
    Macvtap {
        netns: String,
        source: Box<crate::model::macvtap::MacvtapError>,
    },
    #[error("{0}")]
    InvalidOptions(String),
    #[error(
        "netns {netns}: {device} has a root qdisc of someone else's ({kind}, handle {handle}): \
         netshim does not replace it with a rate limit's shaper; remove it (`tc qdisc del dev \
         {device} root`) or set no limit in that direction"
    )]
    RootQdiscTaken {
        netns: String,
        device: String,
        kind: String,
        handle: String,
    },
    #[error("netns {netns}: the rate limit's IFB device: {source}")]
    Ifb {
        netns: String,
        #[source]
        source: Box<crate::limit::ifb::IfbError>,
    },
    #[error("netns {netns}: the rate limit's shaper on {device}: {source}")]
    Shaper {
        netns: String,
        device: String,
        #[source]
        source: Box<crate::netlink::NetlinkError>,
    },
    #[error(transparent)]
    GuardUnavailable(#[from] crate::model::GuardUnavailable),
    #[error("guard settings: {0}")]
    GuardSettings(crate::guard::settings::GuardSettingsError),
    #[error("no device {name} in netns {netns}")]
    NoSuchDevice { netns: String, name: String },
    #[error(
        "cannot connect {a} and {b} in netns {netns}: {reason}; netshim refuses to connect \
         devices whose redirects would come back to them"
    )]
    RedirectLoop {
        netns: String,
        a: String,
        b: String,
        reason: String,
    },
    #[error("watching netns {netns}: {detail}")]
    Watch { netns: String, detail: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    HostFile(#[from] HostFileError),
    #[error(transparent)]
    Stats(#[from] StatsError),
    #[error("{path} is netns cookie {found} now, not {expected}: left alone")]
    NetnsChanged {
        path: std::path::PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("gc could not collect {count} sandbox(es); first: netns cookie {cookie}: {error}")]
    GcIncomplete {
        count: usize,
        cookie: u64,
        error: String,
    },
    // --- CLI tools (logs, man) ---
    #[error(transparent)]
    EbpfLog(#[from] crate::ebpf_log::EbpfLogError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    Install(#[from] crate::cni::install::InstallError),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// The `map_err` of an eBPF datapath step in `netns`: where an operation names its
    /// netns once, instead of each call site building the error.
    pub(crate) fn ebpf(netns: &crate::netns::Netns) -> impl Fn(EbpfError) -> Self + Copy + '_ {
        move |source| Error::Ebpf {
            netns: netns.to_string(),
            source: Box::new(source),
        }
    }

    /// The `map_err` of a mirred datapath step in `netns` (see [`Error::ebpf`]).
    pub(crate) fn mirred(netns: &crate::netns::Netns) -> impl Fn(MirredError) -> Self + Copy + '_ {
        move |source| Error::Mirred {
            netns: netns.to_string(),
            source: Box::new(source),
        }
    }

    /// A failed read or write of endpoint `index`'s source guard in `netns`'s maps.
    pub(crate) fn guard_map(
        netns: &crate::netns::Netns,
        index: u32,
        source: crate::guard::GuardMapError,
    ) -> Self {
        Error::Ebpf {
            netns: netns.to_string(),
            source: Box::new(EbpfError::Guard {
                index,
                source: Box::new(source),
            }),
        }
    }

    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Netns(NetnsError::Open { .. })
            | Error::Netns(NetnsError::NotNetns { .. })
            | Error::Netns(NetnsError::BadArgument { .. })
            | Error::Host(_)
            | Error::UnknownModel(_)
            | Error::UnknownBackend(_)
            | Error::UnsupportedInterface { .. }
            | Error::NoUsableInterface { .. }
            | Error::NoTapFor { .. }
            | Error::TooManyEndpoints { .. }
            | Error::InvalidOptions(_)
            | Error::GuardUnavailable(_)
            | Error::GuardSettings(_)
            | Error::NoSuchDevice { .. }
            | Error::RedirectLoop { .. }
            | Error::NotAttached { .. }
            | Error::UpgradeObject { .. }
            | Error::Config(_)
            | Error::EbpfLog(crate::ebpf_log::EbpfLogError::NotAttached { .. }) => {
                EXIT_INVALID_INPUT
            }
            Error::Upgrade { source, .. } if source.is_incompatible_object() => EXIT_INVALID_INPUT,
            Error::Install(e) if e.is_input() => EXIT_INVALID_INPUT,
            Error::Agent(
                crate::agent::AgentError::NotHostPid { .. }
                | crate::agent::AgentError::NotHostDir { .. },
            ) => EXIT_INVALID_INPUT,
            Error::AlreadyAttached { .. }
            | Error::IngressQdiscTaken { .. }
            | Error::RootQdiscTaken { .. }
            | Error::DamagedState { .. }
            | Error::TapNameTaken { .. } => EXIT_CONFLICT,
            Error::Upgrade { source, .. } if source.is_conflict() => EXIT_CONFLICT,
            Error::Ifb { source, .. }
                if matches!(**source, crate::limit::ifb::IfbError::NameTaken { .. }) =>
            {
                EXIT_CONFLICT
            }
            Error::Broken { .. } => EXIT_BROKEN,
            _ => EXIT_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`EXIT_CODES`] as the Markdown table docs/cli.md holds.
    fn exit_codes_markdown() -> String {
        let mut md = String::from("| code | meaning |\n| --- | --- |\n");
        for c in EXIT_CODES {
            // `|` would end the cell, `<x>` would be read as an HTML tag.
            let meaning = c
                .meaning
                .replace('\n', " ")
                .replace('|', "\\|")
                .replace('<', "\\<");
            md.push_str(&format!("| {} | {meaning} |\n", c.code));
        }
        md
    }

    #[test]
    fn docs_cli_md_has_the_exit_code_table_of_the_code() {
        const BEGIN: &str = "<!-- exit codes: generated from netshim/src/error.rs EXIT_CODES -->\n";
        const END: &str = "<!-- end of exit codes -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");
        let doc = std::fs::read_to_string(path).expect("docs/cli.md");
        let start = doc
            .find(BEGIN)
            .expect("docs/cli.md marks the exit code table")
            + BEGIN.len();
        let len = doc[start..].find(END).expect("the table's end marker");
        let expected = exit_codes_markdown();
        assert_eq!(
            &doc[start..start + len],
            expected,
            "docs/cli.md's exit code table differs from EXIT_CODES; put this between its markers:\n{expected}"
        );
    }

    #[test]
    fn exit_codes_are_listed_once_in_order() {
        let codes: Vec<i32> = EXIT_CODES.iter().map(|c| c.code).collect();
        assert_eq!(
            codes,
            [
                EXIT_OK,
                EXIT_FAILED,
                EXIT_INVALID_INPUT,
                EXIT_CONFLICT,
                EXIT_BROKEN
            ]
        );
    }
}
