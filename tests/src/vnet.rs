//! Frames as a VM writes them into its tap: a virtio-net header (GSO type and size, checksum
//! offload) before an Ethernet + IPv4 + TCP or UDP frame. The header may lie about the frame
//! (a GSO type that does not fit its transport protocol, a segment size over the MTU, ...):
//! a VMM's guest can write anything.

use std::net::Ipv4Addr;

use crate::tap_reader::{ipv4_checksum, Mac, ETH_P_IP};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (10 bytes, little endian: tun's default on x86).
#[derive(Debug, Clone, Copy, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn bytes(&self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// The transport header of an [`l4_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// 20 bytes, ACK|PSH, seq 1.
    Tcp,
    /// 8 bytes.
    Udp,
    /// No transport header at all (the frame ends after the IPv4 header + payload).
    None,
}

/// An Ethernet + IPv4 (protocol of `l4`) + `l4` header + `payload` frame, ports
/// `src_port` → `dst_port`. The L4 checksum field holds the pseudo-header sum (what a VM
/// writes with `NEEDS_CSUM`); the IPv4 checksum is right.
#[allow(clippy::too_many_arguments)]
pub fn l4_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    l4: L4,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let (proto, l4_len) = match l4 {
        L4::Tcp => (libc::IPPROTO_TCP as u8, 20),
        L4::Udp => (libc::IPPROTO_UDP as u8, 8),
        L4::None => (libc::IPPROTO_TCP as u8, 0),
    };
    let ip_len = 20 + l4_len + payload.len();
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let csum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    // Pseudo-header sum (not complemented), as NEEDS_CSUM wants it in the checksum field.
    let l4_total = (l4_len + payload.len()) as u32;
    let mut sum: u32 = u32::from(proto) + l4_total;
    for o in [src_ip.octets(), dst_ip.octets()] {
        sum += u32::from(u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([o[2], o[3]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let pseudo = (sum as u16).to_be_bytes();
    match l4 {
        L4::Tcp => {
            let mut t = [0u8; 20];
            t[0..2].copy_from_slice(&src_port.to_be_bytes());
            t[2..4].copy_from_slice(&dst_port.to_be_bytes());
            t[4..8].copy_from_slice(&1u32.to_be_bytes());
            t[8..12].copy_from_slice(&1u32.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = 0x18;
            t[14..16].copy_from_slice(&65535u16.to_be_bytes());
            t[16..18].copy_from_slice(&pseudo);
            f.extend_from_slice(&t);
        }
        L4::Udp => {
            f.extend_from_slice(&src_port.to_be_bytes());
            f.extend_from_slice(&dst_port.to_be_bytes());
            f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            f.extend_from_slice(&pseudo);
        }
        L4::None => {}
    }
    f.extend_from_slice(payload);
    f
}

/// `hdr` followed by `frame`, ready for [`crate::TapQueue::write_raw`].
pub fn with_hdr(hdr: &VnetHdr, frame: &[u8]) -> Vec<u8> {
    let mut out = hdr.bytes().to_vec();
    out.extend_from_slice(frame);
    out
}
