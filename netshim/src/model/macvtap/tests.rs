use super::connect::{local_unicast, random_mac, random_u32, remove_device_node};
use super::devnode::{make_node, node_status, NodeStatus};
use super::link::{neighbour_to_save, route_to_save, sanitize_neighbour, sanitize_route};
use super::state::{
    parse_state, read_state, remove_state, write_state, MacvtapState, PodState, SavedAddress,
    SavedMessage, State, FOREVER,
};
use super::*;
use rtnetlink::packet_core::Parseable;
use rtnetlink::packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags,
        RouteProtocol, RouteType,
    },
    AddressFamily,
};
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

fn sample_state() -> State {
    State {
        version: STATE_VERSION,
        pod: PodState {
            name: "eth0".into(),
            ifindex: 2,
            mac: Mac([0xc2, 0x62, 0x15, 0x1b, 0x51, 0x27]),
            mtu: 1450,
            up: true,
            txqlen: 1000,
        },
        addresses: vec![SavedAddress {
            address: "10.123.0.2".parse().unwrap(),
            prefix_len: 24,
            peer: None,
            broadcast: Some("10.123.0.255".parse().unwrap()),
            label: Some("eth0".into()),
            scope: 0,
            flags: 0x80,
            valid_lft: None,
            preferred_lft: None,
        }],
        routes: vec![],
        neighbours: vec![],
        macvtap: MacvtapState {
            name: "tap0_kata".into(),
            ifindex: Some(40321),
            device: Some(device_path(40321)),
            dev: Some(DevNumber {
                major: 246,
                minor: 1,
            }),
            device_node_created: false,
            queues: 2,
        },
    }
}

#[test]
fn state_round_trips_through_json_with_readable_fields() {
    let state = sample_state();
    let json = serde_json::to_string_pretty(&state).unwrap();
    assert!(json.contains("\"version\": 1"), "{json}");
    assert!(json.contains("\"mac\": \"c2:62:15:1b:51:27\""), "{json}");
    assert!(json.contains("\"dev\": \"246:1\""), "{json}");
    assert!(json.contains("\"device\": \"/dev/tap40321\""), "{json}");
    assert!(json.contains("\"address\": \"10.123.0.2\""), "{json}");
    let back = parse_state(Path::new("x"), json.as_bytes()).unwrap();
    assert_eq!(back, state);
}

#[test]
fn other_state_versions_are_refused() {
    let json = serde_json::to_string(&sample_state())
        .unwrap()
        .replace("\"version\":1", "\"version\":2");
    let err = parse_state(Path::new("/run/x.json"), json.as_bytes()).unwrap_err();
    assert!(
        matches!(err, MacvtapError::StateVersion { version: 2, .. }),
        "{err}"
    );
    let err = parse_state(Path::new("/run/x.json"), b"{\"version\":1}").unwrap_err();
    assert!(matches!(err, MacvtapError::StateParse { .. }), "{err}");
}

#[test]
fn state_file_is_written_0600_in_a_0700_dir_and_replaced_atomically() {
    let base = std::env::temp_dir().join(format!(
        "netshim-macvtap-unit-{}-{}",
        std::process::id(),
        random_u32().unwrap()
    ));
    let dir = base.join("netns-1");
    let path = state_path(&dir, 2);
    assert_eq!(path, dir.join("macvtap-2.json"));
    let mut state = sample_state();
    write_state(&path, &state, true).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir), 0o700);
    state.macvtap.ifindex = Some(9000);
    let err = write_state(&path, &state, true).unwrap_err();
    assert!(
        matches!(&err, MacvtapError::StateIo { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
        "{err}"
    );
    write_state(&path, &state, false).unwrap();
    assert_eq!(read_state(&path).unwrap(), Some(state));
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("macvtap-2.json")]);
    remove_state(&path).unwrap();
    remove_state(&path).unwrap();
    assert_eq!(read_state(&path).unwrap(), None);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn dev_numbers_parse_from_sysfs_text() {
    assert_eq!(
        "246:1\n".parse::<DevNumber>(),
        Ok(DevNumber {
            major: 246,
            minor: 1
        })
    );
    assert!("246".parse::<DevNumber>().is_err());
    assert!("a:1".parse::<DevNumber>().is_err());
    let d = DevNumber {
        major: 246,
        minor: 3,
    };
    assert_eq!(d.to_string(), "246:3");
    assert_eq!(libc::major(d.rdev()), 246);
    assert_eq!(libc::minor(d.rdev()), 3);
}

