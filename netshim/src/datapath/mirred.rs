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

use std::{future::Future, time::Duration};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::{
    packet_route::{
        tc::{
            TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption, TcActionType,
            TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirrorActionType,
            TcOption, TcStats2,
        },
        RouteNetlinkMessage,
    },
    Handle,
};

pub use super::Dev;
use crate::netlink::{self, errno};

/// `ETH_P_ALL`, host order. On the wire (`tcm_info` low half) it is big-endian.
pub const ETH_P_ALL: u16 = 0x0003;
/// The preference (priority) our filter is installed at.
pub const FILTER_PRIO: u16 = 1;
/// Handle of the ingress (and clsact) qdisc, `ffff:`; also the filters' parent.
const INGRESS_HANDLE: u32 = 0xffff_0000;
/// How many times `RTM_NEWQDISC` is tried while the kernel answers `EBUSY`.
pub const QDISC_ADD_TRIES: u32 = 5;
/// The backoff unit between tries: attempt n is followed by a sleep of n × this.
pub const QDISC_BACKOFF_STEP: Duration = Duration::from_millis(10);
/// `TCA_STATS_PKT64`: 64-bit packet count, sent next to `TCA_STATS_BASIC` when the 32-bit
/// count there has wrapped.
const TCA_STATS_PKT64: u16 = 8;

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

/// Whether dev has an ingress qdisc (handle ffff:) — and whether it's a clsact (which shares
/// ffff:) — for status/conflicts. A device that does not exist has [`IngressQdisc::None`].
pub async fn ingress_qdisc(handle: &Handle, dev: &Dev) -> Result<IngressQdisc, MirredError> {
    let mut stream = handle.qdisc().get().index(dev.ifindex as i32).execute();
    let mut found = IngressQdisc::None;
    // Read the dump to its end even after a hit, so no reply is left behind.
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|source| MirredError::GetQdisc {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            source,
        })?
    {
        if let Some(kind) = ingress_kind_of(&msg, dev.ifindex) {
            found = kind;
        }
    }
    Ok(found)
}

// ---- qdisc ----------------------------------------------------------------------------------

/// Adds the ingress qdisc of `dev` unless one is there. `Ok(true)` if this call created it.
async fn ensure_ingress(handle: &Handle, dev: &Dev) -> Result<bool, MirredError> {
    let added = add_with_busy_retry(
        || handle.qdisc().add(dev.ifindex as i32).ingress().execute(),
        tokio::time::sleep,
    )
    .await;
    match added {
        Ok(()) => Ok(true),
        Err(AddFailure::Busy { tries }) => Err(MirredError::QdiscBusy {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            tries,
        }),
        Err(AddFailure::Other(source)) => {
            if errno(&source) == Some(Errno::EEXIST) {
                match ingress_qdisc(handle, dev).await? {
                    IngressQdisc::Ingress => return Ok(false),
                    IngressQdisc::Clsact => {
                        return Err(MirredError::ClsactPresent {
                            dev: dev.name.clone(),
                            ifindex: dev.ifindex,
                        })
                    }
                    IngressQdisc::None => {}
                }
            }
            Err(MirredError::AddQdisc {
                dev: dev.name.clone(),
                ifindex: dev.ifindex,
                source,
            })
        }
    }
}

/// Removes `dev`'s ingress qdisc if it has one (not a clsact).
async fn remove_ingress(handle: &Handle, dev: &Dev) -> Result<(), MirredError> {
    if ingress_qdisc(handle, dev).await? != IngressQdisc::Ingress {
        return Ok(());
    }
    match del_ingress(handle, dev).await {
        Ok(()) => Ok(()),
        // Gone in between (device deleted, or another teardown won the race).
        Err(e)
            if netlink::is_hook_gone(&e)
                && ingress_qdisc(handle, dev).await? != IngressQdisc::Ingress =>
        {
            Ok(())
        }
        Err(source) => Err(MirredError::DelQdisc {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            source,
        }),
    }
}

