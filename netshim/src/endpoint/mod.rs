//! Classifying the interfaces a CNI plugin left in the sandbox netns, in kata's
//! `createEndpoint` order: physical first (ethtool bus info that is a PCI address), then
//! vhost-user (a socket for one of the interface's addresses), then by link kind.
//!
//! kata skips loopback and interfaces without an address (there is nothing to hand to the
//! guest). netshim also skips the taps it made itself (`tap<N>_kata`, see
//! [`crate::tap_name`]), which have no address either: tun devices in tap mode and macvtaps of
//! that name. Other devices with such a name are not netshim's and are classified as usual.
//!
//! The kernel has no "tap" link kind: a tap is a `tun` device in tap mode. netshim classifies
//! it as kata's `tuntap` endpoint (it gets a `tap<N>_kata` of its own, connected by the
//! model); kata's separate `tap` endpoint is only reachable through kata's API, not from a
//! netns scan, so netshim has no such kind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod probe;

use std::{fmt, io, path::PathBuf};

pub use probe::{Probe, SystemProbe, DEFAULT_VHOST_USER_DIR};

use rtnetlink::packet_route::link::InfoKind;

use crate::{interfaces::Interface, tap::TunMode};

/// The endpoint kinds kata distinguishes (see the module docs for `tap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    Physical,
    VhostUser,
    Macvlan,
    Macvtap,
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
            Self::Tuntap => "tuntap",
            Self::Veth => "veth",
            Self::Ipvlan => "ipvlan",
        }
    }

    /// Kinds kata connects through the internetworking model (a tap or macvtap of their
    /// own). The others are handed to the VMM as they are.
    pub fn uses_model(self) -> bool {
        matches!(
            self,
            Self::Veth | Self::Macvlan | Self::Ipvlan | Self::Tuntap
        )
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An interface that is an endpoint, with what the VMM needs for kinds without a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Classified {
    pub kind: EndpointKind,
    /// Physical: the PCI address from ethtool's bus info (for VFIO passthrough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// Physical: the driver ethtool reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// vhost-user: the socket the VMM connects to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vhost_user_socket: Option<PathBuf>,
}

impl Classified {
    fn of(kind: EndpointKind) -> Self {
        Self {
            kind,
            pci_address: None,
            driver: None,
            vhost_user_socket: None,
        }
    }
}

/// Why an interface is not an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    Loopback,
    NoAddress,
    /// A `tap<N>_kata` tap-mode tun or macvtap: netshim's own (or a previous run's) VM side.
    NetshimTap,
    /// An `ifb<N>_kata` IFB device: the shaper of a rate limit netshim made (see
    /// `crate::limit::ifb`).
    NetshimIfb,
    /// An interface kata would refuse; listed by scan/status/detach, an error for attach
    /// unless `--skip-unsupported`.
    Unsupported,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::NoAddress => "no address",
            Self::NetshimTap => "netshim tap",
            Self::NetshimIfb => "netshim ifb",
            Self::Unsupported => "unsupported",
        })
    }
}

/// What an interface is to netshim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    Endpoint(Classified),
    Skipped(SkipReason),
}

/// An interface kata would refuse, in kata's words (with the interface added).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("Unsupported network interface: {kind} (interface {ifname})")]
    Unsupported { kind: String, ifname: String },
    #[error("tun networking device not yet supported (interface {ifname} is a tuntap device in tun mode: it carries IP packets, a VM needs Ethernet frames)")]
    TunMode { ifname: String },
    #[error("Network device mode not determined correctly. Mount sysfs in caller (interface {ifname}: netshim reads the tuntap mode with ETHTOOL_GDRVINFO instead of sysfs, and that failed: {detail})")]
    ModeUndetermined { ifname: String, detail: String },
}

/// Whether ethtool's bus info is a PCI address (`0000:00:03.0`): kata's test for a
/// physical NIC — three fields separated by ':'.
pub fn is_pci_bus_info(bus_info: &str) -> bool {
    let parts: Vec<&str> = bus_info.split(':').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
}

