//! Forwarding the datapath's own error records into `tracing`.
//!
//! `netshim_redirect` records a packet it does not redirect although its device has a
//! `peers` entry (flags it does not know: the version skew guard; or a helper refusal):
//! - since issue 13, as a fixed [`netshim_common::DatapathEvent`] in the slot's entry of the
//!   sandbox's pinned `errors` array, which a follower polls every [`RESCAN`] (`errors`);
//!   each new record becomes a WARN event with target [`TARGET`] and the text aya-log
//!   printed before, with the sandbox's netns and the counter slot as fields;
//! - before (a sandbox attached by an older netshim and not upgraded), with aya-log-ebpf
//!   into the program's own `AYA_LOGS` ring buffer, found from the program id with
//!   [`aya_log::EbpfLogger::init_from_id_with_logger`]; its records are emitted with target
//!   [`TARGET`] at the level the program logged them, with the program id and the
//!   sandbox's netns as fields.
//!
//! Which programs: the loaded programs named `netshim_redirec` (the kernel keeps 15
//! characters of a name) that use a sandbox's pinned `peers` map. That covers TCX links and
//! cls_bpf filters alike, and the new program after an `upgrade` (which keeps the maps).
//!
//! The source guard's refusals are not aya-log records: the datapath writes fixed-size
//! records into each sandbox's pinned `guard_events` ring buffer, which the same follower
//! reads (see [`crate::guard::events`]; target `netshim::guard`).
//!
//! - `programs`: which loaded programs and pinned sandboxes are in a [`Scope`].
//! - `errors`: the `errors` array of one sandbox, polled, as `tracing` events.
//! - `polled`: the record arrays of the sandboxes (`errors`, `guard_last`), opened once
//!   per sandbox and polled at each refresh.
//! - `forward`: aya-log records of one program (older datapaths) as `tracing` events.
//! - `follower`: the tasks that follow them (and the guard's ring buffers) as they come
//!   and go: `netshim logs` and `watch`.
//!
//! The ring buffers are polled on the runtime of the caller (tokio `AsyncFd` on the ring
//! buffer's fd); nothing here enters a netns: program and map ids are global. A ring buffer
//! has one consumer position, so two followers of one datapath (`watch` and `logs` at once)
//! each see part of the records.

mod errors;
mod follower;
mod forward;
mod polled;
mod programs;

use std::{path::PathBuf, time::Duration};

use crate::pins;

pub use follower::{follow, spawn_follower, Follower, FollowerGuard};
pub use forward::Forward;
pub use programs::{datapath_programs, kernel_program_name, DatapathProgram, Scope};

/// The `tracing` target of forwarded datapath records.
pub const TARGET: &str = "netshim::ebpf";

/// How often a follower looks for programs loaded since (hotplug, upgrade).
pub const RESCAN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EbpfLogError {
    #[error("netns {netns} has no netshim eBPF datapath (no map pinned at {path}): not attached with the ebpf tc backend")]
    NotAttached { netns: String, path: PathBuf },
    #[error("reading the pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        source: Box<aya::maps::MapError>,
    },
    #[error(transparent)]
    HostFile(#[from] pins::HostFileError),
    #[error("starting the log follower's runtime: {0}")]
    Runtime(std::io::Error),
}

#[cfg(test)]
mod tests;
