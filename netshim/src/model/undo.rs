//! What an operation has changed so far, to take back when a later step fails.

use std::path::PathBuf;

use crate::{
    datapath::{ebpf, mirred, Dev},
    model::macvtap,
    netns::Netns,
    state,
};

#[derive(Default)]
pub(crate) struct Undo {
    pub taps: Vec<Dev>,
    pub mirred: Vec<(Dev, Dev)>,
    /// (macvtap name, pod ifindex)
    pub macvtaps: Vec<(String, u32)>,
    /// A pin directory this operation created: removed whole.
    pub pin_dir: Option<PathBuf>,
    /// Pairs connected in a pin directory that existed before: removed one by one.
    pub ebpf_pairs: Vec<(PathBuf, String, String)>,
}

impl Undo {
    /// Best effort: every step runs even when an earlier one fails; failures are logged.
    pub async fn run(self, handle: &rtnetlink::Handle, netns: &Netns) {
        for (a, b) in &self.mirred {
            if let Err(e) = mirred::disconnect(handle, a, b).await {
                tracing::warn!("undo: {e}");
            }
        }
        for (dir, a, b) in &self.ebpf_pairs {
            if let Err(e) = ebpf::disconnect_pair(handle, dir, a, b).await {
                tracing::warn!("undo: {e}");
            }
        }
        if let Some(dir) = &self.pin_dir {
            if let Err(e) = ebpf::detach_sandbox(handle, dir).await {
                tracing::warn!("undo: {e}");
            }
        }
        let state_dir = state::sandbox_dir(netns.cookie);
        for (name, pod_ifindex) in &self.macvtaps {
            if let Err(e) = macvtap::disconnect(handle, name, *pod_ifindex, &state_dir).await {
                tracing::warn!("undo: {e}");
            }
        }
        state::remove_sandbox_dir_if_empty(&state_dir);
        for tap in &self.taps {
            if let Err(e) = delete_link(handle, tap).await {
                tracing::warn!("undo: {e}");
            }
        }
    }
}

/// Deletes a link; one that is already gone is fine.
pub(crate) async fn delete_link(
    handle: &rtnetlink::Handle,
    dev: &Dev,
) -> std::result::Result<(), rtnetlink::Error> {
    match handle.link().del(dev.ifindex).execute().await {
        Ok(()) => Ok(()),
        Err(e) if crate::netlink::is_gone(&e) => Ok(()),
        Err(e) => Err(e),
    }
}
