//! `netshim status` and `netshim stats` for one netns.

use super::{health, survey, EndpointInfo, Health, Sandbox, SkippedInterface, Strictness};
use rtnetlink::packet_route::link::InfoKind;

use crate::{
    datapath::{ebpf, mirred, DatapathKind, TcBackend},
    endpoint::SystemProbe,
    guard::GuardReport,
    model::{guard_policy::unavailable_reason, macvtap, InternetworkingModel},
    netns::Netns,
    pins,
    stats::{self, DirectionStats, EndpointStats, SandboxStats},
    Error, Result,
};

/// One endpoint as it is now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct EndpointStatus {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// The endpoint's `tap<N>_kata`, if present.
    pub tap: Option<String>,
    pub tap_ifindex: Option<u32>,
    pub tap_up: Option<bool>,
    /// The tap has carrier: a VMM has a queue fd open on it. `false` means no VMM reads
    /// the tap (none attached yet, or it stopped): everything towards the VM is dropped
    /// (counted in `stats` as `tap_tx_dropped`).
    pub vmm_attached: Option<bool>,
    /// The tap's root qdisc as the kernel lists it (`noqueue` where the eBPF datapath
    /// connects it; see [`crate::tap::qdisc`]).
    pub tap_qdisc: Option<String>,
    /// Both directions have a datapath hooked (a pinned TCX link on each device, or an
    /// ingress qdisc on each for mirred).
    pub connected: bool,
    /// What the guest agent needs besides addresses, as in attach's report.
    pub routes: Vec<crate::guest_info::GuestRoute>,
    pub neighbors: Vec<crate::guest_info::GuestNeighbor>,
    /// The source guard of the tap, read from the maps (the datapath's truth); `off` with
    /// a reason where there is none. Absent without a tap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardReport>,
    /// The rate limit into the VM as the kernel's shaper has it, with its counters (absent:
    /// unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_limit: Option<crate::limit::apply::LiveShaper>,
    /// The rate limit out of the VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_limit: Option<crate::limit::apply::LiveShaper>,
}

/// A netns as netshim sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct StatusReport {
    pub netns: String,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    pub attached: bool,
    pub backend: Option<TcBackend>,
    /// `tcx`, `cls_bpf` or `mirred` when attached.
    pub datapath: Option<DatapathKind>,
    pub pin_dir: Option<std::path::PathBuf>,
    pub endpoints: Vec<EndpointStatus>,
    /// Macvtaps of netshim's macvtap model (their pod devices have handed their addresses
    /// to the guest, so they are not endpoints any more until detach).
    pub macvtaps: Vec<MacvtapStatus>,
    pub skipped: Vec<SkippedInterface>,
    /// netshim's own files of this sandbox that are damaged (wrong type, a commit file that
    /// does not parse): attach refuses them, `netshim detach` repairs them.
    pub damaged: Vec<super::integrity::BadPath>,
    /// `ok`, or `broken` when something the commit file or the pins record is not there.
    pub health: Health,
    /// What is broken; `netshim detach` repairs it (then attach again).
    pub problems: Vec<String>,
}

/// A macvtap made by the macvtap model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct MacvtapStatus {
    pub name: String,
    pub ifindex: u32,
    pub device: std::path::PathBuf,
    /// The pod device it sits on.
    pub pod_ifindex: u32,
    pub up: bool,
    /// The rate limits of its endpoint, as for [`EndpointStatus`] (rx on an IFB fed from the
    /// pod device, tx on the macvtap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_limit: Option<crate::limit::apply::LiveShaper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_limit: Option<crate::limit::apply::LiveShaper>,
}

