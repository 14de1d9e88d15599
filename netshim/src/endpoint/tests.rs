use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};

use super::*;
use crate::interfaces::IfAddr;

/// A probe with canned answers.
#[derive(Default)]
struct FakeProbe {
    drvinfo: HashMap<String, (String, String)>,
    vhost_user: HashMap<String, PathBuf>,
}

impl Probe for FakeProbe {
    fn drvinfo(&self, ifname: &str) -> io::Result<(String, String)> {
        self.drvinfo
            .get(ifname)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    fn vhost_user_socket(&self, iface: &Interface) -> Option<PathBuf> {
        self.vhost_user.get(&iface.name).cloned()
    }
}

fn with_drvinfo(name: &str, driver: &str, bus: &str) -> FakeProbe {
    let mut p = FakeProbe::default();
    p.drvinfo.insert(name.into(), (driver.into(), bus.into()));
    p
}

fn iface(name: &str, kind: Option<&str>, with_addr: bool) -> Interface {
    let mut iface = Interface::for_test(name, 2, kind);
    if with_addr {
        iface.addresses.push(IfAddr {
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            prefix_len: 24,
        });
    }
    iface
}

fn kind_of(c: Result<Classification, ClassifyError>) -> EndpointKind {
    match c {
        Ok(Classification::Endpoint(e)) => e.kind,
        other => panic!("not an endpoint: {other:?}"),
    }
}

#[test]
fn veth_with_address_is_an_endpoint() {
    let c = classify(&iface("eth0", Some("veth"), true), &FakeProbe::default());
    assert_eq!(kind_of(c), EndpointKind::Veth);
}

#[test]
fn loopback_no_address_and_own_taps_are_skipped() {
    let p = FakeProbe::default();
    let mut lo = iface("lo", None, true);
    lo.loopback = true;
    assert_eq!(
        classify(&lo, &p),
        Ok(Classification::Skipped(SkipReason::Loopback))
    );
    assert_eq!(
        classify(&iface("eth1", Some("veth"), false), &p),
        Ok(Classification::Skipped(SkipReason::NoAddress))
    );
    assert_eq!(
        classify(&iface("tap0_kata", Some("tun"), false), &p),
        Ok(Classification::Skipped(SkipReason::NetshimTap))
    );
}

#[test]
fn only_taps_and_macvtaps_named_like_netshims_taps_are_netshims() {
    let tap_mode = with_drvinfo("tap0_kata", "tun", "tap");
    let tun_mode = with_drvinfo("tap0_kata", "tun", "tun");
    let netshims = Ok(Classification::Skipped(SkipReason::NetshimTap));
    assert_eq!(
        classify(&iface("tap0_kata", Some("tun"), false), &tap_mode),
        netshims
    );
    assert_eq!(
        classify(&iface("tap0_kata", Some("macvtap"), false), &tap_mode),
        netshims
    );
    // Someone else's devices of that name: classified as anything else.
    assert_eq!(
        classify(&iface("tap0_kata", Some("tun"), false), &tun_mode),
        Ok(Classification::Skipped(SkipReason::NoAddress))
    );
    for kind in ["bridge", "veth", "dummy"] {
        assert_eq!(
            classify(&iface("tap0_kata", Some(kind), false), &tap_mode),
            Ok(Classification::Skipped(SkipReason::NoAddress)),
            "{kind}"
        );
    }
    assert_eq!(
        kind_of(classify(
            &iface("tap1_kata", Some("veth"), true),
            &FakeProbe::default()
        )),
        EndpointKind::Veth
    );
}

#[test]
fn physical_comes_first_by_pci_bus_info() {
    // Even a device with a link kind is physical when ethtool says it sits on PCI.
    let p = with_drvinfo("ens3", "virtio_net", "0000:00:03.0");
    let c = classify(&iface("ens3", None, true), &p).unwrap();
    let Classification::Endpoint(e) = c else {
        panic!("{c:?}")
    };
    assert_eq!(e.kind, EndpointKind::Physical);
    assert_eq!(e.pci_address.as_deref(), Some("0000:00:03.0"));
    assert_eq!(e.driver.as_deref(), Some("virtio_net"));
}

#[test]
fn pci_bus_info_needs_three_fields() {
    assert!(is_pci_bus_info("0000:00:03.0"));
    for not in ["", "tap", "tun", "00:03.0", "a::b", "0000:00:00:03.0"] {
        assert!(!is_pci_bus_info(not), "{not}");
    }
}

#[test]
fn vhost_user_comes_before_link_kind() {
    let mut p = FakeProbe::default();
    p.vhost_user
        .insert("eth0".into(), "/tmp/vhostuser_10.0.0.2/vhu.sock".into());
    let c = classify(&iface("eth0", Some("veth"), true), &p).unwrap();
    let Classification::Endpoint(e) = c else {
        panic!("{c:?}")
    };
    assert_eq!(e.kind, EndpointKind::VhostUser);
    assert_eq!(
        e.vhost_user_socket,
        Some(PathBuf::from("/tmp/vhostuser_10.0.0.2/vhu.sock"))
    );
}

#[test]
fn vhost_user_socket_path_is_katas() {
    assert_eq!(
        probe::vhost_user_socket_path(
            std::path::Path::new("/tmp"),
            &IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))
        ),
        PathBuf::from("/tmp/vhostuser_10.1.2.3/vhu.sock")
    );
}

