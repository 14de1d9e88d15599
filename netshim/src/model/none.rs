//! The `none` model: each endpoint gets its tap (`tap<N>_kata`, or the name the CNI
//! `tap_name` gives it) and nothing connects the two; the caller wires the network. The
//! tcfilter model makes its taps the same way.

use std::collections::BTreeMap;

use rtnetlink::LinkUnspec;

use super::{
    report::TapReport, undo::Undo, EndpointDatapath, Model, Plug, PlugContext, Plugged, Plugs,
    TapDatapath, VmSide,
};
use crate::{
    crash::crash_point,
    datapath::{DatapathKind, Dev, TcBackend},
    interfaces::{self, Interface},
    netns::Netns,
    tap::{
        self,
        qdisc::{QdiscPolicy, TapQdisc},
    },
    Error, Result,
};

pub(crate) struct NoModel;

impl Model for NoModel {
    fn describe(&self, _: TcBackend) -> EndpointDatapath {
        EndpointDatapath::None
    }

    async fn plug(
        &self,
        cx: &PlugContext<'_>,
        endpoints: &[(u32, &Interface)],
        undo: &mut Undo,
    ) -> Result<Plugs> {
        let mut plugs = Vec::new();
        for &(index, iface) in endpoints {
            let (tap, created) =
                create_tap(cx, index, iface, QdiscPolicy::KernelDefault, undo).await?;
            plugs.push(tap_plug(index, iface, tap, &created, TapDatapath::None));
        }
        Ok(Plugs::without_datapath(plugs, DatapathKind::None))
    }

    async fn unplug(
        &self,
        handle: &rtnetlink::Handle,
        netns: &Netns,
        plugged: &Plugged,
    ) -> Result<()> {
        match &plugged.vm {
            VmSide::Tap { tap, .. } => remove_tap(handle, netns, tap).await,
            _ => Ok(()),
        }
    }
}

/// An endpoint whose VM side is the tap `created`.
pub(super) fn tap_plug(
    index: u32,
    iface: &Interface,
    tap: TapReport,
    created: &Interface,
    datapath: TapDatapath,
) -> Plug {
    Plug {
        plugged: Plugged {
            pod: Dev::of(iface),
            index,
            vm: VmSide::Tap {
                tap: Dev::of(created),
                datapath,
            },
        },
        tap: Some(tap),
        macvtap: None,
        redirect: None,
    }
}

/// The name of the tap of endpoint `index`, whose pod device is `pod`: the one
/// `tap_names` gives it, else `tap<index>_kata`.
fn tap_name_for(tap_names: &BTreeMap<String, String>, index: u32, pod: &str) -> String {
    tap_names
        .get(pod)
        .cloned()
        .unwrap_or_else(|| tap::name::tap_for(index))
}

/// Creates the tap of endpoint `index` for `iface` (see [`tap_name_for`]): persistent,
/// vnet_hdr, the endpoint's MTU, the root qdisc `qdisc` says, up. Returns the report and
/// the tap as the netns lists it (what the datapath pairs it by).
pub(super) async fn create_tap(
    cx: &PlugContext<'_>,
    index: u32,
    iface: &Interface,
    qdisc: QdiscPolicy,
    undo: &mut Undo,
) -> Result<(TapReport, Interface)> {
    let (handle, netns, options) = (cx.handle, cx.netns, cx.options);
    let name = tap_name_for(&options.tap_names, index, &iface.name);
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
    undo.taps.push(Dev::of(&created));
    // The tap is the VM's port: no IPv6 address of the sandbox's own on it (set before up).
    interfaces::disable_ipv6_addrconf(handle, created.ifindex)
        .await
        .map_err(netlink_err("RTM_NEWLINK (IFLA_INET6_ADDR_GEN_MODE none)"))?;
    // Before up: swapping the root qdisc of a device that is up deactivates it.
    let qdisc = match qdisc {
        QdiscPolicy::KernelDefault => TapQdisc::KernelDefault,
        QdiscPolicy::Noqueue => tap::qdisc::set_noqueue(handle, created.ifindex)
            .await
            .map_err(|e| netlink_err(e.request)(e.into_source()))?,
    };
    if let TapQdisc::Kept {
        kind,
        handle: major,
    } = &qdisc
    {
        tracing::warn!(tap = %name, %netns, "the tap's root qdisc {kind} {major} is not the kernel's default: kept (frames to the VM pass it)");
    }
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
        qdisc,
    };
    Ok((report, created))
}

/// Deletes the tap `tap`, only if the device of that name is still the one that was made.
pub(super) async fn remove_tap(handle: &rtnetlink::Handle, netns: &Netns, tap: &Dev) -> Result<()> {
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
        super::undo::delete_link(handle, tap)
            .await
            .map_err(netlink_err("RTM_DELLINK"))?;
    }
    Ok(())
}
