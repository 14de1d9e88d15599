//! Pairs `netshim connect` refuses because its redirects would hand frames back to
//! themselves: each one redirected A → B comes in again on A (or B → A on B), is redirected
//! again, and circulates at line rate (two ends of one veth pair in one netns: ~49M packets
//! in seconds, both CPUs in softirq, until disconnect).
//!
//! [`find`] decides from the two devices as netlink lists them and, for two veths, what the
//! netns of their peers says about the peers ([`PeerFacts`]); the caller queries those.

use std::fmt;

use rtnetlink::packet_route::link::InfoKind;

use crate::interfaces::Interface;

/// Link kinds that transmit through a lower device and bridge locally between the devices
/// on one lower (macvlan/macvtap in bridge mode, ipvlan/ipvtap in l2/l3).
const LOWER_KINDS: &[InfoKind] = &[
    InfoKind::MacVlan,
    InfoKind::MacVtap,
    InfoKind::IpVlan,
    InfoKind::IpVtap,
];

/// What the peer of a veth is, read in the peer's own netns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerFacts {
    /// The peer's `IFLA_MASTER` (a bridge it is a port of), an ifindex of the peer's netns.
    pub master: Option<u32>,
}

/// Why connecting two devices would make a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loop {
    /// `dev` is the loopback device: what is sent to it comes in on its ingress again.
    Loopback { dev: String },
    /// Two names (an altname) of one device.
    SameDevice,
    /// `a` and `b` are the two ends of one veth pair in this netns.
    VethPair,
    /// Both are macvlan/macvtap/ipvlan devices on one lower device.
    SameLower { lower: u32, netnsid: Option<i32> },
    /// `upper` is a macvlan/macvtap/ipvlan device on `lower`.
    UpperOfLower { upper: String, lower: String },
    /// `upper`'s lower device is the peer of the veth `veth`.
    LowerIsPeer { upper: String, veth: String },
    /// The veths' peers are ports of one bridge (or other master) in one netns.
    PeersBridged { master: u32, netnsid: Option<i32> },
}

impl fmt::Display for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let netns = |id: &Option<i32>| match id {
            Some(id) => format!("the netns with id {id}"),
            None => "this netns".to_owned(),
        };
        match self {
            Loop::Loopback { dev } => write!(
                f,
                "{dev} is the loopback device: whatever is redirected to it comes in again on \
                 its ingress and is redirected back"
            ),
            Loop::SameDevice => write!(f, "they are the same device (one name is an altname)"),
            Loop::VethPair => write!(
                f,
                "they are the two ends of one veth pair: what is redirected to one end comes in \
                 on the other, is redirected back, and circulates forever"
            ),
            Loop::SameLower { lower, netnsid } => write!(
                f,
                "both are macvlan/macvtap/ipvlan devices on lower device ifindex {lower} in {}: \
                 the lower device bridges frames between its upper devices, so each redirected \
                 frame comes back",
                netns(netnsid)
            ),
            Loop::UpperOfLower { upper, lower } => write!(
                f,
                "{upper} is a macvlan/macvtap/ipvlan device on {lower}: frames redirected to \
                 either one reach the other and come back"
            ),
            Loop::LowerIsPeer { upper, veth } => write!(
                f,
                "{upper}'s lower device is the peer of veth {veth}: frames {upper} transmits come \
                 in on {veth} and are redirected back"
            ),
            Loop::PeersBridged { master, netnsid } => write!(
                f,
                "the peers of both veths are ports of one master device (ifindex {master} in {}): \
                 a bridge floods frames from one port out of the other, so they come back",
                netns(netnsid)
            ),
        }
    }
}

fn is_veth(i: &Interface) -> bool {
    i.kind == Some(InfoKind::Veth)
}

fn is_upper(i: &Interface) -> bool {
    i.kind.as_ref().is_some_and(|k| LOWER_KINDS.contains(k))
}

/// The device `i` is tied to — a veth's peer, an upper device's lower — as (ifindex, netnsid
/// of the netns it lives in: `None` = this one).
fn tie(i: &Interface) -> Option<(u32, Option<i32>)> {
    i.link.filter(|l| *l != 0).map(|l| (l, i.link_netnsid))
}

