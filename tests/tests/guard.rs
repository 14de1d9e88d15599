//! The source guard (issue 11): a guest can only speak as itself.
//!
//! A "guest" writes frames into `tap0_kata`'s fd of a [`Pod`] (client netns `c0` ⟷ veth ⟷
//! sandbox `eth0` ⟷ tap), which has IPv4 10.123.0.2 and IPv6 fd00:123::2 (the client
//! 10.123.0.1 and fd00:123::1, with `accept_ra` on, so that an RA that crosses really
//! configures it).
//! - Every spoof class of the issue (foreign, multicast and broadcast source MACs; foreign
//!   IPv4/IPv6 sources, the client's own address, 0.0.0.0 outside DHCP; gratuitous and
//!   made-up ARP, ARP with a foreign sender MAC; RAs, plain, behind hop-by-hop and
//!   destination options headers, fragmented, from a foreign link-local; a redirect; NAs for
//!   a foreign target and with a foreign target link-layer option; a DHCP server reply; a
//!   DHCP discover while DHCP is not allowed; 802.1Q, QinQ, LLDP, STP, PAUSE, 0x88b5): with
//!   the default guard none reaches the client's `c0` (an `AF_PACKET` capture there), the
//!   client learns no neighbour, takes no SLAAC address and no default route, and each is
//!   counted under its reason in the pinned `guard_drops_v2` map (and `stats --json`
//!   says the same), with
//!   `bpf_redirect_peer` (`--fast-path auto`) and without (`off`).
//! - The same guest's own traffic flows: ARP for its gateway, ping v4, a TCP SYN (answered by
//!   a SYN-ACK), NS/NA and ping v6 from its global and its EUI-64 link-local address, an
//!   unsolicited NA for itself, DAD from ::, an MLDv2 report from ::, a DHCP discover from
//!   0.0.0.0 with `--guard-allow-dhcp`, ethertype 0x88b5 with `--guard-allow-ethertype`;
//!   the guard counts nothing. Those allowances open no more: 0.0.0.0 outside DHCP, a DHCP
//!   server reply from 0.0.0.0 and ethertype 0x88b6 are still refused.
//! - `--guard log` delivers every spoof and counts each as flagged; `--guard off` delivers
//!   them and counts nothing.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, TcpListener},
    path::Path,
    time::Duration,
};

use aya::maps::{Array, Map, MapData};
use netshim_common::{GuardDrops, GUARD_REASONS};
use netshim_tests::{
    frames::{self, BROADCAST},
    netshim_cli::{netshim_json, pin_dir, Pod},
    require_root,
    sniffer::Sniffer,
    tap_reader::{format_mac, Mac, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6},
    traffic,
    vnet::{self, VnetHdr, L4},
    TapQueue,
};

const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 2);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 1);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
const FAKE_MAC: Mac = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
/// How long the capture waits for one more frame before it takes the guest's as all sent.
const QUIET: Duration = Duration::from_millis(300);
const REPLY: Duration = Duration::from_secs(2);

/// A pod whose sandbox and client also speak IPv6, attached with `args`, and the guest's
/// end of its tap.
struct Guarded {
    pod: Pod,
    tap: TapQueue,
    /// The guest's EUI-64 link-local address (the pod device's MAC is the guest's).
    pod_ll: Ipv6Addr,
    /// The client's on `c0`.
    client_ll: Ipv6Addr,
}

fn enable_ipv6(ns: &netshim_tests::TestNetns, dev: &str) {
    for conf in ["all", "default", dev] {
        ns.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{conf}.accept_dad=0"),
        ]);
    }
    for conf in ["all", "default", dev] {
        ns.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{conf}.disable_ipv6=0"),
        ]);
    }
}

fn guarded(tag: &str, args: &[&str]) -> Guarded {
    let pod = Pod::new(tag);
    enable_ipv6(&pod.client, "c0");
    enable_ipv6(&pod.sandbox, "eth0");
    // A host that takes router advertisements: what a rogue RA would reconfigure.
    pod.client
        .exec_ok(&["sysctl", "-qw", "net.ipv6.conf.c0.accept_ra=2"]);
    pod.client.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{CLIENT_V6}/64"),
        "dev",
        "c0",
        "nodad",
    ]);
    pod.sandbox.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{POD_V6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let mut all = vec!["attach", "--netns", pod.netns()];
    all.extend(args);
    netshim_json(&all);
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    let pod_ll = frames::eui64_link_local(pod.pod_mac);
    let client_ll = client_link_local(&pod);
    Guarded {
        pod,
        tap,
        pod_ll,
        client_ll,
    }
}