async fn del_ingress(handle: &Handle, dev: &Dev) -> Result<(), rtnetlink::Error> {
    let mut req = handle.qdisc().del(dev.ifindex as i32);
    let msg = req.message_mut();
    msg.header.parent = TcHandle::INGRESS;
    msg.header.handle = INGRESS_HANDLE.into();
    // With the kind, the kernel refuses (EINVAL) rather than deletes a clsact that replaced our
    // ingress qdisc since we looked.
    msg.attributes
        .push(TcAttribute::Kind("ingress".to_string()));
    req.execute().await
}

/// The kind of the qdisc at `ffff:` that `msg` (from an RTM_GETQDISC dump) describes, if it is
/// `ifindex`'s ingress or clsact qdisc.
fn ingress_kind_of(msg: &TcMessage, ifindex: u32) -> Option<IngressQdisc> {
    if msg.header.index != ifindex as i32 {
        return None;
    }
    msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) if k == "ingress" => Some(IngressQdisc::Ingress),
        TcAttribute::Kind(k) if k == "clsact" => Some(IngressQdisc::Clsact),
        _ => None,
    })
}

enum AddFailure {
    Busy { tries: u32 },
    Other(rtnetlink::Error),
}

/// The sleep after failed attempt `attempt` (1-based) before the next one: 10 ms × attempt,
/// `None` after the last attempt.
fn busy_backoff(attempt: u32) -> Option<Duration> {
    (attempt < QDISC_ADD_TRIES).then(|| QDISC_BACKOFF_STEP * attempt)
}

/// Runs `op` until it does not fail with `EBUSY`, at most [`QDISC_ADD_TRIES`] times, sleeping
/// [`busy_backoff`] in between.
async fn add_with_busy_retry<Op, OpFut, Sleep, SleepFut>(
    mut op: Op,
    mut sleep: Sleep,
) -> Result<(), AddFailure>
where
    Op: FnMut() -> OpFut,
    OpFut: Future<Output = Result<(), rtnetlink::Error>>,
    Sleep: FnMut(Duration) -> SleepFut,
    SleepFut: Future<Output = ()>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) if errno(&e) == Some(Errno::EBUSY) => match busy_backoff(attempt) {
                Some(delay) => {
                    sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(AddFailure::Busy { tries: attempt }),
            },
            Err(e) => return Err(AddFailure::Other(e)),
        }
    }
}

// ---- filter ---------------------------------------------------------------------------------

/// Makes `dev`'s ingress redirect everything to `to`, kata's way, without duplicates.
async fn ensure_filter(handle: &Handle, dev: &Dev, to: &Dev) -> Result<(), MirredError> {
    let filters = parse_filters(&dump_filters(handle, dev).await?);
    if filters.iter().any(|f| f.is_kata_redirect_to(to.ifindex)) {
        return Ok(());
    }
    let ours: Vec<&FilterEntry> = filters.iter().filter(|f| f.prio == FILTER_PRIO).collect();
    if let Some(other) = ours.iter().find(|f| f.kind != TcFilterU32::KIND) {
        return Err(MirredError::PrioTaken {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            prio: FILTER_PRIO,
            kind: other.kind.clone(),
        });
    }
    if let Some(stale) = ours.first() {
        del_filter_prio(handle, dev.ifindex, FILTER_PRIO, stale.protocol)
            .await
            .map_err(|source| MirredError::DelFilter {
                dev: dev.name.clone(),
                ifindex: dev.ifindex,
                prio: FILTER_PRIO,
                source,
            })?;
    }
    let add_err = |source| MirredError::AddFilter {
        dev: dev.name.clone(),
        ifindex: dev.ifindex,
        target: to.name.clone(),
        target_ifindex: to.ifindex,
        source,
    };
    handle
        .traffic_filter(dev.ifindex as i32)
        .add()
        .parent(INGRESS_HANDLE)
        // priority() overwrites all of tcm_info, so it goes before protocol(), which takes the
        // wire (big-endian) value.
        .priority(FILTER_PRIO)
        .protocol(ETH_P_ALL.to_be())
        .redirect(to.ifindex)
        .map_err(add_err)?
        .execute()
        .await
        .map_err(add_err)
}

