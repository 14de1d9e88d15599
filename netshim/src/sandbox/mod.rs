//! Whole-netns operations: scan, attach, detach, status, stats, upgrade, watch, gc, and
//! `guard` (the source guard of an attached sandbox).
//!
//! Each runs on a thread inside the sandbox netns ([`Netns::run`]). The first step is
//! always the same survey: list the interfaces, classify them, and find the taps an earlier
//! attach made.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod attach;
mod coexist;
mod commit;
mod connect;
mod detach;
mod files;
mod gc;
mod guard;
mod health;
mod hotplug;
pub mod integrity;
mod intent;
mod limit;
mod needs_tap;
mod options;
mod redirect_loop;
mod removed;
mod report;
mod scan;
mod status;
mod steps;
mod tap_conflict;
mod teardown;
mod upgrade;
mod watch;

pub use crate::model::report::{MacvtapReport, TapReport};
pub use attach::attach;
pub use commit::AttachReport;
pub use connect::{
    connect, disconnect, ConnectGuard, ConnectOptions, ConnectReport, DisconnectReport,
};
pub use detach::{detach, detach_arg};
pub(crate) use files::{Sandbox, SandboxFiles};
pub use gc::gc;
pub(crate) use gc::{collect_dead, NetnsFinder};
pub use guard::{guard, EndpointGuard, GuardChange, GuardCommandReport};
pub use health::{repair_hint, Health};
pub use intent::{AttachIntent, DetachIntent, Intent, IntentOptions, NetnsRecord};
pub use limit::{limit, EndpointLimit, LimitReport};
pub use options::AttachOptions;
pub use removed::{
    DeadSandbox, DetachReport, FailedSandbox, GcReport, HalfMadeSandbox, RepairedSandbox,
    SkippedSandbox,
};
pub use report::EndpointReport;
pub use scan::{scan, ScanReport, ScannedInterface};
pub use status::{stats, status, EndpointStatus, MacvtapStatus, StatusReport};
pub use upgrade::{
    upgrade, upgrade_all, upgrade_where, SandboxUpgrade, UpgradeOptions, UpgradeOutcome,
    UpgradeReport,
};
pub use watch::{rfc3339_utc, watch, Change, WatchEvent, WatchOptions, WatchedEndpoint};

use std::collections::BTreeMap;

use rtnetlink::packet_route::link::InfoKind;

use crate::{
    endpoint::{self, Classification, Classified, SkipReason, SystemProbe},
    interfaces::{self, IfAddr, Interface, Mac},
    netns::Netns,
    state, tap, Error, Result,
};

/// Writes the sandbox's intent file (see [`crate::state`]) before `op` changes anything.
pub(crate) fn write_intent(sandbox: &Sandbox, op: &str, options: IntentOptions) -> Result<()> {
    let netns = &sandbox.netns;
    state::create_sandbox_dir(netns.cookie)?;
    let intent = Intent {
        op: op.to_owned(),
        pid: std::process::id(),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        netns_path: netns.path.clone(),
        netns_inode: netns.inode,
        netns_cookie: netns.cookie,
        options: Some(options),
    };
    let json = serde_json::to_vec_pretty(&intent).expect("plain struct serializes");
    state::write_file_atomic(&sandbox.intent_file(), &json)?;
    Ok(())
}

/// An endpoint as the pod netns shows it: what the VMM and the guest need to know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointInfo {
    /// Position in kata's order; endpoint N gets `tap<N>_kata` and `eth<N>` in the guest.
    pub index: u32,
    pub name: String,
    /// Kind, and for physical / vhost-user what the VMM needs (PCI address, socket).
    #[serde(flatten)]
    pub class: Classified,
    pub ifindex: u32,
    /// The pod interface's MAC: the guest NIC must use it (the CNI expects traffic from it).
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub addresses: Vec<IfAddr>,
}

impl EndpointInfo {
    pub(crate) fn new(index: u32, iface: &Interface, class: &Classified) -> Self {
        Self {
            index,
            name: iface.name.clone(),
            class: class.clone(),
            ifindex: iface.ifindex,
            mac: iface.mac,
            mtu: iface.mtu,
            addresses: iface.addresses.clone(),
        }
    }
}

/// An interface that is not an endpoint, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SkippedInterface {
    pub name: String,
    pub ifindex: u32,
    pub reason: SkipReason,
    /// For `unsupported`: kata's error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How strictly the survey treats interfaces kata would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// The first one is an error (attach, kata's behaviour).
    Refuse,
    /// They are listed as skipped (scan, status, detach, `attach --skip-unsupported`).
    List,
}

/// What a netns holds, as netshim sees it.
#[derive(Debug, Clone)]
pub(crate) struct Survey {
    /// Endpoints in kata's order (by ifindex); the position is the endpoint index.
    pub endpoints: Vec<(Interface, Classified)>,
    pub skipped: Vec<SkippedInterface>,
    /// netshim's taps present: `tap<N>_kata` devices with N (tap-mode tuns and macvtaps only,
    /// see [`endpoint::could_be_netshims_tap`]), and tun devices whose custom
    /// name (CNI `tap_name`) the sandbox's commit or intent file records, with the current
    /// position of their pod device (else the recorded index, else `u32::MAX`).
    pub taps: Vec<(u32, Interface)>,
    /// The custom tap names the sandbox's files record: tap name → pod device name.
    pub custom_taps: BTreeMap<String, String>,
    /// Every link of the netns, as listed (by ifindex).
    pub interfaces: Vec<Interface>,
}

