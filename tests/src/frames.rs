//! Frames a guest can write into its tap, with correct checksums, for the source guard's
//! tests: Ethernet (802.1Q/QinQ tags, 802.3 length frames), IPv4 (UDP, ICMP echo, TCP SYN,
//! DHCP), ARP, IPv6 (extension headers, fragments), ICMPv6 (echo, NS/NA, RA, redirect, MLDv2)
//! and link-layer control frames (LLDP, STP, PAUSE); and the few parsers a test needs to
//! recognise the replies that come back into the tap.
//!
//! Every builder that has room for it carries a caller's `tag` (bytes no real traffic has),
//! so that a capture on the far side can tell which of the test's frames arrived whatever
//! the kernel did to the headers on the way (a VLAN tag moved into the skb's metadata, say).
//!
//! Written out rather than built with etherparse: the guard's tests need frames no stack
//! writes (spoofed sources, 802.3 length frames, LLDP/STP/PAUSE, arbitrary IPv6 extension
//! header chains, ND/RA/MLD bodies with chosen options, a tag in every frame), byte for byte
//! as each test means them; etherparse's builders cover the well-formed subset only, so the
//! file would keep both ways of building a frame.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::tap_reader::{inet_checksum, Mac, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6};

pub const BROADCAST: Mac = [0xff; 6];
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_PAUSE: u16 = 0x8808;
/// IEEE 802 local experimental ethertype 1.
pub const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const ICMPV6_MLD2_REPORT: u8 = 143;
pub const ND_ROUTER_ADVERT: u8 = 134;
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
pub const ND_REDIRECT: u8 = 137;
/// NA flags (first byte of the reserved word).
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// `true` when `tag` occurs in `frame`.
pub fn contains(frame: &[u8], tag: &[u8]) -> bool {
    !tag.is_empty() && frame.windows(tag.len()).any(|w| w == tag)
}

/// An Ethernet frame.
pub fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An Ethernet frame with VLAN tags (outermost first: `(tpid, vid)`) before `ethertype`.
pub fn eth_tagged(
    dst: Mac,
    src: Mac,
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The multicast MAC of an IPv6 multicast address (33:33 + its last 32 bits).
pub fn ipv6_multicast_mac(addr: Ipv6Addr) -> Mac {
    let o = addr.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited-node multicast address of `addr`.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The link-local address of `mac` (fe80::/64 + modified EUI-64).
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    let o = [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    Ipv6Addr::from(o)
}

// ---- IPv4 ----

/// An IPv4 packet (IHL 5, TTL 64, DF) with a correct header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with_options(src, dst, proto, &[], payload)
}

/// [`ipv4`] with header `options` (padded with end-of-options to 4-byte words).
pub fn ipv4_with_options(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len().div_ceil(4) * 4;
    let len = hlen + payload.len();
    let mut ip = vec![0u8; hlen];
    ip[0] = 0x40 | (hlen / 4) as u8;
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    ip[20..20 + options.len()].copy_from_slice(options);
    let csum = inet_checksum(&ip, 0);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

/// The ones'-complement sum of the IPv4 pseudo header.
fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    partial_sum(&p)
}

fn partial_sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// An IPv4 + UDP packet with a correct UDP checksum.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp4_with_options(src, dst, &[], sport, dport, payload)
}

/// [`udp4`] with IPv4 header `options`.
pub fn udp4_with_options(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    options: &[u8],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let pseudo = pseudo4(src, dst, IPPROTO_UDP, 8 + payload.len());
    let udp = udp_datagram(sport, dport, payload, pseudo);
    ipv4_with_options(src, dst, IPPROTO_UDP, options, &udp)
}

/// A UDP header + `payload` whose checksum covers the pseudo header's sum `pseudo`.
fn udp_datagram(sport: u16, dport: u16, payload: &[u8], pseudo: u32) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut csum = inet_checksum(&udp, pseudo);
    if csum == 0 {
        csum = 0xffff;
    }
    udp[6..8].copy_from_slice(&csum.to_be_bytes());
    udp
}

/// An IPv4 ICMP echo request.
pub fn icmp4_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let csum = inet_checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    ipv4(src, dst, IPPROTO_ICMP, &icmp)
}

/// An IPv4 TCP SYN (no options, window 64240).
pub fn tcp4_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let csum = inet_checksum(&t, pseudo4(src, dst, IPPROTO_TCP, t.len()));
    t[16..18].copy_from_slice(&csum.to_be_bytes());
    ipv4(src, dst, IPPROTO_TCP, &t)
}

