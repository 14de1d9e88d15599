//! What a guest agent needs besides addresses: the routes and neighbours of each endpoint,
//! read from the pod netns the way kata's runtime hands them to its agent.
//!
//! - Routes of the main table, except the ones the kernel made itself (`proto kernel`:
//!   connected prefixes, IPv6 link-local and multicast), which the guest kernel makes again
//!   from its own addresses. A route's MTU metric is kept (cilium#38033). IPv6 routes to a
//!   prefix without a gateway are device routes (scope link) and stay so (kata #2768).
//! - Neighbours: the permanent entries (a CNI may pin its gateway's MAC), and the reachable
//!   entries of default gateways.

use std::{borrow::Cow, collections::BTreeMap, fmt, net::IpAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;
use rtnetlink::packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
        RouteScope, RouteType,
    },
    AddressFamily,
};

use crate::interfaces::Mac;

/// A route the guest should install on the endpoint's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestRoute {
    /// `default`, or a prefix such as `10.1.0.0/16` / `fd00::/64`.
    pub destination: String,
    pub gateway: Option<IpAddr>,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// `universe` (via a gateway or global) or `link` (directly reachable).
    pub scope: Cow<'static, str>,
    /// The route's MTU metric, if it has one.
    pub mtu: Option<u32>,
}

/// A neighbour entry the guest should install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestNeighbor {
    pub address: IpAddr,
    pub mac: Mac,
    /// `permanent` or `reachable`.
    pub state: Cow<'static, str>,
}

/// Routes and neighbours of a netns, by output interface index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestNetwork {
    pub routes: BTreeMap<u32, Vec<GuestRoute>>,
    pub neighbors: BTreeMap<u32, Vec<GuestNeighbor>>,
}

impl GuestNetwork {
    /// The routes and neighbours through interface `ifindex`.
    pub fn of(&self, ifindex: u32) -> (Vec<GuestRoute>, Vec<GuestNeighbor>) {
        (
            self.routes.get(&ifindex).cloned().unwrap_or_default(),
            self.neighbors.get(&ifindex).cloned().unwrap_or_default(),
        )
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The route the guest should get from `msg`, with its output interface; `None` for routes
/// that are not the guest's business.
pub fn guest_route(msg: &RouteMessage) -> Option<(u32, GuestRoute)> {
    let RouteHeader {
        destination_prefix_length,
        table,
        protocol,
        scope,
        kind,
        ..
    } = msg.header;
    if kind != RouteType::Unicast || protocol == RouteProtocol::Kernel {
        return None;
    }
    let mut main_table = table == 254;
    let (mut destination, mut gateway, mut source, mut oif, mut mtu) =
        (None, None, None, None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => main_table = *t == 254,
            RouteAttribute::Destination(a) => destination = ip_of(a),
            RouteAttribute::Gateway(a) => gateway = ip_of(a),
            RouteAttribute::PrefSource(a) => source = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(v) = m {
                        mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    if !main_table {
        return None;
    }
    let oif = oif?;
    let destination = match (destination, destination_prefix_length) {
        (_, 0) => "default".to_owned(),
        (Some(d), len) => format!("{d}/{len}"),
        (None, _) => return None,
    };
    if let Some(IpAddr::V6(d)) = destination
        .split('/')
        .next()
        .and_then(|d| d.parse::<IpAddr>().ok())
    {
        if d.is_multicast() || d.segments()[0] & 0xffc0 == 0xfe80 {
            return None;
        }
    }
    let scope = match (scope, gateway) {
        (RouteScope::Link, _) | (_, None) => "link",
        _ => "universe",
    };
    Some((
        oif,
        GuestRoute {
            destination,
            gateway,
            source,
            scope: scope.into(),
            mtu,
        },
    ))
}

/// The neighbour entry `msg` describes, if it is permanent.
fn neighbor(msg: &NeighbourMessage) -> Option<(u32, NeighbourState, GuestNeighbor)> {
    let mut address = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                address = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                address = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                mac = Some(Mac(m));
            }
            _ => {}
        }
    }
    let state = msg.header.state;
    let label = match state {
        NeighbourState::Permanent => "permanent",
        NeighbourState::Reachable => "reachable",
        _ => return None,
    };
    Some((
        msg.header.ifindex,
        state,
        GuestNeighbor {
            address: address?,
            mac: mac?,
            state: label.into(),
        },
    ))
}

/// Reads routes (IPv4 and IPv6) and neighbours of the handle's netns.
pub async fn collect(handle: &rtnetlink::Handle) -> Result<GuestNetwork, rtnetlink::Error> {
    let mut out = GuestNetwork::default();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        let mut routes = handle.route().get(msg).execute();
        while let Some(msg) = routes.try_next().await? {
            if let Some((oif, route)) = guest_route(&msg) {
                out.routes.entry(oif).or_default().push(route);
            }
        }
    }
    let gateways: Vec<(u32, IpAddr)> = out
        .routes
        .iter()
        .flat_map(|(oif, rs)| {
            rs.iter()
                .filter(|r| r.destination == "default")
                .filter_map(move |r| r.gateway.map(|g| (*oif, g)))
        })
        .collect();
    let mut neighbours = handle.neighbours().get().execute();
    while let Some(msg) = neighbours.try_next().await? {
        let Some((ifindex, state, n)) = neighbor(&msg) else {
            continue;
        };
        let wanted = state == NeighbourState::Permanent || gateways.contains(&(ifindex, n.address));
        if wanted {
            out.neighbors.entry(ifindex).or_default().push(n);
        }
    }
    Ok(out)
}