#[test]
fn random_macs_are_local_unicast_and_new() {
    assert_eq!(local_unicast([0xff; 6]).0[0], 0xfe);
    assert_eq!(local_unicast([0; 6]).0[0], 0x02);
    let old = Mac([0x02, 0, 0, 0, 0, 1]);
    for _ in 0..64 {
        let m = random_mac(&old).unwrap();
        assert_ne!(m, old);
        assert_eq!(m.0[0] & 0x01, 0, "unicast");
        assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
    }
    let idx = MACVTAP_IFINDEX_BASE + (random_u32().unwrap() & MACVTAP_IFINDEX_MASK);
    assert!((8192..=8192 + 0xffff).contains(&idx));
}

#[test]
fn mac_text_parses_what_display_prints() {
    let m = Mac([0x02, 0xab, 0, 1, 0x10, 0xff]);
    // The state file's MAC text is Mac's own serde: what Display prints parses back.
    let parse_mac = |s: &str| s.parse::<Mac>().ok();
    assert_eq!(parse_mac(&m.to_string()), Some(m));
    assert_eq!(parse_mac("02:ab:00:01:10"), None);
    assert_eq!(parse_mac("02:ab:00:01:10:ff:00"), None);
    assert_eq!(parse_mac("2:ab:00:01:10:ff"), None);
}

#[test]
fn hex_round_trips() {
    let b = vec![0u8, 1, 0xab, 0xff];
    // The state file's netlink text is the hex crate's.
    let from_hex = |s: &str| hex::decode(s).ok();
    assert_eq!(hex::encode(&b), "0001abff");
    assert_eq!(from_hex("0001abff"), Some(b));
    assert_eq!(from_hex("0"), None);
    assert_eq!(from_hex("zz"), None);
}

#[test]
fn names_are_checked() {
    for ok in ["macvtap0", "tap0_kata", "a"] {
        check_name(ok).unwrap();
    }
    for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "a:b", ".", ".."] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn ipv4_address_is_saved_and_rebuilt() {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = 24;
    msg.header.index = 2;
    msg.header.flags = AddressHeaderFlags::Permanent;
    let ip: IpAddr = "10.123.0.2".parse().unwrap();
    let mut ci = CacheInfo::default();
    ci.ifa_valid = FOREVER;
    ci.ifa_preferred = FOREVER;
    msg.attributes = vec![
        AddressAttribute::Address(ip),
        AddressAttribute::Local(ip),
        AddressAttribute::Broadcast("10.123.0.255".parse().unwrap()),
        AddressAttribute::Label("eth0".into()),
        AddressAttribute::Flags(AddressFlags::Permanent | AddressFlags::Noprefixroute),
        AddressAttribute::CacheInfo(ci),
    ];
    let saved = SavedAddress::from_message(&msg);
    assert_eq!(saved.address, ip);
    assert_eq!(saved.peer, None);
    assert_eq!(saved.label.as_deref(), Some("eth0"));
    assert_eq!(saved.valid_lft, None);
    assert_eq!(saved.to_string(), "10.123.0.2/24");
    let again = saved.to_message(7);
    assert_eq!(again.header.index, 7);
    assert_eq!(again.header.prefix_len, 24);
    assert!(again.attributes.contains(&AddressAttribute::Local(ip)));
    assert!(again.attributes.contains(&AddressAttribute::Address(ip)));
    // Permanent is the kernel's business; noprefixroute is a request and is kept.
    assert!(again
        .attributes
        .contains(&AddressAttribute::Flags(AddressFlags::Noprefixroute)));
    assert!(!again
        .attributes
        .iter()
        .any(|a| matches!(a, AddressAttribute::CacheInfo(_))));
}