#[test]
fn kata_kinds_map_by_link_kind() {
    let p = FakeProbe::default();
    for (kind, want) in [
        ("macvlan", EndpointKind::Macvlan),
        ("macvtap", EndpointKind::Macvtap),
        ("ipvlan", EndpointKind::Ipvlan),
    ] {
        assert_eq!(kind_of(classify(&iface("x0", Some(kind), true), &p)), want);
    }
}

#[test]
fn ipvlan_from_a_parsed_netlink_message() {
    // ipvlan is not in this kernel: the classification is checked on the message netlink
    // would send for one.
    let mut msg = LinkMessage::default();
    msg.header.index = 5;
    msg.header.flags = LinkFlags::Up;
    msg.attributes = vec![
        LinkAttribute::IfName("ipvl0".into()),
        LinkAttribute::Mtu(1500),
        LinkAttribute::Address(vec![2, 0, 0, 0, 0, 5]),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::IpVlan)]),
    ];
    let mut iface = Interface::from_link_message(&msg);
    assert_eq!(iface.kind, Some(InfoKind::IpVlan));
    iface.addresses.push(IfAddr {
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
        prefix_len: 24,
    });
    let kind = kind_of(classify(&iface, &FakeProbe::default()));
    assert_eq!(kind, EndpointKind::Ipvlan);
    assert!(kind.uses_model(), "kata connects ipvlan through the model");
}

#[test]
fn tuntap_in_tap_mode_is_an_endpoint() {
    let p = with_drvinfo("tapx", "tun", "tap");
    let kind = kind_of(classify(&iface("tapx", Some("tun"), true), &p));
    assert_eq!(kind, EndpointKind::Tuntap);
    assert!(kind.uses_model());
}

#[test]
fn tuntap_in_tun_mode_uses_katas_text() {
    let p = with_drvinfo("tun0", "tun", "tun");
    let err = classify(&iface("tun0", Some("tun"), true), &p).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tun networking device not yet supported"),
        "{err}"
    );
    assert!(err.to_string().contains("tun0"));
}

#[test]
fn tuntap_mode_undetermined_uses_katas_text() {
    let err = classify(&iface("tun1", Some("tun"), true), &FakeProbe::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Network device mode not determined correctly. Mount sysfs in caller"),
        "{err}"
    );
    assert!(err.to_string().contains("tun1"));
}

#[test]
fn other_kinds_use_katas_error_text() {
    let p = FakeProbe::default();
    let err = classify(&iface("br0", Some("bridge"), true), &p).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Unsupported network interface: bridge"),
        "{err}"
    );
    let err = classify(&iface("ens3", None, true), &p).unwrap_err();
    assert_eq!(
        err,
        ClassifyError::Unsupported {
            kind: "device".into(),
            ifname: "ens3".into()
        }
    );
}

#[test]
fn handed_over_kinds_do_not_use_the_model() {
    for k in [
        EndpointKind::Physical,
        EndpointKind::VhostUser,
        EndpointKind::Macvtap,
    ] {
        assert!(!k.uses_model(), "{k}");
    }
}