/// Reports what is attached in `netns`. Changes nothing.
pub fn status(netns: &Netns) -> Result<StatusReport> {
    let sandbox = Sandbox::of(netns);
    netns.clone().run(move |handle| async move {
        let netns = &sandbox.netns;
        let survey = survey(&handle, netns, Strictness::List, &SystemProbe::default()).await?;
        let dir = sandbox.pin_dir.clone();
        let pinned = dir.exists();
        let mode = if pinned {
            ebpf::recorded_mode(&dir).ok()
        } else {
            None
        };
        let guest = super::collect_guest_network(&handle, netns).await?;
        let all = list_interfaces(&handle, netns).await?;
        let damaged = super::integrity::check(netns.cookie);
        // Damaged files are broken too: attach refuses them and detach repairs them.
        let problems: Vec<String> = damaged
            .iter()
            .map(|d| format!("netshim's {} {}", d.path.display(), d.problem))
            .chain(health::problems(&handle, &sandbox, &all).await?)
            .collect();
        let commit = health::commit(&sandbox);
        let mut report = StatusReport {
            netns: netns.arg.clone(),
            netns_inode: netns.inode,
            netns_cookie: netns.cookie,
            attached: pinned || !survey.taps.is_empty() || commit.is_some(),
            backend: if pinned {
                Some(TcBackend::Ebpf)
            } else {
                commit.as_ref().and_then(|c| c.backend)
            },
            datapath: mode
                .map(DatapathKind::from)
                .or_else(|| commit.as_ref().map(|c| c.datapath)),
            pin_dir: pinned.then(|| dir.clone()),
            endpoints: Vec::new(),
            macvtaps: Vec::new(),
            skipped: survey.skipped.clone(),
            damaged,
            health: Health::of(&problems),
            problems,
        };
        for (_, mvt) in &survey.taps {
            let Some(pod_ifindex) = mvt.link else {
                continue;
            };
            if mvt.kind == Some(InfoKind::MacVtap)
                && macvtap::state_path(&sandbox.state_dir, pod_ifindex).exists()
            {
                report.attached = true;
                report.datapath = Some(DatapathKind::Macvtap);
                let shapers = commit
                    .iter()
                    .flat_map(|c| &c.endpoints)
                    .find(|e| e.macvtap.as_ref().is_some_and(|m| m.ifindex == mvt.ifindex))
                    .map(|e| e.shapers.clone())
                    .unwrap_or_default();
                let live = crate::limit::apply::read_live(&handle, netns, &shapers).await?;
                let limit = |d| live.iter().find(|(x, _)| *x == d).map(|(_, s)| s.clone());
                report.macvtaps.push(MacvtapStatus {
                    name: mvt.name.clone(),
                    ifindex: mvt.ifindex,
                    device: macvtap::device_path(mvt.ifindex),
                    pod_ifindex,
                    up: mvt.up,
                    rx_limit: limit(crate::limit::LimitDirection::Rx),
                    tx_limit: limit(crate::limit::LimitDirection::Tx),
                });
            }
        }
        let records = match pinned {
            true => ebpf::recorded_endpoints(&dir).unwrap_or_default(),
            false => Vec::new(),
        };
        for (index, (iface, class)) in survey.endpoints.iter().enumerate() {
            let tap = survey.tap(index as u32);
            let connected = match tap {
                None => false,
                Some(tap) if pinned => match mode {
                    Some(crate::datapath::AttachMode::ClsBpf) => true,
                    _ => {
                        pins::link_pin(&dir, &iface.name).exists()
                            && pins::link_pin(&dir, &tap.name).exists()
                    }
                },
                Some(tap) => {
                    let mut both = true;
                    for (name, ifindex) in [(&iface.name, iface.ifindex), (&tap.name, tap.ifindex)]
                    {
                        let dev = crate::datapath::Dev {
                            name: name.clone(),
                            ifindex,
                        };
                        let q = mirred::ingress_qdisc(&handle, &dev)
                            .await
                            .map_err(Error::mirred(netns))?;
                        both &= q == mirred::IngressQdisc::Ingress;
                    }
                    if both {
                        report.backend = Some(TcBackend::Mirred);
                        report.datapath = Some(DatapathKind::Mirred);
                    }
                    both
                }
            };
            let tap_qdisc = match tap {
                Some(tap) => crate::tap::qdisc::root_qdisc(&handle, tap.ifindex)
                    .await
                    .map_err(|source| Error::Netlink {
                        op: source.request,
                        target: tap.name.clone(),
                        netns: netns.to_string(),
                        source: Box::new(source.into_source()),
                    })?
                    .map(|q| q.kind),
                None => None,
            };
            let (routes, neighbors) = guest.of(iface.ifindex);
            let guard = match tap {
                Some(tap) if pinned => Some(endpoint_guard(&dir, &records, tap.ifindex)),
                Some(_) if report.backend == Some(TcBackend::Mirred) => {
                    Some(GuardReport::unavailable(
                        unavailable_reason(InternetworkingModel::TcFilter, TcBackend::Mirred)
                            .unwrap_or_default(),
                    ))
                }
                _ => None,
            };
            let shapers = commit
                .iter()
                .flat_map(|c| &c.endpoints)
                .find(|e| e.endpoint.ifindex == iface.ifindex)
                .map(|e| e.shapers.clone())
                .unwrap_or_default();
            let live = crate::limit::apply::read_live(&handle, netns, &shapers).await?;
            let limit = |d| live.iter().find(|(x, _)| *x == d).map(|(_, s)| s.clone());
            let (rx_limit, tx_limit) = (
                limit(crate::limit::LimitDirection::Rx),
                limit(crate::limit::LimitDirection::Tx),
            );
            for (d, l) in live.iter().filter(|(_, l)| l.counters.is_none()) {
                report.problems.push(format!(
                    "the {} limit of {} has no shaper on {}: run `netshim limit --netns {} \
                     --{} {}` to make it again",
                    d.as_str(),
                    iface.name,
                    l.shaper.device,
                    netns.arg,
                    d.as_str(),
                    l.shaper.rate_bps
                ));
            }
            for (d, l) in &live {
                if let Some(rate) = l.live_rate_bps.filter(|r| *r != l.shaper.rate_bps) {
                    report.problems.push(format!(
                        "the {} limit of {} is {rate} bit/s on {}, not the {} netshim set \
                         (changed behind netshim's back): `netshim limit --netns {} --{} {}` \
                         sets it again",
                        d.as_str(),
                        iface.name,
                        l.shaper.device,
                        l.shaper.rate_bps,
                        netns.arg,
                        d.as_str(),
                        l.shaper.rate_bps
                    ));
                }
            }
            report.health = Health::of(&report.problems);
            report.endpoints.push(EndpointStatus {
                endpoint: EndpointInfo::new(index as u32, iface, class),
                tap: tap.map(|t| t.name.clone()),
                tap_ifindex: tap.map(|t| t.ifindex),
                tap_up: tap.map(|t| t.up),
                vmm_attached: tap.map(|t| t.carrier.unwrap_or(false)),
                tap_qdisc,
                connected,
                routes,
                neighbors,
                guard,
                rx_limit,
                tx_limit,
            });
        }
        Ok(report)
    })
}

