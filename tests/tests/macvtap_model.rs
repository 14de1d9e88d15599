//! Root-only tests of kata's macvtap model (`netshim::model::macvtap`) on real namespaces:
//! a `Pod` (client c0 10.123.0.1/24 <-> sandbox eth0 10.123.0.2/24), the macvtap made on eth0
//! through netlink, traffic through its char device in both directions, and the exact
//! restoration of eth0 on disconnect (also after a failed connect).

use std::{
    fs,
    net::{Ipv4Addr, UdpSocket},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use netshim::{
    interfaces,
    model::macvtap::{self, MacvtapEndpoint, MacvtapError},
    netns::Netns,
};
use netshim_tests::{
    netns_fixture::random_u32,
    netshim_cli::Pod,
    on_netns_thread, require_root,
    tap_reader::{inet_checksum, parse_mac, udp_frame, Mac, ETH_P_ARP, ETH_P_IP},
    ChildGuard, TapQueue, TestNetns,
};
use serde_json::Value;

/// A state directory of its own for each test, removed on Drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> StateDir {
        let base = std::env::temp_dir().join(format!(
            "netshim-mvt-{}-{:08x}",
            std::process::id(),
            random_u32()
        ));
        StateDir(base)
    }

    /// What the caller passes: `<base>/netns-<cookie>` (created by the model itself).
    fn for_netns(&self, ns: &TestNetns) -> PathBuf {
        let cookie = Netns::resolve(ns.path().to_str().unwrap()).unwrap().cookie;
        self.0.join(format!("netns-{cookie}"))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn netns(ns: &TestNetns) -> Netns {
    Netns::resolve(ns.path().to_str().unwrap()).expect("resolve sandbox netns")
}

/// `macvtap::connect` for the sandbox's eth0, on a thread inside the sandbox netns.
fn connect(
    ns: &TestNetns,
    name: &str,
    queues: u32,
    state_dir: &Path,
) -> Result<MacvtapEndpoint, MacvtapError> {
    let name = name.to_owned();
    let dir = state_dir.to_owned();
    netns(ns)
        .run(move |handle| async move {
            let pod = interfaces::by_name(&handle, "eth0")
                .await?
                .context("no eth0 in the sandbox")?;
            anyhow::Ok(macvtap::connect(&handle, &pod, &name, queues, &dir).await)
        })
        .expect("run in sandbox netns")
}

fn disconnect(ns: &TestNetns, name: &str, pod_ifindex: u32, state_dir: &Path) {
    let name = name.to_owned();
    let dir = state_dir.to_owned();
    netns(ns)
        .run(move |handle| async move {
            macvtap::disconnect(&handle, &name, pod_ifindex, &dir).await?;
            anyhow::Ok(())
        })
        .unwrap_or_else(|e| panic!("disconnect {e:#}"));
}

fn is_connected(ns: &TestNetns, name: &str, pod_ifindex: u32) -> bool {
    let name = name.to_owned();
    netns(ns)
        .run(move |handle| async move {
            anyhow::Ok(macvtap::is_connected(&handle, &name, pod_ifindex).await?)
        })
        .expect("is_connected")
}

/// Everything of a device the model changes and must put back.
#[derive(Debug, PartialEq)]
struct Snapshot {
    ifindex: u64,
    mac: String,
    mtu: u64,
    flags: Value,
    promiscuity: Value,
    /// (family, local, prefixlen, scope) — not the flags: a restored address is tentative
    /// for a moment while DAD runs again.
    addresses: Vec<(String, String, u64, String)>,
    routes4: Value,
    routes6: Value,
    neighbours: Value,
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad ip -j output {e}: {out}"))
}

fn snapshot(ns: &TestNetns, dev: &str) -> Snapshot {
    let link = ns.link_json(dev);
    let addrs = json(&ns.ip(&["-j", "addr", "show", "dev", dev]));
    let mut addresses: Vec<_> = addrs[0]["addr_info"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            (
                a["family"].as_str().unwrap_or_default().to_owned(),
                a["local"].as_str().unwrap_or_default().to_owned(),
                a["prefixlen"].as_u64().unwrap_or_default(),
                a["scope"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    addresses.sort();
    Snapshot {
        ifindex: link["ifindex"].as_u64().unwrap(),
        mac: link["address"].as_str().unwrap().to_owned(),
        mtu: link["mtu"].as_u64().unwrap(),
        flags: link["flags"].clone(),
        promiscuity: link["promiscuity"].clone(),
        addresses,
        routes4: json(&ns.ip(&["-j", "-4", "route", "show", "dev", dev])),
        routes6: json(&ns.ip(&["-j", "-6", "route", "show", "dev", dev])),
        neighbours: json(&ns.ip(&["-j", "neigh", "show", "dev", dev, "nud", "permanent"])),
    }
}

/// Waits until no address of `dev` is tentative (DAD done), so snapshots are stable.
fn wait_dad(ns: &TestNetns, dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns
        .ip(&["-6", "addr", "show", "dev", dev])
        .contains("tentative")
    {
        assert!(Instant::now() < deadline, "DAD on {dev} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pod with what kata's macvtap model used to lose on top: IPv6 (global + link-local), a
/// secondary IPv4 address, routes through eth0 and a permanent neighbour.
fn rich_pod(tag: &str) -> Pod {
    let pod = Pod::new(tag);
    let s = &pod.sandbox;
    s.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
    s.ip(&["addr", "add", "10.123.0.3/24", "dev", "eth0"]);
    s.ip(&["addr", "add", "fd00:123::2/64", "dev", "eth0", "nodad"]);
    s.ip(&["route", "add", "10.124.0.0/24", "via", "10.123.0.1"]);
    s.ip(&["route", "add", "default", "via", "10.123.0.1"]);
    s.ip(&["-6", "route", "add", "fd00:124::/64", "via", "fd00:123::1"]);
    s.neigh("add 10.123.0.9 lladdr 02:00:00:00:00:09 dev eth0 nud permanent");
    wait_dad(s, "eth0");
    pod
}

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
/// `TUNGETIFF`, `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// `TUNGETVNETHDRSZ`, `_IOR('T', 215, int)`.
const TUNGETVNETHDRSZ: libc::c_ulong = 0x8004_54d7;

/// (ifr_name, ifr_flags, vnet header size) of a tap fd.
fn tap_info(fd: &OwnedFd) -> (String, i16, i32) {
    let mut ifr = [0u8; 40];
    // SAFETY: TUNGETIFF writes a struct ifreq (40 bytes) into the buffer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNGETIFF: {}", std::io::Error::last_os_error());
    let name_len = ifr[..16].iter().position(|&b| b == 0).unwrap_or(16);
    let name = String::from_utf8_lossy(&ifr[..name_len]).into_owned();
    let flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
    let mut hdr: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETVNETHDRSZ, &mut hdr) };
    assert_eq!(
        rc,
        0,
        "TUNGETVNETHDRSZ: {}",
        std::io::Error::last_os_error()
    );
    (name, flags, hdr)
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

/// An ARP request for `target`.
fn is_arp_request_for(f: &[u8], target: Ipv4Addr) -> bool {
    f.len() >= 42
        && ethertype(f) == ETH_P_ARP
        && f[20..22] == [0, 1]
        && f[38..42] == target.octets()
}

/// An ICMP echo request to `dst`.
fn is_echo_request_to(f: &[u8], dst: Ipv4Addr) -> bool {
    if f.len() < 34 || ethertype(f) != ETH_P_IP || f[23] != 1 || f[30..34] != dst.octets() {
        return false;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f.get(14 + ihl) == Some(&8)
}

fn arp_reply(src_mac: Mac, src_ip: Ipv4Addr, dst_mac: Mac, dst_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&dst_ip.octets());
    f
}

/// The echo reply to an echo request frame: MACs and IPs swapped, type 0, ICMP checksum
/// recomputed (the IP header checksum does not change when the addresses swap).
fn echo_reply(request: &[u8]) -> Vec<u8> {
    let mut f = request.to_vec();
    let (dst, src) = (f[0..6].to_vec(), f[6..12].to_vec());
    f[0..6].copy_from_slice(&src);
    f[6..12].copy_from_slice(&dst);
    let (sip, dip) = (f[26..30].to_vec(), f[30..34].to_vec());
    f[26..30].copy_from_slice(&dip);
    f[30..34].copy_from_slice(&sip);
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let icmp = 14 + ihl;
    f[icmp] = 0;
    f[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    let sum = inet_checksum(&f[icmp..14 + total], 0);
    f[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

#[test]
fn connect_carries_traffic_and_disconnect_restores_the_pod_device() {
    require_root!();
    let pod = rich_pod("mvt");
    let s = &pod.sandbox;
    let state = StateDir::new();
    let state_dir = state.for_netns(s);
    let before = snapshot(s, "eth0");
    let pod_ifindex = before.ifindex as u32;
    assert!(before.addresses.iter().any(|a| a.3 == "link"), "{before:?}");

    let ep = connect(s, "macvtap0", 2, &state_dir).expect("connect");
    eprintln!("endpoint: {ep:?}");
    assert_eq!(ep.name, "macvtap0");
    assert_eq!(ep.mac.0, pod.pod_mac);
    assert_eq!(u64::from(ep.mtu), before.mtu);
    assert_eq!(ep.queues, 2);
    assert!((8192..=8192 + 0xffff).contains(&ep.ifindex), "kata's range");
    assert_eq!(ep.device, PathBuf::from(format!("/dev/tap{}", ep.ifindex)));

    // The macvtap: bridge mode on eth0, eth0's old MAC and MTU, up, no IPv6 address of its
    // own (addrgenmode none: its link-local would be the guest's).
    let mvt = s.link_json("macvtap0");
    assert_eq!(mvt["ifindex"].as_u64(), Some(u64::from(ep.ifindex)));
    assert_eq!(mvt["linkinfo"]["info_kind"], "macvtap", "{mvt}");
    assert_eq!(mvt["linkinfo"]["info_data"]["mode"], "bridge", "{mvt}");
    assert_eq!(mvt["link"], "eth0", "{mvt}");
    assert_eq!(mvt["address"].as_str(), Some(before.mac.as_str()));
    assert_eq!(mvt["mtu"].as_u64(), Some(before.mtu));
    assert_eq!(mvt["inet6_addr_gen_mode"], "none", "{mvt}");
    let mvt_flags = mvt["flags"].as_array().unwrap();
    assert!(mvt_flags.iter().any(|f| f == "UP"), "{mvt}");
    assert!(s
        .ip(&["-d", "link", "show", "macvtap0"])
        .contains("macvtap mode bridge"));
    let mvt_addrs = json(&s.ip(&["-j", "addr", "show", "dev", "macvtap0"]));
    assert_eq!(
        mvt_addrs[0]["addr_info"],
        serde_json::json!([]),
        "{mvt_addrs}"
    );

    // eth0: another, locally administered unicast MAC; no address at all (IPv6 link-local
    // included); still up.
    let during = snapshot(s, "eth0");
    assert_ne!(during.mac, before.mac);
    let new_mac = parse_mac(&during.mac).unwrap();
    assert_eq!(new_mac[0] & 0x03, 0x02, "local unicast {}", during.mac);
    assert!(during.addresses.is_empty(), "{:?}", during.addresses);
    assert!(during.flags.as_array().unwrap().iter().any(|f| f == "UP"));

    // The char device, and the state file (0600 in a 0700 dir, version 1).
    // Its device number is the macvtap's own, as the sandbox's sysfs tells it (the host's
    // /sys does not show devices of other netns).
    let meta = fs::metadata(&ep.device).expect("macvtap char device");
    assert!(meta.file_type().is_char_device());
    let sysfs_attr = format!("/sys/class/net/macvtap0/macvtap/tap{}/dev", ep.ifindex);
    let sysfs_dev = s.exec_ok(&["cat", &sysfs_attr]).trim().to_owned();
    assert!(
        !Path::new(&sysfs_attr).exists(),
        "host sysfs shows {sysfs_attr}"
    );
    let node_dev = format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev()));
    eprintln!(
        "{}: {node_dev}; sandbox sysfs: {sysfs_dev}",
        ep.device.display()
    );
    assert_eq!(node_dev, sysfs_dev);
    let state_file = state_dir.join(format!("macvtap-{pod_ifindex}.json"));
    let smeta = fs::metadata(&state_file).expect("state file");
    assert_eq!(smeta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let saved: Value = serde_json::from_slice(&fs::read(&state_file).unwrap()).unwrap();
    eprintln!("state file: {saved:#}");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["pod"]["mac"].as_str(), Some(before.mac.as_str()));
    assert_eq!(
        saved["macvtap"]["ifindex"].as_u64(),
        Some(u64::from(ep.ifindex))
    );
    assert_eq!(saved["macvtap"]["dev"].as_str(), Some(sysfs_dev.as_str()));
    assert_eq!(
        saved["macvtap"]["device_node_created"], false,
        "devtmpfs made it"
    );
    assert_eq!(saved["addresses"].as_array().unwrap().len(), 4, "{saved}");
    assert_eq!(saved["routes"].as_array().unwrap().len(), 3, "{saved}");
    assert_eq!(saved["neighbours"].as_array().unwrap().len(), 1, "{saved}");
    assert!(is_connected(s, "macvtap0", pod_ifindex));
    assert!(!is_connected(s, "macvtap0", pod_ifindex + 1));
    assert!(!is_connected(s, "eth0", pod_ifindex));

    // Connected twice: refused, nothing changed.
    let again = connect(s, "macvtap1", 1, &state_dir).unwrap_err();
    assert!(
        matches!(again, MacvtapError::AlreadyConnected { .. }),
        "{again}"
    );
    assert!(!s.link_exists("macvtap1"));

    // Traffic. The VMM opens the device once per queue; the fds come with IFF_TAP, IFF_NO_PI
    // and IFF_VNET_HDR set, and a 10-byte virtio-net header.
    let fd: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ep.device)
        .expect("open macvtap device")
        .into();
    let second: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ep.device)
        .expect("open second queue")
        .into();
    let (ifr_name, flags, vnet_hdr) = tap_info(&fd);
    eprintln!("TUNGETIFF: name {ifr_name} flags {flags:#06x}; TUNGETVNETHDRSZ {vnet_hdr}");
    assert_eq!(ifr_name, "macvtap0");
    assert_eq!(
        flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR),
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
    );
    assert_eq!(vnet_hdr, 10);
    drop(second);
    let q = TapQueue::from_fd("macvtap0", fd);

    // Client -> guest: the ping's ARP request (broadcast) and echo requests (to the macvtap's
    // MAC) come out of the fd; the guest's answers written into it reach the client.
    let guest_mac: Mac = pod.pod_mac;
    let mut ping_cmd = pod.client.exec_cmd(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &pod.pod_ip.to_string(),
    ]);
    ping_cmd.stdout(std::process::Stdio::piped());
    let ping = ChildGuard::spawn(ping_cmd, "ping from the client");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut arp_seen, mut echoes) = (false, 0);
    while echoes < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "arp seen {arp_seen}, echo requests {echoes}"
        );
        let Some(f) = q.read_frame(left) else {
            continue;
        };
        if is_arp_request_for(&f, pod.pod_ip) {
            assert_eq!(f[0..6], [0xff; 6], "ARP request is broadcast");
            assert_eq!(f[6..12], pod.client_mac);
            arp_seen = true;
            q.write_frame(&arp_reply(
                guest_mac,
                pod.pod_ip,
                pod.client_mac,
                pod.client_ip,
            ))
            .unwrap();
        } else if is_echo_request_to(&f, pod.pod_ip) {
            assert_eq!(f[0..6], guest_mac, "echo request goes to the macvtap's MAC");
            echoes += 1;
            q.write_frame(&echo_reply(&f)).unwrap();
        }
    }
    assert!(arp_seen);
    let out = ping.wait_with_output(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("3 received"), "{text}");

    // Guest -> client: a UDP datagram written into the fd.
    let sock = on_netns_thread(pod.client.path(), || UdpSocket::bind((pod.client_ip, 7100)))
        .expect("bind in client");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    q.write_frame(&udp_frame(
        guest_mac,
        pod.client_mac,
        pod.pod_ip,
        pod.client_ip,
        7200,
        7100,
        b"from the guest",
    ))
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).expect("datagram from the guest");
    assert_eq!(&buf[..n], b"from the guest");
    assert_eq!(from, (pod.pod_ip, 7200).into());
    drop(q);

    // Disconnect: eth0 exactly as before (MAC, MTU, flags, addresses incl. link-local, routes,
    // permanent neighbour), macvtap, device node and state file gone.
    disconnect(s, "macvtap0", pod_ifindex, &state_dir);
    assert!(!s.link_exists("macvtap0"));
    assert!(!state_file.exists());
    assert!(
        !ep.device.exists(),
        "devtmpfs removes the node with the macvtap"
    );
    assert!(!is_connected(s, "macvtap0", pod_ifindex));
    wait_dad(s, "eth0");
    assert_eq!(snapshot(s, "eth0"), before);

    // The sandbox stack answers again.
    pod.client
        .exec_ok(&["ping", "-c", "1", "-W", "2", &pod.pod_ip.to_string()]);

    // Idempotent.
    disconnect(s, "macvtap0", pod_ifindex, &state_dir);
    assert_eq!(snapshot(s, "eth0"), before);
}

