//! Handing one endpoint to the VM while the sandbox runs, and taking it back when its pod
//! device is gone (what `netshim watch` does on each change).
//!
//! [`plug`] does for one endpoint what attach does for each: by kind, the model's VM side
//! (see [`crate::model`]: a `tap<N>_kata` connected with the configured datapath, added to
//! the sandbox's existing pin directory or a new one for the first endpoint; a macvtap of the
//! macvtap model; the tap alone), or nothing for kinds the VMM takes as they are. Like attach
//! it leaves nothing half-made: a failure takes back what was done. [`unplug`] removes what
//! [`plug`] (or attach) made for an endpoint whose pod device has disappeared (see
//! [`crate::model::unplug`]).
//!
//! Both must run on a thread inside the sandbox netns.

use super::{
    report::{report_guards, EndpointReport},
    AttachOptions, Sandbox,
};
use crate::{
    datapath::TcBackend,
    endpoint::Classified,
    guest_info::GuestNetwork,
    interfaces::Interface,
    model::{self, undo::Undo, Plug, PlugContext, Plugged},
    Result,
};

pub(crate) use crate::model::unplug;

/// Hands endpoint `iface` to the VM as endpoint `index`. On failure, what was made is taken
/// back before the error is returned.
pub(crate) async fn plug(
    handle: &rtnetlink::Handle,
    sandbox: &Sandbox,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    class: &Classified,
    guest: &GuestNetwork,
) -> Result<(Plugged, EndpointReport)> {
    let mut undo = Undo::default();
    match plug_with_undo(
        handle, sandbox, options, index, iface, class, guest, &mut undo,
    )
    .await
    {
        Ok(done) => Ok(done),
        Err(e) => {
            undo.run(handle, &sandbox.netns).await;
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn plug_with_undo(
    handle: &rtnetlink::Handle,
    sandbox: &Sandbox,
    options: &AttachOptions,
    index: u32,
    iface: &Interface,
    class: &Classified,
    guest: &GuestNetwork,
    undo: &mut Undo,
) -> Result<(Plugged, EndpointReport)> {
    let netns = &sandbox.netns;
    if let Some(planned) = super::tap_conflict::planned(options, index, iface, class) {
        super::tap_conflict::refuse_existing(handle, netns, &planned, &options.probe).await?;
    }
    let plug_options = options.plug_options()?;
    let plug: Plug = match class.kind.uses_model() {
        true => {
            let cx = PlugContext {
                handle,
                netns,
                options: &plug_options,
                preload: None,
            };
            let plugs = options.model.plug(&cx, &[(index, iface)], undo).await?;
            plugs
                .endpoints
                .into_iter()
                .next()
                .expect("one plug per endpoint given")
        }
        false => model::handover(index, iface, class, options.queues),
    };
    let plugged = plug.plugged.clone();
    let mut report = EndpointReport::of(iface, class, plug, guest);
    let pin_dir = sandbox.pin_dir.as_path();
    let pin_dir = (options.backend == TcBackend::Ebpf && pin_dir.exists()).then_some(pin_dir);
    report_guards(
        netns,
        std::slice::from_mut(&mut report),
        pin_dir,
        &plug_options.guard,
    )?;
    if !options.limits.is_empty() && class.kind.uses_model() {
        let backend = (options.model == crate::model::InternetworkingModel::TcFilter)
            .then_some(options.backend);
        super::limit::limit_plugged(
            handle,
            netns,
            (options.model, backend, pin_dir),
            &mut report,
            &options.limits,
        )
        .await?;
    }
    Ok((plugged, report))
}