/// A BOOTP/DHCP message (`op` 1 request, 2 reply) of DHCP type `msg_type` (1 discover, 2
/// offer) for `chaddr`, with `tag` in the `sname` field.
pub fn dhcp(op: u8, msg_type: u8, chaddr: Mac, yiaddr: Ipv4Addr, tag: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = op;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    b[16..20].copy_from_slice(&yiaddr.octets());
    b[28..34].copy_from_slice(&chaddr);
    let n = tag.len().min(64);
    b[44..44 + n].copy_from_slice(&tag[..n]);
    b.extend_from_slice(&[99, 130, 83, 99, 53, 1, msg_type, 255]);
    b
}

/// An Ethernet/IPv4 ARP packet (`op` 1 request, 2 reply), `tag` after it (as padding).
pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr, tag: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(28 + tag.len());
    a.extend_from_slice(&1u16.to_be_bytes());
    a.extend_from_slice(&ETH_P_IP.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a.extend_from_slice(tag);
    a
}

// ---- IPv6 ----

/// An IPv6 packet whose first next header is `next`; `payload` is everything after the
/// fixed header (extension headers included).
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&0x6000_0000u32.to_be_bytes());
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(next);
    p.push(hop_limit);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An ICMPv6 message (`body` after type, code, checksum) with its checksum for `src` → `dst`.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, typ: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(body);
    let csum = inet_checksum(&m, pseudo6(src, dst, IPPROTO_ICMPV6, m.len()));
    m[2..4].copy_from_slice(&csum.to_be_bytes());
    m
}

/// An IPv6 + UDP packet (hop limit 64) with its (mandatory) checksum.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let pseudo = pseudo6(src, dst, IPPROTO_UDP, 8 + payload.len());
    ipv6(
        src,
        dst,
        IPPROTO_UDP,
        64,
        &udp_datagram(sport, dport, payload, pseudo),
    )
}

/// The ones'-complement sum of the IPv6 pseudo header.
fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    partial_sum(&p)
}

/// A DHCPv6 message of `msg_type` (1 solicit, 7 reply) with `tag` in an option of an
/// unassigned code.
pub fn dhcp6(msg_type: u8, tag: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type, 0x12, 0x34, 0x56];
    m.extend_from_slice(&0xfff0u16.to_be_bytes());
    m.extend_from_slice(&(tag.len() as u16).to_be_bytes());
    m.extend_from_slice(tag);
    m
}

