//! The pod device's MTU holds on every path, and a VM's GSO metadata cannot carry a frame
//! further than kata's mirred datapath lets it.
//!
//! - Frames from the VM larger than the pod veth's MTU (4042 and 9042 bytes, the latter a
//!   9000-byte datagram) never reach the client, with `bpf_redirect_peer` (the default),
//!   `--fast-path off` and mirred; the eBPF datapath counts them as `mtu` drops, and the
//!   Prometheus text has those values.
//! - Towards the VM, a GSO packet whose segments exceed the tap's MTU (a client with a
//!   larger MTU than the pod veth) is dropped and counted too.
//! - Lying virtio-net headers (GSO UDP_L4 on TCP, TCPV4 on UDP, TCPV6 on IPv4, segments
//!   over the MTU, headers that do not fit the frame, ...): none reaches the client with
//!   eBPF, which is never further than mirred gets them. (mirred delivers a GSO packet
//!   whose segments exceed the MTU: the veth's forwarding check waves GSO packets through
//!   and `tcp4_gso_segment` only re-checks the headers of a `SKB_GSO_DODGY` packet; the eBPF
//!   datapath checks each segment against the MTU.)

use std::{net::UdpSocket, os::fd::AsRawFd, time::Duration};

use netshim_tests::{
    netshim_cli::{netshim_json, netshim_ok, Pod},
    require_root,
    sniffer::Sniffer,
    traffic,
    vnet::{self, VnetHdr, L4},
};

/// The datapaths compared: (name, attach arguments).
const DATAPATHS: [(&str, &[&str]); 3] = [
    (
        "ebpf-peer",
        &["--tc-backend", "ebpf", "--fast-path", "auto"],
    ),
    ("ebpf", &["--tc-backend", "ebpf", "--fast-path", "off"]),
    ("mirred", &["--tc-backend", "mirred"]),
];

fn attach(pod: &Pod, args: &[&str]) {
    let mut all = vec!["attach", "--netns", pod.netns()];
    all.extend(args);
    netshim_json(&all);
}

fn stats(pod: &Pod) -> serde_json::Value {
    let all = netshim_json(&["stats", "--netns", pod.netns()]);
    all[0]["endpoints"][0].clone()
}

