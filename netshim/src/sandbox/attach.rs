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

use std::{borrow::Cow, collections::BTreeMap, path::PathBuf};

use netshim_common::MAX_ENDPOINTS;
use rtnetlink::LinkUnspec;

use super::{
    connect::{connect_pairs, dev, Pair},
    detach::{teardown, DetachReport},
    integrity, survey,
    undo::Undo,
    write_intent, EndpointInfo, SkippedInterface, Strictness, Survey,
};
use crate::{
    config::TapId,
    crash::crash_point,
    datapath::{ebpf, ebpf::AttachMode, FastPath, RedirectMode, TcBackend},
    endpoint::{EndpointKind, SystemProbe},
    guard::{self, GuardReport, GuardSettings},
    guest_info::{GuestNeighbor, GuestNetwork, GuestRoute},
    interfaces::{self, Interface},
    lock::SandboxLock,
    model::{macvtap, InternetworkingModel},
    netns::Netns,
    pins, state, tap, Error, Result,
};

/// What `attach` does.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub model: InternetworkingModel,
    pub backend: TcBackend,
    /// Queues per tap (and macvtap): 0 or 1 = single queue, more = IFF_MULTI_QUEUE.
    pub queues: u32,
    /// TUNSETOWNER / TUNSETGROUP of the taps (the VMM's user).
    pub tap_owner: Option<u32>,
    pub tap_group: Option<u32>,
    /// txqueuelen of the taps; the kernel default (1000) when `None`.
    pub txqueuelen: Option<u32>,
    /// How to hook the eBPF classifier; `None` = TCX when the kernel has it, else cls_bpf.
    pub ebpf_attach: Option<AttachMode>,
    /// Whether the eBPF datapath may use `bpf_redirect_peer` (VM → pod veth's peer).
    pub fast_path: FastPath,
    /// Where vhost-user sockets are looked for.
    pub probe: SystemProbe,
    /// List interfaces kata would refuse as skipped instead of failing.
    pub skip_unsupported: bool,
    /// kata's `disable_new_netns`: the netns is the caller's own, not one made for the
    /// sandbox; only valid with the `none` model.
    pub disable_new_netns: bool,
    /// Tap names in place of `tap<N>_kata`: pod device name → tap name (the CNI key
    /// `tap_name`, for CNI_IFNAME). tcfilter and none models only.
    pub tap_names: BTreeMap<String, String>,
    /// A pod device that must end up with a tap or macvtap (CNI_IFNAME): attach refuses,
    /// before it changes anything, when it is absent, skipped (`lo`, ...) or an endpoint the
    /// VMM takes as it is (physical, vhost-user); an attached netns then stays as it is.
    pub needs_tap: Option<String>,
    /// The source guard of every endpoint's tap (eBPF backend).
    pub guard: GuardSettings,
    /// Whether `guard.mode` was asked for (flag, TOML or CNI key) rather than defaulted:
    /// enforce or log asked for where there is no eBPF datapath is an error, the default
    /// there is off.
    pub guard_explicit: bool,
}

impl AttachOptions {
    /// kata's configuration rule: with `disable_new_netns` the runtime works in the caller's
    /// netns, whose interfaces must not be redirected into a VM, so only `none` applies.
    pub fn validate(&self) -> Result<()> {
        if self.disable_new_netns && self.model != InternetworkingModel::None {
            return Err(Error::InvalidOptions(format!(
                "config disable_new_netns only works with 'none' internetworking model, not \
                 '{}': without a netns of its own the sandbox shares the caller's interfaces, \
                 and connecting them to a VM would take them away from the caller",
                self.model
            )));
        }
        for (id, value) in [(TapId::Uid, self.tap_owner), (TapId::Gid, self.tap_group)] {
            if let Some(v) = value {
                let what = if id == TapId::Uid { "owner" } else { "group" };
                crate::config::parse_tap_id(&v.to_string(), id)
                    .map_err(|e| Error::InvalidOptions(format!("tap {what} {e}")))?;
            }
        }
        if !self.tap_names.is_empty() && self.model == InternetworkingModel::MacVtap {
            return Err(Error::InvalidOptions(
                "tap names apply to the taps of the tcfilter and none models, not to the \
                 macvtap model's macvtaps"
                    .into(),
            ));
        }
        self.resolved_guard().map(drop)?;
        let mut seen = std::collections::BTreeSet::new();
        for (pod, tap) in &self.tap_names {
            tap::name::validate_custom(tap)
                .map_err(|e| Error::InvalidOptions(format!("tap name for {pod}: {e}")))?;
            if !seen.insert(tap) {
                return Err(Error::InvalidOptions(format!(
                    "tap name {tap} is given for more than one pod device"
                )));
            }
        }
        Ok(())
    }

