//! The HTB tree a rate limit is, built through netlink (rtnetlink 0.24 has no builder for
//! HTB qdiscs or classes, so the messages are made here and sent with
//! [`netlink::request_ack`]).
//!
//! The `kata` profile is kata's `addHTBQdisc` exactly: a root `htb` qdisc whose default class
//! is `:2`, a class `:1` at rate = ceil = the limit, and `:2` under it at the same rate, with
//! the bursts vishvananda/netlink computes and the kernel's default leaf. The `netshim`
//! profile keeps that shape and adds, under `:1`:
//! - a latency class `:10` (prio 0, rate 1% of the limit, ceil the limit) that u32 filters
//!   fill with small packets (IPv4 total length or IPv6 payload below 128 bytes: pings,
//!   pure ACKs, RPC requests), so that they do not wait behind the bulk's standing queue
//!   (there is no fq/fq_codel to isolate flows on every kernel);
//! - the bulk class `:2` at the rest (prio 1, ceil the limit), with a `bfifo` leaf of 20 ms
//!   at the rate (at least 1 MiB, or one second at rates below 8 Mbit/s, and at least two
//!   GSO frames) instead of 1000 packets that may each be a 64 KiB GSO frame;
//! - bursts of 5 ms at the rate, at least two 64 KiB GSO frames (kata's ~1600 bytes is less
//!   than one GSO frame: ~92% of 5 Gbit/s), and a quantum of one GSO frame.
//!
//! The handle is netshim's own major, [`HANDLE_MAJOR`] (`6e73:`), so that teardown and `gc`
//! know the tree from someone else's. docs/rate-limits.md has the measurements.

use rtnetlink::{
    packet_core::{DefaultNla, Nla, NLM_F_CREATE, NLM_F_REPLACE},
    packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage, TcOption, TcStats2},
        RouteNetlinkMessage,
    },
    Handle,
};

use super::{HtbProfile, ShaperCounters};
use crate::netlink::{self, NetlinkError};

/// The major of netshim's HTB handles: `6e73:` ("ns").
pub const HANDLE_MAJOR: u16 = 0x6e73;
/// The class at the top of the tree (`6e73:1`): the limit of everything the device sends.
const TOP_CLASS: u16 = 1;
/// The default class (`6e73:2`), where every frame goes.
const DEFAULT_CLASS: u16 = 2;

// include/uapi/linux/pkt_sched.h
const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const HTB_VERSION: u32 = 3;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// The kernel's scheduler clock: a tick is 64 ns (`PSCHED_SHIFT`).
const PSCHED_SHIFT: u32 = 6;
/// kata's (vishvananda/netlink's) MTU for the default burst, and its `r2q`.
const KATA_MTU: u64 = 1600;
const KATA_R2Q: u32 = 10;

/// What one limit is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtbParams {
    pub rate_bps: u64,
    /// Bytes the top class may send at once above its rate (`buffer`, and `cbuffer`).
    pub burst_bytes: u64,
    pub profile: HtbProfile,
}

/// Two 64 KiB GSO frames and a full-size frame: the least burst that lets HTB send a GSO
/// frame without going into debt for it.
const GSO_BURST: u64 = 2 * 65536 + 1514;
/// One GSO frame: the netshim profile's quantum.
const GSO_QUANTUM: u32 = 65536 + 1514;
/// The latency class and the bulk class of the netshim profile.
const LATENCY_CLASS: u16 = 10;
/// What the latency class takes: IPv4 total length / IPv6 payload length below this.
const SMALL_PACKET: u32 = 128;

impl HtbParams {
    /// The tree of `profile` at `rate_bps`, with `burst` when the operator gave one (see the
    /// module docs for the two profiles).
    pub fn for_profile(profile: HtbProfile, rate_bps: u64, burst: Option<u64>) -> HtbParams {
        let bytes_per_s = rate_bps / 8;
        let burst_bytes = burst.unwrap_or(match profile {
            HtbProfile::Kata => bytes_per_s / psched_hz() + KATA_MTU,
            HtbProfile::Netshim => (bytes_per_s / 200).max(GSO_BURST),
        });
        HtbParams {
            rate_bps,
            burst_bytes,
            profile,
        }
    }

