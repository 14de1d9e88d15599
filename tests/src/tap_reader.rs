//! Test helpers to see and inject frames on a tap: a [`TapQueue`] (one queue fd of a tap,
//! opened in some netns) with `read_frame` / `write_frame`, and a tiny Ethernet + IPv4 + UDP
//! frame builder/parser ([`UdpFrame`]).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use netshim::tap::TapError;

use crate::netns_fixture::on_netns_thread;
use crate::relay::{set_nonblocking, BUF_LEN};
use crate::vmm_tap::{self, VNET_HDR_LEN};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// Ethertype IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Ethertype IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// One queue of a tap, non-blocking, with a virtio-net header in front of every frame.
#[derive(Debug)]
pub struct TapQueue {
    name: String,
    fd: OwnedFd,
}

impl TapQueue {
    /// Opens a queue of the existing tap `name` in the netns at `netns` (see
    /// [`vmm_tap::open_tap_queue`]). `offloads`: `None` for a plain reader that gets segmented,
    /// checksummed frames; `Some(vmm_tap::VMM_OFFLOADS)` to behave like a VMM.
    pub fn open_in(
        netns: impl AsRef<Path>,
        name: &str,
        multi_queue: bool,
        offloads: Option<u32>,
    ) -> Result<TapQueue, TapError> {
        let fd = on_netns_thread(netns, || {
            vmm_tap::open_tap_queue(name, multi_queue, offloads)
        })?;
        Ok(Self::from_fd(name, fd))
    }

    /// Creates a new non-persistent single-queue tap `name` in the netns at `netns` (it goes
    /// away with this queue), see [`vmm_tap::create_tap_queue`].
    pub fn create_in(
        netns: impl AsRef<Path>,
        name: &str,
        offloads: Option<u32>,
    ) -> Result<TapQueue, TapError> {
        let fd = on_netns_thread(netns, || vmm_tap::create_tap_queue(name, false, offloads))?;
        Ok(Self::from_fd(name, fd))
    }

    /// Wraps a tap queue fd (switched to non-blocking).
    pub fn from_fd(name: &str, fd: OwnedFd) -> TapQueue {
        set_nonblocking(fd.as_fd()).expect("O_NONBLOCK on tap fd");
        TapQueue {
            name: name.to_owned(),
            fd,
        }
    }

    /// The tap's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up the fd (e.g. to hand it to a [`crate::relay::Relay`]).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Reads one frame including its virtio-net header, waiting up to `timeout`.
    pub fn read_raw(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; BUF_LEN];
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Some(buf);
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => panic!("read tap {}: {e}", self.name),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
            );
        }
    }

    /// Reads one frame (without the virtio-net header), waiting up to `timeout`.
    pub fn read_frame(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.read_raw(timeout)
            .map(|f| f.get(VNET_HDR_LEN..).unwrap_or_default().to_vec())
    }

    /// Reads frames until one satisfies `pred` (others, e.g. IPv6 router solicitations, are
    /// skipped) or `timeout` passes.
    pub fn read_matching(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.read_frame(left)?;
            if pred(&f) {
                return Some(f);
            }
        }
    }

    /// Reads until a UDP/IPv4 frame to `dst_port` arrives.
    pub fn read_udp(&self, timeout: Duration, dst_port: u16) -> Option<UdpFrame> {
        self.read_matching(timeout, |f| {
            UdpFrame::parse(f).is_some_and(|u| u.dst_port == dst_port)
        })
        .and_then(|f| UdpFrame::parse(&f))
    }

    /// Writes one frame, prepending a zeroed virtio-net header (no checksum offload, no GSO:
    /// the frame's checksums must be right, or UDP checksum 0).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(VNET_HDR_LEN + frame.len());
        buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        buf.extend_from_slice(frame);
        self.write_raw(&buf)
    }

    /// Writes one frame that already carries a virtio-net header.
    pub fn write_raw(&self, buf: &[u8]) -> io::Result<()> {
        loop {
            match nix::unistd::write(self.fd.as_fd(), buf) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(100u8));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (as `ip link` prints it), with [`netshim::interfaces::Mac`].
pub fn parse_mac(s: &str) -> Option<Mac> {
    s.trim()
        .parse::<netshim::interfaces::Mac>()
        .ok()
        .map(|m| m.0)
}

/// Formats `aa:bb:cc:dd:ee:ff`, as [`netshim::interfaces::Mac`] does.
pub fn format_mac(mac: &Mac) -> String {
    netshim::interfaces::Mac(*mac).to_string()
}

/// The Internet checksum (RFC 1071) over `data`, starting from `initial` (a partial sum).
pub fn inet_checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 header checksum of a 20-byte (or longer) header whose checksum field is zero.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    inet_checksum(header, 0)
}

