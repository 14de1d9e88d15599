//! kata's `tcfilter` datapath, through netlink only (no `tc` binary).
//!
//! For each of the two devices: an `ingress` qdisc (handle `ffff:`, parent `ingress`), then a
//! u32 filter on parent `ffff:` with protocol `ETH_P_ALL` and one all-zero key (match-all),
//! whose single action is `mirred egress redirect` to the other device with verdict
//! `TC_ACT_STOLEN`. This is exactly what kata's Go and Rust runtimes and the tc-redirect-tap
//! CNI plugin install; rtnetlink's [`TrafficFilterNewRequest::redirect`] builds that same
//! filter (selector flags `TERMINAL`, `nkeys` 1, key val 0 mask 0 off 0, mirred
//! `TCA_EGRESS_REDIR`, `TC_ACT_STOLEN`), so it is used for the add. Two traps in that
//! builder: `priority()` overwrites all of `tcm_info`, so it must come before `protocol()`; and
//! `protocol()` takes the wire value, `htons(ETH_P_ALL)`: `protocol(0x0003)` (as in rtnetlink's
//! own test) installs a filter for protocol 0x0300 that matches nothing (`tc` shows
//! `protocol [768]`).
//!
//! Differences from kata, all in the direction of idempotency:
//! - Our filter goes at a fixed preference ([`FILTER_PRIO`], 1) instead of the kernel's
//!   auto-allocated 49152, so a second [`connect`] can find it. A filter that already does
//!   kata's job (kata's own, at any preference, from an earlier attach) counts as connected:
//!   no duplicate is added. A stale u32 filter at our preference (say, redirecting to a tap
//!   that was recreated with another ifindex) is deleted and re-added. rtnetlink's
//!   `replace()` is not enough for this: it sends `NLM_F_CREATE` with `tcm_handle` 0, which
//!   for u32 adds one more key node to the existing filter instead of replacing it.
//! - An `ingress` qdisc that already exists (`EEXIST`) is reused; a `clsact` (which owns the
//!   same handle `ffff:`) is reported as a conflict instead of being torn down.
//! - The `EBUSY` retry is kata's (#12959): 5 tries, 10 ms × attempt between them (no sleep
//!   after the last try).
//! - [`connect`] removes the ingress qdiscs it created itself when a later step fails.
//!
//! [`TrafficFilterNewRequest::redirect`]: rtnetlink::TrafficFilterNewRequest::redirect
//!
//! Layout: this file has the operations and their types; `qdisc.rs` the ingress qdisc (and
//! kata's EBUSY retry), `filter.rs` the u32 mirred filter and the parsing of filter dumps.

mod filter;
mod qdisc;
#[cfg(test)]
mod tests;

use std::time::Duration;

use rtnetlink::Handle;

pub use super::Dev;
use filter::{dump_filters, ensure_filter, parse_filters};
pub use qdisc::ingress_qdisc;
use qdisc::{del_ingress, ensure_ingress, remove_ingress};

/// `ETH_P_ALL`, host order. On the wire (`tcm_info` low half) it is big-endian.
pub const ETH_P_ALL: u16 = 0x0003;
/// The preference (priority) our filter is installed at.
pub const FILTER_PRIO: u16 = 1;
/// Handle of the ingress (and clsact) qdisc, `ffff:`; also the filters' parent.
pub(super) const INGRESS_HANDLE: u32 = 0xffff_0000;
/// How many times `RTM_NEWQDISC` is tried while the kernel answers `EBUSY`.
pub const QDISC_ADD_TRIES: u32 = 5;
/// The backoff unit between tries: attempt n is followed by a sleep of n × this.
pub const QDISC_BACKOFF_STEP: Duration = Duration::from_millis(10);
/// `TCA_STATS_PKT64`: 64-bit packet count, sent next to `TCA_STATS_BASIC` when the 32-bit
/// count there has wrapped.
pub(super) const TCA_STATS_PKT64: u16 = 8;

