//! What netshim's eBPF datapath shares a device's traffic-control hooks with, and what it
//! refuses to share them with.
//!
//! Shared:
//! - Other TCX programs on the device (a policy program of another tool, say). netshim
//!   attaches its link with an explicit `LinkOrder::last()`: the others run first and see every
//!   packet; when they pass it on (`TCX_NEXT`), ours redirects it. Ours must be last because a
//!   redirect ends the TCX chain: a program placed after ours would never see the packets we
//!   redirect. (A program attached later with "last" still lands after ours; tools that must
//!   see the sandbox's traffic attach with "first", or before our link.)
//! - A clsact qdisc someone else made, and its filters. In cls_bpf mode netshim adds its filter
//!   to that clsact and, on detach, removes only its own filter: the clsact is deleted only
//!   when the endpoint record says netshim added it (`ENDPOINT_POD_CLSACT` /
//!   `ENDPOINT_TAP_CLSACT`, set only when `RTM_NEWQDISC clsact` did not answer `EEXIST`).
//!   With TCX, the kernel runs TCX programs before the clsact filters, so foreign ingress
//!   filters see only what netshim does not redirect.
//! - Any root (egress) qdisc: netshim never touches egress.
//!
//! Refused (exit 3): a legacy `ingress` qdisc (handle `ffff:`) on a device the eBPF datapath
//! would hook, i.e. kata's mirred datapath, or another tool's ingress filters. In cls_bpf mode
//! netshim's clsact cannot be added next to it (clsact takes the same handle); with TCX
//! netshim's program would run before that qdisc's filters and silently take their traffic.
//! When the ingress qdisc is netshim's own mirred datapath for this sandbox (its filter
//! redirects to one of our `tap<N>_kata`), the netns is reported as already attached instead.

use super::Survey;
use crate::{
    datapath::{
        mirred::{self, IngressQdisc},
        AttachMode, Dev, TcBackend,
    },
    model::InternetworkingModel,
    netns::Netns,
    Error, Result,
};

/// Checks the pod devices that `attach` is about to hook with the eBPF datapath. Changes
/// nothing.
pub(crate) async fn check_pod_devices(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    model: InternetworkingModel,
    backend: TcBackend,
    ebpf_attach: Option<AttachMode>,
    survey: &Survey,
) -> Result<()> {
    if model != InternetworkingModel::TcFilter || backend != TcBackend::Ebpf {
        return Ok(());
    }
    let mode = ebpf_attach.unwrap_or_else(AttachMode::auto);
    for (iface, class) in &survey.endpoints {
        if !class.kind.uses_model() {
            continue;
        }
        let pod = Dev::of(iface);
        let target = check_ingress_free(handle, netns, &pod, mode).await;
        if let Err(Error::IngressQdiscTaken { .. }) = &target {
            let redirect = mirred::redirect_target(handle, &pod)
                .await
                .map_err(Error::mirred(netns))?;
            if let Some((_, tap)) = survey
                .taps
                .iter()
                .find(|(_, t)| Some(t.ifindex) == redirect)
            {
                return Err(Error::AlreadyAttached {
                    netns: netns.to_string(),
                    detail: format!("found mirred datapath on {} to {}", pod.name, tap.name),
                });
            }
        }
        target?;
    }
    Ok(())
}

/// Refuses `dev` when a legacy `ingress` qdisc sits on its ingress hook (see the module
/// documentation). `mode` only shapes the message.
pub(crate) async fn check_ingress_free(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    dev: &Dev,
    mode: AttachMode,
) -> Result<()> {
    let found = mirred::ingress_qdisc(handle, dev)
        .await
        .map_err(Error::mirred(netns))?;
    if found != IngressQdisc::Ingress {
        return Ok(());
    }
    Err(Error::IngressQdiscTaken {
        netns: netns.to_string(),
        dev: dev.name.clone(),
        consequence: match mode {
            AttachMode::ClsBpf => {
                "netshim's cls_bpf datapath needs a clsact qdisc, which takes the same handle ffff:"
            }
            AttachMode::Tcx => {
                "netshim's TCX program would run before that qdisc's filters and silently \
                 bypass them"
            }
        },
    })
}