/// The guard of the endpoint whose tap is `tap_ifindex`, by its recorded index. Maps that
/// cannot be read make it `off` with the error as the reason: status reports a damaged
/// sandbox rather than failing on it.
fn endpoint_guard(
    dir: &std::path::Path,
    records: &[(u32, netshim_common::EndpointRecord)],
    tap_ifindex: u32,
) -> GuardReport {
    let Some((index, _)) = records.iter().find(|(_, r)| r.tap_ifindex == tap_ifindex) else {
        return GuardReport::unavailable("the tap has no endpoint record in the pinned maps");
    };
    GuardReport::applied(dir, *index, tap_ifindex)
        .unwrap_or_else(|e| GuardReport::unavailable(format!("cannot be read: {e}")))
}

/// Counters of one netns: from the pinned maps (eBPF), or from the mirred actions' own
/// statistics; with the kernel's drops from the devices' statistics, and what is broken.
/// `None` when nothing is attached. Enters the netns.
pub fn stats(netns: &Netns) -> Result<Option<SandboxStats>> {
    let sandbox = Sandbox::of(netns);
    let pinned = if sandbox.pin_dir.exists() {
        let mut s = stats::read_pinned(&sandbox.pin_dir)?;
        s.netns = netns.arg.clone();
        Some(s)
    } else {
        None
    };
    netns.clone().run(move |handle| async move {
        let netns = &sandbox.netns;
        let all = list_interfaces(&handle, netns).await?;
        let problems = health::problems(&handle, &sandbox, &all).await?;
        let counted = match pinned {
            Some(s) => Some(s),
            None => mirred_stats(&handle, netns).await?,
        };
        Ok(match counted {
            Some(mut s) => {
                s.add_device_drops(&all);
                add_limits(&handle, &sandbox, &mut s).await?;
                s.health = Health::of(&problems);
                s.problems = problems;
                Some(s)
            }
            None if !problems.is_empty() => {
                let backend = health::commit(&sandbox)
                    .and_then(|c| c.backend)
                    .unwrap_or(TcBackend::Mirred);
                Some(SandboxStats::new(netns, backend, problems))
            }
            None => None,
        })
    })
}