    /// The latency class's guaranteed rate: 1% of the limit, at least 100 kbit/s (and at
    /// most half of it).
    fn latency_rate(&self) -> u64 {
        (self.rate_bps / 100).max(100_000).min(self.rate_bps / 2)
    }

    /// The classes of the tree, top first.
    fn classes(&self) -> Vec<ClassSpec> {
        let top = ClassSpec {
            parent: None,
            minor: TOP_CLASS,
            rate_bps: self.rate_bps,
            ceil_bps: self.rate_bps,
            burst: self.burst_bytes,
            cburst: self.burst_bytes,
            quantum: 0,
            prio: 0,
        };
        match self.profile {
            HtbProfile::Kata => vec![
                top,
                ClassSpec {
                    parent: Some(TOP_CLASS),
                    minor: DEFAULT_CLASS,
                    ..top
                },
            ],
            HtbProfile::Netshim => {
                let latency = self.latency_rate();
                let top = ClassSpec {
                    quantum: GSO_QUANTUM,
                    ..top
                };
                vec![
                    top,
                    ClassSpec {
                        parent: Some(TOP_CLASS),
                        minor: LATENCY_CLASS,
                        rate_bps: latency,
                        burst: GSO_BURST,
                        prio: 0,
                        ..top
                    },
                    ClassSpec {
                        parent: Some(TOP_CLASS),
                        minor: DEFAULT_CLASS,
                        rate_bps: self.rate_bps - latency,
                        prio: 1,
                        ..top
                    },
                ]
            }
        }
    }

    /// The leaf qdiscs (class minor, kind, `struct tc_fifo_qopt` limit) of the netshim
    /// profile; kata's classes keep the kernel's default leaf.
    fn leaves(&self) -> Vec<(u16, &'static str, u32)> {
        match self.profile {
            HtbProfile::Kata => Vec::new(),
            HtbProfile::Netshim => {
                // 20 ms at the rate; at least 1 MiB (a smaller bfifo only added drops and
                // retransmits at 100 Mbit/s), or a second at slow rates, and never less than
                // two GSO frames.
                let bytes_per_s = self.rate_bps / 8;
                let bulk = (bytes_per_s / 50)
                    .max(bytes_per_s.min(1 << 20))
                    .max(GSO_BURST);
                vec![
                    (LATENCY_CLASS, "pfifo", 100),
                    (
                        DEFAULT_CLASS,
                        "bfifo",
                        u32::try_from(bulk).unwrap_or(u32::MAX),
                    ),
                ]
            }
        }
    }
}

/// One HTB class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClassSpec {
    /// The parent class's minor; `None`: the root qdisc.
    parent: Option<u16>,
    minor: u16,
    rate_bps: u64,
    ceil_bps: u64,
    burst: u64,
    cburst: u64,
    /// 0: the kernel's rate / r2q.
    quantum: u32,
    prio: u32,
}

/// HZ as tc and vishvananda/netlink read it: the 4th field of /proc/net/psched.
fn psched_hz() -> u64 {
    std::fs::read_to_string("/proc/net/psched")
        .ok()
        .and_then(|t| {
            let f = t.split_whitespace().nth(3)?;
            u64::from_str_radix(f, 16).ok()
        })
        .filter(|hz| *hz > 0)
        .unwrap_or(1_000_000_000)
}