    /// kata's rules for the netns itself: the caller's own netns named by path
    /// (`/proc/self/ns/net`, ...) is a sandbox without a netns of its own, so it needs
    /// `disable_new_netns` (and with it the `none` model); the host's netns (PID 1's, see
    /// [`crate::host::host_pid`], however it is named: by cookie) is never handed to a VM by any other model.
    pub fn check_netns(&self, netns: &Netns) -> Result<()> {
        let host = crate::host::host_pid()
            .ok()
            .and_then(|pid| Netns::resolve(&format!("/proc/{pid}/ns/net")).ok())
            .map(|n| n.cookie);
        let own = netns.is_callers_own_by_path();
        match netns_refusal(self, own, netns.cookie, host) {
            Some(why) => Err(Error::InvalidOptions(format!("netns {netns}: {why}"))),
            None => Ok(()),
        }
    }

    /// The guard the endpoints get: the settings on the eBPF datapath, else why there is
    /// none (see [`guard::settings::resolve`]).
    pub(crate) fn resolved_guard(&self) -> Result<std::result::Result<GuardSettings, String>> {
        let settings = self
            .guard
            .clone()
            .validate()
            .map_err(Error::GuardSettings)?;
        let model = self.model;
        Ok(guard::settings::resolve(
            &settings,
            self.guard_explicit,
            model,
            self.backend,
        )?)
    }

    /// The name of the tap of endpoint `index`, whose pod device is `pod`.
    pub(crate) fn tap_name_for(&self, index: u32, pod: &str) -> String {
        self.tap_names
            .get(pod)
            .cloned()
            .unwrap_or_else(|| tap::name::tap_for(index))
    }
}

/// Why `options` may not attach a netns with cookie `cookie` (`own_by_path`: it was named
/// as the caller's own, `/proc/self/…`; `host_cookie`: PID 1's netns, when known).
fn netns_refusal(
    options: &AttachOptions,
    own_by_path: bool,
    cookie: u64,
    host_cookie: Option<u64>,
) -> Option<String> {
    if own_by_path && !options.disable_new_netns {
        return Some(
            "this is netshim's own network namespace (the caller's), named by path: kata's \
             rule is that a sandbox without a netns of its own (disable_new_netns) only \
             works with the 'none' internetworking model, since connecting the caller's \
             interfaces to a VM would take them away from it; name the sandbox's netns, or \
             pass --disable-new-netns --model none"
                .into(),
        );
    }
    if options.model != InternetworkingModel::None && host_cookie == Some(cookie) {
        return Some(format!(
            "this is the host's network namespace (cookie {cookie}, PID 1's): the \
             '{}' model would hand the host's interfaces to a VM and cut the host off; \
             only --model none may attach here",
            options.model
        ));
    }
    None
}

/// The tap made for an endpoint.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct TapReport {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    pub queues: u32,
    pub multi_queue: bool,
    /// Always on: the VMM reads and writes frames with a virtio-net header, and may turn on
    /// offloads (TUNSETOFFLOAD) on its queue fds.
    pub vnet_hdr: bool,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub txqueuelen: Option<u32>,
}

/// A macvtap the VMM opens (`device`, once per queue).
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct MacvtapReport {
    pub name: String,
    pub ifindex: u32,
    pub device: PathBuf,
    pub queues: u32,
    /// Made by netshim's macvtap model (and removed by detach), or found in the netns.
    pub created: bool,
}