/// One frame the guest sends, marked with `tag` so that a capture can find it.
struct Case {
    name: &'static str,
    /// Index in `GUARD_REASONS` the guard counts it under (`None`: not refused).
    reason: Option<usize>,
    tag: Vec<u8>,
    /// What the guest writes: a virtio-net header and the frame.
    raw: Vec<u8>,
}

fn reason(name: &str) -> Option<usize> {
    Some(
        GUARD_REASONS
            .iter()
            .position(|r| *r == name)
            .unwrap_or_else(|| panic!("no guard reason {name}")),
    )
}

fn tag(i: usize) -> Vec<u8> {
    format!("nsguard-{i:02}").into_bytes()
}

/// The prefix a rogue RA number `i` announces.
fn rogue_prefix(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xbad, i, 0, 0, 0, 0, 0)
}

/// Every spoof class of issue 11, as a guest would send it.
fn spoofs(g: &Guarded) -> Vec<Case> {
    let p = &g.pod;
    let (me, mac, gw, gw_mac) = (p.pod_ip, p.pod_mac, p.client_ip, p.client_mac);
    let foreign = Ipv4Addr::new(10, 123, 0, 99);
    let made_up = Ipv4Addr::new(10, 123, 0, 60);
    let ll = g.pod_ll;
    let udp_from = |src_mac: Mac, src: Ipv4Addr, t: &[u8]| {
        frames::eth(
            gw_mac,
            src_mac,
            ETH_P_IP,
            &frames::udp4(src, gw, 4000, 9, t),
        )
    };
    let ra = |src: Ipv6Addr, i: u16, t: &[u8]| {
        frames::icmp6(
            src,
            ALL_NODES,
            frames::ND_ROUTER_ADVERT,
            0,
            &frames::ra_body(mac, rogue_prefix(i), t),
        )
    };
    let v6_frame = |next: u8, payload: &[u8]| {
        frames::eth(
            frames::ipv6_multicast_mac(ALL_NODES),
            mac,
            ETH_P_IPV6,
            &frames::ipv6(ll, ALL_NODES, next, 255, payload),
        )
    };
    let behind = |header: [u8; 8], m: Vec<u8>| [header.as_slice(), &m].concat();
    // A broadcast ARP request from the guest's MAC with sender `sha`/`spa` for the client.
    let arp_request = |sha: Mac, spa: Ipv4Addr, t: &[u8]| {
        let a = frames::arp(1, sha, spa, [0; 6], gw, t);
        frames::eth(BROADCAST, mac, ETH_P_ARP, &a)
    };
    let list: Vec<(&'static str, Option<&str>, Build)> = vec![
        (
            "foreign source MAC",
            Some("source_mac"),
            Box::new(|t| udp_from(FAKE_MAC, me, t)),
        ),
        (
            "multicast source MAC",
            Some("source_mac"),
            Box::new(|t| udp_from([0x01, 0x00, 0x5e, 0, 0, 1], me, t)),
        ),
        (
            "broadcast source MAC",
            Some("source_mac"),
            Box::new(|t| udp_from(BROADCAST, me, t)),
        ),
        (
            "IPv4 source 10.123.0.99 (pod subnet)",
            Some("source_ip"),
            Box::new(|t| udp_from(mac, foreign, t)),
        ),
        (
            "IPv4 source 192.0.2.66",
            Some("source_ip"),
            Box::new(|t| udp_from(mac, Ipv4Addr::new(192, 0, 2, 66), t)),
        ),
        (
            "IPv4 source = the client's own address",
            Some("source_ip"),
            Box::new(|t| udp_from(mac, gw, t)),
        ),
        (
            "IPv4 0.0.0.0, not DHCP",
            Some("source_ip"),
            Box::new(|t| udp_from(mac, Ipv4Addr::UNSPECIFIED, t)),
        ),
        (
            "DHCP discover from 0.0.0.0 without --guard-allow-dhcp",
            Some("source_ip"),
            Box::new(|t| dhcp_discover(mac, t)),
        ),
        (
            "DHCP server reply (UDP 67 -> 68)",
            Some("dhcp_server"),
            Box::new(|t| {
                let offer = frames::dhcp(2, 2, gw_mac, gw, t);
                frames::eth(
                    BROADCAST,
                    mac,
                    ETH_P_IP,
                    &frames::udp4(me, Ipv4Addr::BROADCAST, 67, 68, &offer),
                )
            }),
        ),
        (
            "DHCP server reply behind IPv4 header options",
            Some("dhcp_server"),
            Box::new(|t| {
                let offer = frames::dhcp(2, 2, gw_mac, gw, t);
                let nops = [1, 1, 1, 1];
                let ip = frames::udp4_with_options(me, Ipv4Addr::BROADCAST, &nops, 67, 68, &offer);
                frames::eth(BROADCAST, mac, ETH_P_IP, &ip)
            }),
        ),
        (
            "ARP reply claiming the client's address",
            Some("arp"),
            Box::new(|t| {
                let a = frames::arp(2, mac, gw, gw_mac, gw, t);
                frames::eth(gw_mac, mac, ETH_P_ARP, &a)
            }),
        ),
        (
            "DHCPv6 server reply (UDP 547 -> 546)",
            Some("dhcp_server"),
            Box::new(|t| {
                let udp = frames::udp6(ll, g.client_ll, 547, 546, &frames::dhcp6(7, t));
                frames::eth(gw_mac, mac, ETH_P_IPV6, &udp)
            }),
        ),
        (
            "gratuitous ARP claiming the client's address",
            Some("arp"),
            Box::new(|t| arp_request(mac, gw, t)),
        ),
        (
            "ARP request from a made-up 10.123.0.60",
            Some("arp"),
            Box::new(|t| arp_request(mac, made_up, t)),
        ),
        (
            "ARP with a sender MAC other than the guest's",
            Some("arp"),
            Box::new(|t| arp_request(FAKE_MAC, me, t)),
        ),
        (
            "IPv6 source fd00:123::99",
            Some("source_ip"),
            Box::new(|t| {
                let src = Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 0x99);
                let m = frames::icmp6(
                    src,
                    CLIENT_V6,
                    frames::ICMPV6_ECHO_REQUEST,
                    0,
                    &frames::echo_body(1, 1, t),
                );
                frames::eth(
                    gw_mac,
                    mac,
                    ETH_P_IPV6,
                    &frames::ipv6(src, CLIENT_V6, frames::IPPROTO_ICMPV6, 64, &m),
                )
            }),
        ),
        (
            "RA from the guest's link-local",
            Some("ra"),
            Box::new(|t| v6_frame(frames::IPPROTO_ICMPV6, &ra(ll, 1, t))),
        ),
        (
            "RA from fe80::dead:1",
            Some("source_ip"),
            Box::new(|t| {
                let src: Ipv6Addr = "fe80::dead:1".parse().unwrap();
                frames::eth(
                    frames::ipv6_multicast_mac(ALL_NODES),
                    mac,
                    ETH_P_IPV6,
                    &frames::ipv6(src, ALL_NODES, frames::IPPROTO_ICMPV6, 255, &ra(src, 2, t)),
                )
            }),
        ),
        (
            "RA behind a hop-by-hop options header",
            Some("ra"),
            Box::new(|t| {
                let h = frames::pad_options_header(frames::IPPROTO_ICMPV6);
                v6_frame(frames::IPPROTO_HOPOPTS, &behind(h, ra(ll, 3, t)))
            }),
        ),
        (
            "RA behind a destination options header",
            Some("ra"),
            Box::new(|t| {
                let h = frames::pad_options_header(frames::IPPROTO_ICMPV6);
                v6_frame(frames::IPPROTO_DSTOPTS, &behind(h, ra(ll, 4, t)))
            }),
        ),
        (
            "fragmented ICMPv6 (an RA's first fragment)",
            Some("ra"),
            Box::new(|t| {
                let m = ra(ll, 5, t);
                let h = frames::fragment_header(frames::IPPROTO_ICMPV6, 0, true, 0x5eed);
                v6_frame(frames::IPPROTO_FRAGMENT, &behind(h, m[..48].to_vec()))
            }),
        ),
        (
            "RA behind seven destination options headers",
            Some("ra"),
            Box::new(|t| {
                let mut chain = Vec::new();
                for i in 0..7 {
                    let next = if i == 6 {
                        frames::IPPROTO_ICMPV6
                    } else {
                        frames::IPPROTO_DSTOPTS
                    };
                    chain.extend_from_slice(&frames::pad_options_header(next));
                }
                chain.extend_from_slice(&ra(ll, 6, t));
                v6_frame(frames::IPPROTO_DSTOPTS, &chain)
            }),
        ),
        (
            "redirect",
            Some("ra"),
            Box::new(|t| {
                let body = frames::redirect_body(
                    "fe80::dead:2".parse().unwrap(),
                    "fd00:beef::1".parse().unwrap(),
                    t,
                );
                frames::icmp6_frame(gw_mac, mac, ll, CLIENT_V6, frames::ND_REDIRECT, &body)
            }),
        ),
        (
            "NA for a foreign target",
            Some("nd"),
            Box::new(|t| {
                let target = Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 0x77);
                let body = frames::na_body(frames::NA_OVERRIDE, target, mac, t);
                frames::icmp6_frame(
                    frames::ipv6_multicast_mac(ALL_NODES),
                    mac,
                    ll,
                    ALL_NODES,
                    frames::ND_NEIGHBOR_ADVERT,
                    &body,
                )
            }),
        ),
        (
            "NA for its own address with a foreign target link-layer option",
            Some("nd"),
            Box::new(|t| {
                let body = frames::na_body(frames::NA_OVERRIDE, POD_V6, FAKE_MAC, t);
                frames::icmp6_frame(
                    frames::ipv6_multicast_mac(ALL_NODES),
                    mac,
                    POD_V6,
                    ALL_NODES,
                    frames::ND_NEIGHBOR_ADVERT,
                    &body,
                )
            }),
        ),
        (
            "NA with a foreign target link-layer option after three other options",
            Some("nd"),
            Box::new(|t| {
                let body = nd_with_late_option(frames::NA_OVERRIDE, POD_V6, (2, FAKE_MAC), t);
                frames::icmp6_frame(
                    frames::ipv6_multicast_mac(ALL_NODES),
                    mac,
                    POD_V6,
                    ALL_NODES,
                    frames::ND_NEIGHBOR_ADVERT,
                    &body,
                )
            }),
        ),
        (
            "NS with a foreign source link-layer option after three other options",
            Some("nd"),
            Box::new(|t| {
                let sn = frames::solicited_node(CLIENT_V6);
                let body = nd_with_late_option(0, CLIENT_V6, (1, FAKE_MAC), t);
                frames::icmp6_frame(
                    frames::ipv6_multicast_mac(sn),
                    mac,
                    POD_V6,
                    sn,
                    frames::ND_NEIGHBOR_SOLICIT,
                    &body,
                )
            }),
        ),
        (
            "802.1Q tagged IPv4",
            Some("ethertype"),
            Box::new(|t| {
                let ip = frames::udp4(me, gw, 4000, 9, t);
                frames::eth_tagged(gw_mac, mac, &[(frames::ETH_P_8021Q, 7)], ETH_P_IP, &ip)
            }),
        ),
        (
            "priority-tagged (VLAN 0) IPv4",
            Some("ethertype"),
            Box::new(|t| {
                let ip = frames::udp4(me, gw, 4000, 9, t);
                frames::eth_tagged(gw_mac, mac, &[(frames::ETH_P_8021Q, 0)], ETH_P_IP, &ip)
            }),
        ),
        (
            "802.1ad tagged ARP",
            Some("ethertype"),
            Box::new(|t| {
                let a = frames::arp(1, mac, me, [0; 6], gw, t);
                frames::eth_tagged(BROADCAST, mac, &[(frames::ETH_P_8021AD, 7)], ETH_P_ARP, &a)
            }),
        ),
        (
            "QinQ (802.1ad + 802.1Q) tagged IPv4",
            Some("ethertype"),
            Box::new(|t| {
                let ip = frames::udp4(me, gw, 4000, 9, t);
                let tags = [(frames::ETH_P_8021AD, 100), (frames::ETH_P_8021Q, 7)];
                frames::eth_tagged(gw_mac, mac, &tags, ETH_P_IP, &ip)
            }),
        ),
        (
            "LLDP",
            Some("ethertype"),
            Box::new(|t| frames::lldp(mac, t)),
        ),
        (
            "STP (802.3 length frame)",
            Some("ethertype"),
            Box::new(|t| frames::stp(mac, t)),
        ),
        (
            "PAUSE",
            Some("ethertype"),
            Box::new(|t| frames::pause(mac, t)),
        ),
        (
            "ethertype 0x88b5",
            Some("ethertype"),
            Box::new(|t| experimental(gw_mac, mac, t)),
        ),
    ];
    let mut all = cases(0, list);
    // A TCP GSO super-packet (how a guest sends bulk TCP) from a foreign source.
    let t = tag(all.len());
    let payload = [t.as_slice(), &[7u8; 4000]].concat();
    let frame = vnet::l4_frame(mac, gw_mac, foreign, gw, L4::Tcp, 40000, 9, &payload);
    let hdr = VnetHdr {
        flags: vnet::NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1400,
        csum_start: 34,
        csum_offset: 16,
    };
    all.push(Case {
        name: "TCP GSO super-packet from 10.123.0.99",
        reason: reason("source_ip"),
        tag: t,
        raw: vnet::with_hdr(&hdr, &frame),
    });
    all
}

