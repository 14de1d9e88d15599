//! kata's u32 match-all mirred filter: adding it without duplicates, deleting a stale one,
//! and reading filter dumps (what tells kata's filter apart, the mirred action's counters).

use rtnetlink::{
    packet_route::{
        tc::{
            TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption, TcActionType,
            TcAttribute, TcFilterU32, TcFilterU32Option, TcMessage, TcMirrorActionType, TcOption,
            TcStats2,
        },
        RouteNetlinkMessage,
    },
    Handle,
};

use super::{
    Dev, MirredCounters, MirredError, ETH_P_ALL, FILTER_PRIO, INGRESS_HANDLE, TCA_STATS_PKT64,
};
use crate::netlink;

/// Makes `dev`'s ingress redirect everything to `to`, kata's way, without duplicates.
pub(super) async fn ensure_filter(handle: &Handle, dev: &Dev, to: &Dev) -> Result<(), MirredError> {
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
pub(super) async fn dump_filters(
    handle: &Handle,
    dev: &Dev,
) -> Result<Vec<TcMessage>, MirredError> {
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
pub(super) async fn del_filter_prio(
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
pub(super) fn tcm_info(prio: u16, protocol: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

/// One entry of a filter dump, reduced to what tells kata's filter apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FilterEntry {
    pub(super) prio: u16,
    /// Host order (`ETH_P_ALL` = 3).
    pub(super) protocol: u16,
    pub(super) kind: String,
    /// A u32 key node whose keys all have mask 0 (matches every packet). False for the u32
    /// hash-table entries the kernel dumps next to the key nodes.
    pub(super) match_all: bool,
    /// Number of actions on the entry.
    pub(super) actions: usize,
    /// The first action, if it is a mirred.
    pub(super) mirred: Option<Mirred>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mirred {
    pub(super) eaction: TcMirrorActionType,
    pub(super) verdict: TcActionType,
    pub(super) target: u32,
    pub(super) counters: MirredCounters,
}

impl FilterEntry {
    pub(super) fn is_match_all_redirect(&self) -> bool {
        self.kind == TcFilterU32::KIND
            && self.match_all
            && self
                .mirred
                .is_some_and(|m| m.eaction == TcMirrorActionType::EgressRedir)
    }

    /// Exactly what kata installs: u32 match-all, protocol all, one action, mirred egress
    /// redirect to `target`, verdict stolen.
    pub(super) fn is_kata_redirect_to(&self, target: u32) -> bool {
        self.is_match_all_redirect()
            && self.protocol == ETH_P_ALL
            && self.actions == 1
            && self
                .mirred
                .is_some_and(|m| m.target == target && m.verdict == TcActionType::Stolen)
    }
}

pub(super) fn parse_filters(msgs: &[TcMessage]) -> Vec<FilterEntry> {
    msgs.iter().filter_map(parse_filter).collect()
}

pub(super) fn parse_filter(msg: &TcMessage) -> Option<FilterEntry> {
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
pub(super) fn parse_action_stats(stats: &[TcStats2]) -> MirredCounters {
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

pub(super) fn nla_kind(nla: &rtnetlink::packet_core::DefaultNla) -> u16 {
    use rtnetlink::packet_core::Nla;
    nla.kind()
        & !(rtnetlink::packet_core::NLA_F_NESTED | rtnetlink::packet_core::NLA_F_NET_BYTEORDER)
}

/// Copies the value of `nla` into `buf` if it has exactly that length; returns the length.
pub(super) fn nla_value(nla: &rtnetlink::packet_core::DefaultNla, buf: &mut [u8]) -> usize {
    use rtnetlink::packet_core::Nla;
    let len = nla.value_len();
    if len == buf.len() {
        nla.emit_value(buf);
    }
    len
}
