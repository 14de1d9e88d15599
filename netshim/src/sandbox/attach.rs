//! `netshim attach`: hand every endpoint of a pod netns to the VM.
//!
//! Per endpoint kind, as kata does: veth, macvlan, ipvlan and tap-mode tuntap go through the
//! internetworking model (tcfilter: a `tap<N>_kata` connected by the eBPF or mirred
//! datapath; macvtap: a macvtap on the pod device; none: the tap alone); a macvtap already
//! in the netns is handed over as it is; physical and vhost-user endpoints are reported with
//! what the VMM needs (PCI address, socket) and get no datapath.
//!
//! Nothing is left half-made: every step that changes the netns registers its undo first,
//! and a failure runs the undo list before the error is returned.

use std::path::PathBuf;

use netshim_common::MAX_ENDPOINTS;
use rtnetlink::LinkUnspec;

use super::{
    connect::{connect_pairs, dev, Pair},
    survey,
    undo::Undo,
    EndpointInfo, SkippedInterface, Strictness, Survey,
};
use crate::{
    backend::{ebpf::AttachMode, mirred, Dev, FastPath, RedirectMode, TcBackend},
    endpoint::{EndpointKind, SystemProbe},
    guest_info::{GuestNeighbor, GuestNetwork, GuestRoute},
    interfaces::{self, Interface},
    model::{macvtap, InternetworkingModel},
    netns::Netns,
    pins, state, tap, tap_name, Error, Result,
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
        Ok(())
    }
}

/// The tap made for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MacvtapReport {
    pub name: String,
    pub ifindex: u32,
    pub device: PathBuf,
    pub queues: u32,
    /// Made by netshim's macvtap model (and removed by detach), or found in the netns.
    pub created: bool,
}

/// One attached endpoint: what the VMM and the guest need to know.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointReport {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// The guest-side interface name (`eth<N>`).
    pub guest_ifname: String,
    /// How the VMM gets this endpoint: `tap`, `macvtap`, `vhost-user` or `physical`.
    pub attachment: &'static str,
    pub tap: Option<TapReport>,
    pub macvtap: Option<MacvtapReport>,
    /// eBPF backend: how each direction is redirected.
    pub redirect: Option<Redirects>,
    /// Routes through this endpoint, without the kernel's own (see [`crate::guest_info`]).
    pub routes: Vec<GuestRoute>,
    pub neighbors: Vec<GuestNeighbor>,
}

/// How the eBPF datapath redirects each direction of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Redirects {
    /// pod device ingress → tap: always `redirect` (a tap has no peer).
    pub to_vm: RedirectMode,
    /// tap ingress → pod device: `redirect_peer` when the pod device is a veth whose peer is
    /// in another netns and the fast path is on.
    pub from_vm: RedirectMode,
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
    /// `tcx`, `cls_bpf`, `mirred`, `macvtap` or `none`.
    pub datapath: String,
    /// The bpffs pin directory (eBPF backend).
    pub pin_dir: Option<PathBuf>,
    pub endpoints: Vec<EndpointReport>,
    pub skipped: Vec<SkippedInterface>,
    /// `tap<N>_kata` devices a dead run left behind, replaced by new ones.
    pub replaced_leftovers: Vec<String>,
}

/// Attaches netshim to every endpoint of `netns`.
pub fn attach(netns: &Netns, options: &AttachOptions) -> Result<AttachReport> {
    options.validate()?;
    let netns = netns.clone();
    let options = options.clone();
    netns.clone().run(move |handle| async move {
        let strictness = if options.skip_unsupported {
            Strictness::List
        } else {
            Strictness::Refuse
        };
        let survey = survey(&handle, &netns, strictness, &options.probe).await?;
        check_attachable(&handle, &netns, &survey).await?;
        // What the pod devices' ingress hooks already hold (see coexist.rs).
        let (model, backend, mode) = (options.model, options.backend, options.ebpf_attach);
        super::coexist::check_pod_devices(&handle, &netns, model, backend, mode, &survey).await?;
        let mut undo = Undo::default();
        match connect_all(&handle, &netns, &options, &survey, &mut undo).await {
            Ok(report) => Ok(report),
            Err(e) => {
                undo.run(&handle, &netns).await;
                Err(e)
            }
        }
    })
}