/// Each endpoint's rate limits as the kernel's shapers have them, with their counters.
async fn add_limits(
    handle: &rtnetlink::Handle,
    sandbox: &Sandbox,
    stats: &mut SandboxStats,
) -> Result<()> {
    let Some(commit) = health::commit(sandbox) else {
        return Ok(());
    };
    for e in &mut stats.endpoints {
        let Some(recorded) = commit.endpoints.iter().find(|r| r.endpoint.name == e.pod) else {
            continue;
        };
        for (d, live) in
            crate::limit::apply::read_live(handle, &sandbox.netns, &recorded.shapers).await?
        {
            match d {
                crate::limit::LimitDirection::Rx => e.rx_limit = Some(live),
                crate::limit::LimitDirection::Tx => e.tx_limit = Some(live),
            }
        }
    }
    Ok(())
}

pub(crate) async fn list_interfaces(
    handle: &rtnetlink::Handle,
    netns: &Netns,
) -> Result<Vec<crate::interfaces::Interface>> {
    crate::interfaces::list(handle)
        .await
        .map_err(|source| Error::Netlink {
            op: "RTM_GETLINK dump",
            target: "all interfaces".into(),
            netns: netns.to_string(),
            source: Box::new(source),
        })
}

/// The mirred actions' counters of every pod device ↔ tap pair (`None` without any).
async fn mirred_stats(handle: &rtnetlink::Handle, netns: &Netns) -> Result<Option<SandboxStats>> {
    let mut endpoints = Vec::new();
    for (index, (pod, tap)) in mirred_pairs_by_target(handle, netns)
        .await?
        .into_iter()
        .enumerate()
    {
        let mirred_err = Error::mirred(netns);
        let to_vm = mirred::counters(handle, &pod).await.map_err(mirred_err)?;
        let from_vm = mirred::counters(handle, &tap).await.map_err(mirred_err)?;
        let (Some(to_vm), Some(from_vm)) = (to_vm, from_vm) else {
            continue;
        };
        let convert = |c: mirred::MirredCounters| DirectionStats {
            packets: c.packets,
            bytes: c.bytes,
            errors: c.drops,
            dropped: crate::stats::Dropped {
                mirred_action: crate::stats::DropCount::Counted(c.drops),
                ..Default::default()
            },
            delivered: None,
            guard: None,
        };
        endpoints.push(EndpointStats {
            index: index as u32,
            pod: pod.name,
            tap: tap.name,
            to_vm: convert(to_vm),
            from_vm: DirectionStats {
                dropped: crate::stats::Dropped {
                    device_drops_in_action: true,
                    ..convert(from_vm).dropped
                },
                ..convert(from_vm)
            },
            rx_limit: None,
            tx_limit: None,
        });
    }
    if endpoints.is_empty() {
        return Ok(None);
    }
    let mut s = SandboxStats::new(netns, TcBackend::Mirred, Vec::new());
    s.endpoints = endpoints;
    Ok(Some(s))
}

/// Devices whose ingress mirred filters redirect to each other, as (pod side, VM side): a
/// `tap<N>_kata` (or a custom tap name the sandbox records) is the VM side; otherwise the lower ifindex is the pod side (`connect`'s
/// first device when it was created first).
async fn mirred_pairs_by_target(
    handle: &rtnetlink::Handle,
    netns: &Netns,
) -> Result<Vec<(crate::datapath::Dev, crate::datapath::Dev)>> {
    let all = list_interfaces(handle, netns).await?;
    let mut targets = std::collections::BTreeMap::new();
    for iface in &all {
        let dev = crate::datapath::Dev {
            name: iface.name.clone(),
            ifindex: iface.ifindex,
        };
        if let Some(t) = mirred::redirect_target(handle, &dev)
            .await
            .map_err(Error::mirred(netns))?
        {
            targets.insert(iface.ifindex, (dev, t));
        }
    }
    let custom = super::recorded_custom_taps(netns.cookie);
    let is_tap = |name: &str| crate::tap::name::parse(name).is_some() || custom.contains_key(name);
    let mut pairs = Vec::new();
    for (ifindex, (dev, target)) in &targets {
        let Some((other, back)) = targets.get(target) else {
            continue;
        };
        if back != ifindex {
            continue;
        }
        let dev_is_tap = is_tap(&dev.name);
        let other_is_tap = is_tap(&other.name);
        let dev_is_pod = match (dev_is_tap, other_is_tap) {
            (false, true) => true,
            (true, false) => false,
            _ => ifindex < target,
        };
        if dev_is_pod {
            pairs.push((dev.clone(), other.clone()));
        }
    }
    Ok(pairs)
}
