//! A quick two-way forwarding check of an attached [`Pod`]: datagrams from the client netns
//! must come out of the tap fd, and frames written to the tap fd must reach a client socket.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use crate::{
    netshim_cli::Pod,
    tap_reader::{format_mac, udp_frame, Mac},
    TapQueue, TestNetns, UdpFrame,
};

/// Opens a queue of tap `name` like a VMM does, and waits until the kernel has activated the
/// tap's qdisc: opening brings the carrier up, but until linkwatch (a deferred work item)
/// has run, frames redirected to the tap meet the `noop` qdisc and are dropped. linkwatch
/// sets the operstate in the same step.
pub fn open_tap(ns: &TestNetns, name: &str) -> TapQueue {
    let tap = TapQueue::open_in(ns.path(), name, false, None)
        .unwrap_or_else(|e| panic!("open {name} in {}: {e}", ns.name()));
    assert!(
        ns.wait_oper_up(name, Duration::from_secs(5)),
        "{name} never came up"
    );
    tap
}

/// A UDP datagram from the pod's address (as the VM would send it) to `dst_port` on the
/// client, framed for writing to the tap.
pub fn vm_frame(pod: &Pod, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp_frame(
        pod.pod_mac,
        pod.client_mac,
        pod.pod_ip,
        pod.client_ip,
        src_port,
        dst_port,
        payload,
    )
}

/// Receives `count` datagrams on `receiver` and checks that the i-th carries `"{prefix} {i}"`;
/// returns where each came from.
pub fn recv_numbered(receiver: &UdpSocket, prefix: &str, count: usize) -> Vec<SocketAddr> {
    let mut buf = [0u8; 2048];
    (0..count)
        .map(|i| {
            let (n, from) = receiver
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} of {count} from the VM: {e}"));
            assert_eq!(&buf[..n], format!("{prefix} {i}").as_bytes());
            from
        })
        .collect()
}

/// What crossed in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub to_vm: usize,
    pub from_vm: usize,
}

/// The two ends a probe sends between: a device with an address in a "client" netns, and
/// the pod interface of a sandbox netns (whose frames the tap carries).
#[derive(Debug, Clone, Copy)]
pub struct ProbePath<'a> {
    pub client: &'a TestNetns,
    pub client_dev: &'a str,
    pub client_ip: Ipv4Addr,
    pub client_mac: Mac,
    pub sandbox: &'a TestNetns,
    pub pod_ip: Ipv4Addr,
    pub pod_mac: Mac,
}

/// A permanent neighbour entry for `ip` on `dev`, so the netns sends no ARP for it and every
/// frame that crosses is one a test sent.
pub fn pin_neighbor(ns: &TestNetns, dev: &str, ip: Ipv4Addr, mac: &Mac) {
    ns.neigh(&format!(
        "replace {ip} lladdr {} dev {dev} nud permanent",
        format_mac(mac)
    ));
}

/// Sends `count` datagrams each way through `tap` (the pod's `tap0_kata` unless the caller
/// says otherwise) and returns how many arrived. Sets a permanent neighbour entry for the
/// pod on the client, so no ARP frame mixes in.
pub fn probe(pod: &Pod, tap: &str, count: usize) -> Forwarded {
    probe_path(
        &ProbePath {
            client: &pod.client,
            client_dev: "c0",
            client_ip: pod.client_ip,
            client_mac: pod.client_mac,
            sandbox: &pod.sandbox,
            pod_ip: pod.pod_ip,
            pod_mac: pod.pod_mac,
        },
        tap,
        count,
    )
}

/// [`probe`] between any client device and pod interface (a CNI plugin's topology).
pub fn probe_path(path: &ProbePath, tap: &str, count: usize) -> Forwarded {
    let queue = open_tap(path.sandbox, tap);
    pin_neighbor(path.client, path.client_dev, path.pod_ip, &path.pod_mac);
    let (sender, receiver) = path.client.run(|| {
        (
            UdpSocket::bind((path.client_ip, 0)).expect("bind client sender"),
            UdpSocket::bind((path.client_ip, 0)).expect("bind client receiver"),
        )
    });
    let port = receiver.local_addr().expect("receiver address").port();
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("receiver timeout");

    for i in 0..count {
        sender
            .send_to(format!("probe {i}").as_bytes(), (path.pod_ip, 9))
            .expect("send to the VM");
    }
    let mut to_vm = 0;
    while to_vm < count {
        let Some(frame) = queue.read_frame(Duration::from_millis(500)) else {
            break;
        };
        if UdpFrame::parse(&frame).is_some_and(|u| u.dst_port == 9) {
            to_vm += 1;
        }
    }

    for i in 0..count {
        let frame = udp_frame(
            path.pod_mac,
            path.client_mac,
            path.pod_ip,
            path.client_ip,
            4242,
            port,
            format!("reply {i}").as_bytes(),
        );
        queue.write_frame(&frame).expect("write a frame to the tap");
    }
    let mut from_vm = 0;
    let mut buf = [0u8; 256];
    while from_vm < count && receiver.recv_from(&mut buf).is_ok() {
        from_vm += 1;
    }
    Forwarded { to_vm, from_vm }
}

/// Frame bytes that crossed each way in an [`exchange`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Exchanged {
    pub to_vm_bytes: u64,
    pub from_vm_bytes: u64,
}

/// Sends `n` datagrams client → VM, each read back from `tap`, then writes `n` frames VM →
/// client, each received by a client socket, and checks nothing else crossed; returns the
/// frame bytes each way (what the eBPF counters count). The caller pins the pod's neighbour
/// entry ([`Pod::pin_pod_neighbor`]) so that no ARP mixes in.
pub fn exchange(pod: &Pod, tap: &TapQueue, n: usize, tag: &str) -> Exchanged {
    let sender = pod.client.udp_socket(pod.client_ip, 0, "bind sender");
    let receiver =
        pod.client
            .udp_receiver(pod.client_ip, 0, "bind receiver", Duration::from_secs(2));
    let port = receiver.local_addr().unwrap().port();
    let mut crossed = Exchanged::default();
    for i in 0..n {
        sender
            .send_to(format!("{tag} to-vm {i}").as_bytes(), (pod.pod_ip, 9999))
            .expect("send");
    }
    for i in 0..n {
        let frame = tap
            .read_frame(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("frame {i} of {n} never reached the tap"));
        crossed.to_vm_bytes += frame.len() as u64;
    }
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let frame = vm_frame(pod, 5555, port, format!("{tag} from-vm {i}").as_bytes());
        crossed.from_vm_bytes += frame.len() as u64;
        tap.write_frame(&frame).expect("write a frame to the tap");
        receiver
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {n} from the VM: {e}"));
    }
    // Nothing more may cross: no frame is left on the tap.
    assert!(tap.read_frame(Duration::from_millis(200)).is_none());
    crossed
}
