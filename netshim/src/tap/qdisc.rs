//! The tap's root qdisc, which every frame to the VM passes on the eBPF path.
//!
//! `bpf_redirect` to the tap's egress is `dev_queue_xmit` on the tap: the frame goes through
//! the tap's root qdisc before `tun_net_xmit` puts it in the VMM's ring. tun never stops its
//! transmit queue (a full ring drops the frame in `tun_net_xmit`), so that qdisc never holds
//! a frame and is pure cost: the kernel's default (`pfifo_fast`) took ~150 ns of the ~550 ns
//! per small frame the eBPF path spends towards the VM (issue 14, `perf record`). netshim
//! gives the taps its eBPF datapath connects `noqueue` before they go up (no grace period
//! then, and no frame in flight). A root qdisc that is not the kernel's default is someone
//! else's and is kept.

use rtnetlink::{
    packet_core::{NLM_F_CREATE, NLM_F_REPLACE},
    packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage},
        RouteNetlinkMessage,
    },
    Handle,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::netlink::{self, NetlinkError};

/// What the taps of an endpoint get as their root qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QdiscPolicy {
    /// Whatever the kernel attaches when the tap goes up (`net.core.default_qdisc`).
    KernelDefault,
    /// `noqueue`, when the root qdisc is still the kernel's (see [`set_noqueue`]).
    Noqueue,
}

/// The tap's root qdisc after attach, as `attach` reports it (`status` shows the kind the
/// kernel lists now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TapQdisc {
    /// The kernel's default, attached when the tap went up (the none model, the mirred
    /// backend: as kata leaves it).
    #[default]
    KernelDefault,
    /// `noqueue`: the frames the datapath redirects go straight to the tap's driver.
    Noqueue,
    /// A root qdisc someone else put on the tap (kind, handle `major:`), kept as it was.
    Kept { kind: String, handle: String },
}

/// A tap's root qdisc as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootQdisc {
    pub kind: String,
    pub handle: TcHandle,
}

impl RootQdisc {
    /// The kernel's own: `noop` on a device never up, or one it attached itself on up
    /// (handle `0:`; a qdisc added through netlink always has a handle of its own).
    pub fn is_kernel_default(&self) -> bool {
        self.kind == "noop" || self.handle == TcHandle::UNSPEC
    }
}

/// The root qdisc of `ifindex`, `None` when the kernel lists none.
pub async fn root_qdisc(handle: &Handle, ifindex: u32) -> Result<Option<RootQdisc>, NetlinkError> {
    let mut request = TcMessage::with_index(ifindex as i32);
    request.header.parent = TcHandle::UNSPEC;
    let replies = netlink::dump(handle, RouteNetlinkMessage::GetQueueDiscipline(request)).await?;
    Ok(replies.iter().find_map(|m| root_of(m, ifindex)))
}

/// The root qdisc `msg` (from an RTM_GETQDISC dump) describes, if it is `ifindex`'s.
fn root_of(msg: &RouteNetlinkMessage, ifindex: u32) -> Option<RootQdisc> {
    let RouteNetlinkMessage::NewQueueDiscipline(m) = msg else {
        return None;
    };
    if m.header.index != ifindex as i32 || m.header.parent != TcHandle::ROOT {
        return None;
    }
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(kind) => Some(RootQdisc {
            kind: kind.clone(),
            handle: m.header.handle,
        }),
        _ => None,
    })
}

/// Makes `noqueue` the root qdisc of the tap `ifindex` unless a qdisc other than the
/// kernel's default is there (then it is kept and reported). Call it before the tap goes up:
/// on a device that is up the kernel deactivates it to swap the qdisc.
pub async fn set_noqueue(handle: &Handle, ifindex: u32) -> Result<TapQdisc, NetlinkError> {
    match root_qdisc(handle, ifindex).await? {
        Some(root) if root.kind == "noqueue" => return Ok(TapQdisc::Noqueue),
        Some(root) if !root.is_kernel_default() => {
            return Ok(TapQdisc::Kept {
                handle: format!("{:x}:", root.handle.major),
                kind: root.kind,
            })
        }
        _ => {}
    }
    let mut request = TcMessage::with_index(ifindex as i32);
    request.header.parent = TcHandle::ROOT;
    request
        .attributes
        .push(TcAttribute::Kind("noqueue".to_string()));
    netlink::request_ack(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(request),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await?;
    Ok(TapQdisc::Noqueue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ifindex: i32, parent: TcHandle, handle: TcHandle, kind: &str) -> RouteNetlinkMessage {
        let mut m = TcMessage::with_index(ifindex);
        m.header.parent = parent;
        m.header.handle = handle;
        m.attributes.push(TcAttribute::Kind(kind.to_string()));
        RouteNetlinkMessage::NewQueueDiscipline(m)
    }

    #[test]
    fn only_the_root_of_the_device_counts() {
        let root = listed(7, TcHandle::ROOT, TcHandle::UNSPEC, "pfifo_fast");
        assert_eq!(
            root_of(&root, 7),
            Some(RootQdisc {
                kind: "pfifo_fast".into(),
                handle: TcHandle::UNSPEC
            })
        );
        assert_eq!(root_of(&root, 8), None, "another device's");
        let clsact = listed(7, TcHandle::INGRESS, TcHandle::from(0xffff0000), "clsact");
        assert_eq!(root_of(&clsact, 7), None, "not the root");
    }

    #[test]
    fn kernel_defaults_are_replaced_and_others_kept() {
        let default = |kind: &str, major| RootQdisc {
            kind: kind.into(),
            handle: TcHandle { major, minor: 0 },
        };
        assert!(default("noop", 0).is_kernel_default());
        assert!(default("pfifo_fast", 0).is_kernel_default());
        assert!(default("fq_codel", 0).is_kernel_default());
        assert!(default("mq", 0).is_kernel_default());
        assert!(
            !default("pfifo_fast", 0x8001).is_kernel_default(),
            "added by tc"
        );
        assert!(!default("tbf", 1).is_kernel_default());
    }
}