/// The root qdisc message of the tree on `ifindex`.
fn qdisc_message(ifindex: u32) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = root();
    m.attributes.push(TcAttribute::Kind("htb".into()));
    // struct tc_htb_glob: version, rate2quantum, defcls, debug, direct_pkts.
    let mut glob = Vec::with_capacity(20);
    for v in [HTB_VERSION, KATA_R2Q, DEFAULT_CLASS as u32, 0, 0] {
        glob.extend_from_slice(&v.to_ne_bytes());
    }
    m.attributes.push(TcAttribute::Other(DefaultNla::new(
        TCA_OPTIONS,
        nla(TCA_HTB_INIT, &glob),
    )));
    m
}

/// `struct tc_ratespec` of `bytes_per_s` (32 bits; more goes in TCA_HTB_RATE64/CEIL64).
fn ratespec(bytes_per_s: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(12);
    r.push(0); // cell_log
    r.push(TC_LINKLAYER_ETHERNET); // the kernel needs no rate table then
    r.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    r.extend_from_slice(&(-1i16).to_ne_bytes()); // cell_align
    r.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    r.extend_from_slice(&u32::try_from(bytes_per_s).unwrap_or(u32::MAX).to_ne_bytes());
    r
}

/// The message of class `c` on `ifindex`.
fn class_message(ifindex: u32, c: &ClassSpec) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = match c.parent {
        None => root(),
        Some(minor) => TcHandle {
            major: HANDLE_MAJOR,
            minor,
        },
    };
    m.header.handle = TcHandle {
        major: HANDLE_MAJOR,
        minor: c.minor,
    };
    m.attributes.push(TcAttribute::Kind("htb".into()));
    let rate = (c.rate_bps / 8).max(1);
    let ceil = (c.ceil_bps / 8).max(1);
    // struct tc_htb_opt: rate, ceil, buffer, cbuffer, quantum, level, prio.
    let mut opt = Vec::with_capacity(44);
    opt.extend(ratespec(rate));
    opt.extend(ratespec(ceil));
    for v in [
        ticks(c.burst, rate),
        ticks(c.cburst, ceil),
        c.quantum,
        0,
        c.prio,
    ] {
        opt.extend_from_slice(&v.to_ne_bytes());
    }
    let mut options = nla(TCA_HTB_PARMS, &opt);
    if rate > u32::MAX as u64 || ceil > u32::MAX as u64 {
        options.extend(nla(TCA_HTB_RATE64, &rate.to_ne_bytes()));
        options.extend(nla(TCA_HTB_CEIL64, &ceil.to_ne_bytes()));
    }
    m.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    m
}

/// The leaf qdisc `kind` with `limit` under class `minor` on `ifindex`.
fn leaf_message(ifindex: u32, minor: u16, kind: &str, limit: u32) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle {
        major: HANDLE_MAJOR,
        minor,
    };
    m.header.handle = TcHandle {
        major: minor,
        minor: 0,
    };
    m.attributes.push(TcAttribute::Kind(kind.into()));
    // struct tc_fifo_qopt { __u32 limit; }, not nested.
    m.attributes.push(TcAttribute::Other(DefaultNla::new(
        TCA_OPTIONS,
        limit.to_ne_bytes().to_vec(),
    )));
    m
}

/// `bytes` at `bytes_per_s` as scheduler ticks (what `buffer` and `cbuffer` are).
fn ticks(bytes: u64, bytes_per_s: u64) -> u32 {
    let ns = bytes as u128 * 1_000_000_000 / bytes_per_s as u128;
    u32::try_from(ns >> PSCHED_SHIFT).unwrap_or(u32::MAX)
}

/// One netlink attribute (header, value, padding to 4 bytes).
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

fn root() -> TcHandle {
    TcHandle {
        major: HANDLE_MAJOR,
        minor: 0,
    }
}

fn top() -> TcHandle {
    TcHandle {
        major: HANDLE_MAJOR,
        minor: TOP_CLASS,
    }
}