/// Whether `lower` is `upper`'s lower device in this netns.
fn is_lower_of(upper: &Interface, lower: &Interface) -> bool {
    is_upper(upper) && tie(upper) == Some((lower.ifindex, None))
}

/// Whether the two veths' peers must be queried (they live in one netns) for [`find`].
pub(crate) fn peers_to_query(a: &Interface, b: &Interface) -> bool {
    is_veth(a)
        && is_veth(b)
        && matches!((tie(a), tie(b)), (Some((_, na)), Some((_, nb))) if na == nb)
}

/// Why redirecting `a` ↔ `b` would loop, if it would. `peers` are the two veths' peers'
/// facts when [`peers_to_query`] and the query worked.
pub(crate) fn find(
    a: &Interface,
    b: &Interface,
    peers: Option<(PeerFacts, PeerFacts)>,
) -> Option<Loop> {
    for d in [a, b] {
        if d.loopback {
            return Some(Loop::Loopback {
                dev: d.name.clone(),
            });
        }
    }
    if a.ifindex == b.ifindex {
        return Some(Loop::SameDevice);
    }
    let veth_pair = |x: &Interface, y: &Interface| is_veth(x) && tie(x) == Some((y.ifindex, None));
    if veth_pair(a, b) || veth_pair(b, a) {
        return Some(Loop::VethPair);
    }
    if is_upper(a) && is_upper(b) && tie(a).is_some() && tie(a) == tie(b) {
        let (lower, netnsid) = tie(a)?;
        return Some(Loop::SameLower { lower, netnsid });
    }
    for (upper, other) in [(a, b), (b, a)] {
        if is_lower_of(upper, other) {
            return Some(Loop::UpperOfLower {
                upper: upper.name.clone(),
                lower: other.name.clone(),
            });
        }
        if is_upper(upper) && is_veth(other) && tie(upper).is_some() && tie(upper) == tie(other) {
            return Some(Loop::LowerIsPeer {
                upper: upper.name.clone(),
                veth: other.name.clone(),
            });
        }
    }
    if let Some((pa, pb)) = peers.filter(|_| peers_to_query(a, b)) {
        if let (Some(ma), Some(mb)) = (pa.master, pb.master) {
            if ma == mb {
                return Some(Loop::PeersBridged {
                    master: ma,
                    netnsid: a.link_netnsid,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, ifindex: u32, kind: Option<&str>) -> Interface {
        Interface::for_test(name, ifindex, kind)
    }

    fn veth(name: &str, ifindex: u32, peer: u32, netnsid: Option<i32>) -> Interface {
        Interface {
            link: Some(peer),
            link_netnsid: netnsid,
            ..dev(name, ifindex, Some("veth"))
        }
    }

    fn upper(name: &str, ifindex: u32, kind: &str, lower: u32, netnsid: Option<i32>) -> Interface {
        Interface {
            link: Some(lower),
            link_netnsid: netnsid,
            ..dev(name, ifindex, Some(kind))
        }
    }

    fn port_of(master: Option<u32>) -> PeerFacts {
        PeerFacts { master }
    }

    #[test]
    fn loopback_on_either_side() {
        let lo = Interface {
            loopback: true,
            ..dev("lo", 1, None)
        };
        let eth0 = veth("eth0", 2, 9, Some(0));
        let want = Loop::Loopback { dev: "lo".into() };
        assert_eq!(find(&lo, &eth0, None), Some(want.clone()));
        assert_eq!(find(&eth0, &lo, None), Some(want.clone()));
        let text = want.to_string();
        assert!(text.contains("lo is the loopback device"), "{text}");
    }

    #[test]
    fn one_device_under_two_names() {
        let a = veth("eth0", 2, 9, Some(0));
        let alt = Interface {
            name: "pod-uplink".into(),
            ..a.clone()
        };
        assert_eq!(find(&a, &alt, None), Some(Loop::SameDevice));
    }

    #[test]
    fn the_two_ends_of_one_veth_pair_here() {
        let va = veth("va", 5, 6, None);
        let vb = veth("vb", 6, 5, None);
        assert_eq!(find(&va, &vb, None), Some(Loop::VethPair));
        assert_eq!(find(&vb, &va, None), Some(Loop::VethPair));
        // Same ifindexes, but the peers live elsewhere: a legitimate pair.
        let ma = veth("ma0", 5, 6, Some(0));
        let mb = veth("mb0", 6, 5, Some(1));
        assert_eq!(find(&ma, &mb, None), None);
    }

    #[test]
    fn upper_devices_on_one_lower() {
        for kind in ["macvlan", "macvtap", "ipvlan", "ipvtap"] {
            let a = upper("mv0", 7, kind, 3, None);
            let b = upper("mv1", 8, "macvlan", 3, None);
            assert_eq!(
                find(&a, &b, None),
                Some(Loop::SameLower {
                    lower: 3,
                    netnsid: None
                }),
                "{kind}"
            );
        }
        // The lower in another netns (a CNI macvlan on the host's NIC): the same.
        let a = upper("mv0", 7, "macvlan", 2, Some(0));
        let b = upper("mv1", 8, "macvlan", 2, Some(0));
        assert!(matches!(
            find(&a, &b, None),
            Some(Loop::SameLower {
                lower: 2,
                netnsid: Some(0)
            })
        ));
        // Ifindex 2 of two different namespaces: two lower devices.
        let c = upper("mv2", 9, "macvlan", 2, Some(1));
        assert_eq!(find(&a, &c, None), None);
        let d = upper("mv3", 10, "macvlan", 4, None);
        let e = upper("mv4", 11, "macvlan", 5, None);
        assert_eq!(find(&d, &e, None), None);
    }

    #[test]
    fn an_upper_device_and_its_own_lower() {
        let lower = dev("dummy0", 3, Some("dummy"));
        let mv = upper("mv0", 7, "macvlan", 3, None);
        let want = Some(Loop::UpperOfLower {
            upper: "mv0".into(),
            lower: "dummy0".into(),
        });
        assert_eq!(find(&mv, &lower, None), want);
        assert_eq!(find(&lower, &mv, None), want);
        // A lower device with the same ifindex in another netns is not this one.
        let far = upper("mv1", 7, "macvlan", 3, Some(0));
        assert_eq!(find(&far, &lower, None), None);
    }

    #[test]
    fn an_upper_device_whose_lower_is_the_veths_peer() {
        let mv = upper("mv0", 7, "macvlan", 4, Some(0));
        let v = veth("eth1", 8, 4, Some(0));
        let want = Some(Loop::LowerIsPeer {
            upper: "mv0".into(),
            veth: "eth1".into(),
        });
        assert_eq!(find(&mv, &v, None), want);
        assert_eq!(find(&v, &mv, None), want);
        let other = veth("eth2", 9, 4, Some(1));
        assert_eq!(find(&mv, &other, None), None);
    }

    #[test]
    fn veths_whose_peers_are_ports_of_one_bridge() {
        let a = veth("ma0", 5, 2, Some(0));
        let b = veth("mb0", 6, 3, Some(0));
        assert!(peers_to_query(&a, &b));
        let bridged = Some((port_of(Some(4)), port_of(Some(4))));
        assert_eq!(
            find(&a, &b, bridged),
            Some(Loop::PeersBridged {
                master: 4,
                netnsid: Some(0)
            })
        );
        // Peers in this netns on one bridge here: the same loop.
        let la = veth("la0", 5, 2, None);
        let lb = veth("lb0", 6, 3, None);
        assert!(peers_to_query(&la, &lb));
        assert!(find(&la, &lb, bridged).is_some());
        // Not bridged, on two bridges, or one of them only: fine.
        for peers in [
            (port_of(None), port_of(None)),
            (port_of(Some(4)), port_of(Some(5))),
            (port_of(Some(4)), port_of(None)),
        ] {
            assert_eq!(find(&a, &b, Some(peers)), None, "{peers:?}");
        }
        // The kernel refused the query: allowed (the caller says so).
        assert_eq!(find(&a, &b, None), None);
    }

    #[test]
    fn the_pair_topology_connects() {
        // client ⟷ ma0 [shim] mb0 ⟷ server: peers in two other namespaces.
        let a = veth("ma0", 2, 2, Some(0));
        let b = veth("mb0", 3, 2, Some(1));
        assert!(!peers_to_query(&a, &b), "peers in two namespaces");
        assert_eq!(find(&a, &b, None), None);
        // A pod veth and a tap.
        let tap = dev("tap0_kata", 4, Some("tun"));
        assert_eq!(find(&a, &tap, None), None);
    }
}