#[test]
fn connect_with_a_taken_name_fails_and_changes_nothing() {
    require_root!();
    let pod = Pod::new("mvtn");
    let s = &pod.sandbox;
    // No dummy driver in this kernel: a veth pair provides the name.
    s.ip(&["link", "add", "vx0", "type", "veth", "peer", "name", "vx1"]);
    let state = StateDir::new();
    let state_dir = state.for_netns(s);
    let before = snapshot(s, "eth0");
    let vx0 = s.link_json("vx0");

    let err = connect(s, "vx0", 1, &state_dir).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, MacvtapError::NameTaken { .. }), "{err}");
    assert!(err.to_string().contains("vx0"), "{err}");

    assert_eq!(snapshot(s, "eth0"), before);
    assert_eq!(s.link_json("vx0"), vx0, "the existing link is left alone");
    let pod_ifindex = before.ifindex as u32;
    assert!(!state_dir
        .join(format!("macvtap-{pod_ifindex}.json"))
        .exists());
    assert!(!is_connected(s, "vx0", pod_ifindex));
    // Nothing recorded for it: disconnect leaves vx0 alone too.
    disconnect(s, "vx0", pod_ifindex, &state_dir);
    assert!(s.link_exists("vx0"));

    // Bad arguments are refused before anything happens.
    let err = connect(s, "macvtap0", 0, &state_dir).unwrap_err();
    assert!(matches!(err, MacvtapError::InvalidQueues { .. }), "{err}");
    let err = connect(s, "way-too-long-name", 1, &state_dir).unwrap_err();
    assert!(matches!(err, MacvtapError::InvalidName { .. }), "{err}");
    assert_eq!(snapshot(s, "eth0"), before);
}

