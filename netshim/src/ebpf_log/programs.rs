//! The datapath programs and pinned sandboxes a log follower looks at.

use std::{collections::BTreeMap, path::PathBuf};

use aya::maps::MapData;
use netshim_common::{from_fixed, map_names, PROGRAM_NAME};

use super::EbpfLogError;
use crate::{datapath::ebpf, netns::Netns, pins};

/// The name the kernel keeps for the datapath program (`BPF_OBJ_NAME_LEN` - 1 characters).
pub fn kernel_program_name() -> &'static str {
    &PROGRAM_NAME[..PROGRAM_NAME.len().min(15)]
}

/// Whose datapath programs to follow.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every netshim datapath program loaded on the host.
    All,
    /// The programs of one sandbox (by its pin directory).
    Sandbox { netns: String, dir: PathBuf },
}

impl Scope {
    pub fn sandbox(netns: &Netns) -> Self {
        Scope::Sandbox {
            netns: netns.arg.clone(),
            dir: pins::sandbox_dir(netns.cookie),
        }
    }
}

/// A loaded datapath program and the netns it serves (`?` when no pinned sandbox uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathProgram {
    pub prog_id: u32,
    pub netns: String,
}
fn peers_map_id(dir: &std::path::Path, netns: &str) -> Result<u32, EbpfLogError> {
    let path = dir.join(map_names::PEERS);
    let data = MapData::from_pin(&path).map_err(|source| match &source {
        aya::maps::MapError::SyscallError(e)
            if e.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            EbpfLogError::NotAttached {
                netns: netns.to_owned(),
                path: path.clone(),
            }
        }
        _ => EbpfLogError::Map {
            path: path.clone(),
            source: Box::new(source),
        },
    })?;
    data.info()
        .map(|i| i.id())
        .map_err(|source| EbpfLogError::Map {
            path,
            source: Box::new(source),
        })
}

/// A sandbox in scope: its pin directory, netns label and `peers` map id.
#[derive(Debug, Clone)]
pub(super) struct PinnedSandbox {
    pub(super) dir: PathBuf,
    pub(super) netns: String,
    peers_id: u32,
}

/// The sandboxes in scope.
pub(super) fn sandboxes(scope: &Scope) -> Result<Vec<PinnedSandbox>, EbpfLogError> {
    let mut out = Vec::new();
    match scope {
        Scope::Sandbox { netns, dir } => out.push(PinnedSandbox {
            dir: dir.clone(),
            netns: netns.clone(),
            peers_id: peers_map_id(dir, netns)?,
        }),
        Scope::All => {
            for cookie in pins::sandbox_cookies()? {
                let dir = pins::sandbox_dir(cookie);
                let label = match ebpf::recorded_sandbox(&dir) {
                    Ok(r) if r.netns_cookie != 0 => {
                        String::from_utf8_lossy(from_fixed(&r.netns_path)).into_owned()
                    }
                    _ => format!("netns cookie {cookie}"),
                };
                // A sandbox half made or half taken down has no peers map: nothing to follow.
                if let Ok(peers_id) = peers_map_id(&dir, &label) {
                    out.push(PinnedSandbox {
                        dir,
                        netns: label,
                        peers_id,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The datapath programs in `scope` that are loaded now. A sandbox scope whose netns is not
/// attached with the eBPF backend is [`EbpfLogError::NotAttached`].
pub fn datapath_programs(scope: &Scope) -> Result<Vec<DatapathProgram>, EbpfLogError> {
    programs_of(scope, &sandboxes(scope)?)
}

pub(super) fn programs_of(
    scope: &Scope,
    sandboxes: &[PinnedSandbox],
) -> Result<Vec<DatapathProgram>, EbpfLogError> {
    let sandboxes: BTreeMap<u32, String> = sandboxes
        .iter()
        .map(|s| (s.peers_id, s.netns.clone()))
        .collect();
    let mut out = Vec::new();
    // A program unloaded while we iterate is an Err item: skipped.
    for info in aya::programs::loaded_programs().flatten() {
        if info.name_as_str() != Some(kernel_program_name()) {
            continue;
        }
        let maps = info.map_ids().ok().flatten().unwrap_or_default();
        let netns = maps.iter().find_map(|id| sandboxes.get(id)).cloned();
        match (scope, netns) {
            (_, Some(netns)) => out.push(DatapathProgram {
                prog_id: info.id(),
                netns,
            }),
            (Scope::All, None) => out.push(DatapathProgram {
                prog_id: info.id(),
                netns: "?".into(),
            }),
            (Scope::Sandbox { .. }, None) => {}
        }
    }
    Ok(out)
}