/// Makes the tree with `params` the root qdisc of `ifindex` (replacing the root qdisc that
/// is there: the caller checked it is the kernel's, `noqueue`, or netshim's own).
pub async fn install(
    handle: &Handle,
    ifindex: u32,
    params: &HtbParams,
) -> Result<(), NetlinkError> {
    let flags = NLM_F_CREATE | NLM_F_REPLACE;
    let msg = RouteNetlinkMessage::NewQueueDiscipline(qdisc_message(ifindex));
    netlink::request_ack(handle, msg, flags).await?;
    for c in params.classes() {
        let msg = RouteNetlinkMessage::NewTrafficClass(class_message(ifindex, &c));
        netlink::request_ack(handle, msg, flags).await?;
    }
    for (minor, kind, limit) in params.leaves() {
        let msg =
            RouteNetlinkMessage::NewQueueDiscipline(leaf_message(ifindex, minor, kind, limit));
        netlink::request_ack(handle, msg, flags).await?;
    }
    if params.profile == HtbProfile::Netshim {
        add_small_packet_filters(handle, ifindex).await?;
    }
    Ok(())
}

/// The u32 filters on the root qdisc that send small IPv4 and IPv6 packets to the latency
/// class (`u32 match u16 0 0xff80 at 2` / `at 4`, as tc writes them).
async fn add_small_packet_filters(handle: &Handle, ifindex: u32) -> Result<(), NetlinkError> {
    use rtnetlink::packet_route::tc::{
        TcFilterU32Option, TcU32Key, TcU32Selector, TcU32SelectorFlags,
    };
    let high_bits = !(SMALL_PACKET - 1) & 0xffff;
    // (filter prio, ethertype, key): IPv4 total length is the low half of the first word,
    // IPv6 payload length the high half of the second.
    for (prio, ethertype, mask, off) in [
        (1u16, 0x0800u16, high_bits, 0),
        (2, 0x86dd, high_bits << 16, 4),
    ] {
        let mut sel = TcU32Selector::default();
        sel.flags = TcU32SelectorFlags::Terminal;
        sel.nkeys = 1;
        let mut key = TcU32Key::default();
        key.mask = mask;
        key.val = 0;
        key.off = off;
        sel.keys = vec![key];
        let class = TcHandle {
            major: HANDLE_MAJOR,
            minor: LATENCY_CLASS,
        };
        let fail = |source| NetlinkError {
            request: "RTM_NEWTFILTER",
            source,
        };
        handle
            .traffic_filter(ifindex as i32)
            .add()
            .parent(u32::from(root()))
            .priority(prio)
            .protocol(ethertype.to_be())
            .u32(&[
                TcFilterU32Option::ClassId(class),
                TcFilterU32Option::Selector(sel),
            ])
            .map_err(fail)?
            .execute()
            .await
            .map_err(fail)?;
    }
    Ok(())
}

/// Changes the classes of the tree on `ifindex` to `params` in place: the qdisc and what it
/// holds stay, the next dequeue runs at the new rate. The tree must be of `params.profile`
/// (see [`Installed::profile`]); the bulk leaf's limit follows the rate.
pub async fn change(handle: &Handle, ifindex: u32, params: &HtbParams) -> Result<(), NetlinkError> {
    for c in params.classes() {
        let msg = RouteNetlinkMessage::NewTrafficClass(class_message(ifindex, &c));
        netlink::request_ack(handle, msg, NLM_F_REPLACE).await?;
    }
    for (minor, kind, limit) in params.leaves() {
        let msg =
            RouteNetlinkMessage::NewQueueDiscipline(leaf_message(ifindex, minor, kind, limit));
        netlink::request_ack(handle, msg, NLM_F_REPLACE).await?;
    }
    Ok(())
}

