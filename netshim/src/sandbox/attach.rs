//! `netshim attach`: a tap per endpoint, connected by the chosen model and backend.
//!
//! Nothing is left half-made: every step that changes the netns registers its undo first,
//! and a failure runs the undo list before the error is returned.

use super::{survey, EndpointInfo, SkippedInterface, Survey};
use crate::{
    backend::{
        ebpf::{self, AttachMode, EbpfDatapath},
        mirred, Dev, TcBackend,
    },
    endpoint::EndpointKind,
    interfaces::{self, Interface},
    model::InternetworkingModel,
    netns::Netns,
    pins, tap, tap_name, Error, Result,
};
use netshim_common::MAX_ENDPOINTS;
use rtnetlink::LinkUnspec;
use std::path::PathBuf;

/// What `attach` does.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub model: InternetworkingModel,
    pub backend: TcBackend,
    /// Queues per tap: 0 or 1 = single queue, more = IFF_MULTI_QUEUE.
    pub queues: u32,
    /// How to hook the eBPF classifier; `None` = TCX when the kernel has it, else cls_bpf.
    pub ebpf_attach: Option<AttachMode>,
}

/// The tap made for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TapReport {
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    pub queues: u32,
}

/// One attached endpoint: what the VMM and the guest need to know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointReport {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// The guest-side interface name (`eth<N>`).
    pub guest_ifname: String,
    pub tap: TapReport,
}

/// The result of an attach.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttachReport {
    pub netns: String,
    pub netns_path: PathBuf,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    pub model: String,
    pub backend: Option<TcBackend>,
    /// `tcx`, `cls_bpf`, `mirred`, or `none`.
    pub datapath: String,
    /// The bpffs pin directory (eBPF backend).
    pub pin_dir: Option<PathBuf>,
    pub endpoints: Vec<EndpointReport>,
    pub skipped: Vec<SkippedInterface>,
}

/// Attaches netshim to every endpoint of `netns`.
pub fn attach(netns: &Netns, options: &AttachOptions) -> Result<AttachReport> {
    let netns = netns.clone();
    let options = options.clone();
    netns.clone().run(move |handle| async move {
        let survey = survey(&handle, &netns, true).await?;
        check_attachable(&netns, &options, &survey)?;
        let mut undo = Undo::default();
        match connect_all(&handle, &netns, &options, &survey, &mut undo).await {
            Ok(report) => Ok(report),
            Err(e) => {
                undo.run(&handle).await;
                Err(e)
            }
        }
    })
}

fn check_attachable(netns: &Netns, options: &AttachOptions, survey: &Survey) -> Result<()> {
    if options.model == InternetworkingModel::MacVtap {
        return Err(Error::KindNotSupported {
            netns: netns.to_string(),
            ifname: "*".into(),
            kind: EndpointKind::Macvtap,
            model: options.model,
        });
    }
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
    for (iface, kind) in &survey.endpoints {
        // TC redirect works on any netdev: kata connects veth, macvlan and ipvlan through
        // the model. Other kinds need their own handling.
        if !matches!(
            kind,
            EndpointKind::Veth | EndpointKind::Macvlan | EndpointKind::Ipvlan
        ) {
            return Err(Error::KindNotSupported {
                netns: netns.to_string(),
                ifname: iface.name.clone(),
                kind: *kind,
                model: options.model,
            });
        }
    }
    let pin_dir = pins::sandbox_dir(netns.cookie);
    if !survey.taps.is_empty() || pin_dir.exists() {
        let mut found: Vec<String> = survey.taps.iter().map(|(_, t)| t.name.clone()).collect();
        if pin_dir.exists() {
            found.push(pin_dir.display().to_string());
        }
        return Err(Error::AlreadyAttached {
            netns: netns.to_string(),
            detail: format!("found {}", found.join(", ")),
        });
    }
    Ok(())
}