/// The mirred action's counters on one device's ingress filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirredCounters {
    /// Packets the action saw (redirected or not), from `TCA_STATS_BASIC` / `TCA_STATS_PKT64`.
    pub packets: u64,
    /// Bytes the action saw.
    pub bytes: u64,
    /// Packets the action could not deliver: queue stats `drops` + `overlimits` (mirred counts
    /// "target device down" and failed redirects as overlimits and turns them into drops).
    pub drops: u64,
}

/// What sits at a device's ingress hook `ffff:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressQdisc {
    None,
    Ingress,
    Clsact,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirredError {
    #[error("RTM_NEWQDISC ingress on {dev} (ifindex {ifindex}): {source}")]
    AddQdisc {
        dev: String,
        ifindex: u32,
        source: rtnetlink::Error,
    },
    #[error(
        "RTM_NEWQDISC ingress on {dev} (ifindex {ifindex}): ingress qdisc still busy (EBUSY) \
         after {tries} tries"
    )]
    QdiscBusy {
        dev: String,
        ifindex: u32,
        tries: u32,
    },
    #[error(
        "clsact qdisc present on {dev} (ifindex {ifindex}): kata's ingress qdisc shares handle ffff:"
    )]
    ClsactPresent { dev: String, ifindex: u32 },
    #[error("RTM_GETQDISC on {dev} (ifindex {ifindex}): {source}")]
    GetQdisc {
        dev: String,
        ifindex: u32,
        source: rtnetlink::Error,
    },
    #[error("RTM_DELQDISC ingress on {dev} (ifindex {ifindex}): {source}")]
    DelQdisc {
        dev: String,
        ifindex: u32,
        source: rtnetlink::Error,
    },
    #[error(
        "RTM_NEWTFILTER u32 mirred egress redirect on {dev} (ifindex {ifindex}) to {target} \
         (ifindex {target_ifindex}): {source}"
    )]
    AddFilter {
        dev: String,
        ifindex: u32,
        target: String,
        target_ifindex: u32,
        source: rtnetlink::Error,
    },
    #[error("RTM_GETTFILTER parent ffff: on {dev} (ifindex {ifindex}): {source}")]
    GetFilter {
        dev: String,
        ifindex: u32,
        source: rtnetlink::Error,
    },
    #[error("RTM_DELTFILTER parent ffff: pref {prio} on {dev} (ifindex {ifindex}): {source}")]
    DelFilter {
        dev: String,
        ifindex: u32,
        prio: u16,
        source: rtnetlink::Error,
    },
    #[error(
        "filter pref {prio} parent ffff: on {dev} (ifindex {ifindex}) is a {kind} filter, not \
         kata's u32 match-all mirred: netshim will not replace it"
    )]
    PrioTaken {
        dev: String,
        ifindex: u32,
        prio: u16,
        kind: String,
    },
    #[error("cannot redirect {dev} (ifindex {ifindex}) to itself")]
    SameDevice { dev: String, ifindex: u32 },
}

/// kata's tcfilter: for both devices, an `ingress` qdisc (handle ffff:, parent ingress), then
/// a u32 match-all filter (parent ffff:, protocol ETH_P_ALL, one key val 0 mask 0 off 0) with
/// action mirred egress redirect to the other device (verdict TC_ACT_STOLEN), both directions.
/// qdisc add retried on EBUSY: 5 tries, 10 ms * attempt backoff (kata #12959).
///
/// Idempotent: existing ingress qdiscs are reused, a filter that already redirects to the
/// other device is kept, a stale one at [`FILTER_PRIO`] is replaced. On failure, the ingress
/// qdiscs this call created are removed again (best effort).
pub async fn connect(handle: &Handle, a: &Dev, b: &Dev) -> Result<(), MirredError> {
    if a.ifindex == b.ifindex {
        return Err(MirredError::SameDevice {
            dev: a.name.clone(),
            ifindex: a.ifindex,
        });
    }
    // `b` first: attach passes the tap as `b`, and an ingress qdisc on a netshim tap is what
    // detach, gc and the next attach recognise as netshim's mirred datapath. A run killed
    // between the two qdiscs then leaves one they find, never an empty ingress qdisc on the
    // pod device alone (which would look like another tool's).
    let created_b = ensure_ingress(handle, b).await?;
    crate::crash::crash_point("mirred-tap-qdisc");
    let result = async {
        let created_a = ensure_ingress(handle, a).await?;
        let filters = async {
            ensure_filter(handle, a, b).await?;
            ensure_filter(handle, b, a).await
        }
        .await;
        if filters.is_err() && created_a {
            let _ = del_ingress(handle, a).await;
        }
        filters
    }
    .await;
    if result.is_err() && created_b {
        let _ = del_ingress(handle, b).await;
    }
    result
}