/// An 8-byte hop-by-hop or destination options header (one PadN option) before `next`.
pub fn pad_options_header(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

/// A hop-by-hop header with the router alert option (MLD), before `next`.
pub fn router_alert_header(next: u8) -> [u8; 8] {
    [next, 0, 5, 2, 0, 0, 1, 0]
}

/// A fragment header: `offset` in 8-byte units, more fragments `more`.
pub fn fragment_header(next: u8, offset: u16, more: bool, id: u32) -> [u8; 8] {
    let off = (offset << 3) | u16::from(more);
    let o = off.to_be_bytes();
    let i = id.to_be_bytes();
    [next, 0, o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// A link-layer address option (1 source, 2 target).
pub fn ll_option(kind: u8, mac: Mac) -> [u8; 8] {
    [kind, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]
}

/// An NDP option of an unassigned type (receivers skip it, RFC 4861 4.6) holding `tag`.
pub fn tag_option(tag: &[u8]) -> Vec<u8> {
    let units = (2 + tag.len()).div_ceil(8);
    let mut o = vec![0u8; units * 8];
    o[0] = 253;
    o[1] = units as u8;
    o[2..2 + tag.len()].copy_from_slice(tag);
    o
}

/// The body of a router advertisement (after the ICMPv6 checksum): router lifetime 1800 s,
/// the router's source link-layer option `mac`, `tag`, an autonomous on-link `prefix`/64.
pub fn ra_body(mac: Mac, prefix: Ipv6Addr, tag: &[u8]) -> Vec<u8> {
    let mut b = vec![64, 0];
    b.extend_from_slice(&1800u16.to_be_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&ll_option(1, mac));
    // The tag early, so that an RA's first fragment carries it too.
    b.extend_from_slice(&tag_option(tag));
    b.extend_from_slice(&[3, 4, 64, 0xc0]);
    b.extend_from_slice(&86400u32.to_be_bytes());
    b.extend_from_slice(&14400u32.to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&prefix.octets());
    b
}

/// The body of a neighbour solicitation for `target`, with a source link-layer option
/// unless `slla` is `None`.
pub fn ns_body(target: Ipv6Addr, slla: Option<Mac>, tag: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&target.octets());
    if let Some(mac) = slla {
        b.extend_from_slice(&ll_option(1, mac));
    }
    b.extend_from_slice(&tag_option(tag));
    b
}

/// The body of a neighbour advertisement for `target` with flags and a target link-layer
/// option `tlla`.
pub fn na_body(flags: u8, target: Ipv6Addr, tlla: Mac, tag: &[u8]) -> Vec<u8> {
    let mut b = vec![flags, 0, 0, 0];
    b.extend_from_slice(&target.octets());
    b.extend_from_slice(&ll_option(2, tlla));
    b.extend_from_slice(&tag_option(tag));
    b
}

/// The body of a redirect: go to `target` for `dest`.
pub fn redirect_body(target: Ipv6Addr, dest: Ipv6Addr, tag: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&target.octets());
    b.extend_from_slice(&dest.octets());
    b.extend_from_slice(&tag_option(tag));
    b
}

/// The body of an MLDv2 report with one CHANGE_TO_EXCLUDE record for `group`; `tag` as
/// the record's auxiliary data.
pub fn mld2_report_body(group: Ipv6Addr, tag: &[u8]) -> Vec<u8> {
    let aux = tag.len().div_ceil(4);
    let mut b = vec![0, 0, 0, 1, 4, aux as u8, 0, 0];
    b.extend_from_slice(&group.octets());
    let mut t = tag.to_vec();
    t.resize(aux * 4, 0);
    b.extend_from_slice(&t);
    b
}

/// An ICMPv6 echo request body (id, seq, payload).
pub fn echo_body(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + payload.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A whole Ethernet + IPv6 + ICMPv6 frame (hop limit 255, as ND wants).
pub fn icmp6_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    typ: u8,
    body: &[u8],
) -> Vec<u8> {
    let m = icmp6(src, dst, typ, 0, body);
    eth(
        dst_mac,
        src_mac,
        ETH_P_IPV6,
        &ipv6(src, dst, IPPROTO_ICMPV6, 255, &m),
    )
}

// ---- link-layer control ----

/// An LLDP frame (chassis id = `mac`, port id "guest", TTL 120, `tag` in an
/// organisationally specific TLV).
pub fn lldp(src: Mac, tag: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    let mut tlv = |t: u8, v: &[u8]| {
        let h = (u16::from(t) << 9) | v.len() as u16;
        p.extend_from_slice(&h.to_be_bytes());
        p.extend_from_slice(v);
    };
    let mut chassis = vec![4];
    chassis.extend_from_slice(&src);
    tlv(1, &chassis);
    tlv(2, b"\x07guest");
    tlv(3, &120u16.to_be_bytes());
    let mut org = vec![0x00, 0x80, 0xc2, 0x7f];
    org.extend_from_slice(tag);
    tlv(127, &org);
    tlv(0, &[]);
    eth([0x01, 0x80, 0xc2, 0, 0, 0x0e], src, ETH_P_LLDP, &p)
}

/// An STP configuration BPDU in an 802.3 length frame (LLC 42 42 03), `tag` after it.
pub fn stp(src: Mac, tag: &[u8]) -> Vec<u8> {
    let mut p = vec![0x42, 0x42, 0x03];
    // Protocol 0, version 0, type 0 (config), flags, root id, cost, bridge id, port,
    // ages and times.
    let mut bpdu = vec![0u8; 35];
    bpdu[5] = 0x80;
    bpdu[7..13].copy_from_slice(&src);
    bpdu[17] = 0x80;
    bpdu[19..25].copy_from_slice(&src);
    bpdu[25..27].copy_from_slice(&0x8001u16.to_be_bytes());
    bpdu[29..31].copy_from_slice(&(20u16 << 8).to_be_bytes());
    bpdu[31..33].copy_from_slice(&(2u16 << 8).to_be_bytes());
    bpdu[33..35].copy_from_slice(&(15u16 << 8).to_be_bytes());
    p.extend_from_slice(&bpdu);
    let len = p.len() as u16;
    p.extend_from_slice(tag);
    eth([0x01, 0x80, 0xc2, 0, 0, 0], src, len, &p)
}

/// An 802.3x PAUSE frame (quanta 0xffff), `tag` in its padding.
pub fn pause(src: Mac, tag: &[u8]) -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0xff, 0xff];
    p.extend_from_slice(tag);
    p.resize(46.max(p.len()), 0);
    eth([0x01, 0x80, 0xc2, 0, 0, 0x01], src, ETH_P_PAUSE, &p)
}

