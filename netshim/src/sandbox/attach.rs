//! `netshim attach`: hand every endpoint of a pod netns to the VM.
//!
//! Per endpoint kind, as kata does: veth, macvlan, ipvlan and tap-mode tuntap go through the
//! internetworking model (tcfilter: a `tap<N>_kata` connected by the eBPF or mirred
//! datapath; macvtap: a macvtap on the pod device; none: the tap alone); a macvtap already
//! in the netns is handed over as it is; physical and vhost-user endpoints are reported with
//! what the VMM needs (PCI address, socket) and get no datapath.
//!
//! Nothing is left half-made: every step that changes the netns registers its undo first,
//! and a failure runs the undo list before the error is returned. A run that is killed
//! cannot undo: for that, attach holds the sandbox lock throughout, writes the intent file
//! before its first change and the commit file (`attached.json`, this report) after its last
//! (see [`crate::state`]). The next attach, detach or `netshim gc` takes away what a killed
//! run left.
//!
//! Attach is idempotent: a netns whose commit file is there and whose recorded taps still
//! exist is attached already; the recorded report comes back (`already_attached`) and
//! nothing changes, unless another model or backend is asked for (a conflict).

use std::sync::Mutex;

use netshim_common::MAX_ENDPOINTS;
use rtnetlink::packet_route::link::InfoKind;

use super::{
    commit::{commit, report_without_endpoints, AttachReport},
    integrity,
    report::{report_guards, EndpointReport},
    steps::Steps,
    survey,
    teardown::teardown,
    write_intent, AttachOptions, Sandbox, Strictness, Survey,
};
use crate::{
    crash::crash_point,
    datapath::{ebpf, preload::Preload, AttachMode, DatapathKind, TcBackend},
    guard::GuardSettings,
    interfaces::Interface,
    model::{self, undo::Undo, InternetworkingModel, PlugContext},
    netns::Netns,
    state, tap, Error, Result,
};

/// Attaches netshim to every endpoint of `netns`.
#[tracing::instrument(level = "debug", skip_all, fields(netns = %netns, model = %options.model))]
pub fn attach(netns: &Netns, options: &AttachOptions) -> Result<AttachReport> {
    options.validate()?;
    options.check_netns(netns)?;
    // netshim's own files of this sandbox that are damaged: refused, detach repairs them.
    let lock_file: Vec<_> = integrity::bad_lock_file(netns.cookie).into_iter().collect();
    integrity::refuse(netns, &lock_file)?;
    // One operation per sandbox at a time (see crate::state::lock), for the whole attach.
    let mut steps = Steps::start();
    let sandbox = Sandbox::of(netns);
    let lock = sandbox.lock()?;
    steps.done("sandbox lock taken");
    let result = integrity::refuse(netns, &integrity::check(netns.cookie)).and_then(|()| {
        steps.done("integrity checked");
        // A new sandbox's datapath loads meanwhile (see datapath/preload.rs).
        let preload = preload_for(netns, options);
        let o = options.clone();
        netns.run(move |handle| async move {
            let mut steps = Steps::start();
            steps.done("in the netns");
            attach_locked(&handle, &sandbox, &o, preload, &mut steps).await
        })
    });
    lock.release();
    result
}

/// The preloaded datapath of an attach that will make a new eBPF sandbox (tcfilter model,
/// eBPF backend, no pin directory yet).
fn preload_for(netns: &Netns, options: &AttachOptions) -> Mutex<Option<Preload>> {
    let wanted = options.backend == TcBackend::Ebpf
        && matches!(options.model, InternetworkingModel::TcFilter);
    Mutex::new(
        wanted
            .then(|| {
                Preload::start(
                    netns.cookie,
                    options.ebpf_attach.unwrap_or_else(AttachMode::auto),
                    options.ebpf_object.as_ref(),
                )
            })
            .flatten(),
    )
}