/// One direction of [`connect`]: `from`'s ingress redirected to `to`'s egress (an IFB that
/// shapes what arrives on `from`, see [`crate::limit::ifb`]). The ingress qdisc is removed
/// again when it was made here and the filter fails.
pub async fn redirect_ingress(handle: &Handle, from: &Dev, to: &Dev) -> Result<(), MirredError> {
    if from.ifindex == to.ifindex {
        return Err(MirredError::SameDevice {
            dev: from.name.clone(),
            ifindex: from.ifindex,
        });
    }
    let created = ensure_ingress(handle, from).await?;
    let result = ensure_filter(handle, from, to).await;
    if result.is_err() && created {
        let _ = del_ingress(handle, from).await;
    }
    result
}

/// Undoes [`redirect_ingress`]: `from`'s ingress qdisc goes when its filter redirects to
/// `to_ifindex` (or to a device that is gone, ifindex 0); whether it went.
pub async fn unredirect_ingress(
    handle: &Handle,
    from: &Dev,
    to_ifindex: u32,
) -> Result<bool, MirredError> {
    match redirect_target(handle, from).await {
        Ok(Some(t)) if t == to_ifindex || t == 0 => {
            remove_ingress(handle, from).await?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(MirredError::GetFilter { source, .. }) if crate::netlink::is_hook_gone(&source) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Removes the ingress qdisc of both devices (that removes the filters). A device that is gone
/// or has no ingress qdisc is not an error (idempotent teardown). A `clsact` qdisc is not
/// ours and is left alone.
pub async fn disconnect(handle: &Handle, a: &Dev, b: &Dev) -> Result<(), MirredError> {
    let ra = remove_ingress(handle, a).await;
    let rb = remove_ingress(handle, b).await;
    ra.and(rb)
}

/// The mirred action's counters on `dev`'s ingress filter (packets, bytes, drops/overlimits),
/// read from the filter dump (RTM_GETTFILTER on parent ffff:, action stats TCA_ACT_STATS /
/// gnet stats basic + queue) — None if not connected (no ingress qdisc, no u32 match-all mirred
/// egress redirect filter, or the device is gone). With several such filters, the one the
/// kernel runs first (lowest preference) is reported.
pub async fn counters(handle: &Handle, dev: &Dev) -> Result<Option<MirredCounters>, MirredError> {
    let msgs = dump_filters(handle, dev).await?;
    Ok(parse_filters(&msgs)
        .iter()
        .find(|f| f.is_match_all_redirect())
        .and_then(|f| f.mirred.map(|m| m.counters)))
}

/// The ifindex `dev`'s ingress match-all mirred filter redirects to, if it has one (the
/// filter the kernel runs first).
pub async fn redirect_target(handle: &Handle, dev: &Dev) -> Result<Option<u32>, MirredError> {
    let msgs = dump_filters(handle, dev).await?;
    Ok(parse_filters(&msgs)
        .iter()
        .find(|f| f.is_match_all_redirect())
        .and_then(|f| f.mirred.map(|m| m.target)))
}
