//! Making an endpoint's shapers what a [`Limits`] asks for, in its netns (attach and
//! `netshim limit`): per direction, an HTB tree is made, changed in place (a new rate takes
//! effect on the next dequeue; the queue and its frames stay) or removed.
//!
//! A root qdisc on the shaping device that is neither the kernel's default, `noqueue`, nor
//! netshim's own tree is someone else's: the limit is refused (exit 3), never replaced.

use std::path::Path;

use rtnetlink::{
    packet_core::{NLM_F_CREATE, NLM_F_REPLACE},
    packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage},
        RouteNetlinkMessage,
    },
    Handle,
};

use super::{
    htb::{self, HtbParams},
    placement::{self, ShapedDevice},
    EndpointShapers, HtbProfile, LimitDirection, Limits, Shaper, ShaperCounters,
};
use crate::{
    datapath::{ebpf, RedirectMode, TcBackend},
    model::InternetworkingModel,
    netlink::NetlinkError,
    netns::Netns,
    sandbox::EndpointReport,
    tap::qdisc::{self, TapQdisc},
    Error, Result,
};

/// Where an endpoint sits: what [`apply`] needs besides its report.
#[derive(Debug, Clone, Copy)]
pub struct Sandboxed<'a> {
    pub netns: &'a Netns,
    pub model: InternetworkingModel,
    pub backend: Option<TcBackend>,
    /// The eBPF datapath's pin directory.
    pub pin_dir: Option<&'a Path>,
}

/// Checks that `limits` can be applied to `endpoint` (a device for every direction asked
/// for), before anything changes.
pub fn check(at: &Sandboxed<'_>, endpoint: &EndpointReport, limits: &Limits) -> Result<()> {
    for direction in LimitDirection::ALL {
        if limits.get(direction).is_some() {
            placement::device_for(at.model, at.backend, endpoint, direction).map_err(|why| {
                Error::InvalidOptions(format!(
                    "netns {}: {} limit of {}: {why}",
                    at.netns,
                    direction.as_str(),
                    endpoint.endpoint.name
                ))
            })?;
        }
    }
    Ok(())
}

/// Makes `endpoint`'s shapers `limits` with `profile`; `endpoint.shapers` is what there is
/// now and becomes what there is after. `endpoint.redirect` follows the tap's redirect.
pub async fn apply(
    handle: &Handle,
    at: &Sandboxed<'_>,
    endpoint: &mut EndpointReport,
    limits: &Limits,
    profile: HtbProfile,
) -> Result<()> {
    check(at, endpoint, limits)?;
    for direction in LimitDirection::ALL {
        let current = endpoint.shapers.get(direction).cloned();
        let want = limits.get(direction);
        let new = match (want, current) {
            (None, None) => None,
            (None, Some(old)) => {
                remove(handle, at, endpoint, &old).await?;
                None
            }
            (Some(limit), current) => {
                let device = placement::device_for(at.model, at.backend, endpoint, direction)
                    .expect("checked above");
                let params = HtbParams::for_profile(profile, limit.rate_bps, limit.burst_bytes);
                let displaced_peer = current.as_ref().is_some_and(|c| c.displaced_peer);
                let device = make_tree(handle, at, device, &params).await?;
                let displaced_peer = displaced_peer
                    || (direction == LimitDirection::Tx && displace_peer(at, endpoint)?);
                Some(Shaper {
                    rate_bps: params.rate_bps,
                    burst_bytes: params.burst_bytes,
                    burst_given: limit.burst_bytes,
                    profile,
                    device: device.name,
                    ifindex: device.ifindex,
                    displaced_peer,
                    fed_from: device.fed_from.map(|d| super::FedFrom {
                        device: d.name,
                        ifindex: d.ifindex,
                    }),
                })
            }
        };
        *endpoint.shapers.slot(direction) = new;
    }
    Ok(())
}

/// The tree of `params` on `device`; an IFB device is made first and fed from its device's
/// ingress after (a failure takes an IFB made here away again). Returns the device with its
/// ifindex.
async fn make_tree(
    handle: &Handle,
    at: &Sandboxed<'_>,
    device: ShapedDevice,
    params: &HtbParams,
) -> Result<ShapedDevice> {
    let Some(from) = device.fed_from.clone() else {
        install_or_change(handle, at, &device, params).await?;
        return Ok(device);
    };
    let (ifb, made) = super::ifb::ensure(handle, &device.name)
        .await
        .map_err(|e| ifb_error(at, e))?;
    let device = ShapedDevice {
        ifindex: ifb.ifindex,
        ..device
    };
    let fed = async {
        install_or_change(handle, at, &device, params).await?;
        crate::datapath::mirred::redirect_ingress(handle, &from, &ifb)
            .await
            .map_err(Error::mirred(at.netns))
    }
    .await;
    if let Err(e) = fed {
        if made {
            if let Err(undo) = super::ifb::delete(handle, &ifb).await {
                tracing::warn!("taking back {}: {undo}", ifb.name);
            }
        }
        return Err(e);
    }
    Ok(device)
}