/// An Ethernet + IPv4 + UDP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFrame {
    /// Ethernet destination.
    pub dst_mac: Mac,
    /// Ethernet source.
    pub src_mac: Mac,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
}

impl UdpFrame {
    /// Serialises the frame with a correct IPv4 header checksum and UDP checksum (TTL 64,
    /// DF set).
    pub fn build(&self) -> Vec<u8> {
        let udp_len = 8 + self.payload.len();
        let ip_len = 20 + udp_len;
        assert!(ip_len <= 65535, "UDP payload too large");
        let mut f = Vec::with_capacity(14 + ip_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        // IPv4 header
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = libc::IPPROTO_UDP as u8;
        ip[12..16].copy_from_slice(&self.src_ip.octets());
        ip[16..20].copy_from_slice(&self.dst_ip.octets());
        let csum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&ip);
        // UDP header + payload
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&self.src_port.to_be_bytes());
        udp.extend_from_slice(&self.dst_port.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src_ip.octets());
        pseudo.extend_from_slice(&self.dst_ip.octets());
        pseudo.extend_from_slice(&[0, libc::IPPROTO_UDP as u8]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let partial = sum16(&pseudo);
        let mut ucsum = inet_checksum(&udp, partial);
        if ucsum == 0 {
            ucsum = 0xffff;
        }
        udp[6..8].copy_from_slice(&ucsum.to_be_bytes());
        f.extend_from_slice(&udp);
        f
    }

    /// Parses an untagged Ethernet + IPv4 (any options) + UDP frame; `None` for anything
    /// else or a bad IPv4 header checksum. The UDP checksum is not verified.
    pub fn parse(frame: &[u8]) -> Option<UdpFrame> {
        if frame.len() < 14 + 20 + 8 {
            return None;
        }
        if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
            return None;
        }
        let ip = &frame[14..];
        if ip[0] >> 4 != 4 || ip[9] != libc::IPPROTO_UDP as u8 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ihl < 20 || total < ihl + 8 || total > ip.len() || inet_checksum(&ip[..ihl], 0) != 0 {
            return None;
        }
        let udp = &ip[ihl..total];
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if ulen < 8 || ulen > udp.len() {
            return None;
        }
        Some(UdpFrame {
            dst_mac: frame[0..6].try_into().ok()?,
            src_mac: frame[6..12].try_into().ok()?,
            src_ip: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst_ip: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..ulen].to_vec(),
        })
    }
}

/// Builds an Ethernet + IPv4 + UDP frame (see [`UdpFrame::build`]).
pub fn udp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    UdpFrame {
        dst_mac,
        src_mac,
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        payload: payload.to_vec(),
    }
    .build()
}

/// Ones'-complement partial sum (not folded to 16 bits, not inverted).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip() {
        let m = parse_mac("02:00:0a:4d:00:02").unwrap();
        assert_eq!(m, [2, 0, 0x0a, 0x4d, 0, 2]);
        assert_eq!(format_mac(&m), "02:00:0a:4d:00:02");
        assert!(parse_mac("02:00:0a:4d:00").is_none());
        assert!(parse_mac("02:00:0a:4d:00:02:03").is_none());
        assert!(parse_mac("02:00:0a:4d:00:zz").is_none());
    }

    #[test]
    fn checksum_known_vector() {
        // Classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&hdr), 0xb861);
    }

    #[test]
    fn udp_build_parse() {
        let f = udp_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            Ipv4Addr::new(10, 77, 1, 1),
            Ipv4Addr::new(10, 77, 1, 2),
            40000,
            5000,
            b"hello",
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        // IP header sums to zero with its checksum.
        assert_eq!(inet_checksum(&f[14..34], 0), 0);
        // UDP checksum verifies over the pseudo header.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[26..34]);
        pseudo.extend_from_slice(&[0, 17, 0, 13]);
        assert_eq!(inet_checksum(&f[34..], sum16(&pseudo)), 0);
        let u = UdpFrame::parse(&f).unwrap();
        assert_eq!(u.src_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(u.dst_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(u.src_port, 40000);
        assert_eq!(u.dst_port, 5000);
        assert_eq!(u.payload, b"hello");
        assert_eq!(u.build(), f);
        let mut bad = f.clone();
        bad[22] ^= 1; // TTL changes, checksum no longer matches
        assert!(UdpFrame::parse(&bad).is_none());
    }
}