async fn attach_locked(
    handle: &rtnetlink::Handle,
    sandbox: &Sandbox,
    options: &AttachOptions,
    preload: Mutex<Option<Preload>>,
    steps: &mut Steps,
) -> Result<AttachReport> {
    let netns = &sandbox.netns;
    let state_dir = &sandbox.state_dir;
    let intent = sandbox.intent_file();
    let listed = survey(handle, netns, Strictness::List, &options.probe).await?;
    steps.done("interfaces listed");
    if let Some(recorded) = state::read_json::<AttachReport>(&sandbox.commit_file()) {
        if still_attached(netns, &recorded, &listed) {
            return already_attached(netns, options, recorded, &intent);
        }
    }
    refuse_connected_devices(sandbox)?;
    let strictness = if options.skip_unsupported {
        Strictness::List
    } else {
        Strictness::Refuse
    };
    // Leftovers of a run that died are taken away first (they may hide the endpoints: the
    // macvtap model moves the pod device's addresses); a refusal of a clean netns changes
    // nothing at all.
    let leftovers = has_leftovers(sandbox, &listed);
    // Also before the leftovers go: a device netshim did not make keeps its name.
    super::tap_conflict::refuse_taken_names(sandbox, options, &listed)?;
    let mut checked = None;
    if !leftovers {
        let survey = survey(handle, netns, strictness, &options.probe).await?;
        check_attachable(sandbox, options, &survey)?;
        check_coexistence(handle, netns, options, &survey).await?;
        checked = Some(survey);
        steps.done("endpoints surveyed and checked");
    }
    let cleaned = match leftovers {
        true => Some(teardown(handle, sandbox).await?),
        false => None,
    };
    if cleaned.is_some() {
        steps.done("leftovers of a dead run taken away");
    }

    write_intent(sandbox, "attach", intent_options(options))?;
    steps.done("intent written");
    crash_point("intent-written");
    let result: Result<AttachReport> = async {
        let survey = match checked {
            Some(survey) => survey,
            None => {
                let survey = survey(handle, netns, strictness, &options.probe).await?;
                check_attachable(sandbox, options, &survey)?;
                check_coexistence(handle, netns, options, &survey).await?;
                survey
            }
        };
        let mut undo = Undo::default();
        let made: Result<AttachReport> = async {
            let mut report =
                connect_all(handle, netns, options, &survey, &preload, &mut undo).await?;
            steps.done("endpoints connected");
            if !options.limits.is_empty() {
                super::limit::limit_new_endpoints(handle, netns, &mut report, &options.limits)
                    .await?;
                steps.done("rate limits shaped");
            }
            if let Some(cleaned) = cleaned {
                report.replaced_leftovers = cleaned.removed_taps.clone();
                report.cleaned_leftovers = Some(cleaned);
            }
            crash_point("before-commit");
            commit(state_dir, &report)?;
            steps.done("committed");
            Ok(report)
        }
        .await;
        if made.is_err() {
            undo.run(handle, netns).await;
        }
        made
    }
    .await;
    if result.is_ok() {
        crash_point("committed");
    }
    if let Err(e) = state::remove_file_if_exists(&intent) {
        tracing::warn!("{e}");
    }
    if result.is_err() {
        state::remove_temp_files(state_dir);
        state::remove_sandbox_dir_if_empty(state_dir);
    }
    result
}

/// What the pod devices' ingress hooks already hold, against what this attach would add
/// (see coexist.rs).
async fn check_coexistence(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    survey: &Survey,
) -> Result<()> {
    let (model, backend, mode) = (options.model, options.backend, options.ebpf_attach);
    super::coexist::check_pod_devices(handle, netns, model, backend, mode, survey).await
}

/// The attach options, as the intent file records them.
fn intent_options(options: &AttachOptions) -> super::IntentOptions {
    super::IntentOptions::Attach(super::AttachIntent {
        model: options.model,
        tc_backend: options.backend,
        ebpf_attach: options.ebpf_attach,
        fast_path: options.fast_path,
        queues: options.queues,
        tap_owner: options.tap_owner,
        tap_group: options.tap_group,
        txqueuelen: options.txqueuelen,
        skip_unsupported: options.skip_unsupported,
        disable_new_netns: options.disable_new_netns,
        // Read back by the survey: a tap made under a custom name is found by it.
        tap_names: options.tap_names.clone(),
        guard: options.guard.clone(),
        guard_explicit: options.guard_explicit,
    })
}

