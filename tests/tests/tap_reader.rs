//! Root-only checks of the test helpers themselves: frame injection/capture on a tap with
//! [`TapQueue`] + [`UdpFrame`], and the in-process [`Relay`] between two taps.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use netshim::tap::{create_persistent_tap, TapSpec};
use netshim_tests::netns_fixture::unique_octet;
use netshim_tests::tap_reader::{parse_mac, udp_frame};
use netshim_tests::traffic::pin_neighbor;
use netshim_tests::vmm_tap::VMM_OFFLOADS;
use netshim_tests::{is_root, Relay, TapQueue, TestNetns};

#[test]
fn inject_and_capture_udp() {
    if !is_root() {
        eprintln!("skipping inject_and_capture_udp: needs root");
        return;
    }
    let ns = TestNetns::new("nsh-tr");
    let n = unique_octet();
    let tap_ip = Ipv4Addr::new(10, 77, n, 1);
    let peer_ip = Ipv4Addr::new(10, 77, n, 2);
    let peer_mac = [0x02, 0, 0, 0x4d, n, 2];

    ns.run(|| create_persistent_tap(&TapSpec::new("tap0_kata")))
        .expect("create tap");
    ns.ip(&["addr", "add", &format!("{tap_ip}/24"), "dev", "tap0_kata"]);
    ns.ip(&["link", "set", "dev", "tap0_kata", "up"]);
    pin_neighbor(&ns, "tap0_kata", peer_ip, &peer_mac);
    let tap_mac = parse_mac(&ns.link_mac("tap0_kata")).unwrap();

    let q = TapQueue::open_in(ns.path(), "tap0_kata", false, None).expect("open queue");
    // Frames the stack sends before linkwatch has activated the tap's qdisc are dropped.
    assert!(
        ns.wait_oper_up("tap0_kata", Duration::from_secs(5)),
        "tap0_kata never came up"
    );
    let sock = ns
        .run(|| UdpSocket::bind((tap_ip, 7000)))
        .expect("bind in netns");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();

    // Into the netns stack through the tap.
    q.write_frame(&udp_frame(
        peer_mac, tap_mac, peer_ip, tap_ip, 40000, 7000, b"ping",
    ))
    .expect("write frame");
    let mut buf = [0u8; 64];
    let (len, from) = sock.recv_from(&mut buf).expect("injected datagram");
    assert_eq!(&buf[..len], b"ping");
    assert_eq!(from, (peer_ip, 40000).into());

    // Out of the netns stack through the tap.
    sock.send_to(b"pong", (peer_ip, 40000)).unwrap();
    let f = q
        .read_udp(Duration::from_secs(3), 40000)
        .expect("captured frame");
    assert_eq!(f.payload, b"pong");
    assert_eq!(f.src_mac, tap_mac);
    assert_eq!(f.dst_mac, peer_mac);
    assert_eq!((f.src_ip, f.dst_ip, f.src_port), (tap_ip, peer_ip, 7000));

    assert!(q.read_udp(Duration::from_millis(200), 40000).is_none());
}

#[test]
fn relay_connects_two_taps() {
    if !is_root() {
        eprintln!("skipping relay_connects_two_taps: needs root");
        return;
    }
    let a = TestNetns::new("nsh-ra");
    let b = TestNetns::new("nsh-rb");
    let n = unique_octet();
    let qa = TapQueue::create_in(a.path(), "eth0", Some(VMM_OFFLOADS)).unwrap();
    let qb = TapQueue::create_in(b.path(), "eth0", Some(VMM_OFFLOADS)).unwrap();
    for (ns, host) in [(&a, 1), (&b, 2)] {
        ns.ip(&[
            "addr",
            "add",
            &format!("10.77.{n}.{host}/24"),
            "dev",
            "eth0",
        ]);
        ns.ip(&["link", "set", "dev", "eth0", "up"]);
    }
    let relay = Relay::start(qa.into_fd(), qb.into_fd()).unwrap();
    let ping = a.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        &format!("10.77.{n}.2"),
    ]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let (summary, result) = relay.stop();
    result.unwrap();
    // ARP request/reply and two echo request/reply pairs at least.
    assert!(summary.a_to_b.frames >= 3, "{summary:?}");
    assert!(summary.b_to_a.frames >= 3, "{summary:?}");
    // The non-persistent taps went away with the relay's fds.
    assert!(!a.link_exists("eth0"));
    assert!(!b.link_exists("eth0"));
}
