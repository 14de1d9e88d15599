//! A real VMM behind netshim (root only; skipped with a reason when qemu-system-x86_64,
//! /boot/vmlinuz-* or a static busybox is missing):
//!
//! ```text
//! client netns           sandbox netns (pod)                         QEMU (TCG), in the sandbox netns
//!  c0 10.123.0.1 <-veth-> eth0 10.123.0.2 <=netshim=> tap0_kata <-> virtio-net eth0 10.123.0.2
//! ```
//!
//! `netshim attach --json` connects eth0 and tap0_kata; the guest (host kernel + busybox
//! initramfs, see `netshim_tests::qemu`) takes MAC, MTU, addresses, routes and neighbours
//! from that JSON, as kata's agent would. The client pings the guest, the guest pings the
//! client, the client fetches a page and 1 MiB over HTTP from the guest (busybox httpd), and
//! netshim's counters show traffic both ways. QEMU is killed before netshim detaches, as kata
//! stops the VM before tearing the network down.
//!
//! `qemu_guest_over_macvtap_model` boots the same guest on netshim's macvtap model, with
//! QEMU given the macvtap's `/dev/tap<ifindex>` queue as an fd.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use netshim_tests::netshim_cli::{netshim, netshim_json, Pod};
use netshim_tests::qemu::{
    GuestAssets, GuestConfig, GuestNetConfig, NetdevSpec, Qemu, QemuGuard, INSMOD_FAIL_MARKER,
    NETCFG_FAIL_MARKER, PING_FAIL_MARKER, PING_OK_MARKER, READY_MARKER,
};
use netshim_tests::skip_unless_root;
use netshim_tests::tap_reader::format_mac;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_PORT: u16 = 80;
const BLOB_LEN: usize = 1024 * 1024;
/// A route the sandbox has besides the connected one (via the client, MTU 1400).
const EXTRA_ROUTE: &str = "10.124.0.0/24";

