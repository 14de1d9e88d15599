//! A DaemonSet rollout upgrades every node's datapath: on start the agent checks that this
//! kernel loads its datapath program, then moves the sandboxes whose pinned program is
//! another one (an older build's) to it as `upgrade --all` does (live, keeping the maps and
//! counters, see [`crate::sandbox::upgrade_all`]). Sandboxes already on it are not touched,
//! so a restart of the same agent changes nothing.

use aya::programs::SchedClassifier;

use crate::{datapath::ebpf, pins, sandbox};

/// The kernel's tag of the built-in program (its instructions; map references do not
/// count), after a check that it loads.
pub fn loadable_tag() -> Result<u64, String> {
    ebpf::check_loadable(None)
        .map(|(_, tag)| tag)
        .map_err(|e| format!("this kernel does not load netshim's datapath: {e}"))
}

/// Sandboxes whose pinned program is not `tag` (or that have none: releases before the
/// program pin).
fn behind(tag: u64) -> Vec<u64> {
    let Ok(cookies) = pins::sandbox_cookies() else {
        return Vec::new();
    };
    cookies
        .into_iter()
        .filter(|&cookie| {
            let pin = pins::program_pin(&pins::sandbox_dir(cookie));
            SchedClassifier::from_pin(&pin)
                .ok()
                .and_then(|p| p.info().ok())
                .map(|i| i.tag())
                != Some(tag)
        })
        .collect()
}

/// Upgrades when a sandbox runs another program; how many were upgraded and failed.
pub fn upgrade_behind(tag: u64) -> (usize, usize) {
    let behind = behind(tag);
    if behind.is_empty() {
        tracing::info!("agent: every sandbox runs this build's datapath");
        return (0, 0);
    }
    tracing::info!(
        "agent: {} sandbox(es) run another datapath program: upgrade --all",
        behind.len()
    );
    match sandbox::upgrade_where(&sandbox::UpgradeOptions::default(), |c| behind.contains(&c)) {
        Ok(report) => {
            let mut upgraded = 0;
            for s in &report.sandboxes {
                match s.outcome {
                    sandbox::UpgradeOutcome::Upgraded => {
                        upgraded += 1;
                        tracing::info!("agent: upgraded the datapath of {}", s.netns);
                    }
                    sandbox::UpgradeOutcome::Skipped => tracing::debug!(
                        "agent: upgrade of {} skipped: {}",
                        s.netns,
                        s.reason.as_deref().unwrap_or("")
                    ),
                    sandbox::UpgradeOutcome::Failed => tracing::warn!(
                        "agent: upgrading {}: {}",
                        s.netns,
                        s.reason.as_deref().unwrap_or("failed")
                    ),
                }
            }
            (upgraded, report.failed())
        }
        Err(e) => {
            tracing::warn!("agent: upgrade --all: {e}");
            (0, behind.len())
        }
    }
}
