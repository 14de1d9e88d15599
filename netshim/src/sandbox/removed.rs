//! What detach, the teardown and gc report they removed (the two reports hold each other:
//! a detach of a gone netns reports the collection, gc reports each teardown).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What detach removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DetachReport {
    pub netns: String,
    pub removed_taps: Vec<String>,
    pub removed_pin_dir: Option<PathBuf>,
    /// Devices whose mirred ingress qdisc was removed.
    pub removed_mirred: Vec<String>,
    /// Macvtaps of the macvtap model removed (their pod devices restored).
    pub removed_macvtaps: Vec<String>,
    /// Pod devices whose rate limit's shaper (netshim's HTB root qdisc) was removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_shapers: Vec<String>,
    /// netshim's files under /run/netshim that went: the commit file, the intent file of a
    /// run that died, the sandbox's state directory.
    #[serde(default)]
    pub removed_state: Vec<PathBuf>,
    /// The netns no longer exists: nothing to detach (its leftovers are collected, `gc`).
    #[serde(default)]
    pub netns_gone: bool,
    /// With `netns_gone`: the path that names no netns (canonical, as netshim records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    /// With `netns_gone`: the netns cookies of the sandboxes netshim had recorded at that
    /// path (their leftovers are what `gc` removed, if it could).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recorded_sandboxes: Vec<u64>,
    /// netshim's own paths of the sandbox that were of the wrong type (a directory where a
    /// pin should be, ...) or unreadable (the commit file), removed first.
    #[serde(default)]
    pub repaired: Vec<PathBuf>,
    /// With `netns_gone`: what the collection of dead namespaces' leftovers removed.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcReport>,
}

impl DetachReport {
    pub fn removed_anything(&self) -> bool {
        !self.removed_taps.is_empty()
            || self.removed_pin_dir.is_some()
            || !self.removed_mirred.is_empty()
            || !self.removed_macvtaps.is_empty()
            || !self.removed_state.is_empty()
            || !self.repaired.is_empty()
    }
}

/// What `gc` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GcReport {
    /// Sandboxes whose netns is gone: everything of theirs was removed.
    pub removed_dead: Vec<DeadSandbox>,
    /// Live sandboxes a killed run left half-made: taken down as detach does.
    pub cleaned_half_made: Vec<HalfMadeSandbox>,
    /// Sandboxes left alone: their lock is held (an operation is running), or whether their
    /// netns is alive could not be told.
    pub skipped_busy: Vec<SkippedSandbox>,
    /// Sandboxes whose netshim paths were of the wrong type (a directory where a pin should
    /// be, a plain file where the state directory should be, ...): those paths were removed.
    #[serde(default)]
    pub repaired: Vec<RepairedSandbox>,
    /// Sandboxes whose collection failed.
    pub failed: Vec<FailedSandbox>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.removed_dead.is_empty()
            && self.cleaned_half_made.is_empty()
            && self.skipped_busy.is_empty()
            && self.repaired.is_empty()
            && self.failed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeadSandbox {
    pub netns_cookie: u64,
    /// Pin directory, state directory, lock file.
    pub removed: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HalfMadeSandbox {
    pub netns_cookie: u64,
    /// Where the live netns was found.
    pub netns_path: PathBuf,
    pub removed: DetachReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RepairedSandbox {
    pub netns_cookie: u64,
    /// The paths of the wrong type that were removed.
    pub removed: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SkippedSandbox {
    pub netns_cookie: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FailedSandbox {
    pub netns_cookie: u64,
    pub error: String,
}