/// RTM_GETTFILTER dump of `dev`'s filters on parent `ffff:`. Empty when the device or its
/// ingress qdisc does not exist.
///
/// Raw: rtnetlink's `traffic_filter(i).get().ingress()` asks for parent `ffff:fff2`, the
/// clsact ingress hook, which a clsact answers with its filters; kata's filters hang off the
/// ingress qdisc's `ffff:0` (a clsact answers that with nothing), and rtnetlink 0.24 has no
/// `parent()` on that request.
async fn dump_filters(handle: &Handle, dev: &Dev) -> Result<Vec<TcMessage>, MirredError> {
    let mut msg = TcMessage::with_index(dev.ifindex as i32);
    msg.header.parent = INGRESS_HANDLE.into();
    let replies = netlink::dump(handle, RouteNetlinkMessage::GetTrafficFilter(msg))
        .await
        .map_err(|e| MirredError::GetFilter {
            dev: dev.name.clone(),
            ifindex: dev.ifindex,
            source: e.into_source(),
        })?;
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(m) => Some(m),
            _ => None,
        })
        .collect())
}

/// RTM_DELTFILTER of the whole filter at `prio` on parent `ffff:` (all its u32 key nodes).
///
/// Raw: rtnetlink 0.24's `traffic_filter(i).del()` cannot set `tcm_info` (preference and
/// protocol), so it would delete every filter on the parent.
async fn del_filter_prio(
    handle: &Handle,
    ifindex: u32,
    prio: u16,
    protocol: u16,
) -> Result<(), rtnetlink::Error> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = INGRESS_HANDLE.into();
    msg.header.info = tcm_info(prio, protocol);
    netlink::request_ack(handle, RouteNetlinkMessage::DelTrafficFilter(msg), 0)
        .await
        .map_err(netlink::NetlinkError::into_source)
}

/// A filter's `tcm_info`: preference in the high half, protocol (big-endian) in the low half.
fn tcm_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

/// One entry of a filter dump, reduced to what tells kata's filter apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilterEntry {
    prio: u16,
    /// Host order (`ETH_P_ALL` = 3).
    protocol: u16,
    kind: String,
    /// A u32 key node whose keys all have mask 0 (matches every packet). False for the u32
    /// hash-table entries the kernel dumps next to the key nodes.
    match_all: bool,
    /// Number of actions on the entry.
    actions: usize,
    /// The first action, if it is a mirred.
    mirred: Option<Mirred>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mirred {
    eaction: TcMirrorActionType,
    verdict: TcActionType,
    target: u32,
    counters: MirredCounters,
}

impl FilterEntry {
    fn is_match_all_redirect(&self) -> bool {
        self.kind == TcFilterU32::KIND
            && self.match_all
            && self
                .mirred
                .is_some_and(|m| m.eaction == TcMirrorActionType::EgressRedir)
    }

    /// Exactly what kata installs: u32 match-all, protocol all, one action, mirred egress
    /// redirect to `target`, verdict stolen.
    fn is_kata_redirect_to(&self, target: u32) -> bool {
        self.is_match_all_redirect()
            && self.protocol == ETH_P_ALL
            && self.actions == 1
            && self
                .mirred
                .is_some_and(|m| m.target == target && m.verdict == TcActionType::Stolen)
    }
}

fn parse_filters(msgs: &[TcMessage]) -> Vec<FilterEntry> {
    msgs.iter().filter_map(parse_filter).collect()
}

