//! `netshim detach`: remove everything attach made, and nothing else.
//!
//! What is netshim's: the `tap<N>_kata` tun devices in tap mode (a bridge, veth or tun-mode
//! tun of that name is someone else's and stays), the tun devices with the custom
//! names the sandbox's commit or intent file records), the sandbox's bpffs directory (and with
//! it the TCX links), the ingress qdiscs of kata's mirred datapath on the taps and on the pod
//! devices they pair with, the macvtap model's macvtaps (their state files say which), and
//! the sandbox's files under /run/netshim. Detaching a netns that has none of these succeeds
//! and says so, and so does detaching a netns that no longer exists (CNI DEL semantics).
//!
//! What is taken away, and how, is [`super::teardown`]'s; the same teardown cleans up after
//! a run that died half-way (attach over leftovers, `netshim gc`).

use super::{integrity, steps::Steps, teardown::teardown, DetachReport, Sandbox};
use crate::{netns::Netns, Result};

/// Detaches `netns`.
#[tracing::instrument(level = "debug", skip_all, fields(netns = %netns))]
pub fn detach(netns: &Netns) -> Result<DetachReport> {
    // A lock "file" of the wrong type cannot be locked (nor held by anyone): removed first.
    let lock_file: Vec<_> = integrity::bad_lock_file(netns.cookie).into_iter().collect();
    let mut repaired = integrity::repair(&lock_file)?;
    // One operation per sandbox at a time (see crate::state::lock).
    let mut steps = Steps::start();
    let sandbox = Sandbox::of(netns);
    let lock = sandbox.lock()?;
    steps.done("sandbox lock taken");
    let result = integrity::repair(&integrity::check(netns.cookie)).and_then(|more| {
        repaired.extend(more);
        steps.done("integrity checked");
        netns.run(move |handle| async move {
            let report = teardown(&handle, &sandbox).await;
            steps.done("torn down");
            report
        })
    });
    lock.release();
    result.map(|report| DetachReport { repaired, ..report })
}

/// Detaches the netns `arg` names (as `--netns` takes it). A netns that no longer exists
/// (the name or path is gone) has nothing to detach: that succeeds, and the leftovers of
/// dead namespaces are collected so that nothing of it stays. A path that exists but is not
/// a network namespace is an error.
pub fn detach_arg(arg: &str) -> Result<DetachReport> {
    match Netns::resolve(arg) {
        Ok(netns) => detach(&netns),
        Err(e) if e.is_gone() => {
            let path = crate::netns::canonical_path(&crate::netns::netns_path(arg)?);
            // Looked up before the collection removes the records.
            let recorded_sandboxes = super::gc::recorded_at(&path);
            Ok(DetachReport {
                netns: arg.to_owned(),
                netns_gone: true,
                netns_path: Some(path),
                recorded_sandboxes,
                gc: Some(super::gc::collect_dead()?),
                ..DetachReport::default()
            })
        }
        Err(e) => Err(e.into()),
    }
}
