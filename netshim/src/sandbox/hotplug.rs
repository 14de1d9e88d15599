//! Handing one endpoint to the VM while the sandbox runs, and taking it back when its pod
//! device is gone (what `netshim watch` does on each change).
//!
//! [`plug`] does for one endpoint what attach does for each: by kind and model, a
//! `tap<N>_kata` connected with the configured datapath (added to the sandbox's existing pin
//! directory, or a new one for the first endpoint), a macvtap of the macvtap model, or nothing
//! for kinds the VMM takes as they are. Like attach it leaves nothing half-made: a failure
//! takes back what was done. [`unplug`] removes what [`plug`] (or attach) made for an
//! endpoint whose pod device has disappeared: the datapath entries (eBPF peer entries,
//! endpoint record and link pins; mirred ingress qdiscs), then the tap, or the macvtap model's
//! state.
//!
//! Both must run on a thread inside the sandbox netns.

use super::{
    attach::{
        create_macvtap, create_tap, endpoint_report, guarded_pair, report_guards, AttachOptions,
        Attachment, EndpointReport, MacvtapReport, Redirects,
    },
    connect::{connect_pairs, dev, Pair},
    undo::Undo,
};
use crate::{
    datapath::{ebpf, mirred, Dev, TcBackend},
    endpoint::{Classified, EndpointKind},
    guest_info::GuestNetwork,
    interfaces::{self, Interface},
    model::{macvtap, InternetworkingModel},
    netns::Netns,
    pins, state, Error, Result,
};

/// What connects a `tap<N>_kata` to its pod device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TapDatapath {
    Ebpf,
    Mirred,
    /// The `none` model: the tap alone.
    None,
}

/// How an endpoint reaches the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VmSide {
    /// A `tap<N>_kata` tun device.
    Tap { tap: Dev, datapath: TapDatapath },
    /// A macvtap made by the macvtap model on the pod device.
    Macvtap { macvtap: Dev },
    /// Nothing made: the VMM takes the endpoint as it is. `device` is what it opens.
    Handover {
        kind: &'static str,
        device: Option<String>,
    },
}

/// An endpoint handed to the VM, and what was made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plugged {
    pub pod: Dev,
    /// The endpoint index: `tap<index>_kata`, counter slots, `eth<index>` in the guest.
    pub index: u32,
    pub vm: VmSide,
}

impl Plugged {
    /// The device the VMM opens (`tap1_kata`, `/dev/tap<ifindex>`, a socket, a PCI address).
    pub fn vm_device(&self) -> Option<String> {
        match &self.vm {
            VmSide::Tap { tap, .. } => Some(tap.name.clone()),
            VmSide::Macvtap { macvtap } => Some(macvtap.name.clone()),
            VmSide::Handover { device, .. } => device.clone(),
        }
    }

    /// `tcfilter/ebpf`, `tcfilter/mirred`, `none`, `macvtap`, or the kind handed over.
    pub fn datapath(&self) -> String {
        match &self.vm {
            VmSide::Tap { datapath, .. } => match datapath {
                TapDatapath::Ebpf => "tcfilter/ebpf".into(),
                TapDatapath::Mirred => "tcfilter/mirred".into(),
                TapDatapath::None => "none".into(),
            },
            VmSide::Macvtap { .. } => "macvtap".into(),
            VmSide::Handover { kind, .. } => format!("{kind} (handed over)"),
        }
    }
}

/// The datapath label [`Plugged::datapath`] gives the endpoints `options` attaches through
/// the model.
pub(crate) fn model_datapath(options: &AttachOptions) -> &'static str {
    match (options.model, options.backend) {
        (InternetworkingModel::TcFilter, TcBackend::Ebpf) => "tcfilter/ebpf",
        (InternetworkingModel::TcFilter, TcBackend::Mirred) => "tcfilter/mirred",
        (InternetworkingModel::MacVtap, _) => "macvtap",
        (InternetworkingModel::None, _) => "none",
    }
}

