//! Which device's root qdisc each direction of an endpoint leaves through, per model and
//! datapath (kata's `addRxRateLimiter` / `addTxRateLimiter` choose the same devices where
//! no IFB is needed):
//!
//! | model | rx (into the VM) | tx (out of the VM) |
//! |---|---|---|
//! | tcfilter, eBPF | the tap's egress | the pod device's egress (`bpf_redirect`, not `_peer`) |
//! | tcfilter, mirred | the tap's egress | the pod device's egress (mirred egress redirect) |
//! | none | the tap's egress | refused: the VM's frames pass no qdisc netshim may own |
//! | macvtap | refused: frames reach the macvtap from the pod device's rx handler | the macvtap's egress |
//!
//! kata shapes the two refused cases through an IFB device (`ifb0`) fed by a mirred
//! redirect; netshim refuses them with this reason instead of half-limiting.

use super::LimitDirection;
use crate::{datapath::TcBackend, model::InternetworkingModel, sandbox::EndpointReport};

/// A device that shapes one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedDevice {
    pub name: String,
    pub ifindex: u32,
    /// The tap of a tcfilter endpoint (its qdisc before the limit is in its report).
    pub is_tap: bool,
}

/// The device that shapes `direction` of `endpoint`, or why there is none.
pub fn device_for(
    model: InternetworkingModel,
    backend: Option<TcBackend>,
    endpoint: &EndpointReport,
    direction: LimitDirection,
) -> Result<ShapedDevice, String> {
    let name = &endpoint.endpoint.name;
    let tap = |t: &crate::model::report::TapReport| ShapedDevice {
        name: t.name.clone(),
        ifindex: t.ifindex,
        is_tap: true,
    };
    let pod = ShapedDevice {
        name: name.clone(),
        ifindex: endpoint.endpoint.ifindex,
        is_tap: false,
    };
    use InternetworkingModel as M;
    use LimitDirection as D;
    match (model, &endpoint.tap, &endpoint.macvtap, direction) {
        (M::TcFilter, Some(t), _, D::Rx) | (M::None, Some(t), _, D::Rx) => Ok(tap(t)),
        (M::TcFilter, Some(_), _, D::Tx) if backend.is_some() => Ok(pod),
        (M::None, Some(_), _, D::Tx) => Err(format!(
            "the none model leaves the tap of {name} to the VMM, and what the VM sends \
             passes no qdisc netshim may own (kata feeds an IFB device for this; netshim \
             does not): limit rx only, or use the tcfilter model"
        )),
        (M::MacVtap, _, Some(m), D::Tx) => Ok(ShapedDevice {
            name: m.name.clone(),
            ifindex: m.ifindex,
            is_tap: false,
        }),
        (M::MacVtap, _, Some(_), D::Rx) => Err(format!(
            "with the macvtap model the frames for the VM reach the macvtap of {name} from \
             the pod device's receive handler, past every qdisc (kata feeds an IFB device \
             for this; netshim does not): limit tx only, or use the tcfilter model"
        )),
        _ => Err(format!(
            "{name} is handed to the VMM as it is ({}), with no tap or macvtap of netshim's \
             to shape",
            endpoint.endpoint.class.kind.as_str()
        )),
    }
}