#[test]
fn ipv6_address_with_lifetime_and_peer() {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = 64;
    msg.header.scope = 253u8.into();
    let ll: IpAddr = "fe80::1".parse().unwrap();
    let mut ci = CacheInfo::default();
    ci.ifa_valid = 300;
    ci.ifa_preferred = 100;
    msg.attributes = vec![
        AddressAttribute::Address(ll),
        AddressAttribute::CacheInfo(ci),
    ];
    let saved = SavedAddress::from_message(&msg);
    assert_eq!((saved.address, saved.scope), (ll, 253));
    assert_eq!(
        (saved.valid_lft, saved.preferred_lft),
        (Some(300), Some(100))
    );
    let again = saved.to_message(2);
    assert_eq!(again.header.family, AddressFamily::Inet6);
    assert!(again.attributes.contains(&AddressAttribute::Address(ll)));
    assert!(!again
        .attributes
        .iter()
        .any(|a| matches!(a, AddressAttribute::Local(_))));

    let peer: IpAddr = "fd00::2".parse().unwrap();
    let local: IpAddr = "fd00::1".parse().unwrap();
    msg.attributes = vec![
        AddressAttribute::Local(local),
        AddressAttribute::Address(peer),
    ];
    let saved = SavedAddress::from_message(&msg);
    assert_eq!((saved.address, saved.peer), (local, Some(peer)));
    assert_eq!(saved.to_string(), "fd00::1 peer fd00::2/64");
}

fn route(oif: u32, proto: RouteProtocol, table: u8) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.table = table;
    r.header.protocol = proto;
    r.header.kind = RouteType::Unicast;
    r.header.flags = RouteFlags::Linkdown | RouteFlags::Onlink;
    r.attributes = vec![
        RouteAttribute::Table(u32::from(table)),
        RouteAttribute::Gateway(RouteAddress::Inet("10.123.0.1".parse().unwrap())),
        RouteAttribute::Oif(oif),
    ];
    r
}

#[test]
fn only_user_routes_through_the_device_are_saved() {
    assert!(route_to_save(&route(2, RouteProtocol::Boot, 254), 2));
    assert!(route_to_save(&route(2, RouteProtocol::Static, 100), 2));
    assert!(!route_to_save(&route(3, RouteProtocol::Boot, 254), 2));
    assert!(!route_to_save(&route(2, RouteProtocol::Kernel, 254), 2));
    assert!(!route_to_save(&route(2, RouteProtocol::Ra, 254), 2));
    assert!(!route_to_save(&route(2, RouteProtocol::Boot, 255), 2));
    let mut mp = route(3, RouteProtocol::Boot, 254);
    mp.attributes
        .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
    let mut hop = RouteNextHop::default();
    hop.interface_index = 2;
    hop.flags = RouteNextHopFlags::Dead;
    mp.attributes.push(RouteAttribute::MultiPath(vec![hop]));
    assert!(route_to_save(&mp, 2));
    let clean = sanitize_route(mp);
    assert_eq!(clean.header.flags, RouteFlags::Onlink);
    let hops = clean.attributes.iter().find_map(|a| match a {
        RouteAttribute::MultiPath(h) => Some(h),
        _ => None,
    });
    assert!(hops.unwrap()[0].flags.is_empty());
}

#[test]
fn saved_routes_and_neighbours_parse_back() {
    let r = sanitize_route(route(2, RouteProtocol::Boot, 254));
    let saved = SavedMessage::route(&r);
    assert_eq!(saved.summary, "default via 10.123.0.1 table 254 proto boot");
    let back = RouteMessage::parse(&hex::decode(&saved.netlink).unwrap()[..]).unwrap();
    assert_eq!(back, r);

    let mut n = NeighbourMessage::default();
    n.header.family = AddressFamily::Inet6;
    n.header.ifindex = 2;
    n.header.state = NeighbourState::Permanent;
    n.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(Ipv6Addr::LOCALHOST)),
        NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
        NeighbourAttribute::Probes(0),
    ];
    assert!(neighbour_to_save(&n, 2));
    assert!(!neighbour_to_save(&n, 3));
    let clean = sanitize_neighbour(n.clone());
    assert_eq!(clean.attributes.len(), 2);
    let saved = SavedMessage::neighbour(&clean);
    assert!(
        saved
            .summary
            .ends_with("lladdr 02:00:00:00:00:09 permanent"),
        "{}",
        saved.summary
    );
    let back = NeighbourMessage::parse(&hex::decode(&saved.netlink).unwrap()[..]).unwrap();
    assert_eq!(back, clean);
    n.header.state = NeighbourState::Reachable;
    assert!(!neighbour_to_save(&n, 2));
}

