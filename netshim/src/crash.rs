//! Named crash points, for tests of crash safety (debug builds only).
//!
//! With `NETSHIM_TEST_KILL_AT=<step>` a debug build of netshim kills itself with SIGKILL (no
//! unwinding, no destructors, no undo: what a crash or an OOM kill leaves) when it reaches
//! `<step>`. Release builds ignore the variable. A debug build refuses to start when the
//! variable names no known step ([`check_env`]), so a typo cannot make a test pass without
//! ever crashing. Each step fires the first time it is reached.

use crate::{Error, Result};

/// The environment variable naming the step to die at.
pub const KILL_AT_ENV: &str = "NETSHIM_TEST_KILL_AT";

/// A place in `attach` where the process can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    pub name: &'static str,
    /// The tcfilter backends whose attach passes through this point, by name
    /// (`TcBackend::as_str`): crash points sit below the datapaths and do not know their type.
    pub backends: &'static [&'static str],
}

const BOTH: &[&str] = &["ebpf", "mirred"];
const EBPF: &[&str] = &["ebpf"];
const MIRRED: &[&str] = &["mirred"];

/// Every crash point, in the order attach reaches them.
pub const CRASH_POINTS: &[CrashPoint] = &[
    // The intent file `attaching.json` is written; nothing else changed yet.
    CrashPoint {
        name: "intent-written",
        backends: BOTH,
    },
    // `tap<N>_kata` exists (persistent, not configured).
    CrashPoint {
        name: "tap-created",
        backends: BOTH,
    },
    // The tap has its MTU and txqueuelen and is up.
    CrashPoint {
        name: "tap-configured",
        backends: BOTH,
    },
    // The bpffs directory of the sandbox exists, empty.
    CrashPoint {
        name: "pin-dir-created",
        backends: EBPF,
    },
    // The maps are pinned and the program is loaded (not attached).
    CrashPoint {
        name: "program-loaded",
        backends: EBPF,
    },
    // The `peers` entries of an endpoint are written.
    CrashPoint {
        name: "peers-written",
        backends: EBPF,
    },
    // The classifier is hooked to the pod device's ingress (TCX link pinned).
    CrashPoint {
        name: "pod-link-pinned",
        backends: EBPF,
    },
    // ... and to the tap's.
    CrashPoint {
        name: "tap-link-pinned",
        backends: EBPF,
    },
    // kata's ingress qdisc is on the tap; the pod device has nothing yet.
    CrashPoint {
        name: "mirred-tap-qdisc",
        backends: MIRRED,
    },
    // Ingress qdiscs and u32 + mirred filters on both devices of an endpoint.
    CrashPoint {
        name: "mirred-connected",
        backends: MIRRED,
    },
    // Everything is made; `attached.json` is not written yet.
    CrashPoint {
        name: "before-commit",
        backends: BOTH,
    },
    // `attached.json` is written; the intent file is still there.
    CrashPoint {
        name: "committed",
        backends: BOTH,
    },
];

/// The step named by [`KILL_AT_ENV`], if any; an error when it names no known step.
fn requested() -> Result<Option<&'static str>> {
    let Some(value) = std::env::var_os(KILL_AT_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy();
    match CRASH_POINTS.iter().find(|p| p.name == value) {
        Some(p) => Ok(Some(p.name)),
        None => {
            let known: Vec<&str> = CRASH_POINTS.iter().map(|p| p.name).collect();
            Err(Error::InvalidOptions(format!(
                "{KILL_AT_ENV}={value}: no such crash point (known: {})",
                known.join(", ")
            )))
        }
    }
}

/// Refuses a [`KILL_AT_ENV`] that names no crash point (debug builds; release builds
/// ignore the variable).
pub fn check_env() -> Result<()> {
    if cfg!(debug_assertions) {
        requested()?;
    }
    Ok(())
}

/// Dies by SIGKILL here when [`KILL_AT_ENV`] names `step` (debug builds only).
#[inline]
pub fn crash_point(step: &'static str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static KILL_AT: OnceLock<Option<&'static str>> = OnceLock::new();
        debug_assert!(
            CRASH_POINTS.iter().any(|p| p.name == step),
            "crash point {step} missing from CRASH_POINTS"
        );
        if *KILL_AT.get_or_init(|| requested().ok().flatten()) == Some(step) {
            tracing::warn!("{KILL_AT_ENV}={step}: killing netshim");
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
            // SIGKILL to ourselves is delivered before kill(2) returns; never go on.
            loop {
                std::thread::park();
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = step;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_apply_to_a_backend() {
        for (i, p) in CRASH_POINTS.iter().enumerate() {
            assert!(!p.backends.is_empty(), "{}", p.name);
            assert!(
                CRASH_POINTS[i + 1..].iter().all(|q| q.name != p.name),
                "{} twice",
                p.name
            );
        }
    }
}
