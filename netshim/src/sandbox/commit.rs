//! The commit file (`attached.json`, see [`crate::state`]): the report of the attach that
//! made the sandbox, written after its last change; watch and upgrade amend it.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{report::EndpointReport, AttachOptions, DetachReport, Sandbox, SkippedInterface};
use crate::{
    datapath::{AttachMode, DatapathKind, TcBackend},
    guard::GuardReport,
    model::InternetworkingModel,
    netns::Netns,
    state, Result,
};

/// The result of an attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttachReport {
    pub netns: String,
    pub netns_path: PathBuf,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    pub model: InternetworkingModel,
    pub backend: Option<TcBackend>,
    /// `tcx`, `cls_bpf`, `mirred`, `macvtap` or `none`.
    pub datapath: DatapathKind,
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

/// Writes the commit file: the report (each guard as its settings only), atomically.
pub(super) fn commit(state_dir: &std::path::Path, report: &AttachReport) -> Result<()> {
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
    sandbox: &Sandbox,
    create: Option<&AttachOptions>,
    change: impl FnOnce(&mut AttachReport),
) -> Result<()> {
    let recorded = state::read_json::<AttachReport>(&sandbox.commit_file());
    let Some(mut report) = recorded.or_else(|| create.map(|o| empty_report(sandbox, o))) else {
        return Ok(());
    };
    change(&mut report);
    let state_dir = state::create_sandbox_dir(sandbox.netns.cookie)?;
    commit(&state_dir, &report)
}

/// What attach would have recorded for `options`, without endpoints.
fn empty_report(sandbox: &Sandbox, options: &AttachOptions) -> AttachReport {
    let dir = &sandbox.pin_dir;
    let (backend, datapath, pin_dir) = match (options.model, options.backend) {
        (InternetworkingModel::None, _) => (None, DatapathKind::None, None),
        (InternetworkingModel::MacVtap, _) => (None, DatapathKind::Macvtap, None),
        (InternetworkingModel::TcFilter, TcBackend::Mirred) => {
            (Some(TcBackend::Mirred), DatapathKind::Mirred, None)
        }
        (InternetworkingModel::TcFilter, TcBackend::Ebpf) => {
            let mode =
                crate::datapath::ebpf::recorded_mode(dir).unwrap_or_else(|_| AttachMode::auto());
            let pin_dir = dir.exists().then(|| dir.clone());
            (Some(TcBackend::Ebpf), mode.into(), pin_dir)
        }
    };
    report_without_endpoints(&sandbox.netns, options, backend, datapath, pin_dir)
}

/// An attach report with everything but the endpoints and what was skipped or cleaned.
pub(super) fn report_without_endpoints(
    netns: &Netns,
    options: &AttachOptions,
    backend: Option<TcBackend>,
    datapath: DatapathKind,
    pin_dir: Option<PathBuf>,
) -> AttachReport {
    AttachReport {
        netns: netns.arg.clone(),
        netns_path: netns.path.clone(),
        netns_inode: netns.inode,
        netns_cookie: netns.cookie,
        model: options.model,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        datapath::{RedirectMode, Redirects},
        endpoint::{Classified, EndpointKind},
        guard::GuardSettings,
        guest_info::{GuestNeighbor, GuestRoute},
        interfaces::{IfAddr, Mac},
        model::{report::TapReport, AttachmentKind},
        sandbox::EndpointInfo,
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
            model: InternetworkingModel::TcFilter,
            backend: Some(TcBackend::Ebpf),
            datapath: DatapathKind::Tcx,
            pin_dir: Some("/sys/fs/bpf/netshim/netns-4242".into()),
            endpoints: vec![EndpointReport {
                endpoint,
                guest_ifname: "eth0".into(),
                attachment: AttachmentKind::Tap,
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
                    qdisc: crate::tap::qdisc::TapQdisc::Noqueue,
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
                shapers: crate::limit::EndpointShapers {
                    rx: Some(crate::limit::Shaper {
                        rate_bps: 1_000_000_000,
                        burst_bytes: 131072,
                        burst_given: None,
                        profile: crate::limit::HtbProfile::Netshim,
                        device: "tap0_kata".into(),
                        ifindex: 3,
                        displaced_peer: false,
                        fed_from: None,
                    }),
                    tx: None,
                },
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
}