/// One attached endpoint: what the VMM and the guest need to know.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct EndpointReport {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// The guest-side interface name (`eth<N>`).
    pub guest_ifname: String,
    /// How the VMM gets this endpoint: `tap`, `macvtap`, `vhost-user` or `physical`.
    pub attachment: Cow<'static, str>,
    pub tap: Option<TapReport>,
    pub macvtap: Option<MacvtapReport>,
    /// eBPF backend: how each direction is redirected.
    pub redirect: Option<Redirects>,
    /// Routes through this endpoint, without the kernel's own (see [`crate::guest_info`]).
    pub routes: Vec<GuestRoute>,
    pub neighbors: Vec<GuestNeighbor>,
    /// The source guard of the tap (taps and macvtaps; absent in commit files written
    /// before the guard, and for endpoints the VMM takes as they are). The commit file
    /// holds the settings only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
}

/// How the eBPF datapath redirects each direction of an endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Redirects {
    /// pod device ingress → tap: always `redirect` (a tap has no peer).
    pub to_vm: RedirectMode,
    /// tap ingress → pod device: `redirect_peer` when the pod device is a veth whose peer is
    /// in another netns and the fast path is on.
    pub from_vm: RedirectMode,
}

/// The result of an attach.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct AttachReport {
    pub netns: String,
    pub netns_path: PathBuf,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    pub model: String,
    pub backend: Option<TcBackend>,
    /// `tcx`, `cls_bpf`, `mirred`, `macvtap` or `none`.
    pub datapath: String,
    /// The bpffs pin directory (eBPF backend).
    pub pin_dir: Option<PathBuf>,
    pub endpoints: Vec<EndpointReport>,
    pub skipped: Vec<SkippedInterface>,
    /// `tap<N>_kata` devices a dead run left behind, replaced by new ones.
    pub replaced_leftovers: Vec<String>,
    /// Everything a run that died half-way had left (taps included), taken away as detach
    /// does before attaching.
    #[serde(default)]
    pub cleaned_leftovers: Option<DetachReport>,
    /// The netns was attached already as requested: this is the recorded report (without
    /// the leftovers that earlier run cleaned), and nothing was changed.
    #[serde(default)]
    pub already_attached: bool,
}

/// Attaches netshim to every endpoint of `netns`.
#[tracing::instrument(level = "debug", skip_all, fields(netns = %netns, model = %options.model))]
pub fn attach(netns: &Netns, options: &AttachOptions) -> Result<AttachReport> {
    options.validate()?;
    options.check_netns(netns)?;
    // netshim's own files of this sandbox that are damaged: refused, detach repairs them.
    let lock_file: Vec<_> = integrity::bad_lock_file(netns.cookie).into_iter().collect();
    integrity::refuse(netns, &lock_file)?;
    // One operation per sandbox at a time (see crate::lock), for the whole attach.
    let lock = SandboxLock::acquire(netns.cookie)?;
    tracing::debug!("sandbox lock taken");
    let result = integrity::refuse(netns, &integrity::check(netns.cookie)).and_then(|()| {
        let (n, o) = (netns.clone(), options.clone());
        netns.run(move |handle| async move { attach_locked(&handle, &n, &o).await })
    });
    lock.release();
    result
}