impl fmt::Display for GuestRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.destination)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(m) = self.mtu {
            write!(f, " mtu {m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn route(family: AddressFamily, dst: Option<IpAddr>, len: u8) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.destination_prefix_length = len;
        m.header.table = 254;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        if let Some(d) = dst {
            m.attributes.push(RouteAttribute::Destination(d.into()));
        }
        m.attributes.push(RouteAttribute::Oif(2));
        m
    }

    #[test]
    fn default_route_with_gateway_and_mtu() {
        let mut m = route(AddressFamily::Inet, None, 0);
        m.attributes.push(RouteAttribute::Gateway(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)).into(),
        ));
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400)]));
        let (oif, r) = guest_route(&m).unwrap();
        assert_eq!(oif, 2);
        assert_eq!(r.destination, "default");
        assert_eq!(r.gateway, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(r.mtu, Some(1400));
        assert_eq!(r.scope, "universe");
    }

    #[test]
    fn kernel_routes_are_the_guests_own() {
        let mut m = route(
            AddressFamily::Inet,
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0))),
            24,
        );
        m.header.protocol = RouteProtocol::Kernel;
        assert_eq!(guest_route(&m), None);
    }

    #[test]
    fn ipv6_device_route_without_gateway_is_scope_link() {
        // kata #2768: `fd00:1::/64 dev eth0` (no gateway) must stay a device route.
        let dst = IpAddr::V6("fd00:1::".parse::<Ipv6Addr>().unwrap());
        let m = route(AddressFamily::Inet6, Some(dst), 64);
        let (_, r) = guest_route(&m).unwrap();
        assert_eq!(r.destination, "fd00:1::/64");
        assert_eq!(r.gateway, None);
        assert_eq!(r.scope, "link");
    }

    #[test]
    fn link_local_multicast_and_other_tables_are_skipped() {
        let ll = route(
            AddressFamily::Inet6,
            Some(IpAddr::V6("fe80::".parse().unwrap())),
            64,
        );
        assert_eq!(guest_route(&ll), None);
        let mc = route(
            AddressFamily::Inet6,
            Some(IpAddr::V6("ff00::".parse().unwrap())),
            8,
        );
        assert_eq!(guest_route(&mc), None);
        let mut local = route(AddressFamily::Inet, None, 0);
        local.header.table = 255;
        assert_eq!(guest_route(&local), None);
        let mut other = route(AddressFamily::Inet, None, 0);
        other.header.table = 252;
        other.attributes.push(RouteAttribute::Table(100));
        assert_eq!(guest_route(&other), None);
    }

    #[test]
    fn only_permanent_and_reachable_neighbours() {
        let mut m = NeighbourMessage::default();
        m.header.ifindex = 2;
        m.header.state = NeighbourState::Permanent;
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 0, 0, 1))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
        ];
        let (ifindex, _, n) = neighbor(&m).unwrap();
        assert_eq!(ifindex, 2);
        assert_eq!(n.state, "permanent");
        m.header.state = NeighbourState::Stale;
        assert!(neighbor(&m).is_none());
    }
}