async fn check_attachable(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    survey: &Survey,
) -> Result<()> {
    // An attached netns first: after the macvtap model its pod device has no address left.
    let mut found = Vec::new();
    let pin_dir = pins::sandbox_dir(netns.cookie);
    if pin_dir.exists() {
        found.push(pin_dir.display().to_string());
    }
    let state_dir = state::sandbox_dir(netns.cookie);
    if state::has_state(&state_dir) {
        found.push(state_dir.display().to_string());
    }
    for (_, tap) in &survey.taps {
        let dev = Dev {
            name: tap.name.clone(),
            ifindex: tap.ifindex,
        };
        let q = mirred::ingress_qdisc(handle, &dev)
            .await
            .map_err(|source| Error::Mirred {
                netns: netns.to_string(),
                source: Box::new(source),
            })?;
        if q == mirred::IngressQdisc::Ingress {
            found.push(format!("mirred datapath on {}", tap.name));
        }
    }
    if !found.is_empty() {
        return Err(Error::AlreadyAttached {
            netns: netns.to_string(),
            detail: format!("found {}", found.join(", ")),
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
    Ok(())
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
    let replaced_leftovers = replace_leftover_taps(handle, netns, survey).await?;

    let mut pairs = Vec::new();
    let mut endpoints = Vec::new();
    for (index, (iface, class)) in survey.endpoints.iter().enumerate() {
        let index = index as u32;
        let attachment = match class.kind {
            kind if kind.uses_model() => match options.model {
                InternetworkingModel::TcFilter | InternetworkingModel::None => {
                    let tap = create_tap(handle, netns, options, index, iface, undo).await?;
                    let tap_iface = interfaces::by_name(handle, &tap.name)
                        .await
                        .map_err(|source| Error::Netlink {
                            op: "RTM_GETLINK",
                            target: tap.name.clone(),
                            netns: netns.to_string(),
                            source: Box::new(source),
                        })?
                        .ok_or_else(|| Error::NoSuchDevice {
                            netns: netns.to_string(),
                            name: tap.name.clone(),
                        })?;
                    pairs.push(Pair::new(index, iface, &tap_iface, options.fast_path));
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
        replaced_leftovers,
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
        guest_ifname: tap_name::guest_ifname_for(index),
        attachment: kind,
        tap,
        macvtap,
        redirect: None,
        routes,
        neighbors,
    }
}

/// Taps a dead run left (no datapath of ours is attached, see `check_attachable`) are
/// deleted, so that the new ones start clean even when a dead VMM's fd still holds one
/// (a persistent tap that is still attached would make TUNSETIFF fail with EBUSY —
/// firecracker-go-sdk#73).
async fn replace_leftover_taps(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    survey: &Survey,
) -> Result<Vec<String>> {
    let mut replaced = Vec::new();
    for (_, tap) in &survey.taps {
        if tap.kind.as_deref() != Some("tun") {
            continue;
        }
        super::detach::delete_link(handle, &dev(tap))
            .await
            .map_err(|source| Error::Netlink {
                op: "RTM_DELLINK (leftover tap)",
                target: tap.name.clone(),
                netns: netns.to_string(),
                source: Box::new(source),
            })?;
        replaced.push(tap.name.clone());
    }
    Ok(replaced)
}

/// Creates `tap<index>_kata` for `iface`: persistent, vnet_hdr, the endpoint's MTU, up.
pub(crate) async fn create_tap(
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
        owner: options.tap_owner,
        group: options.tap_group,
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
    undo.taps.push(dev(&created));
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
    Ok(TapReport {
        name,
        ifindex: created.ifindex,
        mtu: iface.mtu,
        queues: options.queues.max(1),
        multi_queue: spec.multi_queue(),
        vnet_hdr: true,
        owner: options.tap_owner,
        group: options.tap_group,
        txqueuelen: options.txqueuelen,
    })
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
    let name = tap_name::tap_for(index);
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