fn parse_filter(msg: &TcMessage) -> Option<FilterEntry> {
    let kind = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    })?;
    let mut entry = FilterEntry {
        prio: (msg.header.info >> 16) as u16,
        protocol: u16::from_be(msg.header.info as u16),
        kind,
        match_all: false,
        actions: 0,
        mirred: None,
    };
    let u32_opts = msg
        .attributes
        .iter()
        .filter_map(|a| match a {
            TcAttribute::Options(opts) => Some(opts),
            _ => None,
        })
        .flatten()
        .filter_map(|o| match o {
            TcOption::U32(u) => Some(u),
            _ => None,
        });
    let mut linked = false;
    for opt in u32_opts {
        match opt {
            TcFilterU32Option::Selector(sel) => {
                entry.match_all = usize::from(sel.nkeys) == sel.keys.len()
                    && sel.keys.iter().all(|k| k.mask == 0);
            }
            TcFilterU32Option::Link(_) => linked = true,
            TcFilterU32Option::Action(actions) => {
                entry.actions = actions.len();
                entry.mirred = actions.iter().min_by_key(|a| a.tab).and_then(|a| {
                    let is_mirred = a.attributes.iter().any(
                        |x| matches!(x, TcActionAttribute::Kind(k) if k == TcActionMirror::KIND),
                    );
                    if !is_mirred {
                        return None;
                    }
                    let parms = a.attributes.iter().find_map(|x| match x {
                        TcActionAttribute::Options(opts) => opts.iter().find_map(|o| match o {
                            TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) => Some(p),
                            _ => None,
                        }),
                        _ => None,
                    })?;
                    let stats = a.attributes.iter().find_map(|x| match x {
                        TcActionAttribute::Stats(s) => Some(s.as_slice()),
                        _ => None,
                    });
                    Some(Mirred {
                        eaction: parms.eaction,
                        verdict: parms.generic.action,
                        target: parms.ifindex,
                        counters: stats.map(parse_action_stats).unwrap_or_default(),
                    })
                });
            }
            _ => {}
        }
    }
    if linked {
        entry.match_all = false;
    }
    Some(entry)
}

/// Counters out of an action's `TCA_ACT_STATS` (gnet stats: basic, queue, pkt64).
fn parse_action_stats(stats: &[TcStats2]) -> MirredCounters {
    let mut c = MirredCounters::default();
    let mut pkt64 = None;
    for s in stats {
        match s {
            TcStats2::Basic(b) => {
                c.bytes = b.bytes;
                c.packets = u64::from(b.packets);
            }
            TcStats2::Queue(q) => {
                c.drops = u64::from(q.drops) + u64::from(q.overlimits);
            }
            TcStats2::Other(nla) if nla_kind(nla) == TCA_STATS_PKT64 => {
                let mut raw = [0u8; 8];
                if nla_value(nla, &mut raw) == 8 {
                    pkt64 = Some(u64::from_ne_bytes(raw));
                }
            }
            _ => {}
        }
    }
    if let Some(p) = pkt64 {
        c.packets = p;
    }
    c
}

fn nla_kind(nla: &rtnetlink::packet_core::DefaultNla) -> u16 {
    use rtnetlink::packet_core::Nla;
    nla.kind()
        & !(rtnetlink::packet_core::NLA_F_NESTED | rtnetlink::packet_core::NLA_F_NET_BYTEORDER)
}

