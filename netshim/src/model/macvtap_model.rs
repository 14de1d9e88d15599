//! The macvtap model as a [`Model`]: `tap<index>_kata` is a macvtap in bridge mode on the pod
//! device (the steps are [`super::macvtap::connect`] and [`super::macvtap::disconnect`]).

use super::{
    macvtap, report::MacvtapReport, undo::Undo, EndpointDatapath, Model, Plug, PlugContext,
    Plugged, Plugs, VmSide,
};
use crate::{
    datapath::{DatapathKind, Dev, TcBackend},
    interfaces::Interface,
    netns::Netns,
    state, tap, Error, Result,
};

pub(crate) struct MacvtapModel;

impl Model for MacvtapModel {
    fn describe(&self, _: TcBackend) -> EndpointDatapath {
        EndpointDatapath::Macvtap
    }

    async fn plug(
        &self,
        cx: &PlugContext<'_>,
        endpoints: &[(u32, &Interface)],
        undo: &mut Undo,
    ) -> Result<Plugs> {
        let mut plugs = Vec::new();
        for &(index, iface) in endpoints {
            let made = create_macvtap(cx, index, iface, undo).await?;
            plugs.push(Plug {
                plugged: Plugged {
                    pod: Dev::of(iface),
                    index,
                    vm: VmSide::Macvtap {
                        macvtap: Dev {
                            name: made.name.clone(),
                            ifindex: made.ifindex,
                        },
                    },
                },
                tap: None,
                macvtap: Some(made),
                redirect: None,
            });
        }
        Ok(Plugs::without_datapath(plugs, DatapathKind::Macvtap))
    }

    async fn unplug(
        &self,
        handle: &rtnetlink::Handle,
        netns: &Netns,
        plugged: &Plugged,
    ) -> Result<()> {
        let VmSide::Macvtap { macvtap } = &plugged.vm else {
            return Ok(());
        };
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
        Ok(())
    }
}

/// kata's macvtap model for one endpoint: `tap<index>_kata` is a macvtap on the pod device.
async fn create_macvtap(
    cx: &PlugContext<'_>,
    index: u32,
    iface: &Interface,
    undo: &mut Undo,
) -> Result<MacvtapReport> {
    let (handle, netns) = (cx.handle, cx.netns);
    let name = tap::name::tap_for(index);
    let state_dir = state::create_sandbox_dir(netns.cookie)?;
    let made = macvtap::connect(handle, iface, &name, cx.options.queues.max(1), &state_dir)
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