/// Classifies one interface. `probe` answers the questions netlink cannot (ethtool driver
/// info, vhost-user sockets).
pub fn classify(iface: &Interface, probe: &dyn Probe) -> Result<Classification, ClassifyError> {
    if iface.loopback {
        return Ok(Classification::Skipped(SkipReason::Loopback));
    }
    if crate::tap::name::parse(&iface.name).is_some() && could_be_netshims_tap(iface, probe) {
        return Ok(Classification::Skipped(SkipReason::NetshimTap));
    }
    if crate::limit::ifb::is_name(&iface.name)
        && iface.kind == Some(rtnetlink::packet_route::link::InfoKind::Ifb)
    {
        return Ok(Classification::Skipped(SkipReason::NetshimIfb));
    }
    if iface.addresses.is_empty() {
        return Ok(Classification::Skipped(SkipReason::NoAddress));
    }
    let drvinfo = probe.drvinfo(&iface.name);
    if let Ok((driver, bus_info)) = &drvinfo {
        if is_pci_bus_info(bus_info) {
            return Ok(Classification::Endpoint(Classified {
                pci_address: Some(bus_info.clone()),
                driver: Some(driver.clone()),
                ..Classified::of(EndpointKind::Physical)
            }));
        }
    }
    if let Some(socket) = probe.vhost_user_socket(iface) {
        return Ok(Classification::Endpoint(Classified {
            vhost_user_socket: Some(socket),
            ..Classified::of(EndpointKind::VhostUser)
        }));
    }
    let endpoint = match &iface.kind {
        Some(InfoKind::Veth) => EndpointKind::Veth,
        Some(InfoKind::MacVlan) => EndpointKind::Macvlan,
        Some(InfoKind::MacVtap) => EndpointKind::Macvtap,
        Some(InfoKind::IpVlan) => EndpointKind::Ipvlan,
        Some(InfoKind::Tun) => {
            tuntap_mode(&iface.name, &drvinfo)?;
            EndpointKind::Tuntap
        }
        other => {
            return Err(ClassifyError::Unsupported {
                kind: other.as_ref().map_or("device".into(), InfoKind::to_string),
                ifname: iface.name.clone(),
            })
        }
    };
    Ok(Classification::Endpoint(Classified::of(endpoint)))
}

/// Whether a device named `tap<N>_kata` is what netshim makes under that name: a tun device
/// in tap mode (or whose mode cannot be read) or a macvtap (the macvtap model). A bridge,
/// veth, tun-mode tun, ... of that name is someone else's and is classified as any other
/// interface; attach refuses to take its name (see `sandbox::tap_conflict`).
pub fn could_be_netshims_tap(iface: &Interface, probe: &dyn Probe) -> bool {
    match iface.kind {
        Some(InfoKind::MacVtap) => true,
        Some(InfoKind::Tun) => match probe.drvinfo(&iface.name) {
            Ok((driver, bus_info)) => {
                crate::tap::mode_from_drvinfo(&driver, &bus_info) != Some(TunMode::Tun)
            }
            Err(_) => true,
        },
        _ => false,
    }
}

/// kata's tuntap rules: tap mode is an endpoint, tun mode and an unknown mode are errors.
fn tuntap_mode(ifname: &str, drvinfo: &io::Result<(String, String)>) -> Result<(), ClassifyError> {
    let undetermined = |detail: String| ClassifyError::ModeUndetermined {
        ifname: ifname.to_owned(),
        detail,
    };
    match drvinfo {
        Ok((driver, bus_info)) => match crate::tap::mode_from_drvinfo(driver, bus_info) {
            Some(TunMode::Tap) => Ok(()),
            Some(TunMode::Tun) => Err(ClassifyError::TunMode {
                ifname: ifname.to_owned(),
            }),
            None => Err(undetermined(format!(
                "driver {driver:?} bus info {bus_info:?}"
            ))),
        },
        Err(e) => Err(undetermined(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
