//! Step 3 for cls_bpf hooks: the kernel's in-place filter change at the filter's own
//! priority and handle (see [`super`]).

use std::path::Path;

use aya::programs::{
    tc::{SchedClassifierLink, TcHandle as AyaTcHandle},
    TcAttachType,
};
use futures::TryStreamExt;
use netshim_common::{from_fixed, PROGRAM_NAME};
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcMessage, TcOption};

use super::{HookSwap, Loaded, SkippedHook, Swapped, UpgradeError};
use crate::{datapath::ebpf, netlink};

/// One of our cls_bpf filters, as the kernel dumps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BpfFilter {
    pub(super) prio: u16,
    pub(super) handle: u32,
    pub(super) prog_id: u32,
}

/// Our filters (`netshim_redirect`) under the clsact ingress hook of `ifindex` (rtnetlink's
/// `traffic_filter(i).get().ingress()`: RTM_GETTFILTER dump of parent ffff:fff2). `None` when
/// the device or its clsact qdisc is gone.
pub(super) async fn our_filters(
    handle: &rtnetlink::Handle,
    dev: &str,
    ifindex: u32,
) -> Result<Option<Vec<BpfFilter>>, UpgradeError> {
    let filters: Result<Vec<TcMessage>, _> = handle
        .traffic_filter(ifindex as i32)
        .get()
        .ingress()
        .execute()
        .try_collect()
        .await;
    match filters {
        Ok(msgs) => Ok(Some(msgs.iter().filter_map(parse_bpf_filter).collect())),
        Err(e) if netlink::is_hook_gone(&e) => Ok(None),
        Err(source) => Err(UpgradeError::FilterDump {
            dev: dev.to_owned(),
            ifindex,
            source: Box::new(source),
        }),
    }
}

pub(super) fn parse_bpf_filter(msg: &TcMessage) -> Option<BpfFilter> {
    let is_bpf = msg
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "bpf"));
    if !is_bpf {
        return None;
    }
    let opts = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => Some(o),
        _ => None,
    })?;
    let mut name = None;
    let mut prog_id = None;
    for o in opts {
        match o {
            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = Some(n.as_str()),
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => prog_id = Some(*id),
            _ => {}
        }
    }
    (name == Some(PROGRAM_NAME)).then_some(())?;
    Some(BpfFilter {
        prio: (msg.header.info >> 16) as u16,
        handle: u32::from(msg.header.handle),
        prog_id: prog_id?,
    })
}

/// Replaces the program of every netshim cls_bpf filter on the devices recorded in `dir`.
/// Must run inside the sandbox netns.
pub async fn swap_cls_bpf_filters(
    handle: &rtnetlink::Handle,
    dir: &Path,
    loaded: &mut Loaded,
) -> Result<Swapped, UpgradeError> {
    let mut out = Swapped::default();
    let mut found = Vec::new();
    for (_, record) in ebpf::recorded_endpoints(dir)? {
        for (name, ifindex) in [
            (&record.pod_name, record.pod_ifindex),
            (&record.tap_name, record.tap_ifindex),
        ] {
            let dev = String::from_utf8_lossy(from_fixed(name)).into_owned();
            match crate::interfaces::by_name(handle, &dev).await {
                Ok(Some(i)) if i.ifindex == ifindex => {}
                Ok(_) => {
                    out.skipped.push(SkippedHook {
                        device: dev,
                        reason: format!("no device of that name with ifindex {ifindex}"),
                    });
                    continue;
                }
                Err(source) => {
                    return Err(UpgradeError::FilterDump {
                        dev,
                        ifindex,
                        source: Box::new(source),
                    })
                }
            }
            match our_filters(handle, &dev, ifindex).await? {
                Some(filters) if !filters.is_empty() => {
                    found.extend(filters.into_iter().map(|f| (dev.clone(), f)))
                }
                _ => out.skipped.push(SkippedHook {
                    device: dev,
                    reason: format!("no {PROGRAM_NAME} filter on its clsact ingress"),
                }),
            }
        }
    }
    let new_prog_id = loaded.prog_id;
    for (dev, f) in &found {
        let replace_err = |source| UpgradeError::FilterReplace {
            dev: dev.clone(),
            prio: f.prio,
            handle: f.handle,
            source: Box::new(source),
        };
        let link = SchedClassifierLink::attached(
            dev,
            TcAttachType::Ingress,
            f.prio,
            AyaTcHandle::from(f.handle),
            None,
        )
        .map_err(|e| replace_err(aya::programs::tc::TcError::IoError(e).into()))?;
        let program = loaded.program();
        // attach_to_link on a netlink link: RTM_NEWTFILTER at the same parent, priority and
        // handle, without NLM_F_CREATE | NLM_F_EXCL, i.e. a change of the existing filter.
        let id = program.attach_to_link(link).map_err(replace_err)?;
        let link = program.take_link(id).map_err(replace_err)?;
        // The filter lives in the qdisc; dropping the handle would delete it.
        std::mem::forget(link);
    }
    for (dev, f) in &found {
        let ifindex = current_ifindex(handle, dev).await;
        let now = match ifindex {
            Some(i) => our_filters(handle, dev, i).await?.unwrap_or_default(),
            None => Vec::new(),
        };
        let current = now
            .iter()
            .find(|n| n.prio == f.prio && n.handle == f.handle)
            .map(|n| n.prog_id);
        if current != Some(new_prog_id) {
            return Err(UpgradeError::FilterNotReplaced {
                dev: dev.clone(),
                prio: f.prio,
                handle: f.handle,
                expected: new_prog_id,
                found: current,
            });
        }
        out.swapped.push(HookSwap {
            device: dev.clone(),
            link_id: None,
            prio: Some(f.prio),
            handle: Some(f.handle),
            old_prog_id: f.prog_id,
            new_prog_id,
        });
    }
    Ok(out)
}

pub(super) async fn current_ifindex(handle: &rtnetlink::Handle, dev: &str) -> Option<u32> {
    crate::interfaces::by_name(handle, dev)
        .await
        .ok()
        .flatten()
        .map(|i| i.ifindex)
}