async fn attach_locked(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
) -> Result<AttachReport> {
    let state_dir = state::sandbox_dir(netns.cookie);
    let intent = state_dir.join(state::INTENT_FILE);
    let listed = survey(handle, netns, Strictness::List, &options.probe).await?;
    if let Some(recorded) = state::read_json::<AttachReport>(&state_dir.join(state::COMMIT_FILE)) {
        if still_attached(netns, &recorded, &listed) {
            return already_attached(netns, options, recorded, &intent);
        }
    }
    refuse_connected_devices(netns, &state_dir)?;
    let strictness = if options.skip_unsupported {
        Strictness::List
    } else {
        Strictness::Refuse
    };
    // Leftovers of a run that died are taken away first (they may hide the endpoints: the
    // macvtap model moves the pod device's addresses); a refusal of a clean netns changes
    // nothing at all.
    let leftovers = has_leftovers(netns, &listed);
    // Also before the leftovers go: a device netshim did not make keeps its name.
    super::tap_conflict::refuse_taken_names(netns, options, &listed)?;
    let mut checked = None;
    if !leftovers {
        let survey = survey(handle, netns, strictness, &options.probe).await?;
        check_attachable(netns, options, &survey)?;
        check_coexistence(handle, netns, options, &survey).await?;
        checked = Some(survey);
    }
    let cleaned = match leftovers {
        true => Some(teardown(handle, netns).await?),
        false => None,
    };

    write_intent(netns, "attach", intent_options(options))?;
    crash_point("intent-written");
    let result: Result<AttachReport> = async {
        let survey = match checked {
            Some(survey) => survey,
            None => {
                let survey = survey(handle, netns, strictness, &options.probe).await?;
                check_attachable(netns, options, &survey)?;
                check_coexistence(handle, netns, options, &survey).await?;
                survey
            }
        };
        let mut undo = Undo::default();
        let made: Result<AttachReport> = async {
            let mut report = connect_all(handle, netns, options, &survey, &mut undo).await?;
            if let Some(cleaned) = cleaned {
                report.replaced_leftovers = cleaned.removed_taps.clone();
                report.cleaned_leftovers = Some(cleaned);
            }
            crash_point("before-commit");
            commit(&state_dir, &report)?;
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
        state::remove_temp_files(&state_dir);
        state::remove_sandbox_dir_if_empty(&state_dir);
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
fn intent_options(options: &AttachOptions) -> state::IntentOptions {
    state::IntentOptions::Attach(state::AttachIntent {
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

/// Writes the commit file: the report (each guard as its settings only), atomically.
fn commit(state_dir: &std::path::Path, report: &AttachReport) -> Result<()> {
    let mut report = report.clone();
    for e in &mut report.endpoints {
        e.guard = e.guard.as_ref().map(GuardReport::settings_only);
    }
    let json = serde_json::to_vec_pretty(&report).expect("plain struct serializes");
    state::write_file_atomic(&state_dir.join(state::COMMIT_FILE), &json)?;
    Ok(())
}

/// Changes the commit file of an attached sandbox (watch records the endpoints it plugs and
/// unplugs there, so that a later idempotent attach reports them). Without a commit file,
/// `create` says what the sandbox is (watch started on a netns with no endpoint yet, so no
/// attach committed): a commit is written from it; with `None` nothing is written. The
/// caller holds the sandbox lock.
pub(crate) fn amend_commit(
    netns: &Netns,
    create: Option<&AttachOptions>,
    change: impl FnOnce(&mut AttachReport),
) -> Result<()> {
    let state_dir = state::sandbox_dir(netns.cookie);
    let recorded = state::read_json::<AttachReport>(&state_dir.join(state::COMMIT_FILE));
    let Some(mut report) = recorded.or_else(|| create.map(|o| empty_report(netns, o))) else {
        return Ok(());
    };
    change(&mut report);
    let state_dir = state::create_sandbox_dir(netns.cookie)?;
    commit(&state_dir, &report)
}

/// What attach would have recorded for `options`, without endpoints.
fn empty_report(netns: &Netns, options: &AttachOptions) -> AttachReport {
    let dir = pins::sandbox_dir(netns.cookie);
    let (backend, datapath, pin_dir) = match (options.model, options.backend) {
        (InternetworkingModel::None, _) => (None, "none".to_owned(), None),
        (InternetworkingModel::MacVtap, _) => (None, "macvtap".to_owned(), None),
        (InternetworkingModel::TcFilter, TcBackend::Mirred) => {
            (Some(TcBackend::Mirred), "mirred".to_owned(), None)
        }
        (InternetworkingModel::TcFilter, TcBackend::Ebpf) => {
            let mode = crate::datapath::ebpf::recorded_mode(&dir)
                .unwrap_or_else(|_| AttachMode::for_running_kernel());
            let pin_dir = dir.exists().then_some(dir);
            (Some(TcBackend::Ebpf), mode.as_str().to_owned(), pin_dir)
        }
    };
    report_without_endpoints(netns, options, backend, datapath, pin_dir)
}

/// An attach report with everything but the endpoints and what was skipped or cleaned.
fn report_without_endpoints(
    netns: &Netns,
    options: &AttachOptions,
    backend: Option<TcBackend>,
    datapath: String,
    pin_dir: Option<PathBuf>,
) -> AttachReport {
    AttachReport {
        netns: netns.arg.clone(),
        netns_path: netns.path.clone(),
        netns_inode: netns.inode,
        netns_cookie: netns.cookie,
        model: options.model.to_string(),
        backend,
        datapath,
        pin_dir,
        endpoints: Vec::new(),
        skipped: Vec::new(),
        replaced_leftovers: Vec::new(),
        cleaned_leftovers: None,
        already_attached: false,
    }
}

/// Whether what the commit file records is still there: every tap and macvtap it made, with
/// the same ifindex, and the pin directory.
fn still_attached(netns: &Netns, recorded: &AttachReport, listed: &Survey) -> bool {
    let present = |name: &str, ifindex: u32, kind: Option<&str>| {
        listed.taps.iter().any(|(_, t)| {
            t.name == name
                && t.ifindex == ifindex
                && kind.is_none_or(|k| t.kind.as_deref() == Some(k))
        })
    };
    recorded.netns_cookie == netns.cookie
        && recorded.pin_dir.as_ref().is_none_or(|d| d.exists())
        && recorded.endpoints.iter().all(|e| {
            e.tap
                .as_ref()
                .is_none_or(|t| present(&t.name, t.ifindex, Some("tun")))
                && e.macvtap
                    .as_ref()
                    .is_none_or(|m| !m.created || present(&m.name, m.ifindex, Some("macvtap")))
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
    if recorded.model != options.model.to_string() {
        differs.push(format!("model {}", options.model));
    } else if let Some(backend) = recorded.backend {
        if backend != options.backend {
            differs.push(format!("tc backend {}", options.backend));
        } else if let Some(mode) = options.ebpf_attach {
            if recorded.datapath != mode.as_str() {
                differs.push(format!("eBPF attach mode {}", mode.as_str()));
            }
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
            let model = recorded.model.parse().unwrap_or_default();
            Err(
                guard::settings::unavailable_reason(model, backend.unwrap_or(TcBackend::Mirred))
                    .unwrap_or_default(),
            )
        }
    };
    let pin_dir = recorded.pin_dir.clone();
    report_guards(netns, &mut recorded.endpoints, pin_dir.as_deref(), &guard)?;
    Ok(recorded)
}

/// Whether netshim has left anything in the netns (no commit file says it is attached):
/// the same things [`teardown`] takes away.
fn has_leftovers(netns: &Netns, listed: &Survey) -> bool {
    state::sandbox_dir(netns.cookie).exists()
        || pins::sandbox_dir(netns.cookie).exists()
        || listed
            .taps
            .iter()
            .any(|(_, t)| t.kind.as_deref() == Some("tun"))
}

/// A pin directory that only `netshim connect` made (no attach ever committed or began
/// here) is not a leftover: its pairs are someone's. Attach does not take them down.
fn refuse_connected_devices(netns: &Netns, state_dir: &std::path::Path) -> Result<()> {
    let pin_dir = pins::sandbox_dir(netns.cookie);
    if !pin_dir.exists()
        || state_dir.join(state::INTENT_FILE).exists()
        || state_dir.join(state::COMMIT_FILE).exists()
    {
        return Ok(());
    }
    let Ok(records) = ebpf::recorded_endpoints(&pin_dir) else {
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
fn check_attachable(netns: &Netns, options: &AttachOptions, survey: &Survey) -> Result<()> {
    super::tap_conflict::refuse_taken_names(netns, options, survey)?;
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

/// What an endpoint needs the VMM to open, once made.
pub(crate) enum Attachment {
    Tap(TapReport),
    Macvtap(MacvtapReport),
    Handover(&'static str),
}

async fn connect_all(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    survey: &Survey,
    undo: &mut Undo,
) -> Result<AttachReport> {
    // Read before the macvtap model moves addresses (and with them routes) away.
    let guest = super::collect_guest_network(handle, netns).await?;

    let guard = options.resolved_guard()?;
    let mut pairs = Vec::new();
    let mut endpoints = Vec::new();
    for (index, (iface, class)) in survey.endpoints.iter().enumerate() {
        let index = index as u32;
        let attachment = match class.kind {
            kind if kind.uses_model() => match options.model {
                InternetworkingModel::TcFilter | InternetworkingModel::None => {
                    let (tap, tap_iface) =
                        create_tap(handle, netns, options, index, iface, undo).await?;
                    let pair = Pair::new(index, iface, &tap_iface, options.fast_path);
                    pairs.push(guarded_pair(pair, iface, &guard));
                    Attachment::Tap(tap)
                }
                InternetworkingModel::MacVtap => Attachment::Macvtap(
                    create_macvtap(handle, netns, options, index, iface, undo).await?,
                ),
            },
            EndpointKind::Macvtap => Attachment::Macvtap(MacvtapReport {
                name: iface.name.clone(),
                ifindex: iface.ifindex,
                device: macvtap::device_path(iface.ifindex),
                queues: options.queues.max(1),
                created: false,
            }),
            EndpointKind::VhostUser => Attachment::Handover("vhost-user"),
            _ => Attachment::Handover("physical"),
        };
        tracing::debug!(
            index,
            interface = %iface.name,
            ifindex = iface.ifindex,
            kind = ?class.kind,
            "endpoint prepared"
        );
        endpoints.push(endpoint_report(index, iface, class, attachment, &guest));
    }

    let (backend, datapath, pin_dir) = match options.model {
        InternetworkingModel::None => (None, "none".to_owned(), None),
        InternetworkingModel::MacVtap => (None, "macvtap".to_owned(), None),
        InternetworkingModel::TcFilter if pairs.is_empty() => (None, "none".to_owned(), None),
        InternetworkingModel::TcFilter => {
            let c = connect_pairs(
                handle,
                netns,
                options.backend,
                options.ebpf_attach,
                &pairs,
                undo,
            )
            .await?;
            (Some(c.backend), c.datapath, c.pin_dir)
        }
    };
    if backend == Some(TcBackend::Ebpf) {
        for (e, p) in endpoints.iter_mut().filter(|e| e.tap.is_some()).zip(&pairs) {
            e.redirect = Some(Redirects {
                to_vm: p.a_to_b,
                from_vm: p.b_to_a,
            });
        }
    }
    report_guards(netns, &mut endpoints, pin_dir.as_deref(), &guard)?;
    Ok(AttachReport {
        endpoints,
        skipped: survey.skipped.clone(),
        ..report_without_endpoints(netns, options, backend, datapath, pin_dir)
    })
}

pub(crate) fn endpoint_report(
    index: u32,
    iface: &Interface,
    class: &crate::endpoint::Classified,
    attachment: Attachment,
    guest: &GuestNetwork,
) -> EndpointReport {
    let (kind, tap, macvtap) = match attachment {
        Attachment::Tap(t) => ("tap", Some(t), None),
        Attachment::Macvtap(m) => ("macvtap", None, Some(m)),
        Attachment::Handover(kind) => (kind, None, None),
    };
    let (routes, neighbors) = guest.of(iface.ifindex);
    EndpointReport {
        endpoint: EndpointInfo::new(index, iface, class),
        guest_ifname: tap::name::guest_ifname_for(index),
        attachment: kind.into(),
        tap,
        macvtap,
        redirect: None,
        routes,
        neighbors,
        guard: None,
    }
}

/// `pair` with the source guard `guard` (when the datapath has one) of its pod device's
/// MAC and addresses.
pub(crate) fn guarded_pair(
    pair: Pair,
    iface: &Interface,
    guard: &std::result::Result<GuardSettings, String>,
) -> Pair {
    match (guard, iface.mac) {
        (Ok(settings), Some(mac)) => {
            let addresses: Vec<_> = iface.addresses.iter().map(|a| a.address).collect();
            pair.guarded(mac, &addresses, settings)
        }
        _ => pair,
    }
}

/// Fills each tap's and macvtap's `guard`: read back from the maps in `pin_dir` (the
/// truth on the host), else why there is none.
pub(crate) fn report_guards(
    netns: &Netns,
    endpoints: &mut [EndpointReport],
    pin_dir: Option<&std::path::Path>,
    guard: &std::result::Result<GuardSettings, String>,
) -> Result<()> {
    for e in endpoints.iter_mut() {
        if e.tap.is_none() && e.macvtap.is_none() {
            continue;
        }
        e.guard = Some(match (pin_dir, guard, e.tap.is_some()) {
            (Some(dir), Ok(_), true) if e.endpoint.mac.is_some() => {
                let tap = e.tap.as_ref().map_or(0, |t| t.ifindex);
                GuardReport::applied(dir, e.endpoint.index, tap)
                    .map_err(|s| Error::guard_map(netns, e.endpoint.index, s))?
            }
            (_, Ok(_), true) => GuardReport::unavailable(
                "the pod device has no MAC address, so the guest's cannot be checked",
            ),
            (_, Err(why), _) => GuardReport::unavailable(why.clone()),
            (_, Ok(_), false) => {
                GuardReport::unavailable("the macvtap has no eBPF datapath, so no source guard")
            }
        });
    }
    Ok(())
}

/// Creates `tap<index>_kata` (or the name `options.tap_names` gives `iface`) for `iface`:
/// persistent, vnet_hdr, the endpoint's MTU, up. Returns the report and the tap as the netns
/// lists it (what the datapath pairs it by).
pub(crate) async fn create_tap(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    undo: &mut Undo,
) -> Result<(TapReport, Interface)> {
    let name = options.tap_name_for(index, &iface.name);
    let spec = tap::TapSpec {
        name: name.clone(),
        queues: options.queues,
        owner: options.tap_owner,
        group: options.tap_group,
    };
    tap::create_persistent_tap(&spec).map_err(|source| Error::Tap {
        netns: netns.to_string(),
        source: Box::new(source),
    })?;
    crash_point("tap-created");
    let netlink_err = |op| {
        let name = name.clone();
        move |source| Error::Netlink {
            op,
            target: name,
            netns: netns.to_string(),
            source: Box::new(source),
        }
    };
    let created = interfaces::by_name(handle, &name)
        .await
        .map_err(netlink_err("RTM_GETLINK"))?
        .ok_or_else(|| Error::Netlink {
            op: "RTM_GETLINK",
            target: name.clone(),
            netns: netns.to_string(),
            source: Box::new(rtnetlink::Error::RequestFailed),
        })?;
    undo.taps.push(dev(&created));
    // The tap is the VM's port: no IPv6 address of the sandbox's own on it (set before up).
    interfaces::disable_ipv6_addrconf(handle, created.ifindex)
        .await
        .map_err(netlink_err("RTM_NEWLINK (IFLA_INET6_ADDR_GEN_MODE none)"))?;
    let mut change = LinkUnspec::new_with_index(created.ifindex)
        .mtu(iface.mtu)
        .up();
    if let Some(len) = options.txqueuelen {
        change = change.txqueuelen(len);
    }
    handle
        .link()
        .set(change.build())
        .execute()
        .await
        .map_err(netlink_err("RTM_NEWLINK (mtu, txqueuelen, up)"))?;
    crash_point("tap-configured");
    let report = TapReport {
        name,
        ifindex: created.ifindex,
        mtu: iface.mtu,
        queues: options.queues.max(1),
        multi_queue: spec.multi_queue(),
        vnet_hdr: true,
        owner: options.tap_owner,
        group: options.tap_group,
        txqueuelen: options.txqueuelen,
    };
    Ok((report, created))
}

/// kata's macvtap model for one endpoint: `tap<index>_kata` is a macvtap on the pod device.
pub(crate) async fn create_macvtap(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    undo: &mut Undo,
) -> Result<MacvtapReport> {
    let name = tap::name::tap_for(index);
    let state_dir = state::create_sandbox_dir(netns.cookie)?;
    let made = macvtap::connect(handle, iface, &name, options.queues.max(1), &state_dir)
        .await
        .map_err(|source| Error::Macvtap {
            netns: netns.to_string(),
            source: Box::new(source),
        })?;
    undo.macvtaps.push((name.clone(), iface.ifindex));
    Ok(MacvtapReport {
        name: made.name,
        ifindex: made.ifindex,
        device: made.device,
        queues: made.queues,
        created: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        endpoint::Classified,
        interfaces::{IfAddr, Mac},
    };

    /// The commit file is this report; attach reads it back to answer a second attach.
    #[test]
    fn the_report_reads_back_as_written() {
        let endpoint = EndpointInfo {
            index: 0,
            name: "eth0".into(),
            class: Classified {
                kind: EndpointKind::Veth,
                pci_address: None,
                driver: None,
                vhost_user_socket: None,
            },
            ifindex: 2,
            mac: Some(Mac([0x02, 0, 0, 0, 0, 0x2a])),
            mtu: 1500,
            addresses: vec![IfAddr {
                address: "10.1.0.2".parse().unwrap(),
                prefix_len: 24,
            }],
        };
        let report = AttachReport {
            netns: "pod".into(),
            netns_path: "/run/netns/pod".into(),
            netns_inode: 4026532000,
            netns_cookie: 4242,
            model: "tcfilter".into(),
            backend: Some(TcBackend::Ebpf),
            datapath: "tcx".into(),
            pin_dir: Some("/sys/fs/bpf/netshim/netns-4242".into()),
            endpoints: vec![EndpointReport {
                endpoint,
                guest_ifname: "eth0".into(),
                attachment: "tap".into(),
                tap: Some(TapReport {
                    name: "tap0_kata".into(),
                    ifindex: 3,
                    mtu: 1500,
                    queues: 1,
                    multi_queue: false,
                    vnet_hdr: true,
                    owner: Some(1000),
                    group: None,
                    txqueuelen: None,
                }),
                macvtap: None,
                redirect: Some(Redirects {
                    to_vm: RedirectMode::Redirect,
                    from_vm: RedirectMode::RedirectPeer,
                }),
                routes: vec![GuestRoute {
                    destination: "default".into(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    source: None,
                    scope: "universe".into(),
                    mtu: Some(1400),
                }],
                neighbors: vec![GuestNeighbor {
                    address: "10.1.0.1".parse().unwrap(),
                    mac: Mac([0x02, 0, 0, 0, 0, 1]),
                    state: "permanent".into(),
                }],
                guard: Some(GuardReport::Guard {
                    settings: GuardSettings::default(),
                    mac: None,
                    addresses: None,
                }),
            }],
            skipped: vec![SkippedInterface {
                name: "lo".into(),
                ifindex: 1,
                reason: crate::endpoint::SkipReason::Loopback,
                detail: None,
            }],
            replaced_leftovers: vec!["tap0_kata".into()],
            cleaned_leftovers: Some(DetachReport {
                netns: "pod".into(),
                removed_taps: vec!["tap0_kata".into()],
                removed_state: vec!["/run/netshim/netns-4242/attaching.json".into()],
                ..DetachReport::default()
            }),
            already_attached: false,
        };
        let json = serde_json::to_string_pretty(&report).unwrap();
        let back: AttachReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["endpoints"][0]["kind"], "veth", "flattened as before");
        assert_eq!(v["endpoints"][0]["mac"], "02:00:00:00:00:2a");
        assert!(
            v["cleaned_leftovers"].get("gc").is_none(),
            "no gc field outside detach of a gone netns"
        );
    }

    #[test]
    fn own_and_host_netns_are_refused_as_kata_would() {
        let opts = |model, disable_new_netns| AttachOptions {
            model,
            disable_new_netns,
            ..AttachOptions::default()
        };
        let (tcfilter, none) = (InternetworkingModel::TcFilter, InternetworkingModel::None);
        let host = Some(4026531840);
        // A pod netns of its own: fine.
        assert_eq!(netns_refusal(&opts(tcfilter, false), false, 7, host), None);
        // The caller's own netns by path: only with disable_new_netns (model none).
        let own = netns_refusal(&opts(tcfilter, false), true, 7, host).unwrap();
        assert!(own.contains("disable_new_netns"), "{own}");
        assert!(netns_refusal(&opts(none, false), true, 7, host).is_some());
        assert_eq!(netns_refusal(&opts(none, true), true, 7, host), None);
        // The host's netns, however it is named: never by a model other than none.
        for model in [tcfilter, InternetworkingModel::MacVtap] {
            for own in [false, true] {
                let why = netns_refusal(&opts(model, own), own, 4026531840, host).unwrap();
                assert!(why.contains("host's network namespace"), "{why}");
            }
        }
        assert_eq!(
            netns_refusal(&opts(none, false), false, 4026531840, host),
            None
        );
        assert_eq!(
            netns_refusal(&opts(none, true), true, 4026531840, host),
            None
        );
        // PID 1's cookie unknown: only the by-path rule applies.
        assert_eq!(
            netns_refusal(&opts(tcfilter, false), false, 4026531840, None),
            None
        );
    }
}
