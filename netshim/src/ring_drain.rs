//! Draining a ring buffer whenever its fd is readable, on the caller's tokio runtime: the
//! piece the datapath's log follower ([`crate::ebpf_log`]) and the source guard's record
//! follower ([`crate::guard::events`]) share.

use std::os::fd::AsRawFd;

use tokio::io::{unix::AsyncFd, Interest};

/// Calls `drain` on `ring` at once (what was written before we came) and then whenever its
/// fd is readable, until aborted; `what` names the ring buffer in warnings.
///
/// # Safety
/// `ring` must own the fd it returns (for aya: a value holding the map's `MapData`): the
/// AsyncFd owns `ring` from here on, so the fd stays open and the same for its whole life.
pub(crate) async unsafe fn drain_when_readable<T: AsRawFd>(
    ring: T,
    what: &str,
    mut drain: impl FnMut(&mut T),
) {
    // SAFETY: the caller's promise above.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot poll {what}: {e}");
            return;
        }
    };
    drain(fd.get_mut());
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("polling {what}: {e}");
                return;
            }
        };
        drain(guard.get_inner_mut());
        guard.clear_ready();
    }
}
