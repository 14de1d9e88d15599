//! The macvtap model's state file (see the module docs of [`super`] for its schema): what
//! [`super::connect`] saved of the pod device, and how it is written, read and removed.

use std::{
    fs, io,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use rtnetlink::packet_core::Emitable;
use rtnetlink::packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily,
};
use serde::{Deserialize, Serialize};

use super::{devnode::DevNumber, MacvtapError, STATE_VERSION};
use crate::interfaces::Mac;

/// `INFINITY_LIFE_TIME`.
pub(super) const FOREVER: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) version: u32,
    pub(super) pod: PodState,
    pub(super) addresses: Vec<SavedAddress>,
    pub(super) routes: Vec<SavedMessage>,
    pub(super) neighbours: Vec<SavedMessage>,
    pub(super) macvtap: MacvtapState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PodState {
    pub(super) name: String,
    pub(super) ifindex: u32,
    /// `aa:bb:cc:dd:ee:ff`: [`Mac`]'s own serde (the text this file always had).
    pub(super) mac: Mac,
    pub(super) mtu: u32,
    pub(super) up: bool,
    pub(super) txqlen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MacvtapState {
    pub(super) name: String,
    pub(super) ifindex: Option<u32>,
    pub(super) device: Option<PathBuf>,
    pub(super) dev: Option<DevNumber>,
    pub(super) device_node_created: bool,
    pub(super) queues: u32,
}

/// One address as `ip addr` would show it, enough to add it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedAddress {
    pub(super) address: IpAddr,
    pub(super) prefix_len: u8,
    pub(super) peer: Option<IpAddr>,
    pub(super) broadcast: Option<Ipv4Addr>,
    pub(super) label: Option<String>,
    pub(super) scope: u8,
    pub(super) flags: u32,
    pub(super) valid_lft: Option<u32>,
    pub(super) preferred_lft: Option<u32>,
}

impl std::fmt::Display for SavedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(peer) = self.peer {
            write!(f, " peer {peer}")?;
        }
        write!(f, "/{}", self.prefix_len)
    }
}

/// The `IFA_F_*` flags RTM_NEWADDR takes as requests (the rest is state the kernel keeps).
pub(super) fn settable_address_flags() -> AddressFlags {
    AddressFlags::Nodad
        | AddressFlags::Homeaddress
        | AddressFlags::Managetempaddr
        | AddressFlags::Noprefixroute
        | AddressFlags::Mcautojoin
}

impl SavedAddress {
    pub(super) fn from_message(msg: &AddressMessage) -> Self {
        let mut address = None;
        let mut local = None;
        let mut saved = SavedAddress {
            address: IpAddr::from([0, 0, 0, 0]),
            prefix_len: msg.header.prefix_len,
            peer: None,
            broadcast: None,
            label: None,
            scope: msg.header.scope.into(),
            flags: u32::from(msg.header.flags.bits()),
            valid_lft: None,
            preferred_lft: None,
        };
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Broadcast(b) => saved.broadcast = Some(*b),
                AddressAttribute::Label(l) => saved.label = Some(l.clone()),
                AddressAttribute::Flags(f) => saved.flags = f.bits(),
                AddressAttribute::CacheInfo(ci) => {
                    saved.valid_lft = (ci.ifa_valid != FOREVER).then_some(ci.ifa_valid);
                    saved.preferred_lft = (ci.ifa_preferred != FOREVER).then_some(ci.ifa_preferred);
                }
                _ => {}
            }
        }
        // IPv4: IFA_LOCAL is the address, IFA_ADDRESS the peer (the same when there is none).
        // IPv6: IFA_ADDRESS is the address; IFA_LOCAL appears only with a peer.
        match (local, address) {
            (Some(l), Some(a)) => {
                saved.address = l;
                saved.peer = (a != l).then_some(a);
            }
            (Some(x), None) | (None, Some(x)) => saved.address = x,
            (None, None) => {}
        }
        saved
    }

    pub(super) fn to_message(&self, ifindex: u32) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = match self.address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = self.prefix_len;
        msg.header.scope = self.scope.into();
        msg.header.index = ifindex;
        let flags = AddressFlags::from_bits_retain(self.flags) & settable_address_flags();
        msg.header.flags = AddressHeaderFlags::from_bits_retain(flags.bits() as u8);
        let attrs = &mut msg.attributes;
        match (self.address, self.peer) {
            (IpAddr::V4(_), peer) => {
                attrs.push(AddressAttribute::Local(self.address));
                attrs.push(AddressAttribute::Address(peer.unwrap_or(self.address)));
            }
            (IpAddr::V6(_), Some(peer)) => {
                attrs.push(AddressAttribute::Local(self.address));
                attrs.push(AddressAttribute::Address(peer));
            }
            (IpAddr::V6(_), None) => attrs.push(AddressAttribute::Address(self.address)),
        }
        if let Some(b) = self.broadcast {
            attrs.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = &self.label {
            attrs.push(AddressAttribute::Label(l.clone()));
        }
        attrs.push(AddressAttribute::Flags(flags));
        if self.valid_lft.is_some() || self.preferred_lft.is_some() {
            let mut ci = CacheInfo::default();
            ci.ifa_valid = self.valid_lft.unwrap_or(FOREVER);
            ci.ifa_preferred = self.preferred_lft.unwrap_or(FOREVER);
            attrs.push(AddressAttribute::CacheInfo(ci));
        }
        msg
    }
}