/// Installs the tree on `device`, or changes its classes when netshim's tree is there.
async fn install_or_change(
    handle: &Handle,
    at: &Sandboxed<'_>,
    device: &ShapedDevice,
    params: &HtbParams,
) -> Result<()> {
    let fail = |source: NetlinkError| Error::Shaper {
        netns: at.netns.to_string(),
        device: device.name.clone(),
        source: Box::new(source),
    };
    let ours = htb::read(handle, device.ifindex).await.map_err(fail)?;
    match ours {
        Some(tree) if tree.profile == params.profile => {
            return htb::change(handle, device.ifindex, params)
                .await
                .map_err(fail)
        }
        // Another profile's tree: made anew (its queue goes; a rate change keeps it).
        Some(_) => {
            htb::remove(handle, device.ifindex).await.map_err(fail)?;
        }
        None => {}
    }
    if let Some(root) = qdisc::root_qdisc(handle, device.ifindex)
        .await
        .map_err(fail)?
    {
        if !root.is_kernel_default() && root.kind != "noqueue" {
            return Err(Error::RootQdiscTaken {
                netns: at.netns.to_string(),
                device: device.name.clone(),
                kind: root.kind,
                handle: format!("{:x}:", root.handle.major),
            });
        }
    }
    htb::install(handle, device.ifindex, params)
        .await
        .map_err(fail)
}

/// tx on the eBPF datapath: `bpf_redirect_peer` skips the pod device's egress, where the
/// shaper is, so the tap's entry is switched to `bpf_redirect`. Whether it was switched.
fn displace_peer(at: &Sandboxed<'_>, endpoint: &mut EndpointReport) -> Result<bool> {
    let (Some(dir), Some(tap), Some(redirect)) =
        (at.pin_dir, &endpoint.tap, &mut endpoint.redirect)
    else {
        return Ok(false);
    };
    if redirect.from_vm != RedirectMode::RedirectPeer {
        return Ok(false);
    }
    let was = ebpf::set_redirect_peer(dir, tap.ifindex, false).map_err(Error::ebpf(at.netns))?;
    redirect.from_vm = RedirectMode::Redirect;
    Ok(was == Some(true))
}

/// Takes `old` away: the tap gets back the qdisc its report says it had (`noqueue`), the
/// pod device the kernel's default, and a displaced `bpf_redirect_peer` comes back.
async fn remove(
    handle: &Handle,
    at: &Sandboxed<'_>,
    endpoint: &mut EndpointReport,
    old: &Shaper,
) -> Result<()> {
    let fail = |source: NetlinkError| Error::Shaper {
        netns: at.netns.to_string(),
        device: old.device.clone(),
        source: Box::new(source),
    };
    let tap_noqueue = endpoint
        .tap
        .as_ref()
        .is_some_and(|t| t.ifindex == old.ifindex && t.qdisc == TapQdisc::Noqueue);
    if let Some(from) = &old.fed_from {
        let from = crate::datapath::Dev {
            name: from.device.clone(),
            ifindex: from.ifindex,
        };
        crate::datapath::mirred::unredirect_ingress(handle, &from, old.ifindex)
            .await
            .map_err(Error::mirred(at.netns))?;
        let ifb = crate::datapath::Dev {
            name: old.device.clone(),
            ifindex: old.ifindex,
        };
        super::ifb::delete(handle, &ifb)
            .await
            .map_err(|e| ifb_error(at, e))?;
    } else if tap_noqueue {
        replace_with_noqueue(handle, old.ifindex)
            .await
            .map_err(fail)?;
    } else {
        htb::remove(handle, old.ifindex).await.map_err(fail)?;
    }
    if old.displaced_peer {
        if let (Some(dir), Some(tap)) = (at.pin_dir, &endpoint.tap) {
            ebpf::set_redirect_peer(dir, tap.ifindex, true).map_err(Error::ebpf(at.netns))?;
            if let Some(r) = &mut endpoint.redirect {
                r.from_vm = RedirectMode::RedirectPeer;
            }
        }
    }
    Ok(())
}

fn ifb_error(at: &Sandboxed<'_>, e: super::ifb::IfbError) -> Error {
    Error::Ifb {
        netns: at.netns.to_string(),
        source: Box::new(e),
    }
}

/// Replaces netshim's tree on `ifindex` with `noqueue` in one step.
async fn replace_with_noqueue(
    handle: &Handle,
    ifindex: u32,
) -> std::result::Result<(), NetlinkError> {
    let mut request = TcMessage::with_index(ifindex as i32);
    request.header.parent = TcHandle::ROOT;
    request
        .attributes
        .push(TcAttribute::Kind("noqueue".to_string()));
    crate::netlink::request_ack(
        handle,
        RouteNetlinkMessage::NewQueueDiscipline(request),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .await
}

/// One direction's shaper as the kernel has it now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct LiveShaper {
    #[serde(flatten)]
    pub shaper: Shaper,
    /// The rate the kernel's class has now (`None`: the tree is gone).
    pub live_rate_bps: Option<u64>,
    pub counters: Option<ShaperCounters>,
}

/// Reads `shapers` back from the kernel.
pub async fn read_live(
    handle: &Handle,
    netns: &Netns,
    shapers: &EndpointShapers,
) -> Result<Vec<(LimitDirection, LiveShaper)>> {
    let mut out = Vec::new();
    for direction in LimitDirection::ALL {
        let Some(s) = shapers.get(direction) else {
            continue;
        };
        let installed = htb::read(handle, s.ifindex)
            .await
            .map_err(|source| Error::Shaper {
                netns: netns.to_string(),
                device: s.device.clone(),
                source: Box::new(source),
            })?;
        out.push((
            direction,
            LiveShaper {
                shaper: s.clone(),
                live_rate_bps: installed
                    .as_ref()
                    .and_then(|i| i.params)
                    .map(|p| p.rate_bps),
                counters: installed.map(|i| i.counters),
            },
        ));
    }
    Ok(out)
}
