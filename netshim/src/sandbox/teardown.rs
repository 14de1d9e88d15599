//! Taking away everything netshim made in a netns, and nothing else (see
//! [`super::detach`] for what is netshim's): what detach does, what attach does before
//! attaching over a dead run's leftovers, and what `netshim gc` does in live namespaces
//! that a killed attach left half-made. It writes the intent file before it changes
//! anything, so a teardown that is itself killed is found and finished by the next one.

use rtnetlink::packet_route::link::InfoKind;

use super::{
    removed::DetachReport, steps::Steps, survey, write_intent, Sandbox, Strictness, Survey,
};
use crate::{
    datapath::{ebpf, mirred, Dev},
    endpoint::SystemProbe,
    model::{macvtap, undo::delete_link},
    state, Error, Result,
};

/// Removes everything netshim made in `netns` (see the module docs). Must run inside it,
/// with the sandbox lock held.
pub(crate) async fn teardown(
    handle: &rtnetlink::Handle,
    sandbox: &Sandbox,
) -> Result<DetachReport> {
    let netns = &sandbox.netns;
    let mut report = DetachReport {
        netns: netns.arg.clone(),
        ..DetachReport::default()
    };
    let mut steps = Steps::start();
    let survey = survey(handle, netns, Strictness::List, &SystemProbe::default()).await?;
    steps.done("interfaces listed");
    let (state_dir, pin_dir) = (sandbox.state_dir.clone(), sandbox.pin_dir.clone());
    let has_tun_taps = survey
        .taps
        .iter()
        .any(|(_, t)| t.kind == Some(InfoKind::Tun));
    if !state_dir.exists() && !pin_dir.exists() && !has_tun_taps {
        return Ok(report);
    }
    let intent = sandbox.intent_file();
    let dead_run_intent = intent.exists();
    let had_state_dir = state_dir.exists();
    // The custom tap names go into this intent too: it replaces the attach intent that
    // may be the only record of them, and a teardown killed before the taps went must find
    // them again.
    write_intent(
        sandbox,
        "detach",
        super::IntentOptions::Detach(super::DetachIntent {
            tap_names: survey.custom_tap_option(),
        }),
    )?;
    // What attach recorded, read before the un-commit: it finds what is left of a sandbox
    // whose taps were deleted behind netshim's back.
    let recorded = super::health::commit(sandbox);
    // Un-commit first: from here on the sandbox is not attached, whatever else is left.
    let commit = sandbox.commit_file();
    if state::remove_file_if_exists(&commit)? {
        report.removed_state.push(commit);
    }

    if pin_dir.exists() {
        ebpf::detach_sandbox(handle, &pin_dir)
            .await
            .map_err(Error::ebpf(netns))?;
        steps.done("eBPF datapath taken down");
        report.removed_pin_dir = Some(pin_dir);
    }

    let mirred_err = Error::mirred(netns);
    // First (a tap's ingress qdisc that feeds an IFB is not a mirred datapath): the IFB devices of limits the tap or pod device had no qdisc for, and the pod
    // devices' ingress redirects that feed them (a tap's go with the tap).
    let ifb_err = |source| Error::Ifb {
        netns: netns.to_string(),
        source: Box::new(source),
    };
    for ifb in crate::limit::ifb::list(handle).await.map_err(ifb_err)? {
        // Every device: the macvtap model's pod device has handed its addresses to the guest
        // and is no endpoint.
        for pod in survey
            .interfaces
            .iter()
            .filter(|i| i.ifindex != ifb.ifindex)
        {
            let dev = Dev {
                name: pod.name.clone(),
                ifindex: pod.ifindex,
            };
            if mirred::unredirect_ingress(handle, &dev, ifb.ifindex)
                .await
                .map_err(mirred_err)?
            {
                report.removed_mirred.push(pod.name.clone());
            }
        }
        crate::limit::ifb::delete(handle, &ifb)
            .await
            .map_err(ifb_err)?;
        report.removed_shapers.push(ifb.name.clone());
    }
    for (pod, tap) in mirred_pairs_by_redirect(handle, &survey)
        .await
        .map_err(mirred_err)?
    {
        // Ours when the tap has kata's ingress qdisc, or the pod device redirects to the
        // tap (an attach killed between the two devices).
        let on_tap = mirred::ingress_qdisc(handle, &tap)
            .await
            .map_err(mirred_err)?
            == mirred::IngressQdisc::Ingress;
        let pod_to_tap = mirred::redirect_target(handle, &pod)
            .await
            .map_err(mirred_err)?
            == Some(tap.ifindex);
        if !on_tap && !pod_to_tap {
            continue;
        }
        mirred::disconnect(handle, &pod, &tap)
            .await
            .map_err(mirred_err)?;
        tracing::debug!(interface = %pod.name, tap = %tap.name, "mirred pair disconnected");
        report.removed_mirred.push(pod.name.clone());
        report.removed_mirred.push(tap.name.clone());
    }
    steps.done("mirred pairs looked at");

    // A recorded mirred endpoint whose tap is gone: its pod device's filter still redirects
    // to the tap's old ifindex (and drops everything); that qdisc is ours too.
    for e in recorded
        .iter()
        .filter(|c| c.backend == Some(crate::datapath::TcBackend::Mirred))
        .flat_map(|c| &c.endpoints)
    {
        let Some(tap) = &e.tap else { continue };
        if survey.taps.iter().any(|(_, t)| t.ifindex == tap.ifindex) {
            continue;
        }
        let pod = Dev {
            name: e.endpoint.name.clone(),
            ifindex: e.endpoint.ifindex,
        };
        let target = mirred::redirect_target(handle, &pod)
            .await
            .map_err(mirred_err)?;
        // The kernel reports a mirred action whose device is gone with ifindex 0.
        if target != Some(tap.ifindex) && target != Some(0) {
            continue;
        }
        let gone = Dev {
            name: tap.name.clone(),
            ifindex: tap.ifindex,
        };
        mirred::disconnect(handle, &pod, &gone)
            .await
            .map_err(mirred_err)?;
        tracing::debug!(interface = %pod.name, tap = %tap.name, "mirred filter to a deleted tap removed");
        report.removed_mirred.push(pod.name);
    }

    // The shapers of tx limits on pod devices (netshim's handle; the taps' and macvtaps'
    // go with their devices).
    for (pod, _) in &survey.endpoints {
        let removed = crate::limit::htb::remove_if_ours(handle, pod.ifindex)
            .await
            .map_err(|source| Error::Shaper {
                netns: netns.to_string(),
                device: pod.name.clone(),
                source: Box::new(source),
            })?;
        if removed {
            tracing::debug!(interface = %pod.name, "rate limit shaper removed");
            report.removed_shapers.push(pod.name.clone());
        }
    }
    steps.done("shapers looked at");

    // Only macvtaps netshim's model made: it wrote a state file for the pod device before
    // changing anything. A macvtap someone else named like ours stays.
    let macvtap_err = |source| Error::Macvtap {
        netns: netns.to_string(),
        source: Box::new(source),
    };
    for (name, pod_ifindex) in macvtap::recorded(&state_dir).map_err(macvtap_err)? {
        macvtap::disconnect(handle, &name, pod_ifindex, &state_dir)
            .await
            .map_err(macvtap_err)?;
        report.removed_macvtaps.push(name);
    }
    steps.done("macvtaps looked at");

    for (_, tap) in &survey.taps {
        if tap.kind != Some(InfoKind::Tun) {
            continue;
        }
        let dev = Dev {
            name: tap.name.clone(),
            ifindex: tap.ifindex,
        };
        delete_link(handle, &dev)
            .await
            .map_err(|source| Error::Netlink {
                op: "RTM_DELLINK",
                target: dev.name.clone(),
                netns: netns.to_string(),
                source: Box::new(source),
            })?;
        tracing::debug!(interface = %dev.name, "tap deleted");
        report.removed_taps.push(dev.name);
    }
    steps.done("taps deleted");

    state::remove_temp_files(&state_dir);
    state::remove_file_if_exists(&intent)?;
    if dead_run_intent {
        report.removed_state.push(intent);
    }
    if state::remove_sandbox_dir_if_empty(&state_dir) && had_state_dir {
        report.removed_state.push(state_dir);
    }
    Ok(report)
}

/// The pairs kata's mirred datapath may connect: each pod endpoint with the tap its ingress
/// filter redirects to, or else (nothing redirects yet: an attach killed before the pod's
/// filter) with `tap<N>_kata` of its position. After `watch` has unplugged an endpoint in the
/// middle, positions and tap numbers no longer line up; the redirect target still does.
async fn mirred_pairs_by_redirect(
    handle: &rtnetlink::Handle,
    survey: &Survey,
) -> std::result::Result<Vec<(Dev, Dev)>, mirred::MirredError> {
    let dev = |i: &crate::interfaces::Interface| Dev {
        name: i.name.clone(),
        ifindex: i.ifindex,
    };
    let mut pairs = Vec::new();
    for (index, (pod, _)) in survey.endpoints.iter().enumerate() {
        let pod = dev(pod);
        let target = mirred::redirect_target(handle, &pod).await?;
        let redirected = target.and_then(|t| survey.taps.iter().find(|(_, x)| x.ifindex == t));
        match redirected
            .map(|(_, t)| t)
            .or_else(|| survey.tap(index as u32))
        {
            Some(tap) => pairs.push((pod, dev(tap))),
            None => continue,
        }
    }
    Ok(pairs)
}