/// Deletes netshim's tree from `ifindex` (the kernel puts its default back); `Ok(false)`
/// when it is not there.
pub async fn remove(handle: &Handle, ifindex: u32) -> Result<bool, NetlinkError> {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = root();
    match netlink::request_ack(handle, RouteNetlinkMessage::DelQueueDiscipline(m), 0).await {
        Ok(()) => Ok(true),
        Err(e) if netlink::is_hook_gone(&e.source) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes netshim's tree from `ifindex` when its root qdisc is one (teardown, gc); whether
/// it did.
pub async fn remove_if_ours(handle: &Handle, ifindex: u32) -> Result<bool, NetlinkError> {
    match crate::tap::qdisc::root_qdisc(handle, ifindex).await? {
        Some(root) if root.kind == "htb" && root.handle == self::root() => {
            remove(handle, ifindex).await
        }
        _ => Ok(false),
    }
}

/// What the kernel holds of netshim's tree on `ifindex`: `None` when its root qdisc is not
/// netshim's HTB.
pub async fn read(handle: &Handle, ifindex: u32) -> Result<Option<Installed>, NetlinkError> {
    let mut request = TcMessage::with_index(ifindex as i32);
    request.header.parent = TcHandle::UNSPEC;
    let qdiscs = netlink::dump(handle, RouteNetlinkMessage::GetQueueDiscipline(request)).await?;
    let Some(root_qdisc) = qdiscs.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q)
            if q.header.index == ifindex as i32
                && q.header.parent == TcHandle::ROOT
                && q.header.handle == root()
                && has_kind(q, "htb") =>
        {
            Some(q)
        }
        _ => None,
    }) else {
        return Ok(None);
    };
    let mut counters = counters_of(root_qdisc);
    let request = TcMessage::with_index(ifindex as i32);
    let classes = netlink::dump(handle, RouteNetlinkMessage::GetTrafficClass(request)).await?;
    let mut params = None;
    let mut profile = HtbProfile::Kata;
    for m in &classes {
        let RouteNetlinkMessage::NewTrafficClass(c) = m else {
            continue;
        };
        if c.header.index != ifindex as i32 {
            continue;
        }
        if c.header.handle.major == HANDLE_MAJOR && c.header.handle.minor == LATENCY_CLASS {
            profile = HtbProfile::Netshim;
        }
        if c.header.handle != top() {
            continue;
        }
        params = class_params(c);
        // The top class counts what left the tree; the qdisc counts drops and throttling.
        let sent = counters_of(c);
        counters.sent_bytes = sent.sent_bytes;
        counters.sent_packets = sent.sent_packets;
    }
    let params = params.map(|p| HtbParams { profile, ..p });
    Ok(Some(Installed {
        params,
        profile,
        counters,
    }))
}

/// netshim's tree as the kernel lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    /// The top class's rate and burst (`None` when the kernel listed no such class).
    pub params: Option<HtbParams>,
    /// `netshim` when the tree has the latency class, else `kata`.
    pub profile: HtbProfile,
    pub counters: ShaperCounters,
}

fn has_kind(m: &TcMessage, kind: &str) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == kind))
}

fn counters_of(m: &TcMessage) -> ShaperCounters {
    let mut c = ShaperCounters::default();
    for a in &m.attributes {
        if let TcAttribute::Stats2(stats) = a {
            for s in stats {
                match s {
                    TcStats2::Basic(b) => {
                        c.sent_bytes = b.bytes;
                        c.sent_packets = b.packets as u64;
                    }
                    TcStats2::Queue(q) => {
                        c.dropped = q.drops as u64;
                        c.throttled = q.overlimits as u64;
                        c.backlog_bytes = q.backlog as u64;
                        c.backlog_packets = q.qlen as u64;
                    }
                    _ => {}
                }
            }
        }
    }
    c
}

/// The rate and burst of an HTB class message (`TCA_OPTIONS` → `TCA_HTB_PARMS`, and
/// `TCA_HTB_RATE64` above 32 bits of bytes per second).
fn class_params(m: &TcMessage) -> Option<HtbParams> {
    // rtnetlink keeps an `htb` kind's options as one raw attribute: TCA_OPTIONS itself.
    let value = |nla: &DefaultNla| {
        let mut buf = vec![0; nla.value_len()];
        nla.emit_value(&mut buf);
        buf
    };
    let options = m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => o.iter().find_map(|o| match o {
            TcOption::Other(nla) => Some(value(nla)),
            _ => None,
        }),
        TcAttribute::Other(nla) if nla.kind() == TCA_OPTIONS => Some(value(nla)),
        _ => None,
    })?;
    parse_class_options(&options)
}