/// Hands endpoint `iface` to the VM as endpoint `index`. On failure, what was made is taken
/// back before the error is returned.
pub(crate) async fn plug(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    class: &Classified,
    guest: &GuestNetwork,
) -> Result<(Plugged, EndpointReport)> {
    let mut undo = Undo::default();
    match plug_with_undo(
        handle, netns, options, index, iface, class, guest, &mut undo,
    )
    .await
    {
        Ok(done) => Ok(done),
        Err(e) => {
            undo.run(handle, netns).await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn plug_with_undo(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    class: &Classified,
    guest: &GuestNetwork,
    undo: &mut Undo,
) -> Result<(Plugged, EndpointReport)> {
    if let Some(planned) = super::tap_conflict::planned(options, index, iface, class) {
        super::tap_conflict::refuse_existing(handle, netns, &planned, &options.probe).await?;
    }
    let mut redirect = None;
    let (attachment, vm) = match class.kind {
        kind if kind.uses_model() => match options.model {
            InternetworkingModel::TcFilter | InternetworkingModel::None => {
                let (tap, tap_iface) =
                    create_tap(handle, netns, options, index, iface, undo).await?;
                let datapath = match options.model {
                    InternetworkingModel::TcFilter => {
                        let pair = Pair::new(index, iface, &tap_iface, options.fast_path);
                        let pair = guarded_pair(pair, iface, &options.resolved_guard()?);
                        connect_pairs(
                            handle,
                            netns,
                            options.backend,
                            options.ebpf_attach,
                            std::slice::from_ref(&pair),
                            undo,
                        )
                        .await?;
                        match options.backend {
                            TcBackend::Ebpf => {
                                redirect = Some(Redirects {
                                    to_vm: pair.a_to_b,
                                    from_vm: pair.b_to_a,
                                });
                                TapDatapath::Ebpf
                            }
                            TcBackend::Mirred => TapDatapath::Mirred,
                        }
                    }
                    _ => TapDatapath::None,
                };
                (
                    Attachment::Tap(tap),
                    VmSide::Tap {
                        tap: dev(&tap_iface),
                        datapath,
                    },
                )
            }
            InternetworkingModel::MacVtap => {
                let made = create_macvtap(handle, netns, options, index, iface, undo).await?;
                let macvtap = Dev {
                    name: made.name.clone(),
                    ifindex: made.ifindex,
                };
                (Attachment::Macvtap(made), VmSide::Macvtap { macvtap })
            }
        },
        EndpointKind::Macvtap => {
            let device = macvtap::device_path(iface.ifindex);
            let vm = VmSide::Handover {
                kind: "macvtap",
                device: Some(device.display().to_string()),
            };
            let report = MacvtapReport {
                name: iface.name.clone(),
                ifindex: iface.ifindex,
                device,
                queues: options.queues.max(1),
                created: false,
            };
            (Attachment::Macvtap(report), vm)
        }
        EndpointKind::VhostUser => (
            Attachment::Handover("vhost-user"),
            VmSide::Handover {
                kind: "vhost-user",
                device: class
                    .vhost_user_socket
                    .as_ref()
                    .map(|s| s.display().to_string()),
            },
        ),
        _ => (
            Attachment::Handover("physical"),
            VmSide::Handover {
                kind: "physical",
                device: class.pci_address.as_ref().map(|p| format!("pci {p}")),
            },
        ),
    };
    let mut report = endpoint_report(index, iface, class, attachment, guest);
    report.redirect = redirect;
    let pin_dir = pins::sandbox_dir(netns.cookie);
    let pin_dir = (options.backend == TcBackend::Ebpf && pin_dir.exists()).then_some(pin_dir);
    let guard = options.resolved_guard()?;
    report_guards(
        netns,
        std::slice::from_mut(&mut report),
        pin_dir.as_deref(),
        &guard,
    )?;
    Ok((
        Plugged {
            pod: dev(iface),
            index,
            vm,
        },
        report,
    ))
}

/// Takes back what was made for `plugged`, whose pod device is gone: its datapath entries,
/// then its tap (only if the device of that name is still the one that was made), or the
/// macvtap model's state. Parts already gone are fine.
pub(crate) async fn unplug(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    plugged: &Plugged,
) -> Result<()> {
    match &plugged.vm {
        VmSide::Tap { tap, datapath } => {
            match datapath {
                TapDatapath::Ebpf => {
                    let dir = pins::sandbox_dir(netns.cookie);
                    ebpf::disconnect_pair(handle, &dir, &plugged.pod.name, &tap.name)
                        .await
                        .map_err(|source| Error::Ebpf {
                            netns: netns.to_string(),
                            source: Box::new(source),
                        })?;
                }
                TapDatapath::Mirred => {
                    mirred::disconnect(handle, &plugged.pod, tap)
                        .await
                        .map_err(|source| Error::Mirred {
                            netns: netns.to_string(),
                            source: Box::new(source),
                        })?;
                }
                TapDatapath::None => {}
            }
            let netlink_err = |op| {
                move |source| Error::Netlink {
                    op,
                    target: tap.name.clone(),
                    netns: netns.to_string(),
                    source: Box::new(source),
                }
            };
            let current = interfaces::by_name(handle, &tap.name)
                .await
                .map_err(netlink_err("RTM_GETLINK"))?;
            if current.is_some_and(|c| c.ifindex == tap.ifindex) {
                super::detach::delete_link(handle, tap)
                    .await
                    .map_err(netlink_err("RTM_DELLINK"))?;
            }
        }
        VmSide::Macvtap { macvtap } => {
            // The kernel deleted the macvtap with its lower device; what is left is the
            // state file (and a device node without devtmpfs).
            let state_dir = state::sandbox_dir(netns.cookie);
            macvtap::disconnect(handle, &macvtap.name, plugged.pod.ifindex, &state_dir)
                .await
                .map_err(|source| Error::Macvtap {
                    netns: netns.to_string(),
                    source: Box::new(source),
                })?;
            state::remove_sandbox_dir_if_empty(&state_dir);
        }
        VmSide::Handover { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugged(vm: VmSide) -> Plugged {
        Plugged {
            pod: Dev {
                name: "eth1".into(),
                ifindex: 7,
            },
            index: 1,
            vm,
        }
    }

    #[test]
    fn labels_name_model_and_backend() {
        let tap = Dev {
            name: "tap1_kata".into(),
            ifindex: 9,
        };
        let p = plugged(VmSide::Tap {
            tap: tap.clone(),
            datapath: TapDatapath::Ebpf,
        });
        assert_eq!(p.datapath(), "tcfilter/ebpf");
        assert_eq!(p.vm_device().as_deref(), Some("tap1_kata"));
        let p = plugged(VmSide::Tap {
            tap,
            datapath: TapDatapath::Mirred,
        });
        assert_eq!(p.datapath(), "tcfilter/mirred");
        let p = plugged(VmSide::Handover {
            kind: "physical",
            device: Some("pci 0000:00:03.0".into()),
        });
        assert_eq!(p.datapath(), "physical (handed over)");
        assert_eq!(p.vm_device().as_deref(), Some("pci 0000:00:03.0"));

        let mut options = AttachOptions::default();
        assert_eq!(model_datapath(&options), "tcfilter/ebpf");
        options.backend = TcBackend::Mirred;
        assert_eq!(model_datapath(&options), "tcfilter/mirred");
        options.model = InternetworkingModel::MacVtap;
        assert_eq!(model_datapath(&options), "macvtap");
    }
}
