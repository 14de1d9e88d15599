//! What attach, hotplug and watch report of one endpoint handed to the VM.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::EndpointInfo;
use crate::{
    datapath::Redirects,
    endpoint::Classified,
    guard::{GuardReport, GuardSettings},
    guest_info::{GuestNeighbor, GuestNetwork, GuestRoute},
    interfaces::Interface,
    model::{report::MacvtapReport, report::TapReport, AttachmentKind, Plug},
    netns::Netns,
    tap, Error, Result,
};

/// One attached endpoint: what the VMM and the guest need to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointReport {
    #[serde(flatten)]
    pub endpoint: EndpointInfo,
    /// The guest-side interface name (`eth<N>`).
    pub guest_ifname: String,
    /// How the VMM gets this endpoint: `tap`, `macvtap`, `vhost-user` or `physical`.
    pub attachment: AttachmentKind,
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
    /// The rate limits' shapers (kata's rx/tx limiter); absent when unlimited.
    #[serde(
        default,
        skip_serializing_if = "crate::limit::EndpointShapers::is_empty"
    )]
    pub shapers: crate::limit::EndpointShapers,
}

impl EndpointReport {
    /// The report of endpoint `plug` (pod device `iface` of kind `class`), with the routes
    /// and neighbours of `guest` through it; the guard is filled in by [`report_guards`].
    pub(crate) fn of(
        iface: &Interface,
        class: &Classified,
        plug: Plug,
        guest: &GuestNetwork,
    ) -> EndpointReport {
        let index = plug.plugged.index;
        let (routes, neighbors) = guest.of(iface.ifindex);
        EndpointReport {
            endpoint: EndpointInfo::new(index, iface, class),
            guest_ifname: tap::name::guest_ifname_for(index),
            attachment: plug.plugged.attachment(),
            tap: plug.tap,
            macvtap: plug.macvtap,
            redirect: plug.redirect,
            routes,
            neighbors,
            guard: None,
            shapers: Default::default(),
        }
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