// ---- parsers for the replies ----

/// An untagged IPv4 frame's (protocol, source, destination, payload).
pub fn parse_ipv4(frame: &[u8]) -> Option<(u8, Ipv4Addr, Ipv4Addr, &[u8])> {
    if frame.len() < 34 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    Some((ip[9], src, dst, &ip[ihl..total]))
}

/// An untagged IPv6 frame's (next header, source, destination, payload) without walking
/// extension headers.
pub fn parse_ipv6(frame: &[u8]) -> Option<(u8, Ipv6Addr, Ipv6Addr, &[u8])> {
    if frame.len() < 54 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IPV6 {
        return None;
    }
    let ip = &frame[14..];
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let src: [u8; 16] = ip[8..24].try_into().ok()?;
    let dst: [u8; 16] = ip[24..40].try_into().ok()?;
    let payload = ip.get(40..40 + len)?;
    Some((ip[6], src.into(), dst.into(), payload))
}

/// An ARP frame's (op, sender MAC, sender IP, target IP).
pub fn parse_arp(frame: &[u8]) -> Option<(u16, Mac, Ipv4Addr, Ipv4Addr)> {
    if frame.len() < 42 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_ARP {
        return None;
    }
    let a = &frame[14..];
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha: Mac = a[8..14].try_into().ok()?;
    Some((
        op,
        sha,
        Ipv4Addr::new(a[14], a[15], a[16], a[17]),
        Ipv4Addr::new(a[24], a[25], a[26], a[27]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn eui64_and_solicited_node() {
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        assert_eq!(eui64_link_local(mac), v6("fe80::42:acff:fe11:2"));
        assert_eq!(solicited_node(v6("fd00::1:2:3")), v6("ff02::1:ff02:3"));
        assert_eq!(
            ipv6_multicast_mac(v6("ff02::1:ff02:3")),
            [0x33, 0x33, 0xff, 0x02, 0, 3]
        );
    }

    #[test]
    fn icmp6_checksum_verifies() {
        let (s, d) = (v6("fe80::1"), v6("ff02::1"));
        let m = icmp6(
            s,
            d,
            ND_ROUTER_ADVERT,
            0,
            &ra_body([2; 6], v6("fd00::"), b"t"),
        );
        let mut p = Vec::new();
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(&(m.len() as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
        assert_eq!(inet_checksum(&m, partial_sum(&p)), 0);
        let u = udp6(s, d, 547, 546, &dhcp6(7, b"tag"));
        assert_eq!(
            inet_checksum(&u[40..], pseudo6(s, d, IPPROTO_UDP, u.len() - 40)),
            0
        );
        // Options are whole 8-byte units.
        assert_eq!((m.len() - 16) % 8, 0);
    }

    #[test]
    fn ipv4_builders_verify() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        for p in [
            udp4(s, d, 1, 2, b"xyz"),
            icmp4_echo(s, d, 7, 1, b"ping"),
            tcp4_syn(s, d, 40000, 80, 1),
        ] {
            assert_eq!(inet_checksum(&p[..20], 0), 0);
            let l4 = &p[20..];
            if p[9] == IPPROTO_ICMP {
                assert_eq!(inet_checksum(l4, 0), 0);
            } else {
                assert_eq!(inet_checksum(l4, pseudo4(s, d, p[9], l4.len())), 0);
            }
        }
        let o = udp4_with_options(s, d, &[1, 1, 1, 1], 67, 68, b"x");
        assert_eq!((o[0], o.len()), (0x46, 24 + 9));
        assert_eq!(inet_checksum(&o[..24], 0), 0);
        assert_eq!(inet_checksum(&o[24..], pseudo4(s, d, IPPROTO_UDP, 9)), 0);
        let f = eth([1; 6], [2; 6], ETH_P_IP, &udp4(s, d, 68, 67, b"x"));
        let (proto, src, dst, udp) = parse_ipv4(&f).unwrap();
        assert_eq!((proto, src, dst, udp.len()), (IPPROTO_UDP, s, d, 9));
    }

    #[test]
    fn stp_is_an_802_3_length_frame() {
        let f = stp([2; 6], b"tag");
        let len = usize::from(u16::from_be_bytes([f[12], f[13]]));
        assert!(len < 0x0600);
        assert_eq!(len, 3 + 35);
        assert!(contains(&f, b"tag"));
        assert!(pause([2; 6], b"tag").len() >= 60);
    }
}