/// Walks a run of netlink attributes; `(kind, value)` each.
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

fn parse_class_options(buf: &[u8]) -> Option<HtbParams> {
    let attrs = attributes(buf);
    let parms = attrs.iter().find(|(k, _)| *k == TCA_HTB_PARMS)?.1;
    if parms.len() < 44 {
        return None;
    }
    let u32_at = |i: usize| u32::from_ne_bytes(parms[i..i + 4].try_into().unwrap());
    let rate64 = attrs
        .iter()
        .find(|(k, v)| *k == TCA_HTB_RATE64 && v.len() == 8)
        .map(|(_, v)| u64::from_ne_bytes((*v).try_into().unwrap()));
    let bytes_per_s = rate64.unwrap_or(u32_at(8) as u64);
    let buffer_ticks = u32_at(24) as u128;
    let burst = (buffer_ticks << PSCHED_SHIFT) * bytes_per_s as u128 / 1_000_000_000;
    Some(HtbParams {
        rate_bps: bytes_per_s * 8,
        burst_bytes: burst as u64,
        profile: HtbProfile::Kata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_options_read_back_what_was_written() {
        for rate in [100_000_000u64, 1_000_000_000, 5_000_000_000, 40_000_000_000] {
            let params = HtbParams::for_profile(HtbProfile::Netshim, rate, None);
            let m = class_message(7, &params.classes()[0]);
            let TcAttribute::Other(nla) = &m.attributes[1] else {
                panic!("options")
            };
            let mut buf = vec![0; nla.value_len()];
            nla.emit_value(&mut buf);
            let back = parse_class_options(&buf).expect("parsed");
            assert_eq!(back.rate_bps, rate, "{rate}");
            let err = back.burst_bytes.abs_diff(params.burst_bytes);
            assert!(err * 1000 <= params.burst_bytes, "{back:?} vs {params:?}");
        }
    }

    #[test]
    fn bursts_per_profile() {
        let kata = HtbParams::for_profile(HtbProfile::Kata, 1_000_000_000, None);
        assert!(
            kata.burst_bytes >= KATA_MTU && kata.burst_bytes < 4 * KATA_MTU,
            "{kata:?}"
        );
        let ours = HtbParams::for_profile(HtbProfile::Netshim, 100_000_000, None);
        assert_eq!(ours.burst_bytes, GSO_BURST, "the GSO floor");
        let ours = HtbParams::for_profile(HtbProfile::Netshim, 5_000_000_000, None);
        assert_eq!(ours.burst_bytes, 5_000_000_000 / 8 / 200, "5 ms");
        // The latency and bulk classes share the limit; every class may borrow up to it.
        let c = ours.classes();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].rate_bps + c[2].rate_bps, ours.rate_bps);
        assert!(c.iter().all(|c| c.ceil_bps == ours.rate_bps));
        assert_eq!((c[1].prio, c[2].prio), (0, 1));
        let slow = HtbParams::for_profile(HtbProfile::Netshim, 8_000, None);
        assert_eq!(slow.latency_rate(), 4_000, "at most half of a slow limit");
        assert_eq!(
            HtbParams::for_profile(HtbProfile::Kata, 1_000_000_000, None)
                .classes()
                .len(),
            2,
            "kata's two classes"
        );
        let given = HtbParams::for_profile(HtbProfile::Kata, 1_000_000_000, Some(9000));
        assert_eq!(given.burst_bytes, 9000);
    }

    #[test]
    fn attributes_are_padded() {
        let a = nla(1, &[1, 2, 3]);
        assert_eq!(a.len(), 8);
        assert_eq!(attributes(&a), vec![(1, &[1u8, 2, 3][..])]);
    }
}
