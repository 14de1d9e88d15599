//! The macvtap model's netlink requests: links, addresses, routes and neighbours of the pod
//! device, through rtnetlink's builders and [`crate::netlink`].

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::{
    packet_core::{Parseable, NLM_F_CREATE, NLM_F_EXCL},
    packet_route::{
        address::AddressMessage,
        link::{LinkAttribute, LinkMessage},
        neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        route::{RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteProtocol},
        AddressFamily, RouteNetlinkMessage,
    },
    Handle,
};

use super::{
    state::{route_table, PodState, SavedAddress, SavedMessage},
    MacvtapError,
};
use crate::{interfaces::Interface, netlink};

/// A link as the model needs it: [`Interface`] plus `IFLA_LINK` and txqueuelen.
pub(super) struct LinkState {
    pub(super) iface: Interface,
    pub(super) link: Option<u32>,
    pub(super) txqlen: u32,
}

impl LinkState {
    pub(super) fn from_message(msg: &LinkMessage) -> Self {
        let mut state = LinkState {
            iface: Interface::from_link_message(msg),
            link: None,
            txqlen: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Link(l) => state.link = Some(*l),
                LinkAttribute::TxQueueLen(q) => state.txqlen = *q,
                _ => {}
            }
        }
        state
    }

    pub(super) fn is_macvtap_on(&self, pod_ifindex: u32) -> bool {
        self.iface.kind == Some(rtnetlink::packet_route::link::InfoKind::MacVtap)
            && self.link == Some(pod_ifindex)
    }
}

pub(super) async fn get_link(
    handle: &Handle,
    ifindex: u32,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    match links.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if netlink::is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) async fn get_link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if netlink::is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) async fn set_link(
    handle: &Handle,
    dev: &str,
    ifindex: u32,
    what: String,
    msg: LinkMessage,
) -> Result<(), MacvtapError> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|source| MacvtapError::SetLink {
            what,
            dev: dev.to_owned(),
            ifindex,
            source: Box::new(source),
        })
}

/// RTM_DELLINK by ifindex; a link that is already gone is fine.
pub(super) async fn delete_link(
    handle: &Handle,
    name: &str,
    ifindex: u32,
) -> Result<(), MacvtapError> {
    match handle.link().del(ifindex).execute().await {
        Ok(()) => Ok(()),
        Err(e) if netlink::is_gone(&e) => Ok(()),
        Err(source) => Err(MacvtapError::DelMacvtap {
            name: name.to_owned(),
            ifindex,
            source: Box::new(source),
        }),
    }
}

/// The device's IPv4 and IPv6 addresses, in dump order.
pub(super) async fn dump_addresses(
    handle: &Handle,
    ifindex: u32,
) -> Result<Vec<AddressMessage>, rtnetlink::Error> {
    let all: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute()
        .try_collect()
        .await?;
    Ok(all
        .into_iter()
        .filter(|a| matches!(a.header.family, AddressFamily::Inet | AddressFamily::Inet6))
        .collect())
}

/// The routes through the device that the kernel would not make again by itself.
pub(super) async fn dump_routes(
    handle: &Handle,
    ifindex: u32,
) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let all: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessage::default())
        .execute()
        .try_collect()
        .await?;
    Ok(all
        .into_iter()
        .filter(|r| route_to_save(r, ifindex))
        .map(sanitize_route)
        .collect())
}

/// The device's permanent IPv4/IPv6 neighbours.
pub(super) async fn dump_neighbours(
    handle: &Handle,
    ifindex: u32,
) -> Result<Vec<NeighbourMessage>, rtnetlink::Error> {
    let all: Vec<NeighbourMessage> = handle.neighbours().get().execute().try_collect().await?;
    Ok(all
        .into_iter()
        .filter(|n| neighbour_to_save(n, ifindex))
        .map(sanitize_neighbour)
        .collect())
}

pub(super) const RT_TABLE_LOCAL: u32 = 255;

pub(super) fn route_to_save(r: &RouteMessage, ifindex: u32) -> bool {
    if !matches!(
        r.header.address_family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) || matches!(r.header.protocol, RouteProtocol::Kernel | RouteProtocol::Ra)
        || r.header.flags.contains(RouteFlags::Cloned)
        || route_table(r) == RT_TABLE_LOCAL
    {
        return false;
    }
    r.attributes.iter().any(|a| match a {
        RouteAttribute::Oif(o) => *o == ifindex,
        RouteAttribute::MultiPath(hops) => hops.iter().any(|h| h.interface_index == ifindex),
        _ => false,
    })
}