/// Whether what the commit file records is still there: every tap and macvtap it made, with
/// the same ifindex, and the pin directory.
fn still_attached(netns: &Netns, recorded: &AttachReport, listed: &Survey) -> bool {
    let present = |name: &str, ifindex: u32, kind: InfoKind| {
        listed
            .taps
            .iter()
            .any(|(_, t)| t.name == name && t.ifindex == ifindex && t.kind == Some(kind.clone()))
    };
    recorded.netns_cookie == netns.cookie
        && recorded.pin_dir.as_ref().is_none_or(|d| d.exists())
        && recorded.endpoints.iter().all(|e| {
            e.tap
                .as_ref()
                .is_none_or(|t| present(&t.name, t.ifindex, InfoKind::Tun))
                && e.macvtap
                    .as_ref()
                    .is_none_or(|m| !m.created || present(&m.name, m.ifindex, InfoKind::MacVtap))
        })
}

/// An attach of an attached netns: the recorded report when the request matches it, a
/// conflict when it asks for another model or datapath.
fn already_attached(
    netns: &Netns,
    options: &AttachOptions,
    mut recorded: AttachReport,
    intent: &std::path::Path,
) -> Result<AttachReport> {
    let mut differs = Vec::new();
    if recorded.model != options.model {
        differs.push(format!("model {}", options.model));
    } else if let Some(backend) = recorded.backend {
        if backend != options.backend {
            differs.push(format!("tc backend {}", options.backend));
        } else if let Some(mode) = options.ebpf_attach {
            if recorded.datapath != DatapathKind::from(mode) {
                differs.push(format!("eBPF attach mode {}", mode.as_str()));
            }
        }
    }
    if let Ok(wanted) = options.limits.limits() {
        let rates = |l: &crate::limit::Limits| (l.rx.map(|r| r.rate_bps), l.tx.map(|r| r.rate_bps));
        let shaped = recorded
            .endpoints
            .iter()
            .filter(|e| e.tap.is_some() || e.macvtap.is_some());
        if !options.limits.is_empty()
            && shaped
                .clone()
                .any(|e| rates(&e.shapers.limits()) != rates(&wanted))
        {
            differs.push(
                "other rate limits (`netshim limit` changes them on an attached sandbox)"
                    .to_string(),
            );
        }
    }
    for e in &recorded.endpoints {
        let Some(tap) = &e.tap else { continue };
        match options.tap_names.get(&e.endpoint.name) {
            Some(want) if *want != tap.name => {
                differs.push(format!("tap name {want} for {}", e.endpoint.name))
            }
            None if tap::name::parse(&tap.name).is_none() => differs.push(format!(
                "no tap name for {} (it has {})",
                e.endpoint.name, tap.name
            )),
            _ => {}
        }
    }
    if !differs.is_empty() {
        return Err(Error::AlreadyAttached {
            netns: netns.to_string(),
            detail: format!(
                "with model {}, datapath {}; {} was requested",
                recorded.model,
                recorded.datapath,
                differs.join(", ")
            ),
        });
    }
    if let Some(device) = &options.needs_tap {
        super::needs_tap::check_recorded(netns, &recorded, device)?;
    }
    // The intent file of a run killed right after its commit.
    state::remove_file_if_exists(intent)?;
    recorded.already_attached = true;
    // This call removed nothing.
    recorded.replaced_leftovers.clear();
    recorded.cleaned_leftovers = None;
    recorded.netns = netns.arg.clone();
    recorded.netns_path = netns.path.clone();
    // The commit file keeps the guard's settings; the report shows what the maps hold.
    let guard = match recorded.backend {
        Some(TcBackend::Ebpf) => Ok(GuardSettings::default()),
        backend => {
            let model = recorded.model;
            Err(crate::model::guard_policy::unavailable_reason(
                model,
                backend.unwrap_or(TcBackend::Mirred),
            )
            .unwrap_or_default())
        }
    };
    let pin_dir = recorded.pin_dir.clone();
    report_guards(netns, &mut recorded.endpoints, pin_dir.as_deref(), &guard)?;
    Ok(recorded)
}

/// Whether netshim has left anything in the netns (no commit file says it is attached):
/// the same things [`teardown`] takes away.
fn has_leftovers(sandbox: &Sandbox, listed: &Survey) -> bool {
    sandbox.state_dir.exists()
        || sandbox.pin_dir.exists()
        || listed
            .taps
            .iter()
            .any(|(_, t)| t.kind == Some(InfoKind::Tun))
}