#[test]
fn device_node_status_and_mknod() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping device_node_status_and_mknod: needs root (mknod)");
        return;
    }
    let null = fs::metadata("/dev/null").unwrap().rdev();
    let dev = DevNumber {
        major: libc::major(null),
        minor: libc::minor(null),
    };
    let dir = std::env::temp_dir().join(format!(
        "netshim-macvtap-node-{}-{}",
        std::process::id(),
        random_u32().unwrap()
    ));
    fs::create_dir(&dir).unwrap();
    let node = dir.join("tap9999");
    assert_eq!(node_status(&node, dev).unwrap(), NodeStatus::Missing);
    make_node(&node, dev).unwrap();
    assert_eq!(node_status(&node, dev).unwrap(), NodeStatus::Ours);
    let meta = fs::metadata(&node).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let other = DevNumber {
        major: dev.major,
        minor: dev.minor + 1,
    };
    assert_eq!(node_status(&node, other).unwrap(), NodeStatus::Foreign);

    let mut m = sample_state().macvtap;
    m.device = Some(node.clone());
    m.dev = Some(other);
    m.device_node_created = true;
    remove_device_node(&m).unwrap();
    assert!(node.exists(), "another device's node is left alone");
    m.dev = Some(dev);
    m.device_node_created = false;
    remove_device_node(&m).unwrap();
    assert!(node.exists(), "a node netshim did not make is left alone");
    m.device_node_created = true;
    remove_device_node(&m).unwrap();
    assert!(!node.exists());
    remove_device_node(&m).unwrap();
    fs::remove_dir(&dir).unwrap();
}

#[test]
fn error_texts_name_the_request_and_device() {
    let e = MacvtapError::NameTaken {
        name: "eth1".into(),
        dev: "eth0".into(),
        ifindex: 2,
    };
    assert_eq!(
        e.to_string(),
        "RTM_NEWLINK macvtap eth1 on eth0 (ifindex 2): a link named eth1 already exists"
    );
    let e = MacvtapError::AlreadyConnected {
        dev: "eth0".into(),
        ifindex: 2,
        path: "/run/netshim/netns-1/macvtap-2.json".into(),
    };
    assert!(
        e.to_string()
            .contains("/run/netshim/netns-1/macvtap-2.json"),
        "{e}"
    );
    let e = MacvtapError::InvalidQueues {
        name: "tap0_kata".into(),
        queues: 0,
        max: MAX_QUEUES,
    };
    assert!(e.to_string().contains("1 to 256"), "{e}");
    assert_eq!(device_path(8200), PathBuf::from("/dev/tap8200"));
}

#[test]
fn a_state_file_of_the_previous_release_still_parses() {
    // Byte for byte what netshim wrote before the macvtap model used Mac's serde and the hex
    // crate (its own `mac_text` and `to_hex`).
    let json = r#"{
  "version": 1,
  "pod": {
    "name": "eth0",
    "ifindex": 2,
    "mac": "c2:62:15:1b:51:27",
    "mtu": 1450,
    "up": true,
    "txqlen": 1000
  },
  "addresses": [
    {
      "address": "10.123.0.2",
      "prefix_len": 24,
      "peer": null,
      "broadcast": "10.123.0.255",
      "label": "eth0",
      "scope": 0,
      "flags": 128,
      "valid_lft": null,
      "preferred_lft": null
    }
  ],
  "routes": [],
  "neighbours": [],
  "macvtap": {
    "name": "tap0_kata",
    "ifindex": 40321,
    "device": "/dev/tap40321",
    "dev": "246:1",
    "device_node_created": false,
    "queues": 2
  }
}
"#;
    let state = parse_state(Path::new("x"), json.as_bytes()).unwrap();
    assert_eq!(state, sample_state());
    let mut again = serde_json::to_string_pretty(&state).unwrap();
    again.push('\n');
    assert_eq!(again, json, "the file is written as before");
}