/// Builds a frame around the tag it is given.
type Build<'a> = Box<dyn Fn(&[u8]) -> Vec<u8> + 'a>;

/// The cases of `list` (name, the reason the guard refuses it under, builder), tagged from
/// number `first` on.
fn cases(first: usize, list: Vec<(&'static str, Option<&str>, Build)>) -> Vec<Case> {
    list.into_iter()
        .enumerate()
        .map(|(i, (name, why, build))| {
            let tag = tag(first + i);
            Case {
                name,
                reason: why.and_then(reason),
                raw: vnet::with_hdr(&VnetHdr::default(), &build(&tag)),
                tag,
            }
        })
        .collect()
}

/// An NS or NA body for `target` whose link-layer address option `(kind, mac)` comes
/// after three options of an unassigned type (the first holding `tag`): receivers read every
/// option (RFC 4861 4.6), so a check of the first few only is no check.
fn nd_with_late_option(flags: u8, target: Ipv6Addr, (kind, mac): (u8, Mac), tag: &[u8]) -> Vec<u8> {
    let mut b = vec![flags, 0, 0, 0];
    b.extend_from_slice(&target.octets());
    b.extend_from_slice(&frames::tag_option(tag));
    b.extend_from_slice(&frames::tag_option(b"pad one"));
    b.extend_from_slice(&frames::tag_option(b"pad two"));
    b.extend_from_slice(&frames::ll_option(kind, mac));
    b
}

fn dhcp_discover(mac: Mac, tag: &[u8]) -> Vec<u8> {
    let discover = frames::dhcp(1, 1, mac, Ipv4Addr::UNSPECIFIED, tag);
    frames::eth(
        BROADCAST,
        mac,
        ETH_P_IP,
        &frames::udp4(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            &discover,
        ),
    )
}

fn experimental(dst: Mac, src: Mac, tag: &[u8]) -> Vec<u8> {
    let mut payload = tag.to_vec();
    payload.resize(46, 0);
    frames::eth(dst, src, frames::ETH_P_EXPERIMENTAL, &payload)
}

/// Writes every case into the tap and returns the names of those the client's `c0` received.
fn send_and_capture(g: &Guarded, cases: &[Case]) -> Vec<&'static str> {
    let sniffer = Sniffer::on(g.pod.client.path(), "c0");
    for c in cases {
        g.tap
            .write_raw(&c.raw)
            .unwrap_or_else(|e| panic!("write {} into the tap: {e}", c.name));
    }
    let got = sniffer.received(QUIET, |f| cases.iter().any(|c| frames::contains(f, &c.tag)));
    cases
        .iter()
        .filter(|c| got.iter().any(|f| frames::contains(f, &c.tag)))
        .map(|c| c.name)
        .collect()
}

