use std::{cell::RefCell, num::NonZeroI32};

use rtnetlink::packet_core::{DefaultNla, ErrorMessage};
use rtnetlink::packet_route::tc::{
    TcAction, TcMirror, TcStatsBasic, TcStatsQueue, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

use super::filter::{parse_action_stats, parse_filter, parse_filters, tcm_info};
use super::qdisc::{add_with_busy_retry, busy_backoff, ingress_kind_of, AddFailure};
use super::*;
use crate::netlink::errno;
use nix::errno::Errno;
use rtnetlink::packet_route::tc::{
    TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirrorActionType, TcOption, TcStats2,
};
use std::time::Duration;

fn nl_err(errno: Errno) -> rtnetlink::Error {
    let mut m = ErrorMessage::default();
    m.code = NonZeroI32::new(-(errno as i32));
    rtnetlink::Error::NetlinkError(m)
}

/// Runs the retry loop against a scripted sequence of results; returns (outcome, calls,
/// sleeps).
fn run_retry(script: Vec<Result<(), Errno>>) -> (Result<(), Option<u32>>, usize, Vec<Duration>) {
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
    let (outcome, calls, sleeps) = run_retry(vec![Err(Errno::EBUSY), Err(Errno::EBUSY), Ok(())]);
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
fn dumped_filter(prio: u16, target: u32, verdict: TcActionType, stats: Vec<TcStats2>) -> TcMessage {
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
