//! What arrives on a device: an `AF_PACKET` socket bound to it (all protocols), which sees
//! every frame the device receives before the stack handles it, GSO packets whole and
//! whatever the stack would drop later. Used to tell whether a frame written into a tap
//! reached the client's device at all.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use crate::netns_fixture::on_netns_thread;

/// An `AF_PACKET` capture of the frames `dev` receives (not those it sends).
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    /// Starts capturing on `dev` in the netns at `netns`.
    pub fn on(netns: impl AsRef<Path>, dev: &str) -> Sniffer {
        let dev = dev.to_owned();
        on_netns_thread(netns, move || {
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str())
                .unwrap_or_else(|e| panic!("if_nametoindex {dev}: {e}"));
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the fd is owned right away.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: raw is a fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: bind(2) with a valid sockaddr_ll of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                rc,
                0,
                "bind AF_PACKET to {dev}: {}",
                io::Error::last_os_error()
            );
            Sniffer { fd }
        })
    }

    /// The frames received until nothing has come for `quiet` (at most 5 s), those
    /// `pred` accepts.
    pub fn received(&self, quiet: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        let mut last = Instant::now();
        let mut buf = vec![0u8; 70_000];
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        while Instant::now() < end && last.elapsed() < quiet {
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: recvfrom(2) into buffers of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            last = Instant::now();
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let frame = &buf[..n as usize];
            if pred(frame) {
                out.push(frame.to_vec());
            }
        }
        out
    }
}