/// The guard's counters of endpoint 0, read from the pinned `guard_drops_v2` map (one value
/// for all CPUs, by endpoint index); `None` when the sandbox has no such map.
fn guard_drops(pin_dir: &Path) -> Option<GuardDrops> {
    let data = MapData::from_pin(pin_dir.join("guard_drops_v2")).ok()?;
    let map: Array<MapData, GuardDrops> = Array::try_from(Map::from_map_data(data).ok()?).ok()?;
    map.get(&0, 0).ok()
}

/// `netshim stats --json` reports, for the VM → pod direction of endpoint 0, what the map
/// holds: `dropped` and `guard.flagged` per reason, and the guard's `mode`.
fn stats_agree(pod: &Pod, d: &GuardDrops, mode: &str) -> Result<(), String> {
    let from_vm =
        netshim_json(&["stats", "--netns", pod.netns()])[0]["endpoints"][0]["from_vm"].clone();
    let mut wrong = Vec::new();
    for (i, r) in GUARD_REASONS.iter().enumerate() {
        if from_vm["dropped"][r] != d.dropped[i] {
            wrong.push(format!("dropped.{r} (map: {})", d.dropped[i]));
        }
        if from_vm["guard"]["flagged"][r] != d.flagged[i] {
            wrong.push(format!("guard.flagged.{r} (map: {})", d.flagged[i]));
        }
    }
    if from_vm["guard"]["mode"] != mode {
        wrong.push(format!("guard.mode (want {mode})"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stats --json disagrees on {wrong:?}: from_vm {from_vm}"
        ))
    }
}

