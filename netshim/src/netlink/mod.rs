//! The one netlink layer (like aya's `sys/`): what every room that talks rtnetlink shares.
//!
//! rtnetlink's request builders are used wherever they exist (`handle.link().get()`,
//! `handle.traffic_filter(i).get().ingress()`, `handle.qdisc().add(i).ingress()`, ...). Raw
//! messages go through [`dump`] and [`request_ack`] only where rtnetlink 0.24 has no builder
//! for the request; each caller says which one it lacks.
//!
//! - [`errno`]: the errno of a kernel reply (`NLMSG_ERROR`), `None` for other failures.
//! - [`is_gone`]: the device is gone (`ENODEV`); [`is_gone_raw`] for aya's netlink errors.
//! - [`is_hook_gone`]: the device, its qdisc or its filter is gone (`ENODEV`, `ENOENT`, or
//!   `EINVAL`, which the kernel answers for a qdisc lookup on a device without one).
//! - [`NetlinkError`]: a failed request, named (`RTM_GETADDR dump`), with rtnetlink's error.

use futures::StreamExt;
use nix::errno::Errno;
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST},
    packet_route::RouteNetlinkMessage,
    Handle,
};

/// A netlink request that failed: which request, and rtnetlink's error.
#[derive(Debug, thiserror::Error)]
#[error("{request}: {source}")]
pub struct NetlinkError {
    /// The request as `ip`/`tc` documentation names it: `RTM_GETROUTE dump`, `RTM_NEWADDR`.
    pub request: &'static str,
    #[source]
    pub source: rtnetlink::Error,
}

impl NetlinkError {
    /// The errno the kernel answered, if it answered one.
    pub fn errno(&self) -> Option<Errno> {
        errno(&self.source)
    }

    /// rtnetlink's error, for callers whose own error type names the request already.
    pub fn into_source(self) -> rtnetlink::Error {
        self.source
    }
}

/// The errno of a kernel reply (`NLMSG_ERROR` with a code); `None` for an error of another
/// kind (socket, decoding, unexpected message).
pub fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

/// The device the request named does not exist (`ENODEV`).
pub fn is_gone(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(Errno::ENODEV)
}

/// The device, or the qdisc/filter the request named on it, does not exist: `ENODEV`,
/// `ENOENT` or `EINVAL` (what the kernel answers for a hook lookup on a device without the
/// qdisc).
pub fn is_hook_gone(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(Errno::ENODEV | Errno::ENOENT | Errno::EINVAL)
    )
}

/// [`is_gone`] for an errno carried as a raw number (`raw_os_error()` of aya's netlink
/// errors and of `io::Error`).
pub fn is_gone_raw(raw_os_error: Option<i32>) -> bool {
    raw_os_error == Some(libc::ENODEV)
}

/// The name of the request `msg` makes (the `RTM_*` message type).
fn request_name(msg: &RouteNetlinkMessage, dump: bool) -> &'static str {
    use RouteNetlinkMessage as M;
    match (msg, dump) {
        (M::GetAddress(_), true) => "RTM_GETADDR dump",
        (M::GetRoute(_), true) => "RTM_GETROUTE dump",
        (M::GetNeighbour(_), true) => "RTM_GETNEIGH dump",
        (M::GetTrafficFilter(_), true) => "RTM_GETTFILTER dump",
        (M::GetQueueDiscipline(_), true) => "RTM_GETQDISC dump",
        (M::GetTrafficClass(_), true) => "RTM_GETTCLASS dump",
        (M::NewAddress(_), _) => "RTM_NEWADDR",
        (M::NewRoute(_), _) => "RTM_NEWROUTE",
        (M::NewNeighbour(_), _) => "RTM_NEWNEIGH",
        (M::DelTrafficFilter(_), _) => "RTM_DELTFILTER",
        (M::NewTrafficFilter(_), _) => "RTM_NEWTFILTER",
        (M::NewQueueDiscipline(_), _) => "RTM_NEWQDISC",
        (M::DelQueueDiscipline(_), _) => "RTM_DELQDISC",
        (M::NewTrafficClass(_), _) => "RTM_NEWTCLASS",
        (_, true) => "netlink dump",
        (_, false) => "netlink request",
    }
}

/// A dump request (`NLM_F_REQUEST | NLM_F_DUMP`): every reply message, or the first error the
/// kernel reported (the dump is read to its end either way, so no reply is left behind).
pub async fn dump(
    handle: &Handle,
    request: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
    let name = request_name(&request, true);
    let fail = |source| NetlinkError {
        request: name,
        source,
    };
    let mut req = NetlinkMessage::from(request);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut replies = handle.clone().request(req).map_err(fail)?;
    let mut out = Vec::new();
    let mut failed = None;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(m) => out.push(m),
            // An NLMSG_ERROR without a code is an ACK (the connection does not forward them).
            NetlinkPayload::Error(e) if e.code.is_some() => failed = failed.or(Some(e)),
            _ => {}
        }
    }
    match failed {
        Some(e) => Err(fail(rtnetlink::Error::NetlinkError(e))),
        None => Ok(out),
    }
}

/// A request answered by an ACK (`NLM_F_REQUEST | NLM_F_ACK | flags`); the first error the
/// kernel reported, if any.
pub async fn request_ack(
    handle: &Handle,
    request: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), NetlinkError> {
    let name = request_name(&request, false);
    let fail = |source| NetlinkError {
        request: name,
        source,
    };
    let mut req = NetlinkMessage::from(request);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut replies = handle.clone().request(req).map_err(fail)?;
    let mut failed = None;
    while let Some(reply) = replies.next().await {
        if let NetlinkPayload::Error(e) = reply.payload {
            if e.code.is_some() {
                failed = failed.or(Some(e));
            }
        }
    }
    failed.map_or(Ok(()), |e| Err(fail(rtnetlink::Error::NetlinkError(e))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::ErrorMessage;
    use std::num::NonZeroI32;

    fn nl_err(errno: Errno) -> rtnetlink::Error {
        let mut m = ErrorMessage::default();
        m.code = NonZeroI32::new(-(errno as i32));
        rtnetlink::Error::NetlinkError(m)
    }

    #[test]
    fn errno_and_gone() {
        assert_eq!(errno(&nl_err(Errno::EBUSY)), Some(Errno::EBUSY));
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
        assert!(is_gone(&nl_err(Errno::ENODEV)));
        assert!(!is_gone(&nl_err(Errno::ENOENT)));
        for e in [Errno::ENODEV, Errno::ENOENT, Errno::EINVAL] {
            assert!(is_hook_gone(&nl_err(e)), "{e}");
        }
        assert!(!is_hook_gone(&nl_err(Errno::EBUSY)));
        assert!(is_gone_raw(
            std::io::Error::from_raw_os_error(libc::ENODEV).raw_os_error()
        ));
        assert!(!is_gone_raw(None));
        let e = NetlinkError {
            request: "RTM_GETADDR dump",
            source: nl_err(Errno::EPERM),
        };
        assert_eq!(e.errno(), Some(Errno::EPERM));
        assert!(e.to_string().starts_with("RTM_GETADDR dump: "), "{e}");
    }
}