async fn connect_all(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    survey: &Survey,
    undo: &mut Undo,
) -> Result<AttachReport> {
    let mut pairs = Vec::new();
    let mut endpoints = Vec::new();
    for (index, (iface, kind)) in survey.endpoints.iter().enumerate() {
        let index = index as u32;
        let tap = create_tap(handle, netns, options, index, iface, undo).await?;
        pairs.push((
            Dev {
                name: iface.name.clone(),
                ifindex: iface.ifindex,
            },
            Dev {
                name: tap.name.clone(),
                ifindex: tap.ifindex,
            },
        ));
        endpoints.push(EndpointReport {
            endpoint: EndpointInfo::new(index, iface, *kind),
            guest_ifname: tap_name::guest_ifname_for(index),
            tap,
        });
    }

    let mut pin_dir = None;
    let (backend, datapath) = match options.model {
        InternetworkingModel::None => (None, "none".to_owned()),
        _ => match options.backend {
            TcBackend::Ebpf => {
                let dir = pins::create_sandbox_dir(netns.cookie)?;
                undo.pin_dir = Some(dir.clone());
                let ebpf_err = |source| Error::Ebpf {
                    netns: netns.to_string(),
                    source: Box::new(source),
                };
                let mut datapath = EbpfDatapath::load(
                    &dir,
                    options
                        .ebpf_attach
                        .unwrap_or_else(AttachMode::for_running_kernel),
                )
                .map_err(ebpf_err)?;
                datapath.record_sandbox(netns).map_err(ebpf_err)?;
                for (index, (pod, tap)) in pairs.iter().enumerate() {
                    datapath.connect(index as u32, pod, tap).map_err(ebpf_err)?;
                }
                pin_dir = Some(dir);
                (Some(TcBackend::Ebpf), datapath.mode().as_str().to_owned())
            }
            TcBackend::Mirred => {
                for (pod, tap) in &pairs {
                    undo.mirred.push((pod.clone(), tap.clone()));
                    mirred::connect(handle, pod, tap)
                        .await
                        .map_err(|source| Error::Mirred {
                            netns: netns.to_string(),
                            source: Box::new(source),
                        })?;
                }
                (Some(TcBackend::Mirred), "mirred".to_owned())
            }
        },
    };
    Ok(AttachReport {
        netns: netns.arg.clone(),
        netns_path: netns.path.clone(),
        netns_inode: netns.inode,
        netns_cookie: netns.cookie,
        model: options.model.to_string(),
        backend,
        datapath,
        pin_dir,
        endpoints,
        skipped: survey.skipped.clone(),
    })
}

/// Creates `tap<index>_kata` for `iface`: persistent, vnet_hdr, the endpoint's MTU, up.
async fn create_tap(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    undo: &mut Undo,
) -> Result<TapReport> {
    let name = tap_name::tap_for(index);
    let spec = tap::TapSpec {
        name: name.clone(),
        queues: options.queues,
        owner: None,
        group: None,
    };
    tap::create_persistent_tap(&spec).map_err(|source| Error::Tap {
        netns: netns.to_string(),
        source: Box::new(source),
    })?;
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
    undo.taps.push(Dev {
        name: name.clone(),
        ifindex: created.ifindex,
    });
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(created.ifindex)
                .mtu(iface.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink_err("RTM_NEWLINK (mtu, up)"))?;
    Ok(TapReport {
        name,
        ifindex: created.ifindex,
        mtu: iface.mtu,
        queues: options.queues.max(1),
    })
}

/// What attach has changed so far, to take back on failure.
#[derive(Default)]
struct Undo {
    taps: Vec<Dev>,
    mirred: Vec<(Dev, Dev)>,
    pin_dir: Option<PathBuf>,
}

impl Undo {
    /// Best effort: every step runs even when an earlier one fails; failures are logged.
    async fn run(self, handle: &rtnetlink::Handle) {
        for (pod, tap) in &self.mirred {
            if let Err(e) = mirred::disconnect(handle, pod, tap).await {
                log::warn!("undo: {e}");
            }
        }
        if let Some(dir) = &self.pin_dir {
            if let Err(e) = ebpf::detach_sandbox(handle, dir).await {
                log::warn!("undo: {e}");
            }
        }
        for tap in &self.taps {
            if let Err(e) = super::detach::delete_link(handle, tap).await {
                log::warn!("undo: {e}");
            }
        }
    }
}