/// Counts by reason name, zeros left out.
fn by_reason(counts: &[u64; GUARD_REASONS.len()]) -> BTreeMap<&'static str, u64> {
    GUARD_REASONS
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (*r, *n))
        .collect()
}

fn expected_counts(cases: &[Case]) -> BTreeMap<&'static str, u64> {
    let mut want = BTreeMap::new();
    for c in cases {
        if let Some(r) = c.reason {
            *want.entry(GUARD_REASONS[r]).or_default() += 1;
        }
    }
    want
}

/// What the client's stack took in: its neighbour entries on `c0`, the IPv6 addresses and
/// routes a rogue RA would add.
struct ClientState {
    neighbours: String,
    rogue_addresses: Vec<String>,
    rogue_routes: Vec<String>,
}

impl ClientState {
    fn read(pod: &Pod) -> ClientState {
        let neighbours = pod.client.ip(&["neigh", "show", "dev", "c0"]);
        let neighbours = neighbours
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let rogue = |text: String| {
            text.lines()
                .filter(|l| l.contains("fd00:bad") || l.starts_with("default"))
                .map(|l| l.trim().to_owned())
                .collect::<Vec<_>>()
        };
        ClientState {
            neighbours,
            rogue_addresses: rogue(pod.client.ip(&["-6", "addr", "show", "dev", "c0"])),
            rogue_routes: rogue(pod.client.ip(&["-6", "route", "show"])),
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.neighbours.is_empty() {
            p.push(format!(
                "the client learnt neighbours:\n{}",
                self.neighbours
            ));
        }
        if !self.rogue_addresses.is_empty() {
            p.push(format!(
                "the client took addresses from a rogue RA: {:?}",
                self.rogue_addresses
            ));
        }
        if !self.rogue_routes.is_empty() {
            p.push(format!(
                "the client took routes from a rogue RA: {:?}",
                self.rogue_routes
            ));
        }
        p
    }
}

fn spoofs_never_reach_the_client(fast_path: &str) {
    require_root!();
    let g = guarded(
        &format!("gs{}", &fast_path[..2]),
        &["--fast-path", fast_path],
    );
    let cases = spoofs(&g);
    let reached = send_and_capture(&g, &cases);
    let state = ClientState::read(&g.pod);
    let drops = guard_drops(&pin_dir(&g.pod.sandbox));

    let mut problems = Vec::new();
    for name in &reached {
        problems.push(format!("reached the client: {name}"));
    }
    problems.extend(state.problems());
    let want = expected_counts(&cases);
    match drops {
        None => problems.push("no guard_drops_v2 map pinned for the sandbox".into()),
        Some(d) => {
            let dropped = by_reason(&d.dropped);
            println!("{fast_path}: guard dropped {dropped:?}");
            if dropped != want {
                problems.push(format!("guard dropped {dropped:?}, want {want:?}"));
            }
            if d.flagged != [0; GUARD_REASONS.len()] {
                problems.push(format!("flagged in enforce mode: {:?}", d.flagged));
            }
            if let Err(e) = stats_agree(&g.pod, &d, "enforce") {
                problems.push(e);
            }
        }
    }
    assert!(
        problems.is_empty(),
        "--fast-path {fast_path}: {} of {} spoof classes reached the client; {}",
        reached.len(),
        cases.len(),
        problems.join("\n")
    );
}

#[test]
fn spoofs_never_reach_the_client_fast_path_auto() {
    spoofs_never_reach_the_client("auto");
}

#[test]
fn spoofs_never_reach_the_client_fast_path_off() {
    spoofs_never_reach_the_client("off");
}

/// `--guard log` delivers every spoof and flags each under its reason; `--guard off`
/// delivers them and counts nothing.
fn spoofs_in_mode(mode: &str) {
    require_root!();
    let g = guarded(&format!("gm{}", &mode[..2]), &["--guard", mode]);
    let cases = spoofs(&g);
    let reached = send_and_capture(&g, &cases);
    let missing: Vec<_> = cases
        .iter()
        .filter(|c| !reached.contains(&c.name))
        .map(|c| c.name)
        .collect();
    assert!(
        missing.is_empty(),
        "--guard {mode} must deliver everything; these did not reach the client: {missing:?}"
    );
    let d = guard_drops(&pin_dir(&g.pod.sandbox)).expect("guard_drops_v2 map");
    let flagged = by_reason(&d.flagged);
    println!("--guard {mode}: flagged {flagged:?}");
    assert_eq!(by_reason(&d.dropped), BTreeMap::new(), "--guard {mode}");
    let want = if mode == "log" {
        expected_counts(&cases)
    } else {
        BTreeMap::new()
    };
    assert_eq!(flagged, want, "--guard {mode}: flagged");
    stats_agree(&g.pod, &d, mode).unwrap();
}

#[test]
fn log_mode_delivers_and_counts() {
    spoofs_in_mode("log");
}

#[test]
fn off_mode_delivers_and_counts_nothing() {
    spoofs_in_mode("off");
}

/// Reads frames from the tap until `pred` accepts one; panics naming `what` otherwise.
fn reply(g: &Guarded, what: &str, pred: impl FnMut(&[u8]) -> bool) {
    assert!(
        g.tap.read_matching(REPLY, pred).is_some(),
        "no reply to the guest's {what} came back into the tap"
    );
}

/// An ICMPv6 message of `typ` from `src` in `frame` (no extension headers).
fn icmp6_from(frame: &[u8], src: Ipv6Addr, typ: u8) -> bool {
    frames::parse_ipv6(frame).is_some_and(|(next, s, _, m)| {
        next == frames::IPPROTO_ICMPV6 && s == src && m.first() == Some(&typ)
    })
}

/// The client's link-local address on `c0`.
fn client_link_local(pod: &Pod) -> Ipv6Addr {
    let mac = pod.client_mac;
    let ll = frames::eui64_link_local(mac);
    let addrs = pod
        .client
        .ip(&["-6", "addr", "show", "dev", "c0", "scope", "link"]);
    assert!(
        addrs.contains(&ll.to_string()),
        "c0 ({}) has no EUI-64 link-local {ll}: {addrs}",
        format_mac(&mac)
    );
    ll
}

fn guest_traffic_flows(fast_path: &str) {
    require_root!();
    let g = guarded(
        &format!("gl{}", &fast_path[..2]),
        &[
            "--fast-path",
            fast_path,
            "--guard",
            "enforce",
            "--guard-allow-dhcp",
            "--guard-allow-ethertype",
            "0x88b5",
        ],
    );
    let p = &g.pod;
    let (me, mac, gw, gw_mac) = (p.pod_ip, p.pod_mac, p.client_ip, p.client_mac);

    // ARP for its gateway: the client answers (and learns the guest).
    let who_has = frames::arp(1, mac, me, [0; 6], gw, b"");
    g.tap
        .write_frame(&frames::eth(BROADCAST, mac, ETH_P_ARP, &who_has))
        .unwrap();
    reply(&g, "ARP request for its gateway", |f| {
        frames::parse_arp(f)
            .is_some_and(|(op, sha, spa, tpa)| op == 2 && sha == gw_mac && spa == gw && tpa == me)
    });

    // Ping v4.
    let echo = frames::icmp4_echo(me, gw, 0x4242, 1, b"guest ping");
    g.tap
        .write_frame(&frames::eth(gw_mac, mac, ETH_P_IP, &echo))
        .unwrap();
    reply(&g, "ping", |f| {
        frames::parse_ipv4(f).is_some_and(|(proto, s, d, icmp)| {
            proto == frames::IPPROTO_ICMP && s == gw && d == me && icmp.first() == Some(&0)
        })
    });

    // TCP: a SYN to a listener gets a SYN-ACK.
    let listener = p
        .client
        .run(|| TcpListener::bind((gw, 0)).expect("listen on the client"));
    let port = listener.local_addr().unwrap().port();
    let syn = frames::tcp4_syn(me, gw, 40001, port, 1000);
    g.tap
        .write_frame(&frames::eth(gw_mac, mac, ETH_P_IP, &syn))
        .unwrap();
    reply(&g, "TCP SYN", |f| {
        frames::parse_ipv4(f).is_some_and(|(proto, s, _, t)| {
            proto == frames::IPPROTO_TCP
                && s == gw
                && t.len() >= 20
                && u16::from_be_bytes([t[0], t[1]]) == port
                && t[13] & 0x12 == 0x12
        })
    });

    // ND and ping v6, from its global and from its link-local address.
    for (src, dst) in [(POD_V6, CLIENT_V6), (g.pod_ll, g.client_ll)] {
        let sn = frames::solicited_node(dst);
        let ns = frames::ns_body(dst, Some(mac), b"");
        g.tap
            .write_frame(&frames::icmp6_frame(
                frames::ipv6_multicast_mac(sn),
                mac,
                src,
                sn,
                frames::ND_NEIGHBOR_SOLICIT,
                &ns,
            ))
            .unwrap();
        reply(&g, &format!("NS from {src} for {dst}"), |f| {
            icmp6_from(f, dst, frames::ND_NEIGHBOR_ADVERT)
        });
        let echo = frames::icmp6(
            src,
            dst,
            frames::ICMPV6_ECHO_REQUEST,
            0,
            &frames::echo_body(0x4243, 1, b"guest ping6"),
        );
        g.tap
            .write_frame(&frames::eth(
                gw_mac,
                mac,
                ETH_P_IPV6,
                &frames::ipv6(src, dst, frames::IPPROTO_ICMPV6, 64, &echo),
            ))
            .unwrap();
        reply(&g, &format!("ping6 from {src} to {dst}"), |f| {
            icmp6_from(f, dst, frames::ICMPV6_ECHO_REPLY)
        });
    }

    // What gets no answer, seen arriving on the client.
    let tentative = Ipv6Addr::new(0xfd00, 0x123, 0, 0, 0, 0, 0, 0x22);
    let sn = frames::solicited_node(tentative);
    let mld_group = frames::solicited_node(tentative);
    let list: Vec<(&'static str, Option<&str>, Build)> = vec![
        (
            "unsolicited NA for its own address",
            None,
            Box::new(|t| {
                let body = frames::na_body(frames::NA_OVERRIDE, POD_V6, mac, t);
                frames::icmp6_frame(
                    frames::ipv6_multicast_mac(ALL_NODES),
                    mac,
                    POD_V6,
                    ALL_NODES,
                    frames::ND_NEIGHBOR_ADVERT,
                    &body,
                )
            }),
        ),
        (
            "DAD NS from ::",
            None,
            Box::new(|t| {
                let body = frames::ns_body(tentative, None, t);
                frames::icmp6_frame(
                    frames::ipv6_multicast_mac(sn),
                    mac,
                    Ipv6Addr::UNSPECIFIED,
                    sn,
                    frames::ND_NEIGHBOR_SOLICIT,
                    &body,
                )
            }),
        ),
        (
            "MLDv2 report from ::",
            None,
            Box::new(|t| {
                let m = frames::icmp6(
                    Ipv6Addr::UNSPECIFIED,
                    MLDV2_ROUTERS,
                    frames::ICMPV6_MLD2_REPORT,
                    0,
                    &frames::mld2_report_body(mld_group, t),
                );
                let payload = [
                    frames::router_alert_header(frames::IPPROTO_ICMPV6).as_slice(),
                    &m,
                ]
                .concat();
                frames::eth(
                    frames::ipv6_multicast_mac(MLDV2_ROUTERS),
                    mac,
                    ETH_P_IPV6,
                    &frames::ipv6(
                        Ipv6Addr::UNSPECIFIED,
                        MLDV2_ROUTERS,
                        frames::IPPROTO_HOPOPTS,
                        1,
                        &payload,
                    ),
                )
            }),
        ),
        (
            "DHCPv6 solicit from its link-local",
            None,
            Box::new(|t| {
                let agents = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
                let udp = frames::udp6(g.pod_ll, agents, 546, 547, &frames::dhcp6(1, t));
                frames::eth(frames::ipv6_multicast_mac(agents), mac, ETH_P_IPV6, &udp)
            }),
        ),
        (
            "DHCP discover from 0.0.0.0 (--guard-allow-dhcp)",
            None,
            Box::new(|t| dhcp_discover(mac, t)),
        ),
        (
            "ethertype 0x88b5 (--guard-allow-ethertype 0x88b5)",
            None,
            Box::new(|t| experimental(gw_mac, mac, t)),
        ),
    ];
    let own = cases(50, list);
    let reached = send_and_capture(&g, &own);
    let missing: Vec<_> = own
        .iter()
        .filter(|c| !reached.contains(&c.name))
        .map(|c| c.name)
        .collect();
    assert!(
        missing.is_empty(),
        "--fast-path {fast_path}: the guest's own traffic did not reach the client: {missing:?}"
    );
    let d = guard_drops(&pin_dir(&p.sandbox)).expect("guard_drops_v2 map");
    assert_eq!(d, GuardDrops::default(), "the guard refused own traffic");

    // What the allowances do not open.
    let list: Vec<(&'static str, Option<&str>, Build)> = vec![
        (
            "0.0.0.0 outside DHCP (with --guard-allow-dhcp)",
            Some("source_ip"),
            Box::new(|t| {
                let udp = frames::udp4(Ipv4Addr::UNSPECIFIED, gw, 68, 9, t);
                frames::eth(gw_mac, mac, ETH_P_IP, &udp)
            }),
        ),
        (
            "DHCP server reply from 0.0.0.0 (with --guard-allow-dhcp)",
            Some("dhcp_server"),
            Box::new(|t| {
                let offer = frames::dhcp(2, 2, gw_mac, gw, t);
                let udp = frames::udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 67, 68, &offer);
                frames::eth(BROADCAST, mac, ETH_P_IP, &udp)
            }),
        ),
        (
            "ethertype 0x88b6 (only 0x88b5 allowed)",
            Some("ethertype"),
            Box::new(|t| {
                let mut payload = t.to_vec();
                payload.resize(46, 0);
                frames::eth(gw_mac, mac, 0x88b6, &payload)
            }),
        ),
    ];
    let refused = cases(60, list);
    let reached = send_and_capture(&g, &refused);
    assert!(
        reached.is_empty(),
        "--fast-path {fast_path}: reached the client: {reached:?}"
    );
    let d = guard_drops(&pin_dir(&p.sandbox)).expect("guard_drops_v2 map");
    assert_eq!(by_reason(&d.dropped), expected_counts(&refused));
    stats_agree(p, &d, "enforce").unwrap();
}

#[test]
fn guest_traffic_flows_fast_path_auto() {
    guest_traffic_flows("auto");
}

#[test]
fn guest_traffic_flows_fast_path_off() {
    guest_traffic_flows("off");
}
