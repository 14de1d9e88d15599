//! The frame relay between two tap queues: what a VMM's userspace virtio-net backend does
//! between the host tap and the guest, minus the guest.
//!
//! One thread per direction does `read` -> `write` of whole frames INCLUDING the virtio-net
//! header, so when both taps are opened with `IFF_VNET_HDR` and the same offloads
//! ([`crate::vmm_tap::VMM_OFFLOADS`]) GSO frames (up to 64 KiB) cross whole and checksums stay
//! partial. Both fds are switched to non-blocking; each thread `poll`s with a short timeout so
//! it notices the shutdown flag, then drains its source until `EAGAIN`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Serialize;

use crate::vmm_tap::VNET_HDR_LEN;

/// Largest frame the relay accepts: a 64 KiB GSO frame plus Ethernet/VLAN headers.
pub const MAX_FRAME: usize = 65536 + 256;
/// Buffer size per direction: virtio-net header + [`MAX_FRAME`].
pub const BUF_LEN: usize = VNET_HDR_LEN + MAX_FRAME;
/// How often the threads look at the shutdown flag when idle.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Live counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Frames written to the destination.
    pub frames: AtomicU64,
    /// Bytes of those frames, without the virtio-net header.
    pub bytes: AtomicU64,
    /// Writes the destination refused (frame dropped), e.g. EIO while it is down.
    pub write_errors: AtomicU64,
    /// Frames too short to carry a virtio-net header (dropped).
    pub runts: AtomicU64,
}

impl DirectionStats {
    /// A snapshot.
    pub fn summary(&self) -> DirectionSummary {
        DirectionSummary {
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            runts: self.runts.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one direction's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectionSummary {
    /// Frames relayed.
    pub frames: u64,
    /// Bytes relayed (without virtio-net headers).
    pub bytes: u64,
    /// Frames the destination refused.
    pub write_errors: u64,
    /// Frames shorter than a virtio-net header.
    pub runts: u64,
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RelaySummary {
    /// From the first fd (`a`) to the second (`b`).
    pub a_to_b: DirectionSummary,
    /// From `b` to `a`.
    pub b_to_a: DirectionSummary,
}

/// A running two-thread relay between tap fds `a` and `b`.
#[derive(Debug)]
pub struct Relay {
    shutdown: Arc<AtomicBool>,
    a_to_b: Arc<DirectionStats>,
    b_to_a: Arc<DirectionStats>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Relay {
    /// Starts relaying between two tap queue fds (both opened with `IFF_VNET_HDR` and the
    /// same vnet header size). Takes ownership of the fds; they are closed when the relay
    /// stops.
    pub fn start(a: OwnedFd, b: OwnedFd) -> io::Result<Relay> {
        set_nonblocking(a.as_fd())?;
        set_nonblocking(b.as_fd())?;
        let a = Arc::new(a);
        let b = Arc::new(b);
        let shutdown = Arc::new(AtomicBool::new(false));
        let a_to_b = Arc::new(DirectionStats::default());
        let b_to_a = Arc::new(DirectionStats::default());
        let mut threads = Vec::with_capacity(2);
        for (src, dst, stats, label) in [
            (a.clone(), b.clone(), a_to_b.clone(), "relay-a2b"),
            (b, a, b_to_a.clone(), "relay-b2a"),
        ] {
            let flag = shutdown.clone();
            let t = std::thread::Builder::new()
                .name(label.into())
                .spawn(move || pump(src.as_fd(), dst.as_fd(), &stats, &flag));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shutdown.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Relay {
            shutdown,
            a_to_b,
            b_to_a,
            threads,
        })
    }

    /// Current counters.
    pub fn summary(&self) -> RelaySummary {
        RelaySummary {
            a_to_b: self.a_to_b.summary(),
            b_to_a: self.b_to_a.summary(),
        }
    }

    /// Live counters of a -> b.
    pub fn a_to_b(&self) -> &Arc<DirectionStats> {
        &self.a_to_b
    }

    /// Live counters of b -> a.
    pub fn b_to_a(&self) -> &Arc<DirectionStats> {
        &self.b_to_a
    }

    /// Whether a relay thread has exited (only happens on an error, e.g. the tap vanished).
    pub fn is_broken(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }

    /// Stops both threads (within [`POLL_INTERVAL`]), closes the fds and returns the final
    /// counters, or the first error a thread hit.
    pub fn stop(mut self) -> (RelaySummary, io::Result<()>) {
        self.shutdown.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        (self.summary(), result)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Puts an fd in non-blocking mode.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Waits until `fd` has `events` or the timeout passes; errors on POLLERR/POLLHUP/POLLNVAL
/// (a tun fd reports POLLERR once its device is gone).
fn wait_for(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, events)];
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(0) => Ok(false),
        Ok(_) => {
            let rev = fds[0].revents().unwrap_or(PollFlags::empty());
            if rev.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                Err(io::Error::other(format!(
                    "poll on fd {}: {rev:?} (tap gone?)",
                    fd.as_raw_fd()
                )))
            } else {
                Ok(rev.intersects(events))
            }
        }
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn pump(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    stats: &DirectionStats,
    shutdown: &AtomicBool,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_LEN];
    while !shutdown.load(Ordering::Relaxed) {
        if !wait_for(src, PollFlags::POLLIN, POLL_INTERVAL)? {
            continue;
        }
        // Drain everything that is queued before polling again.
        loop {
            let n = match nix::unistd::read(src, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::other(format!("read tap fd: {e}"))),
            };
            if n <= VNET_HDR_LEN {
                stats.runts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if write_frame(dst, &buf[..n], shutdown)? {
                stats.frames.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add((n - VNET_HDR_LEN) as u64, Ordering::Relaxed);
            } else {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    Ok(())
}

/// Writes one whole frame (one `write` = one frame on a tap). Returns Ok(false) if the
/// destination dropped it (EIO while down, EINVAL for a frame it rejects, ...).
fn write_frame(dst: BorrowedFd<'_>, frame: &[u8], shutdown: &AtomicBool) -> io::Result<bool> {
    loop {
        match nix::unistd::write(dst, frame) {
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                wait_for(dst, PollFlags::POLLOUT, POLL_INTERVAL)?;
            }
            Err(Errno::EBADFD) | Err(Errno::EBADF) => {
                return Err(io::Error::other("write tap fd: device gone"))
            }
            Err(_) => return Ok(false),
        }
    }
}
