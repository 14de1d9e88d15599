//! What the netns holds: links and their addresses, read over rtnetlink.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use futures::TryStreamExt;
use rtnetlink::packet_route::{
    address::AddressAttribute,
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
};

/// An interface address with its prefix length.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct IfAddr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl std::str::FromStr for IfAddr {
    type Err = String;

    /// `10.1.0.2/24` or `fd00::2/64`, as [`fmt::Display`] writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IP address with a prefix length (a.b.c.d/n)");
        let (address, prefix) = s.split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix_len: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(bad());
        }
        Ok(IfAddr {
            address,
            prefix_len,
        })
    }
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Mac {
    type Err = String;

    /// `aa:bb:cc:dd:ee:ff`, as [`fmt::Display`] writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid MAC address {s:?}");
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(Mac(mac)),
            Some(_) => Err(bad()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One link of the netns as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// `IFLA_INFO_KIND` (veth, macvlan, tun, …); `None` for devices without one
    /// (loopback, physical NICs).
    pub kind: Option<InfoKind>,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    pub loopback: bool,
    /// `IFLA_LINK`: the lower device (macvlan, macvtap, ipvlan) or the veth peer's ifindex.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the `link` device lives in another netns (a veth whose
    /// peer is elsewhere).
    pub link_netnsid: Option<i32>,
    /// `IFLA_MASTER`: the bridge (or bond, VRF, ...) this device is a port of.
    pub master: Option<u32>,
    /// `IFLA_CARRIER`. A tap has carrier while a queue fd is attached (a VMM reads it).
    pub carrier: Option<bool>,
    /// `IFLA_STATS64` `tx_dropped`: frames the device's own xmit dropped (a tap: no reader
    /// or a full ring; a veth: MTU, peer down).
    pub tx_dropped: Option<u64>,
    pub addresses: Vec<IfAddr>,
}

impl Interface {
    /// Builds an interface from a link message (addresses are added separately).
    pub fn from_link_message(msg: &LinkMessage) -> Self {
        let mut iface = Interface {
            name: String::new(),
            ifindex: msg.header.index,
            kind: None,
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            link: None,
            link_netnsid: None,
            master: None,
            carrier: None,
            tx_dropped: None,
            addresses: Vec::new(),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => iface.name = name.clone(),
                LinkAttribute::Mtu(mtu) => iface.mtu = *mtu,
                LinkAttribute::Link(link) => iface.link = Some(*link),
                LinkAttribute::LinkNetNsId(id) => iface.link_netnsid = Some(*id),
                LinkAttribute::Controller(master) => iface.master = Some(*master),
                LinkAttribute::Carrier(c) => iface.carrier = Some(*c != 0),
                LinkAttribute::Stats64(s) => iface.tx_dropped = Some(s.tx_dropped),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(a);
                    iface.mac = Some(Mac(mac));
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            iface.kind = Some(kind.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        iface
    }
}

#[cfg(test)]
impl Interface {
    /// A bare interface for unit tests: up, 1500 bytes, no MAC, link, master or address.
    pub(crate) fn for_test(name: &str, ifindex: u32, kind: Option<&str>) -> Self {
        Interface {
            name: name.into(),
            ifindex,
            kind: kind.map(InfoKind::from),
            mac: None,
            mtu: 1500,
            up: true,
            loopback: false,
            link: None,
            link_netnsid: None,
            master: None,
            carrier: None,
            tx_dropped: None,
            addresses: vec![],
        }
    }
}

/// Every link of the handle's netns with its addresses, ordered by ifindex.
pub async fn list(handle: &rtnetlink::Handle) -> Result<Vec<Interface>, rtnetlink::Error> {
    let mut by_index: BTreeMap<u32, Interface> = BTreeMap::new();
    let mut links = handle.link().get().execute();
    while let Some(msg) = links.try_next().await? {
        let iface = Interface::from_link_message(&msg);
        by_index.insert(iface.ifindex, iface);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await? {
        let Some(iface) = by_index.get_mut(&msg.header.index) else {
            continue;
        };
        for attr in &msg.attributes {
            if let AddressAttribute::Address(address) = attr {
                iface.addresses.push(IfAddr {
                    address: *address,
                    prefix_len: msg.header.prefix_len,
                });
            }
        }
    }
    Ok(by_index.into_values().collect())
}

/// The link called `name`, if there is one.
pub async fn by_name(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<Interface>, rtnetlink::Error> {
    first(handle.link().get().match_name(name.to_owned())).await
}

/// The link with `ifindex` in the netns this one knows as `netnsid` (`IFLA_TARGET_NETNSID`:
/// a veth's peer, from its `link` and `link_netnsid`), or in this netns when `None`.
pub async fn by_index(
    handle: &rtnetlink::Handle,
    ifindex: u32,
    netnsid: Option<i32>,
) -> Result<Option<Interface>, rtnetlink::Error> {
    let mut request = handle.link().get().match_index(ifindex);
    if let Some(id) = netnsid {
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::IfNetnsId(id));
    }
    first(request).await
}

/// The one link a by-name or by-index request answers; `None` when there is none.
async fn first(request: rtnetlink::LinkGetRequest) -> Result<Option<Interface>, rtnetlink::Error> {
    let mut links = request.execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(Interface::from_link_message(&msg))),
        Ok(None) => Ok(None),
        Err(e) if crate::netlink::is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes the kernel give `ifindex` no IPv6 address of its own (`IFLA_INET6_ADDR_GEN_MODE` =
/// `IN6_ADDR_GEN_MODE_NONE`), before the device comes up. For the VM's ports (taps,
/// macvtaps): with an IPv6 link-local address the sandbox netns's own stack would send its
/// router solicitations, MLD reports and DAD probes (for the guest's own link-local
/// address, on a macvtap that carries the guest's MAC) through the VM's port. A kernel
/// without IPv6 (`EAFNOSUPPORT`) has nothing to disable.
pub async fn disable_ipv6_addrconf(
    handle: &rtnetlink::Handle,
    ifindex: u32,
) -> Result<(), rtnetlink::Error> {
    use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
    let msg = rtnetlink::LinkUnspec::new_with_index(ifindex)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]))
        .build();
    match handle.link().set(msg).execute().await {
        Err(e) if crate::netlink::errno(&e) == Some(nix::errno::Errno::EAFNOSUPPORT) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_formats_lowercase_colon_separated() {
        assert_eq!(
            Mac([0x02, 0xab, 0, 1, 0x10, 0xff]).to_string(),
            "02:ab:00:01:10:ff"
        );
    }

    #[test]
    fn cidr_addresses_parse_and_print_back() {
        for s in ["10.1.0.2/24", "fd00::2/64", "0.0.0.0/0"] {
            assert_eq!(s.parse::<IfAddr>().unwrap().to_string(), s);
        }
        for bad in [
            "10.1.0.2",
            "10.1.0.2/33",
            "fd00::2/129",
            "x/24",
            "10.1.0.2/",
            "",
        ] {
            assert!(bad.parse::<IfAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn link_message_attributes_are_read() {
        use rtnetlink::packet_route::link::InfoKind;
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            LinkAttribute::Carrier(0),
            LinkAttribute::Stats64({
                let mut s = rtnetlink::packet_route::link::Stats64::default();
                s.tx_dropped = 5;
                s
            }),
        ];
        let iface = Interface::from_link_message(&msg);
        assert_eq!(iface.name, "eth0");
        assert_eq!(iface.ifindex, 7);
        assert_eq!(iface.mtu, 1450);
        assert_eq!(iface.kind, Some(InfoKind::Veth));
        assert_eq!(iface.mac, Some(Mac([2, 0, 0, 0, 0, 9])));
        assert!(iface.up);
        assert!(!iface.loopback);
        assert_eq!(iface.carrier, Some(false));
        assert_eq!(iface.tx_dropped, Some(5));
    }
}