/// A pin directory that only `netshim connect` made (no attach ever committed or began
/// here) is not a leftover: its pairs are someone's. Attach does not take them down.
fn refuse_connected_devices(sandbox: &Sandbox) -> Result<()> {
    let (netns, pin_dir) = (&sandbox.netns, &sandbox.pin_dir);
    if !pin_dir.exists() || sandbox.intent_file().exists() || sandbox.commit_file().exists() {
        return Ok(());
    }
    let Ok(records) = ebpf::recorded_endpoints(pin_dir) else {
        return Ok(());
    };
    let name = |f: &[u8]| String::from_utf8_lossy(netshim_common::from_fixed(f)).into_owned();
    let connected: Vec<String> = records
        .iter()
        .filter(|(_, r)| tap::name::parse(&name(&r.tap_name)).is_none())
        .map(|(_, r)| format!("{} <-> {}", name(&r.pod_name), name(&r.tap_name)))
        .collect();
    if connected.is_empty() {
        return Ok(());
    }
    Err(Error::AlreadyAttached {
        netns: netns.to_string(),
        detail: format!(
            "devices connected by `netshim connect`: {}; disconnect them",
            connected.join(", ")
        ),
    })
}

/// Refuses a netns attach cannot serve: nothing to attach to, too much, or the name of a tap
/// it would make taken by a device netshim did not make.
fn check_attachable(sandbox: &Sandbox, options: &AttachOptions, survey: &Survey) -> Result<()> {
    let netns = &sandbox.netns;
    super::tap_conflict::refuse_taken_names(sandbox, options, survey)?;
    if survey.endpoints.is_empty() {
        let detail = if survey.skipped.is_empty() {
            "it has no interfaces".to_owned()
        } else {
            let list: Vec<String> = survey
                .skipped
                .iter()
                .map(|s| format!("{} ({})", s.name, s.reason))
                .collect();
            format!("skipped {}", list.join(", "))
        };
        return Err(Error::NoUsableInterface {
            netns: netns.to_string(),
            detail,
        });
    }
    if survey.endpoints.len() > MAX_ENDPOINTS as usize {
        return Err(Error::TooManyEndpoints {
            netns: netns.to_string(),
            count: survey.endpoints.len(),
            max: MAX_ENDPOINTS,
        });
    }
    match &options.needs_tap {
        Some(device) => super::needs_tap::check_survey(netns, survey, device),
        None => Ok(()),
    }
}

/// Hands every endpoint of `survey` to the VM: through the model for the kinds that use one,
/// as they are for the others. Every change is registered in `undo` first.
async fn connect_all(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    survey: &Survey,
    preload: &Mutex<Option<Preload>>,
    undo: &mut Undo,
) -> Result<AttachReport> {
    // Read before the macvtap model moves addresses (and with them routes) away.
    let guest = super::collect_guest_network(handle, netns).await?;

    let plug_options = options.plug_options()?;
    let through_model: Vec<(u32, &Interface)> = survey
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, (_, class))| class.kind.uses_model())
        .map(|(index, (iface, _))| (index as u32, iface))
        .collect();
    let cx = PlugContext {
        handle,
        netns,
        options: &plug_options,
        preload: Some(preload),
    };
    let plugs = options.model.plug(&cx, &through_model, undo).await?;
    let mut made = plugs.endpoints.into_iter();
    let mut endpoints = Vec::new();
    for (index, (iface, class)) in survey.endpoints.iter().enumerate() {
        let index = index as u32;
        let plug = match class.kind.uses_model() {
            true => made.next().expect("one plug per endpoint given"),
            false => model::handover(index, iface, class, options.queues),
        };
        tracing::debug!(
            index,
            interface = %iface.name,
            ifindex = iface.ifindex,
            kind = ?class.kind,
            "endpoint prepared"
        );
        endpoints.push(EndpointReport::of(iface, class, plug, &guest));
    }
    report_guards(
        netns,
        &mut endpoints,
        plugs.pin_dir.as_deref(),
        &plug_options.guard,
    )?;
    Ok(AttachReport {
        endpoints,
        skipped: survey.skipped.clone(),
        ..report_without_endpoints(netns, options, plugs.backend, plugs.datapath, plugs.pin_dir)
    })
}
