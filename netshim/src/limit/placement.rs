//! Which device's root qdisc each direction of an endpoint leaves through, per model and
//! datapath (kata's `addRxRateLimiter` / `addTxRateLimiter` choose the same devices where
//! no IFB is needed):
//!
//! | model | rx (into the VM) | tx (out of the VM) |
//! |---|---|---|
//! | tcfilter, eBPF | the tap's egress | the pod device's egress (`bpf_redirect`, not `_peer`) |
//! | tcfilter, mirred | the tap's egress | the pod device's egress (mirred egress redirect) |
//! | none | the tap's egress | the IFB `ifb<N>_kata`, fed from the tap's ingress |
//! | macvtap | the IFB `ifb<N>_kata`, fed from the pod device's ingress (frames reach the macvtap from its rx handler, past every qdisc) | the macvtap's egress |
//!
//! The IFB cases are kata's too (its `ifb0`, fed by a mirred redirect); see [`super::ifb`].

use super::{ifb, LimitDirection};
use crate::{
    datapath::{Dev, TcBackend},
    model::InternetworkingModel,
    sandbox::EndpointReport,
};

/// A device that shapes one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapedDevice {
    pub name: String,
    /// 0 for an IFB that is still to be made.
    pub ifindex: u32,
    /// The tap of a tcfilter endpoint (its qdisc before the limit is in its report).
    pub is_tap: bool,
    /// An IFB: the device whose ingress feeds it.
    pub fed_from: Option<Dev>,
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
        fed_from: None,
    };
    let pod = ShapedDevice {
        name: name.clone(),
        ifindex: endpoint.endpoint.ifindex,
        is_tap: false,
        fed_from: None,
    };
    let ifb_fed_from = |name: &str, ifindex: u32| ShapedDevice {
        name: ifb::name(endpoint.endpoint.index),
        ifindex: 0,
        is_tap: false,
        fed_from: Some(Dev {
            name: name.to_owned(),
            ifindex,
        }),
    };
    use InternetworkingModel as M;
    use LimitDirection as D;
    match (model, &endpoint.tap, &endpoint.macvtap, direction) {
        (M::TcFilter, Some(t), _, D::Rx) | (M::None, Some(t), _, D::Rx) => Ok(tap(t)),
        (M::TcFilter, Some(_), _, D::Tx) if backend.is_some() => Ok(pod),
        (M::None, Some(t), _, D::Tx) => Ok(ifb_fed_from(&t.name, t.ifindex)),
        (M::MacVtap, _, Some(m), D::Tx) => Ok(ShapedDevice {
            name: m.name.clone(),
            ifindex: m.ifindex,
            is_tap: false,
            fed_from: None,
        }),
        (M::MacVtap, _, Some(_), D::Rx) => Ok(ifb_fed_from(name, endpoint.endpoint.ifindex)),
        _ => Err(format!(
            "{name} is handed to the VMM as it is ({}), with no tap or macvtap of netshim's \
             to shape",
            endpoint.endpoint.class.kind.as_str()
        )),
    }
}