impl Survey {
    pub fn tap(&self, index: u32) -> Option<&Interface> {
        self.taps.iter().find(|(i, _)| *i == index).map(|(_, t)| t)
    }

    /// Whether `name` is one of netshim's tap names in this netns: `tap<N>_kata`, or a
    /// custom name the sandbox's files record.
    pub fn is_netshim_tap_name(&self, name: &str) -> bool {
        tap::name::parse(name).is_some() || self.custom_taps.contains_key(name)
    }

    /// The recorded custom tap names as the intent file's `tap_names` option: pod device
    /// name → tap name.
    pub fn custom_tap_option(&self) -> BTreeMap<String, String> {
        self.custom_taps
            .iter()
            .map(|(tap, pod)| (pod.clone(), tap.clone()))
            .collect()
    }
}

/// The custom tap names (not `tap<N>_kata`) that the sandbox's commit file (each endpoint's
/// `tap.name`) and intent file (the `tap_names` option: pod device → tap) record, as tap name
/// → (pod device name, recorded endpoint index). A run killed after making such a tap left
/// at least the intent file, so teardown and gc find the tap by its name.
pub(crate) fn recorded_custom_taps(cookie: u64) -> BTreeMap<String, (String, Option<u32>)> {
    let dir = state::sandbox_dir(cookie);
    let mut found = BTreeMap::new();
    if let Some(commit) = state::read_json::<AttachReport>(&dir.join(state::COMMIT_FILE)) {
        for e in &commit.endpoints {
            let Some(tap) = e.tap.as_ref().map(|t| &t.name) else {
                continue;
            };
            if tap::name::parse(tap).is_none() {
                found.insert(
                    tap.clone(),
                    (e.endpoint.name.clone(), Some(e.endpoint.index)),
                );
            }
        }
    }
    if let Some(intent) = state::read_json::<Intent>(&dir.join(state::INTENT_FILE)) {
        for (pod, tap) in intent.tap_names().into_iter().flatten() {
            if tap::name::parse(tap).is_none() {
                found
                    .entry(tap.clone())
                    .or_insert_with(|| (pod.clone(), None));
            }
        }
    }
    found
}

/// Lists and classifies the netns's interfaces.
pub(crate) async fn survey(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    strictness: Strictness,
    probe: &SystemProbe,
) -> Result<Survey> {
    let all = interfaces::list(handle)
        .await
        .map_err(|source| Error::Netlink {
            op: "RTM_GETLINK/RTM_GETADDR dump",
            target: "all interfaces".into(),
            netns: netns.to_string(),
            source: Box::new(source),
        })?;
    let custom = recorded_custom_taps(netns.cookie);
    let mut survey = Survey {
        endpoints: Vec::new(),
        skipped: Vec::new(),
        taps: Vec::new(),
        custom_taps: custom
            .iter()
            .map(|(tap, (pod, _))| (tap.clone(), pod.clone()))
            .collect(),
        interfaces: all.clone(),
    };
    let mut custom_found = Vec::new();
    for iface in all {
        // A tun device with a recorded custom name is netshim's tap, not a tuntap endpoint.
        if iface.kind == Some(InfoKind::Tun) && custom.contains_key(&iface.name) {
            survey.skipped.push(SkippedInterface {
                name: iface.name.clone(),
                ifindex: iface.ifindex,
                reason: SkipReason::NetshimTap,
                detail: None,
            });
            custom_found.push(iface);
            continue;
        }
        let (class, detail) = match endpoint::classify(&iface, probe) {
            Ok(class) => (class, None),
            Err(source) if strictness == Strictness::Refuse => {
                return Err(Error::UnsupportedInterface {
                    netns: netns.to_string(),
                    source,
                })
            }
            Err(e) => (
                Classification::Skipped(SkipReason::Unsupported),
                Some(e.to_string()),
            ),
        };
        match class {
            Classification::Endpoint(class) => survey.endpoints.push((iface, class)),
            Classification::Skipped(reason) => {
                if reason == SkipReason::NetshimTap {
                    if let Some(index) = tap::name::parse(&iface.name) {
                        survey.taps.push((index, iface.clone()));
                    }
                }
                survey.skipped.push(SkippedInterface {
                    name: iface.name,
                    ifindex: iface.ifindex,
                    reason,
                    detail,
                });
            }
        }
    }
    for iface in custom_found {
        let (pod, recorded) = &custom[&iface.name];
        let index = survey
            .endpoints
            .iter()
            .position(|(e, _)| &e.name == pod)
            .map(|i| i as u32)
            .or(*recorded)
            .unwrap_or(u32::MAX);
        survey.taps.push((index, iface));
    }
    Ok(survey)
}

/// Reads the netns's routes and neighbours (see [`crate::guest_info`]).
pub(crate) async fn collect_guest_network(
    handle: &rtnetlink::Handle,
    netns: &Netns,
) -> Result<crate::guest_info::GuestNetwork> {
    crate::guest_info::collect(handle)
        .await
        .map_err(|source| Error::Netlink {
            op: "RTM_GETROUTE/RTM_GETNEIGH dump",
            target: "routes and neighbours".into(),
            netns: netns.to_string(),
            source: Box::new(source),
        })
}