/// Drops what RTM_NEWROUTE refuses or ignores: DEAD/LINKDOWN and the other status flags
/// (only ONLINK and PERVASIVE are requests), cache info and expiry.
pub(super) fn sanitize_route(mut r: RouteMessage) -> RouteMessage {
    r.header.flags &= RouteFlags::Onlink | RouteFlags::Pervasive;
    r.attributes.retain(|a| {
        !matches!(
            a,
            RouteAttribute::CacheInfo(_)
                | RouteAttribute::Expires(_)
                | RouteAttribute::MulticastExpires(_)
        )
    });
    for a in &mut r.attributes {
        if let RouteAttribute::MultiPath(hops) = a {
            for h in hops {
                h.flags &= RouteNextHopFlags::Onlink | RouteNextHopFlags::Pervasive;
            }
        }
    }
    r
}

pub(super) fn neighbour_to_save(n: &NeighbourMessage, ifindex: u32) -> bool {
    n.header.ifindex == ifindex
        && matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6)
        && n.header.state == NeighbourState::Permanent
        && !n.header.flags.contains(NeighbourFlags::Proxy)
}

pub(super) fn sanitize_neighbour(mut n: NeighbourMessage) -> NeighbourMessage {
    n.attributes.retain(|a| {
        !matches!(
            a,
            NeighbourAttribute::CacheInfo(_) | NeighbourAttribute::Probes(_)
        )
    });
    n
}

/// RTM_DELADDR of a dumped address; one that is gone already (a secondary removed with its
/// primary) is fine.
pub(super) async fn del_address(
    handle: &Handle,
    pod: &PodState,
    msg: &AddressMessage,
) -> Result<(), MacvtapError> {
    match handle.address().del(msg.clone()).execute().await {
        Ok(()) => Ok(()),
        Err(e) if netlink::errno(&e) == Some(Errno::EADDRNOTAVAIL) => Ok(()),
        Err(source) => Err(MacvtapError::DelAddress {
            address: SavedAddress::from_message(msg).to_string(),
            dev: pod.name.clone(),
            ifindex: pod.ifindex,
            source: Box::new(source),
        }),
    }
}

/// RTM_NEWADDR (create, exclusive); an address that is there already is fine.
///
/// Raw: rtnetlink's `address().add()` builds its message from (index, address, prefix); this
/// sends back the whole saved one (flags, label, broadcast, lifetimes).
pub(super) async fn add_address(
    handle: &Handle,
    pod: &PodState,
    a: &SavedAddress,
) -> Result<(), MacvtapError> {
    let msg = a.to_message(pod.ifindex);
    match netlink::request_ack(
        handle,
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(Errno::EEXIST) => Ok(()),
        Err(e) => Err(MacvtapError::AddAddress {
            address: a.to_string(),
            dev: pod.name.clone(),
            ifindex: pod.ifindex,
            source: Box::new(e.into_source()),
        }),
    }
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Route,
    Neighbour,
}

/// Sends a saved RTM_NEWROUTE / RTM_NEWNEIGH again (create, exclusive); one that exists is
/// fine.
///
/// Routes go through rtnetlink's `route().add()` (it takes a whole message). Neighbours are
/// raw: rtnetlink's `neighbours().add()` builds its message from (index, destination).
pub(super) async fn restore_raw(
    handle: &Handle,
    saved: &SavedMessage,
    kind: Kind,
) -> Result<(), String> {
    let bytes = hex::decode(&saved.netlink).map_err(|_| "bad hex in state file")?;
    let sent = match kind {
        Kind::Route => {
            let msg = RouteMessage::parse(&bytes[..]).map_err(|e| e.to_string())?;
            handle.route().add(msg).execute().await
        }
        Kind::Neighbour => {
            let msg = NeighbourMessage::parse(&bytes[..]).map_err(|e| e.to_string())?;
            netlink::request_ack(
                handle,
                RouteNetlinkMessage::NewNeighbour(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
            .map_err(netlink::NetlinkError::into_source)
        }
    };
    match sent {
        Ok(()) => Ok(()),
        Err(e) if netlink::errno(&e) == Some(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