/// Runs `netshim detach` on Drop unless disarmed (so a failing test leaves no pins behind).
struct DetachOnDrop {
    netns: String,
    armed: bool,
}

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let out = netshim(&["detach", "--netns", &self.netns]);
            if !out.status.success() {
                eprintln!(
                    "warning: netshim detach --netns {}: {}",
                    self.netns,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

fn qemu_guest_over_tcfilter(backend: &str) {
    if skip_unless_root() {
        return;
    }
    let Some(assets) = GuestAssets::or_skip() else {
        return;
    };
    eprintln!(
        "guest: {} + {} ({}), initramfs {} KiB, built in {:?}",
        assets.qemu.display(),
        assets.kernel.display(),
        assets.busybox.display(),
        assets.base_initrd.len() / 1024,
        assets.build_time
    );
    let pod = Pod::new(&format!("qm{}", &backend[..1]));
    // What a CNI may leave besides the connected route: a route with a gateway and an MTU,
    // and a permanent neighbour. kata hands both to the guest; so does this test.
    let client_mac = format_mac(&pod.client_mac);
    pod.sandbox.ip(&[
        "route",
        "add",
        EXTRA_ROUTE,
        "via",
        "10.123.0.1",
        "dev",
        "eth0",
        "mtu",
        "1400",
    ]);
    pod.sandbox.ip(&[
        "neigh",
        "replace",
        &pod.client_ip.to_string(),
        "lladdr",
        &client_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--tc-backend", backend]);
    let mut detach = DetachOnDrop {
        netns: pod.netns().to_owned(),
        armed: true,
    };
    assert_eq!(report["backend"], backend, "{report}");
    let tap = report["endpoints"][0]["tap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no tap in {report}"))
        .to_owned();

    let nic = GuestNetConfig::from_attach_json(&report, 0).expect("guest config from attach");
    assert!(
        nic.routes
            .iter()
            .any(|r| r.dest == EXTRA_ROUTE && r.mtu == Some(1400)),
        "route {EXTRA_ROUTE} missing from {nic:?} (attach: {report})"
    );
    assert!(
        nic.neighbors
            .iter()
            .any(|(ip, mac)| *ip == IpAddr::V4(pod.client_ip) && *mac == client_mac),
        "neighbour missing from {nic:?} (attach: {report})"
    );
    // As kata: the guest NIC takes the pod interface's MAC and IP.
    assert_eq!(nic.mac, format_mac(&pod.pod_mac));
    assert_eq!(nic.primary_ip(), Some(IpAddr::V4(pod.pod_ip)));
    assert_eq!(nic.ifname, "eth0");
    let config = GuestConfig {
        nics: vec![nic],
        ping: vec![IpAddr::V4(pod.client_ip)],
        http_port: Some(HTTP_PORT),
    };

    let qemu =
        Qemu::boot(assets, &pod.sandbox, &config, NetdevSpec::TapIfname(tap)).expect("start qemu");
    exercise_guest(&pod, &qemu);
    // The guest applied them (busybox prints `ip route` / `ip neigh` on the console).
    let route = qemu
        .console_line(&format!("NETSHIM-GUEST-ROUTE {EXTRA_ROUTE}"))
        .unwrap_or_else(|| panic!("route not in the guest:\n{}", qemu.console()));
    // (busybox `ip route show` prints no metrics; its `ip route replace … mtu N` sets the
    // MTU metric, and a command that failed would have shown NETCFG-FAIL.)
    assert!(route.contains("via 10.123.0.1"), "{route}");
    let neigh = qemu
        .console_line(&format!("NETSHIM-GUEST-NEIGH {} ", pod.client_ip))
        .unwrap_or_else(|| panic!("neighbour not in the guest:\n{}", qemu.console()));
    assert!(
        neigh.contains(&client_mac) && neigh.contains("PERMANENT"),
        "{neigh}"
    );

    let stats = netshim_json(&["stats", "--netns", pod.netns()]);
    let ep = &stats[0]["endpoints"][0];
    let to_vm = ep["to_vm"]["packets"].as_u64().unwrap_or(0);
    let from_vm = ep["from_vm"]["packets"].as_u64().unwrap_or(0);
    eprintln!(
        "netshim stats: to_vm {to_vm} packets / {} bytes, from_vm {from_vm} packets / {} bytes",
        ep["to_vm"]["bytes"], ep["from_vm"]["bytes"]
    );
    assert!(to_vm > 0 && from_vm > 0, "{stats}");
    assert_eq!(ep["to_vm"]["errors"], 0, "{stats}");
    assert_eq!(ep["from_vm"]["errors"], 0, "{stats}");

    // Stop the VM, then take the network down.
    let console = qemu.kill();
    print_console(&console);
    detach.armed = false;
    let out = netshim_json(&["detach", "--netns", pod.netns()]);
    eprintln!("detach: {out}");
    assert!(!pod.sandbox.link_exists("tap0_kata"), "tap left behind");
}

/// Boot to READY, both pings, HTTP both ways; prints timings.
fn exercise_guest(pod: &Pod, qemu: &QemuGuard) {
    let ready = qemu
        .wait_for(READY_MARKER, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let ready_line = qemu.console_line(READY_MARKER).unwrap_or_default();
    eprintln!("boot to READY: {ready:.2?} (QEMU start to marker; guest says `{ready_line}`)");
    assert!(
        ready_line.contains(&format!("{READY_MARKER} {}", pod.pod_ip)),
        "{ready_line}"
    );
    let console = qemu.console();
    for bad in [INSMOD_FAIL_MARKER, NETCFG_FAIL_MARKER] {
        assert!(!console.contains(bad), "guest reported {bad}:\n{console}");
    }

    // Guest -> client (the guest pings as soon as it is configured).
    let (which, t) = qemu
        .wait_for_any(&[PING_OK_MARKER, PING_FAIL_MARKER], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let line = qemu
        .console_line(if which == 0 {
            PING_OK_MARKER
        } else {
            PING_FAIL_MARKER
        })
        .unwrap_or_default();
    assert_eq!(
        which,
        0,
        "guest could not ping the client: {line}\n{}",
        qemu.console()
    );
    eprintln!("guest -> client ping at {t:.2?}: {line}");

    // Client -> guest.
    let t0 = Instant::now();
    let out = pod
        .client
        .exec(&["ping", "-c", "3", "-W", "2", &pod.pod_ip.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client ping failed: {text}{}\n--- console ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        qemu.console()
    );
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("transmitted") || l.starts_with("rtt"))
        .collect();
    eprintln!(
        "client -> guest ping ({:.2?}): {}",
        t0.elapsed(),
        summary.join("; ")
    );

    // TCP: a page and 1 MiB from the guest's httpd (exercises the guest's checksum and
    // segmentation offloads through the tap's virtio-net header).
    let page = http_get(pod, "/index.html").unwrap_or_else(|e| panic!("GET /index.html: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&page).trim(),
        format!("NETSHIM-GUEST-HTTP {}", pod.pod_ip)
    );
    let t0 = Instant::now();
    let blob = http_get(pod, "/blob").unwrap_or_else(|e| panic!("GET /blob: {e}"));
    let dt = t0.elapsed();
    assert_eq!(blob.len(), BLOB_LEN);
    eprintln!(
        "HTTP GET 1 MiB from the guest: {dt:.2?} ({:.1} Mbit/s, TCG-bound)",
        BLOB_LEN as f64 * 8.0 / dt.as_secs_f64() / 1e6
    );
}

/// `GET path` over HTTP/1.0 from the client netns; returns the body.
fn http_get(pod: &Pod, path: &str) -> std::io::Result<Vec<u8>> {
    let addr = SocketAddr::from((pod.pod_ip, HTTP_PORT));
    let mut s = pod
        .client
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    if !head.starts_with("HTTP/1.") || !head.contains(" 200") {
        return Err(std::io::Error::other(format!("response: {head}")));
    }
    Ok(resp[split + 4..].to_vec())
}

/// Prints the console from the guest's first marker on (firmware output left out).
fn print_console(console: &str) {
    let from = console.find("NETSHIM-GUEST-").unwrap_or(0);
    eprintln!("--- guest console ---");
    for l in console[from..].lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("  {l}");
    }
}

#[test]
fn qemu_guest_over_tcfilter_ebpf() {
    qemu_guest_over_tcfilter("ebpf");
}

#[test]
fn qemu_guest_over_tcfilter_mirred() {
    qemu_guest_over_tcfilter("mirred");
}

/// netshim's macvtap model under a real VMM: attach makes `tap0_kata` a macvtap on eth0
/// (eth0's MAC moves to it, eth0's address to the guest); QEMU gets the macvtap's queue
/// (`/dev/tap<ifindex>`, as attach reports it) as an fd; detach gives eth0 back.
#[test]
fn qemu_guest_over_macvtap_model() {
    if skip_unless_root() {
        return;
    }
    let Some(assets) = GuestAssets::or_skip() else {
        return;
    };
    let pod = Pod::new("qmv");
    let eth0_before = pod.sandbox.ip(&["-br", "addr", "show", "dev", "eth0"]);
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--model", "macvtap"]);
    let mut detach = DetachOnDrop {
        netns: pod.netns().to_owned(),
        armed: true,
    };
    let device = report["endpoints"][0]["macvtap"]["device"]
        .as_str()
        .unwrap_or_else(|| panic!("no macvtap device in {report}"))
        .to_owned();
    let nic = GuestNetConfig::from_attach_json(&report, 0).expect("guest config from attach");
    assert_eq!(
        nic.mac,
        format_mac(&pod.pod_mac),
        "the guest keeps eth0's MAC"
    );
    assert_eq!(nic.primary_ip(), Some(IpAddr::V4(pod.pod_ip)));
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .unwrap_or_else(|e| panic!("open {device}: {e}"))
        .into();
    let config = GuestConfig {
        nics: vec![nic],
        ping: vec![IpAddr::V4(pod.client_ip)],
        http_port: Some(HTTP_PORT),
    };
    let qemu =
        Qemu::boot(assets, &pod.sandbox, &config, NetdevSpec::TapFd { fd }).expect("start qemu");
    exercise_guest(&pod, &qemu);
    print_console(&qemu.kill());
    detach.armed = false;
    let out = netshim_json(&["detach", "--netns", pod.netns()]);
    assert_eq!(out["removed_macvtaps"][0], "tap0_kata", "{out}");
    assert_eq!(
        pod.sandbox.ip(&["-br", "addr", "show", "dev", "eth0"]),
        eth0_before,
        "eth0 has its addresses back"
    );
}