/// Copies the value of `nla` into `buf` if it has exactly that length; returns the length.
fn nla_value(nla: &rtnetlink::packet_core::DefaultNla, buf: &mut [u8]) -> usize {
    use rtnetlink::packet_core::Nla;
    let len = nla.value_len();
    if len == buf.len() {
        nla.emit_value(buf);
    }
    len
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, num::NonZeroI32};

    use rtnetlink::packet_core::{DefaultNla, ErrorMessage};
    use rtnetlink::packet_route::tc::{
        TcAction, TcMirror, TcStatsBasic, TcStatsQueue, TcU32Key, TcU32Selector, TcU32SelectorFlags,
    };

    use super::*;

    fn nl_err(errno: Errno) -> rtnetlink::Error {
        let mut m = ErrorMessage::default();
        m.code = NonZeroI32::new(-(errno as i32));
        rtnetlink::Error::NetlinkError(m)
    }

    /// Runs the retry loop against a scripted sequence of results; returns (outcome, calls,
    /// sleeps).
    fn run_retry(
        script: Vec<Result<(), Errno>>,
    ) -> (Result<(), Option<u32>>, usize, Vec<Duration>) {
        let calls = RefCell::new(0usize);
        let sleeps = RefCell::new(Vec::new());
        let outcome = futures::executor::block_on(add_with_busy_retry(
            || {
                let i = *calls.borrow();
                *calls.borrow_mut() += 1;
                let r = script.get(i).copied().unwrap_or(Err(Errno::EBUSY));
                std::future::ready(r.map_err(nl_err))
            },
            |d| {
                sleeps.borrow_mut().push(d);
                std::future::ready(())
            },
        ));
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(AddFailure::Busy { tries }) => Err(Some(tries)),
            Err(AddFailure::Other(_)) => Err(None),
        };
        (outcome, calls.into_inner(), sleeps.into_inner())
    }

    #[test]
    fn backoff_schedule_is_kata_s() {
        let ms = Duration::from_millis;
        assert_eq!(busy_backoff(1), Some(ms(10)));
        assert_eq!(busy_backoff(2), Some(ms(20)));
        assert_eq!(busy_backoff(4), Some(ms(40)));
        assert_eq!(busy_backoff(5), None);
    }

    #[test]
    fn ebusy_is_retried_five_times_then_reported() {
        let (outcome, calls, sleeps) = run_retry(vec![]);
        assert_eq!(outcome, Err(Some(5)));
        assert_eq!(calls, 5);
        let ms = Duration::from_millis;
        assert_eq!(sleeps, vec![ms(10), ms(20), ms(30), ms(40)]);
    }

    #[test]
    fn ebusy_then_success_stops_retrying() {
        let (outcome, calls, sleeps) =
            run_retry(vec![Err(Errno::EBUSY), Err(Errno::EBUSY), Ok(())]);
        assert_eq!(outcome, Ok(()));
        assert_eq!(calls, 3);
        assert_eq!(sleeps.len(), 2);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let (outcome, calls, sleeps) = run_retry(vec![Err(Errno::EEXIST)]);
        assert_eq!(outcome, Err(None));
        assert_eq!(calls, 1);
        assert!(sleeps.is_empty());
    }

    #[test]
    fn errno_of_netlink_error() {
        assert_eq!(errno(&nl_err(Errno::EBUSY)), Some(Errno::EBUSY));
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
    }

    #[test]
    fn tcm_info_puts_protocol_big_endian() {
        // `tc filter add ... pref 1 protocol all`: 0x0001_0300 on little-endian hosts.
        let info = tcm_info(1, ETH_P_ALL);
        assert_eq!(info >> 16, 1);
        assert_eq!(u16::from_be(info as u16), ETH_P_ALL);
    }

    /// A u32 key node the way the kernel dumps kata's filter.
    fn dumped_filter(
        prio: u16,
        target: u32,
        verdict: TcActionType,
        stats: Vec<TcStats2>,
    ) -> TcMessage {
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = 1;
        sel.keys = vec![TcU32Key::default()];
        let mut parms = TcMirror::default();
        parms.generic.action = verdict;
        parms.eaction = TcMirrorActionType::EgressRedir;
        parms.ifindex = target;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind("mirred".into()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                parms,
            ))]),
            TcActionAttribute::Stats(stats),
        ];
        let mut msg = TcMessage::with_index(7);
        msg.header.parent = INGRESS_HANDLE.into();
        msg.header.handle = 0x8000_0800.into();
        msg.header.info = tcm_info(prio, ETH_P_ALL);
        msg.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Chain(0),
            TcAttribute::Options(vec![
                TcOption::U32(TcFilterU32Option::Selector(sel)),
                TcOption::U32(TcFilterU32Option::Action(vec![action])),
            ]),
        ];
        msg
    }

    /// The hash-table entry the kernel dumps before the key nodes.
    fn dumped_hash_table(prio: u16) -> TcMessage {
        let mut msg = TcMessage::with_index(7);
        msg.header.parent = INGRESS_HANDLE.into();
        msg.header.handle = 0x8000_0000.into();
        msg.header.info = tcm_info(prio, ETH_P_ALL);
        msg.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Chain(0),
            TcAttribute::Options(vec![TcOption::U32(TcFilterU32Option::Divisor(1))]),
        ];
        msg
    }

    fn basic(bytes: u64, packets: u32) -> TcStats2 {
        let mut b = TcStatsBasic::default();
        b.bytes = bytes;
        b.packets = packets;
        TcStats2::Basic(b)
    }

    fn queue(drops: u32, overlimits: u32) -> TcStats2 {
        let mut q = TcStatsQueue::default();
        q.drops = drops;
        q.overlimits = overlimits;
        TcStats2::Queue(q)
    }

    #[test]
    fn counters_come_from_the_mirred_action_stats() {
        let msgs = vec![
            dumped_hash_table(1),
            dumped_filter(
                1,
                9,
                TcActionType::Stolen,
                vec![basic(4200, 42), queue(1, 2)],
            ),
        ];
        let filters = parse_filters(&msgs);
        assert_eq!(filters.len(), 2);
        assert!(!filters[0].match_all && filters[0].mirred.is_none());
        let f = &filters[1];
        assert_eq!((f.prio, f.protocol, f.kind.as_str()), (1, ETH_P_ALL, "u32"));
        assert!(f.is_kata_redirect_to(9));
        assert!(!f.is_kata_redirect_to(8));
        assert_eq!(
            f.mirred.unwrap().counters,
            MirredCounters {
                packets: 42,
                bytes: 4200,
                drops: 3
            }
        );
    }

    #[test]
    fn pkt64_overrides_the_wrapped_32_bit_count() {
        let big: u64 = (1 << 32) + 5;
        let stats = vec![
            basic(1 << 40, 5),
            TcStats2::Other(DefaultNla::new(TCA_STATS_PKT64, big.to_ne_bytes().to_vec())),
        ];
        assert_eq!(parse_action_stats(&stats).packets, big);
    }

    #[test]
    fn not_kata_when_verdict_or_match_differs() {
        let pipe = parse_filter(&dumped_filter(1, 9, TcActionType::Pipe, vec![])).unwrap();
        assert!(pipe.is_match_all_redirect());
        assert!(!pipe.is_kata_redirect_to(9));

        let mut keyed = dumped_filter(1, 9, TcActionType::Stolen, vec![]);
        if let TcAttribute::Options(opts) = &mut keyed.attributes[2] {
            if let TcOption::U32(TcFilterU32Option::Selector(sel)) = &mut opts[0] {
                sel.keys[0].mask = 0xffff_ffff;
                sel.keys[0].val = 0x0a00_0001;
            }
        }
        let keyed = parse_filter(&keyed).unwrap();
        assert!(!keyed.match_all);
        assert!(!keyed.is_match_all_redirect());
    }

    #[test]
    fn dump_bytes_round_trip_through_the_parser() {
        // Emit and re-parse, as the kernel's reply would arrive.
        use rtnetlink::packet_core::{Emitable, Parseable};
        let msg = dumped_filter(1, 9, TcActionType::Stolen, vec![basic(100, 1), queue(0, 0)]);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let parsed = TcMessage::parse(&buf[..]).unwrap();
        let f = parse_filter(&parsed).unwrap();
        assert!(f.is_kata_redirect_to(9));
        assert_eq!(f.mirred.unwrap().counters.packets, 1);
    }

    #[test]
    fn qdisc_kind_of_dump_entry() {
        let mut m = TcMessage::with_index(3);
        m.header.parent = TcHandle::INGRESS;
        m.header.handle = INGRESS_HANDLE.into();
        m.attributes = vec![TcAttribute::Kind("clsact".into())];
        assert_eq!(ingress_kind_of(&m, 3), Some(IngressQdisc::Clsact));
        assert_eq!(ingress_kind_of(&m, 4), None);
        m.attributes = vec![TcAttribute::Kind("ingress".into())];
        assert_eq!(ingress_kind_of(&m, 3), Some(IngressQdisc::Ingress));
        m.attributes = vec![TcAttribute::Kind("fq_codel".into())];
        assert_eq!(ingress_kind_of(&m, 3), None);
    }

    #[test]
    fn error_texts_name_the_request_and_device() {
        let e = MirredError::AddQdisc {
            dev: "eth0".into(),
            ifindex: 2,
            source: nl_err(Errno::ENODEV),
        };
        assert!(e
            .to_string()
            .starts_with("RTM_NEWQDISC ingress on eth0 (ifindex 2): "));
        let e = MirredError::ClsactPresent {
            dev: "eth0".into(),
            ifindex: 2,
        };
        assert_eq!(
            e.to_string(),
            "clsact qdisc present on eth0 (ifindex 2): kata's ingress qdisc shares handle ffff:"
        );
    }

    // The root-only tests on real network namespaces (traffic through the datapath, counters,
    // re-attach, conflicts) live in tests/tests/mirred_backend.rs.
}