/// A failure at the very last step (bringing the macvtap up), after eth0's addresses are gone
/// and its MAC changed: everything is rolled back.
#[test]
fn a_failure_after_eth0_changed_is_rolled_back() {
    require_root!();
    let pod = rich_pod("mvtf");
    let s = &pod.sandbox;
    // A macvlan on eth0, up, whose MAC eth0 then takes over: the macvtap (created with eth0's
    // MAC) cannot come up next to it (EADDRINUSE), and eth0 keeps the MAC it has.
    s.ip(&[
        "link", "add", "link", "eth0", "name", "mv9", "type", "macvlan", "mode", "bridge",
    ]);
    s.ip(&["link", "set", "mv9", "addrgenmode", "none"]);
    s.ip(&["link", "set", "mv9", "up"]);
    let mv9_mac = s.link_mac("mv9");
    s.ip(&["link", "set", "eth0", "address", &mv9_mac]);
    // The MAC change flushed the neighbour table; put the permanent entry back.
    s.neigh("replace 10.123.0.9 lladdr 02:00:00:00:00:09 dev eth0 nud permanent");
    wait_dad(s, "eth0");
    let state = StateDir::new();
    let state_dir = state.for_netns(s);
    let before = snapshot(s, "eth0");
    let pod_ifindex = before.ifindex as u32;

    let err = connect(s, "macvtap0", 1, &state_dir).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, MacvtapError::SetLink { .. }), "{err}");
    assert!(
        err.to_string().contains("RTM_SETLINK up on macvtap0"),
        "{err}"
    );

    assert!(!s.link_exists("macvtap0"));
    assert!(s.link_exists("mv9"));
    assert!(!state_dir
        .join(format!("macvtap-{pod_ifindex}.json"))
        .exists());
    wait_dad(s, "eth0");
    assert_eq!(snapshot(s, "eth0"), before);
}
