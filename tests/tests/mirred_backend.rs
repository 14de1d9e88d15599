//! kata's u32 + mirred datapath (`netshim::datapath::mirred`) on real network namespaces (root
//! only): traffic through it in both directions, its counters, idempotent connect/disconnect,
//! re-attach over kata's own setup, stale filters, clsact and foreign-filter conflicts with
//! rollback, bad devices.
//!
//! Every netns is a [`TestNetns`] (uniquely named, deleted on Drop, also when an assertion
//! fails); nothing touches the root netns's interfaces. The rtnetlink work runs through
//! [`Netns::run`] (a dedicated thread inside the netns with its own runtime); `ip`/`tc` are only
//! used here, to build the topology and to check what the kernel shows.

use std::{
    fmt::Debug,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use netshim::{
    datapath::{
        mirred::{connect, counters, disconnect, ingress_qdisc, IngressQdisc, MirredError},
        Dev,
    },
    interfaces::{by_name, Interface},
    netns::Netns,
};
use netshim_tests::{on_netns_thread, require_root, TestNetns};

/// The test netns as netshim resolves it, to run rtnetlink work in with [`Netns::run`].
fn netns(ns: &TestNetns) -> Netns {
    Netns::resolve(ns.name()).unwrap_or_else(|e| panic!("resolve {}: {e}", ns.name()))
}

/// The [`Dev`] of a link looked up with [`by_name`] (RTM_GETLINK); panics if it is missing.
fn dev<E: Debug>(found: Result<Option<Interface>, E>, name: &str) -> Dev {
    let link = found
        .unwrap_or_else(|e| panic!("RTM_GETLINK {name}: {e:?}"))
        .unwrap_or_else(|| panic!("link {name} exists"));
    Dev {
        name: name.to_string(),
        ifindex: link.ifindex,
    }
}

/// Sets the flag on Drop (also while unwinding), so a helper thread waiting on it ends.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// UDP "ping": an echo server in `server_ns` on `server`:7; the client in `client_ns` sends
/// `count` datagrams, waiting up to `wait` for each echo. Returns the echoes received. ARP has
/// to cross the datapath too.
fn udp_ping(
    client_ns: &TestNetns,
    server_ns: &TestNetns,
    server: Ipv4Addr,
    count: u32,
    wait: Duration,
) -> u32 {
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::scope(|sc| {
        sc.spawn(move || {
            on_netns_thread(server_ns.path(), move || {
                let sock = UdpSocket::bind(SocketAddrV4::new(server, 7)).expect("bind echo");
                sock.set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            })
        });
        // Stops the server when the client is done, also if it panics.
        let _stop_server = SetOnDrop(stop);
        ready_rx.recv().expect("echo server ready");
        on_netns_thread(client_ns.path(), || {
            let sock = UdpSocket::bind("0.0.0.0:0").expect("bind client");
            sock.set_read_timeout(Some(wait)).unwrap();
            let mut got = 0;
            let mut buf = [0u8; 64];
            for seq in 0..count {
                let msg = seq.to_be_bytes();
                sock.send_to(&msg, SocketAddrV4::new(server, 7))
                    .expect("send");
                let deadline = Instant::now() + wait;
                while Instant::now() < deadline {
                    match sock.recv(&mut buf) {
                        Ok(4) if buf[..4] == msg => {
                            got += 1;
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
            }
            got
        })
    })
}

fn filter_text(ns: &TestNetns, dev: &str) -> String {
    ns.tc(&["filter", "show", "dev", dev, "parent", "ffff:"])
}

fn mirred_lines(ns: &TestNetns, dev: &str) -> Vec<String> {
    filter_text(ns, dev)
        .lines()
        .filter(|l| l.contains("mirred"))
        .map(|l| l.trim().to_string())
        .collect()
}

fn qdisc_text(ns: &TestNetns, dev: &str) -> String {
    ns.tc(&["qdisc", "show", "dev", dev])
}

/// A(client) c0 <-> eth0 S(sandbox) v1a <-> v1b B; connect(eth0, v1a) must carry traffic
/// A <-> B both ways, count it, and stop carrying it after disconnect.
#[test]
fn connect_carries_traffic_counts_it_and_disconnect_removes_it() {
    require_root!();
    let a = TestNetns::new("nsh-m-a");
    let s = TestNetns::new("nsh-m-s");
    let b = TestNetns::new("nsh-m-b");
    let x = std::process::id() % 250 + 1;
    let (ip_a, ip_b) = (format!("10.77.{x}.1/24"), format!("10.77.{x}.2/24"));
    let addr_b = Ipv4Addr::new(10, 77, x as u8, 2);
    a.ip(&[
        "link",
        "add",
        "c0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        s.name(),
    ]);
    s.ip(&[
        "link",
        "add",
        "v1a",
        "type",
        "veth",
        "peer",
        "name",
        "v1b",
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", &ip_a, "dev", "c0"]);
    b.ip(&["addr", "add", &ip_b, "dev", "v1b"]);
    for (n, d) in [
        (&a, "lo"),
        (&a, "c0"),
        (&s, "lo"),
        (&s, "eth0"),
        (&s, "v1a"),
        (&b, "lo"),
        (&b, "v1b"),
    ] {
        n.ip(&["link", "set", d, "up"]);
    }

    // Not connected: nothing crosses S.
    let ping = |count, wait_ms| udp_ping(&a, &b, addr_b, count, Duration::from_millis(wait_ms));
    assert_eq!(ping(2, 300), 0, "A reached B before connect");

    let (eth0, v1a) = netns(&s)
        .run(|h| async move {
            let eth0 = dev(by_name(&h, "eth0").await, "eth0");
            let v1a = dev(by_name(&h, "v1a").await, "v1a");
            assert_eq!(ingress_qdisc(&h, &eth0).await.unwrap(), IngressQdisc::None);
            assert_eq!(counters(&h, &eth0).await.unwrap(), None);
            connect(&h, &eth0, &v1a).await.expect("connect");
            connect(&h, &eth0, &v1a)
                .await
                .expect("second connect is idempotent");
            assert_eq!(
                ingress_qdisc(&h, &eth0).await.unwrap(),
                IngressQdisc::Ingress
            );
            assert_eq!(
                ingress_qdisc(&h, &v1a).await.unwrap(),
                IngressQdisc::Ingress
            );
            Ok::<_, netshim::Error>((eth0, v1a))
        })
        .expect("connect in S");
    for (d, to) in [("eth0", "v1a"), ("v1a", "eth0")] {
        let text = filter_text(&s, d);
        println!("tc -n S filter show dev {d} parent ffff: (after 2 connects)\n{text}");
        let lines = mirred_lines(&s, d);
        assert_eq!(lines.len(), 1, "exactly one mirred filter on {d}: {text}");
        assert!(text.contains("protocol all pref 1 u32"), "{text}");
        assert!(text.contains("match 00000000/00000000 at 0"), "{text}");
        assert!(
            lines[0].contains(&format!("(Egress Redirect to device {to}) stolen")),
            "{text}"
        );
    }

    let read_counters = || {
        let (eth0, v1a) = (eth0.clone(), v1a.clone());
        netns(&s)
            .run(|h| async move {
                Ok::<_, netshim::Error>((
                    counters(&h, &eth0).await.unwrap().expect("eth0 connected"),
                    counters(&h, &v1a).await.unwrap().expect("v1a connected"),
                ))
            })
            .expect("counters in S")
    };
    let (e0, v0) = read_counters();
    const N: u32 = 20;
    let got = ping(N, 1000);
    assert_eq!(got, N, "UDP echo A -> B through the mirred datapath");
    let (e1, v1) = read_counters();
    println!("counters eth0 {e0:?} -> {e1:?}; v1a {v0:?} -> {v1:?}; {got}/{N} echoes");
    println!(
        "tc -s -n S filter show dev eth0 parent ffff:\n{}",
        s.tc(&["-s", "filter", "show", "dev", "eth0", "parent", "ffff:"])
    );
    assert!(
        e1.packets - e0.packets >= u64::from(N),
        "eth0 {e0:?} -> {e1:?}"
    );
    assert!(
        v1.packets - v0.packets >= u64::from(N),
        "v1a {v0:?} -> {v1:?}"
    );
    // At ingress the MAC header is already pulled: >= IPv4 20 + UDP 8 + 4 per echo.
    assert!(
        e1.bytes - e0.bytes >= u64::from(N) * 32,
        "eth0 bytes {e0:?} -> {e1:?}"
    );
    assert!(v1.bytes > v0.bytes);

    {
        let (eth0, v1a) = (eth0.clone(), v1a.clone());
        netns(&s)
            .run(|h| async move {
                disconnect(&h, &eth0, &v1a).await.expect("disconnect");
                assert_eq!(ingress_qdisc(&h, &eth0).await.unwrap(), IngressQdisc::None);
                assert_eq!(counters(&h, &eth0).await.unwrap(), None);
                assert_eq!(counters(&h, &v1a).await.unwrap(), None);
                Ok::<_, netshim::Error>(())
            })
            .expect("disconnect in S");
    }
    let q = qdisc_text(&s, "eth0");
    println!("tc -n S qdisc show dev eth0 (after disconnect)\n{q}");
    assert!(!q.contains("ingress"), "{q}");
    assert!(!qdisc_text(&s, "v1a").contains("ingress"));
    assert_eq!(ping(3, 300), 0, "A still reaches B after disconnect");

    s.ip(&["link", "del", "v1a"]);
    netns(&s)
        .run(|h| async move {
            disconnect(&h, &eth0, &v1a)
                .await
                .expect("second disconnect");
            // v1a is gone now: still not an error.
            disconnect(&h, &eth0, &v1a)
                .await
                .expect("disconnect with a device gone");
            Ok::<_, netshim::Error>(())
        })
        .expect("disconnect in S after v1a is gone");
}

/// kata re-attach (existing ingress qdisc and kata's own filter), a stale filter at our
/// preference, clsact and foreign-filter conflicts with rollback, bad devices.
#[test]
fn reattach_stale_and_conflicts() {
    require_root!();
    // Shared with the netlink thread, which checks `tc` output between netlink calls.
    let s = Arc::new(TestNetns::new("nsh-m-s"));
    // veth pairs dN/pN (this kind of kernel may have no dummy driver).
    for i in 0..6 {
        let (d, p) = (format!("d{i}"), format!("p{i}"));
        s.ip(&["link", "add", &d, "type", "veth", "peer", "name", &p]);
        s.ip(&["link", "set", &d, "up"]);
        s.ip(&["link", "set", &p, "up"]);
    }
    // What kata leaves behind on d0: ingress qdisc + filter at the kernel's pref.
    s.tc(&["qdisc", "add", "dev", "d0", "ingress"]);
    s.tc(&[
        "filter", "add", "dev", "d0", "parent", "ffff:", "protocol", "all", "u32", "match", "u32",
        "0", "0", "action", "mirred", "egress", "redirect", "dev", "d1",
    ]);
    s.tc(&["qdisc", "add", "dev", "d3", "clsact"]);
    s.tc(&["qdisc", "add", "dev", "d5", "ingress"]);
    s.tc(&[
        "filter",
        "add",
        "dev",
        "d5",
        "parent",
        "ffff:",
        "pref",
        "1",
        "protocol",
        "all",
        "bpf",
        "bytecode",
        "1,6 0 0 0,",
    ]);

    let s2 = Arc::clone(&s);
    netns(&s)
        .run(|h| async move {
            let mut d: Vec<Dev> = Vec::new();
            for n in ["d0", "d1", "d2", "d3", "d4", "d5"] {
                d.push(dev(by_name(&h, n).await, n));
            }

            // (1) kata re-attach: reuse the ingress qdisc, keep kata's filter.
            for _ in 0..2 {
                connect(&h, &d[0], &d[1])
                    .await
                    .expect("connect over kata's setup");
            }
            let d0 = mirred_lines(&s2, "d0");
            assert_eq!(d0.len(), 1, "{d0:?}");
            assert!(
                filter_text(&s2, "d0").contains("pref 49152"),
                "kata's filter kept"
            );
            assert_eq!(mirred_lines(&s2, "d1").len(), 1);
            assert!(filter_text(&s2, "d1").contains("pref 1 u32"));
            assert!(counters(&h, &d[0]).await.unwrap().is_some());

            // (2) d1's filter at pref 1 now points at d0; connecting d1 to d2 replaces it.
            connect(&h, &d[1], &d[2])
                .await
                .expect("connect with a stale filter");
            let d1 = mirred_lines(&s2, "d1");
            assert_eq!(d1.len(), 1, "{d1:?}");
            assert!(d1[0].contains("to device d2)"), "{d1:?}");
            println!("d1 after re-target:\n{}", filter_text(&s2, "d1"));

            // (3) clsact owns ffff:: refused, nothing left behind, clsact untouched.
            let e = connect(&h, &d[3], &d[4]).await.unwrap_err();
            assert!(
                matches!(e, MirredError::ClsactPresent { ref dev, .. } if dev == "d3"),
                "{e}"
            );
            println!("clsact: {e}");
            let e = connect(&h, &d[4], &d[3]).await.unwrap_err();
            assert!(matches!(e, MirredError::ClsactPresent { .. }), "{e}");
            assert_eq!(
                ingress_qdisc(&h, &d[3]).await.unwrap(),
                IngressQdisc::Clsact
            );
            assert_eq!(
                ingress_qdisc(&h, &d[4]).await.unwrap(),
                IngressQdisc::None,
                "d4's ingress qdisc rolled back"
            );
            disconnect(&h, &d[3], &d[4])
                .await
                .expect("disconnect leaves clsact alone");
            assert_eq!(
                ingress_qdisc(&h, &d[3]).await.unwrap(),
                IngressQdisc::Clsact
            );

            // (4) someone else's (classic-BPF cls_bpf) filter at our preference.
            let e = connect(&h, &d[5], &d[4]).await.unwrap_err();
            assert!(
                matches!(e, MirredError::PrioTaken { ref kind, prio: 1, .. } if kind == "bpf"),
                "{e}"
            );
            println!("prio taken: {e}");
            assert_eq!(
                ingress_qdisc(&h, &d[5]).await.unwrap(),
                IngressQdisc::Ingress
            );
            assert_eq!(ingress_qdisc(&h, &d[4]).await.unwrap(), IngressQdisc::None);

            // (5) bad arguments.
            let e = connect(&h, &d[4], &d[4]).await.unwrap_err();
            assert!(matches!(e, MirredError::SameDevice { .. }), "{e}");
            let ghost = Dev {
                name: "ghost".into(),
                ifindex: 999_999,
            };
            let e = connect(&h, &ghost, &d[4]).await.unwrap_err();
            println!("missing device: {e}");
            assert!(
                e.to_string()
                    .starts_with("RTM_NEWQDISC ingress on ghost (ifindex 999999): "),
                "{e}"
            );
            let e = connect(&h, &d[4], &ghost).await.unwrap_err();
            assert!(matches!(e, MirredError::AddQdisc { .. }), "{e}");
            assert_eq!(ingress_qdisc(&h, &d[4]).await.unwrap(), IngressQdisc::None);
            assert_eq!(ingress_qdisc(&h, &ghost).await.unwrap(), IngressQdisc::None);
            assert_eq!(counters(&h, &ghost).await.unwrap(), None);
            disconnect(&h, &ghost, &d[4])
                .await
                .expect("disconnect of a missing device");

            disconnect(&h, &d[0], &d[1]).await.unwrap();
            disconnect(&h, &d[1], &d[2]).await.unwrap();
            for i in [0, 1, 2] {
                assert_eq!(ingress_qdisc(&h, &d[i]).await.unwrap(), IngressQdisc::None);
            }
            Ok::<_, netshim::Error>(())
        })
        .expect("mirred checks in S");
}