/// A netlink message kept verbatim (hex), with a summary for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedMessage {
    pub(super) summary: String,
    pub(super) netlink: String,
}

impl SavedMessage {
    pub(super) fn route(r: &RouteMessage) -> Self {
        SavedMessage {
            summary: route_summary(r),
            netlink: hex::encode(emit(r)),
        }
    }

    pub(super) fn neighbour(n: &NeighbourMessage) -> Self {
        SavedMessage {
            summary: neighbour_summary(n),
            netlink: hex::encode(emit(n)),
        }
    }
}

pub(super) fn emit<T: Emitable>(msg: &T) -> Vec<u8> {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

pub(super) fn route_address(a: &RouteAddress) -> String {
    match a {
        RouteAddress::Inet(v4) => v4.to_string(),
        RouteAddress::Inet6(v6) => v6.to_string(),
        other => format!("{other:?}"),
    }
}

/// `ip route`-like: `10.124.0.0/24 via 10.123.0.1 table 254 proto boot`.
pub(super) fn route_summary(r: &RouteMessage) -> String {
    let mut dst = None;
    let (mut via, mut rest) = (Vec::new(), Vec::new());
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = Some(route_address(d)),
            RouteAttribute::Gateway(g) => via.push(format!("via {}", route_address(g))),
            RouteAttribute::MultiPath(hops) => via.push(format!("{} nexthops", hops.len())),
            RouteAttribute::PrefSource(s) => rest.push(format!("src {}", route_address(s))),
            RouteAttribute::Priority(p) => rest.push(format!("metric {p}")),
            _ => {}
        }
    }
    let dst = match dst {
        Some(d) => format!("{d}/{}", r.header.destination_prefix_length),
        None => "default".to_owned(),
    };
    via.append(&mut rest);
    via.push(format!("table {}", route_table(r)));
    via.push(format!("proto {}", r.header.protocol));
    format!("{dst} {}", via.join(" "))
}

pub(super) fn neighbour_summary(n: &NeighbourMessage) -> String {
    let mut dst = String::from("?");
    let mut lladdr = String::new();
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = ip.to_string(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => dst = ip.to_string(),
            NeighbourAttribute::Destination(other) => dst = format!("{other:?}"),
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(l);
                lladdr = format!(" lladdr {}", Mac(m));
            }
            _ => {}
        }
    }
    format!("{dst}{lladdr} permanent")
}

/// Writes the state atomically: temporary file (0600) in the same directory, fsync, then
/// rename over `path` (or, when `exclusive`, link to `path`, which fails with `AlreadyExists`
/// if it is there), fsync of the directory. The directory is created 0700 if missing.
pub(super) fn write_state(path: &Path, state: &State, exclusive: bool) -> Result<(), MacvtapError> {
    let io_err = |op, p: &Path| {
        let p = p.to_owned();
        move |source| MacvtapError::StateIo {
            op,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("mkdir", dir))?;
    let mut json = serde_json::to_vec_pretty(state).map_err(|source| MacvtapError::StateParse {
        path: path.to_owned(),
        source,
    })?;
    json.push(b'\n');
    let placement = if exclusive {
        crate::state::Placement::Exclusive
    } else {
        crate::state::Placement::Replace
    };
    crate::state::place_file(path, &json, placement).map_err(|e| match e {
        crate::pins::HostFileError::Io { op, path, source } => {
            MacvtapError::StateIo { op, path, source }
        }
        other => MacvtapError::StateIo {
            op: "write",
            path: path.to_owned(),
            source: io::Error::other(other.to_string()),
        },
    })
}

/// The state file, `None` if there is none.
pub(super) fn read_state(path: &Path) -> Result<Option<State>, MacvtapError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(MacvtapError::StateIo {
                op: "read",
                path: path.to_owned(),
                source,
            })
        }
    };
    parse_state(path, &bytes).map(Some)
}

pub(super) fn parse_state(path: &Path, bytes: &[u8]) -> Result<State, MacvtapError> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let parse_err = |source| MacvtapError::StateParse {
        path: path.to_owned(),
        source,
    };
    let v: Version = serde_json::from_slice(bytes).map_err(parse_err)?;
    if v.version != STATE_VERSION {
        return Err(MacvtapError::StateVersion {
            path: path.to_owned(),
            version: v.version,
            supported: STATE_VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(parse_err)
}

pub(super) fn remove_state(path: &Path) -> Result<(), MacvtapError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MacvtapError::StateIo {
            op: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The routing table of `r` (the attribute when there is one: tables above 255).
pub(super) fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}