#[test]
fn oversize_frames_from_the_vm_never_reach_the_client() {
    require_root!();
    for (name, args) in DATAPATHS {
        let pod = Pod::new(&format!("mtu{}", &name[..2]));
        attach(&pod, args);
        let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
        let receiver = pod.client.udp_receiver(
            pod.client_ip,
            0,
            "bind client socket",
            Duration::from_millis(500),
        );
        let port = receiver.local_addr().unwrap().port();
        // 1042 bytes fit a 1500 MTU; 4042 and 9042 (a 9000-byte datagram) do not.
        for payload in [1000usize, 4000, 9000] {
            let frame = traffic::vm_frame(&pod, 4000 + payload as u16, port, &vec![7u8; payload]);
            assert_eq!(frame.len(), payload + 42);
            tap.write_frame(&frame).expect("write to the tap");
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = receiver.recv_from(&mut buf) {
            got.push(n);
        }
        assert_eq!(
            got,
            vec![1000],
            "{name}: the client must get only the 1000-byte datagram"
        );
        let ep = stats(&pod);
        let from_vm = &ep["from_vm"];
        if name == "mirred" {
            // mirred's egress redirect meets the veth's own MTU check.
            assert_eq!(from_vm["dropped"]["pod_tx_dropped"], 2, "{name}: {ep}");
            assert_eq!(from_vm["delivered"], 1, "{name}: {ep}");
        } else {
            assert_eq!(from_vm["dropped"]["mtu"], 2, "{name}: {ep}");
            assert_eq!(from_vm["packets"], 1, "{name}: {ep}");
            assert_eq!(from_vm["delivered"], 1, "{name}: {ep}");
            let text = netshim_ok(&["stats", "--netns", pod.netns(), "--format", "prometheus"]);
            let want = "direction=\"from_vm\",backend=\"ebpf\",reason=\"mtu\"} 2";
            assert!(
                text.lines()
                    .any(|l| l.starts_with("netshim_endpoint_dropped_total{") && l.ends_with(want)),
                "{name}: no mtu drop series with value 2 in\n{text}"
            );
        }
        println!("{name}: client got {got:?}; from_vm {from_vm}");
    }
}

/// `setsockopt(UDP_SEGMENT)`: the socket sends GSO_UDP_L4 packets of `size`-byte segments.
fn udp_segment(socket: &UdpSocket, size: u16) {
    let size = i32::from(size);
    // SAFETY: setsockopt(2) with a valid int option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&size as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
}

#[test]
fn oversize_gso_segments_towards_the_vm_are_dropped_and_counted() {
    require_root!();
    for (name, args) in &DATAPATHS[..2] {
        let pod = Pod::new(&format!("mtv{}", &name[..2]));
        attach(&pod, args);
        let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
        pod.pin_pod_neighbor();
        // The client's side of the veth has a larger MTU than the pod's: a veth forwards GSO
        // packets whatever their segment size, so 8000-byte segments reach eth0's ingress.
        pod.client.ip(&["link", "set", "c0", "mtu", "9000"]);
        let sender = pod
            .client
            .udp_socket(pod.client_ip, 0, "bind client socket");
        udp_segment(&sender, 8000);
        sender
            .send_to(&[1u8; 16000], (pod.pod_ip, 9))
            .expect("send a GSO datagram");
        // And one that fits, to show the path works.
        udp_segment(&sender, 1000);
        sender.send_to(&[2u8; 3000], (pod.pod_ip, 9)).expect("send");
        let mut frames = Vec::new();
        while let Some(f) = tap.read_frame(Duration::from_millis(500)) {
            frames.push(f.len());
        }
        let ep = stats(&pod);
        println!(
            "{name}: the tap got frames of {frames:?}; to_vm {}",
            ep["to_vm"]
        );
        assert!(
            frames.iter().all(|&len| len <= 1514),
            "{name}: a frame over the tap's MTU reached the VM: {frames:?}"
        );
        assert!(
            !frames.is_empty(),
            "{name}: the fitting GSO packet never came"
        );
        assert_eq!(ep["to_vm"]["dropped"]["mtu"], 1, "{name}: {ep}");
    }
}

/// One lying (or, for the controls, honest) frame a VM writes into its tap.
struct Case {
    name: &'static str,
    l4: L4,
    payload: usize,
    hdr: VnetHdr,
    /// Must the client get it through the eBPF datapath (controls) or never (lies)?
    expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Delivered,
    Never,
}

fn gso(gso_type: u8, gso_size: u16, csum_offset: u16) -> VnetHdr {
    VnetHdr {
        flags: vnet::NEEDS_CSUM,
        gso_type,
        hdr_len: 54,
        gso_size,
        csum_start: 34,
        csum_offset,
    }
}

const TCP_CSUM: u16 = 16;
const UDP_CSUM: u16 = 6;

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        Case {
            name: "honest TCPV4 GSO (control)",
            l4: L4::Tcp,
            payload: 4000,
            hdr: gso(vnet::GSO_TCPV4, 1400, TCP_CSUM),
            expect: Delivered,
        },
        Case {
            name: "honest UDP_L4 GSO (control)",
            l4: L4::Udp,
            payload: 4000,
            hdr: gso(vnet::GSO_UDP_L4, 1400, UDP_CSUM),
            expect: Delivered,
        },
        Case {
            name: "GSO UDP_L4 on a TCP frame",
            l4: L4::Tcp,
            payload: 4000,
            hdr: gso(vnet::GSO_UDP_L4, 1400, UDP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO TCPV4 on a UDP frame",
            l4: L4::Udp,
            payload: 4000,
            hdr: gso(vnet::GSO_TCPV4, 1400, TCP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO TCPV6 on an IPv4 TCP frame",
            l4: L4::Tcp,
            payload: 4000,
            hdr: gso(vnet::GSO_TCPV6, 1400, TCP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO TCPV4, gso_size over the MTU",
            l4: L4::Tcp,
            payload: 8000,
            hdr: gso(vnet::GSO_TCPV4, 4000, TCP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO UDP_L4, gso_size over the MTU",
            l4: L4::Udp,
            payload: 8000,
            hdr: gso(vnet::GSO_UDP_L4, 4000, UDP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO TCPV4 + ECN on a UDP frame",
            l4: L4::Udp,
            payload: 4000,
            hdr: gso(vnet::GSO_TCPV4 | vnet::GSO_ECN, 1400, TCP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO TCPV4 without NEEDS_CSUM on a UDP frame",
            l4: L4::Udp,
            payload: 4000,
            hdr: VnetHdr {
                flags: 0,
                ..gso(vnet::GSO_TCPV4, 1400, 0)
            },
            expect: Never,
        },
        Case {
            name: "GSO TCPV4 on a frame too short for its TCP header",
            l4: L4::None,
            payload: 10,
            hdr: gso(vnet::GSO_TCPV4, 1400, TCP_CSUM),
            expect: Never,
        },
        Case {
            name: "GSO TCPV4, gso_size 0",
            l4: L4::Tcp,
            payload: 4000,
            hdr: gso(vnet::GSO_TCPV4, 0, TCP_CSUM),
            expect: Never,
        },
        Case {
            name: "UFO (GSO_UDP) on a TCP frame",
            l4: L4::Tcp,
            payload: 4000,
            hdr: gso(vnet::GSO_UDP, 1400, TCP_CSUM),
            expect: Never,
        },
    ]
}

/// What became of one case on one datapath: whether tun took the write, how many frames
/// of it the client's device received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    written: bool,
    received: usize,
}

fn run_cases(name: &str, args: &[&str], cases: &[Case]) -> Vec<Outcome> {
    let pod = Pod::new(&format!("gso{}", &name[..2]));
    attach(&pod, args);
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    let sniffer = Sniffer::on(pod.client.path(), "c0");
    let mut out = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let src_port = 40000 + i as u16;
        let frame = vnet::l4_frame(
            pod.pod_mac,
            pod.client_mac,
            pod.pod_ip,
            pod.client_ip,
            case.l4,
            src_port,
            9,
            &vec![0x5a; case.payload],
        );
        let written = tap.write_raw(&vnet::with_hdr(&case.hdr, &frame)).is_ok();
        let received = sniffer
            .received(Duration::from_millis(300), |f| {
                f.len() >= 38
                    && f[6..12] == pod.pod_mac
                    && f[23] == frame[23]
                    && f[34..36] == src_port.to_be_bytes()
            })
            .len();
        out.push(Outcome { written, received });
    }
    out
}

#[test]
fn lying_gso_frames_get_no_further_with_ebpf_than_with_mirred() {
    require_root!();
    let cases = cases();
    let results: Vec<(&str, Vec<Outcome>)> = DATAPATHS
        .iter()
        .map(|(name, args)| (*name, run_cases(name, args, &cases)))
        .collect();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let line: Vec<String> = results
            .iter()
            .map(|(name, r)| {
                format!(
                    "{name}: {} {}",
                    if r[i].written {
                        "written"
                    } else {
                        "refused by tun"
                    },
                    r[i].received
                )
            })
            .collect();
        println!("{:<48} {}", case.name, line.join(", "));
        let mirred = results[2].1[i];
        for (name, r) in &results[..2] {
            // Never further than mirred...
            if r[i].received > 0 && mirred.received == 0 {
                failures.push(format!(
                    "{}: {name} received {} frames, mirred none",
                    case.name, r[i].received
                ));
            }
            // ...and exactly what the case expects.
            if (r[i].received > 0) != (case.expect == Expect::Delivered) {
                failures.push(format!(
                    "{}: expected {:?} with {name}, which received {}",
                    case.name, case.expect, r[i].received
                ));
            }
        }
        if case.expect == Expect::Delivered && mirred.received == 0 {
            failures.push(format!(
                "{}: the control never came through mirred",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
