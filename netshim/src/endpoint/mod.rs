//! Classifying the interfaces a CNI plugin left in the sandbox netns, in kata's
//! `createEndpoint` taxonomy.
//!
//! kata skips loopback and interfaces without an address (there is nothing to hand to the
//! guest), then decides by link kind. netshim also skips the taps it made itself
//! (`tap<N>_kata`, see [`crate::tap_name`]), which have no address either.

use std::fmt;

use crate::interfaces::Interface;

/// The endpoint kinds kata distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    Physical,
    VhostUser,
    Macvlan,
    Macvtap,
    Tap,
    Tuntap,
    Veth,
    Ipvlan,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Physical => "physical",
            Self::VhostUser => "vhost-user",
            Self::Macvlan => "macvlan",
            Self::Macvtap => "macvtap",
            Self::Tap => "tap",
            Self::Tuntap => "tuntap",
            Self::Veth => "veth",
            Self::Ipvlan => "ipvlan",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an interface is not an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    Loopback,
    NoAddress,
    /// A `tap<N>_kata` device: netshim's own (or a previous run's) VM side.
    NetshimTap,
    /// A kind kata refuses ("Unsupported network interface"); only listed by status/detach.
    Unsupported,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::NoAddress => "no address",
            Self::NetshimTap => "netshim tap",
            Self::Unsupported => "unsupported kind",
        })
    }
}

/// What an interface is to netshim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Endpoint(EndpointKind),
    Skipped(SkipReason),
}

/// An interface kata would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unsupported network interface: {kind} (interface {ifname})")]
pub struct UnsupportedInterface {
    pub kind: String,
    pub ifname: String,
}

/// Classifies one interface.
pub fn classify(iface: &Interface) -> Result<Classification, UnsupportedInterface> {
    if iface.loopback {
        return Ok(Classification::Skipped(SkipReason::Loopback));
    }
    if crate::tap_name::parse(&iface.name).is_some() {
        return Ok(Classification::Skipped(SkipReason::NetshimTap));
    }
    if iface.addresses.is_empty() {
        return Ok(Classification::Skipped(SkipReason::NoAddress));
    }
    let kind = iface.kind.as_deref().unwrap_or("device");
    let endpoint = match kind {
        "veth" => EndpointKind::Veth,
        "macvlan" => EndpointKind::Macvlan,
        "macvtap" => EndpointKind::Macvtap,
        "ipvlan" => EndpointKind::Ipvlan,
        "tun" => EndpointKind::Tuntap,
        other => {
            return Err(UnsupportedInterface {
                kind: other.to_owned(),
                ifname: iface.name.clone(),
            })
        }
    };
    Ok(Classification::Endpoint(endpoint))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::interfaces::IfAddr;

    fn iface(name: &str, kind: Option<&str>, with_addr: bool) -> Interface {
        Interface {
            name: name.into(),
            ifindex: 2,
            kind: kind.map(str::to_owned),
            mac: None,
            mtu: 1500,
            up: true,
            loopback: false,
            addresses: if with_addr {
                vec![IfAddr {
                    address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                    prefix_len: 24,
                }]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn veth_with_address_is_an_endpoint() {
        assert_eq!(
            classify(&iface("eth0", Some("veth"), true)),
            Ok(Classification::Endpoint(EndpointKind::Veth))
        );
    }

    #[test]
    fn loopback_no_address_and_own_taps_are_skipped() {
        let mut lo = iface("lo", None, true);
        lo.loopback = true;
        assert_eq!(
            classify(&lo),
            Ok(Classification::Skipped(SkipReason::Loopback))
        );
        assert_eq!(
            classify(&iface("eth1", Some("veth"), false)),
            Ok(Classification::Skipped(SkipReason::NoAddress))
        );
        assert_eq!(
            classify(&iface("tap0_kata", Some("tun"), false)),
            Ok(Classification::Skipped(SkipReason::NetshimTap))
        );
    }

    #[test]
    fn other_kinds_use_katas_error_text() {
        let err = classify(&iface("br0", Some("bridge"), true)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Unsupported network interface: bridge"),
            "{err}"
        );
        let err = classify(&iface("ens3", None, true)).unwrap_err();
        assert_eq!(err.kind, "device");
    }

    #[test]
    fn kata_kinds_map_by_link_kind() {
        for (kind, want) in [
            ("macvlan", EndpointKind::Macvlan),
            ("macvtap", EndpointKind::Macvtap),
            ("ipvlan", EndpointKind::Ipvlan),
            ("tun", EndpointKind::Tuntap),
        ] {
            assert_eq!(
                classify(&iface("x0", Some(kind), true)),
                Ok(Classification::Endpoint(want))
            );
        }
    }
}
