//! A real VMM behind netshim (root only; skipped with a reason when qemu-system-x86_64,
//! /boot/vmlinuz-* or a static busybox is missing):
//!
//! ```text
//! client netns           sandbox netns (pod)                         QEMU (TCG), in the sandbox netns
//!  c0 10.123.0.1 <-veth-> eth0 10.123.0.2 <=netshim=> tap0_kata <-> virtio-net eth0 10.123.0.2
//!     fd00:123::1              fd00:123::2                                      fd00:123::2
//! ```
//!
//! `netshim attach --json` connects eth0 and tap0_kata; the guest (host kernel + busybox
//! initramfs, see `netshim_tests::qemu`) takes MAC, MTU, addresses, routes and neighbours
//! from that JSON, as kata's agent would. The client pings the guest, the guest pings the
//! client, the client fetches a page and 1 MiB over HTTP from the guest (busybox httpd), and
//! netshim's counters show traffic both ways. QEMU is killed before netshim detaches, as kata
//! stops the VM before tearing the network down.
//!
//! The pod is dual-stack: c0 fd00:123::1/64 and eth0 fd00:123::2/64 (and their EUI-64
//! link-locals), so the same boot also checks IPv6 both ways, on the global addresses and on
//! the link-local ones (neighbour discovery, the guest's DAD from `::` and its MLD reports
//! all cross netshim). On the eBPF backend that is through the source guard in its default
//! `enforce` mode: the test checks attach and status say so (when this netshim has a guard)
//! and that the guard refused nothing of this legitimate traffic (when `stats` counts it).
//!
//! `qemu_guest_over_macvtap_model` boots the same guest on netshim's macvtap model, with
//! QEMU given the macvtap's `/dev/tap<ifindex>` queue as an fd.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use netshim_common::GUARD_REASONS;
use netshim_tests::netshim_cli::{netshim, netshim_json, Pod, PodIpv6};
use netshim_tests::qemu::{
    GuestAssets, GuestConfig, GuestNetConfig, NetdevSpec, Qemu, QemuGuard, INSMOD_FAIL_MARKER,
    NETCFG_FAIL_MARKER, PING_FAIL_MARKER, PING_OK_MARKER, READY_MARKER,
};
use netshim_tests::require_root;
use netshim_tests::tap_reader::format_mac;
use netshim_tests::traffic::pin_neighbor;

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
    require_root!();
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
    let v6 = pod.enable_ipv6();
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
    pin_neighbor(&pod.sandbox, "eth0", pod.client_ip, &pod.client_mac);
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--tc-backend", backend]);
    let mut detach = DetachOnDrop {
        netns: pod.netns().to_owned(),
        armed: true,
    };
    assert_eq!(report["backend"], backend, "{report}");
    let guarded = backend == "ebpf" && netshim_has_guard();
    check_guard_mode("attach", &report, guarded);
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    check_guard_mode("status", &status, guarded);
    if guarded {
        // The addresses the guard lets the guest use (status reads them from the maps).
        let addrs = &status["endpoints"][0]["guard"]["addresses"];
        for a in [
            pod.pod_ip.to_string(),
            v6.pod_ip.to_string(),
            v6.pod_link_local.to_string(),
        ] {
            assert!(
                addrs
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(a.as_str()))),
                "{a} not among the guard's addresses: {status}"
            );
        }
    }
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
    assert!(
        nic.addresses.contains(&(IpAddr::V6(v6.pod_ip), 64)),
        "{} missing from {nic:?} (attach: {report})",
        v6.pod_ip
    );
    assert_eq!(nic.ifname, "eth0");
    let config = GuestConfig {
        nics: vec![nic],
        ping: vec![
            IpAddr::V4(pod.client_ip),
            IpAddr::V6(v6.client_ip),
            IpAddr::V6(v6.client_link_local),
        ],
        http_port: Some(HTTP_PORT),
    };

    let qemu =
        Qemu::boot(assets, &pod.sandbox, &config, NetdevSpec::TapIfname(tap)).expect("start qemu");
    qemu.wait_for(READY_MARKER, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // What the client sent before QEMU had the tap open (its IPv6 router solicitations, MLD
    // reports) found no reader: mirred counts such frames as errors. From here on, none.
    let at_ready = netshim_json(&["stats", "--netns", pod.netns()]);
    let early_errors = |dir: &str| at_ready[0]["endpoints"][0][dir]["errors"].as_u64();
    exercise_guest(&pod, &qemu, &config.ping);
    exercise_guest_ipv6(&pod, &v6, &qemu);
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
    for dir in ["to_vm", "from_vm"] {
        let early = early_errors(dir).unwrap_or_else(|| panic!("no {dir}.errors: {at_ready}"));
        if early > 0 {
            eprintln!("netshim stats: {dir} {early} error(s) before the guest was up: {at_ready}");
        }
        assert_eq!(
            ep[dir]["errors"].as_u64(),
            Some(early),
            "{dir} errors while the guest ran: {stats}"
        );
    }
    check_guard_refused_nothing(ep, guarded);

    // Stop the VM, then take the network down.
    let console = qemu.kill();
    print_console(&console);
    detach.armed = false;
    let out = netshim_json(&["detach", "--netns", pod.netns()]);
    eprintln!("detach: {out}");
    assert!(!pod.sandbox.link_exists("tap0_kata"), "tap left behind");
}

/// Boot to READY, the guest's pings of `guest_pings` (its `GuestConfig::ping`), the
/// client's IPv4 ping, HTTP both ways; prints timings.
fn exercise_guest(pod: &Pod, qemu: &QemuGuard, guest_pings: &[IpAddr]) {
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

    // Guest -> client (the guest pings as soon as it is configured, in this order).
    for target in guest_pings {
        let ok = format!("{PING_OK_MARKER} {target} ");
        let fail = format!("{PING_FAIL_MARKER} {target} ");
        let (which, t) = qemu
            .wait_for_any(&[&ok, &fail], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let line = qemu
            .console_line(if which == 0 { &ok } else { &fail })
            .unwrap_or_default();
        assert_eq!(
            which,
            0,
            "guest could not ping {target}: {line}\n{}",
            qemu.console()
        );
        eprintln!("guest -> client ping at {t:.2?}: {line}");
    }

    // Client -> guest.
    client_ping(pod, qemu, &pod.pod_ip.to_string());

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

/// IPv6 from the client: ping6 of the guest's global and link-local addresses, the page
/// over IPv6, and the neighbour entries neighbour discovery gave the client (the guest's
/// answers carry its MAC).
fn exercise_guest_ipv6(pod: &Pod, v6: &PodIpv6, qemu: &QemuGuard) {
    let line = qemu
        .console_line("NETSHIM-GUEST-IPV6-READY eth0")
        .unwrap_or_else(|| panic!("the guest's IPv6 never got ready:\n{}", qemu.console()));
    eprintln!("guest: {line}");
    client_ping(pod, qemu, &v6.pod_ip.to_string());
    client_ping(pod, qemu, &format!("{}%c0", v6.pod_link_local));
    let page = http_get_from(pod, IpAddr::V6(v6.pod_ip), "/index.html")
        .unwrap_or_else(|e| panic!("GET /index.html over IPv6: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&page).trim(),
        format!("NETSHIM-GUEST-HTTP {}", pod.pod_ip)
    );
    eprintln!("HTTP GET /index.html from [{}]: ok", v6.pod_ip);
    let neigh = pod.client.ip(&["-6", "neigh", "show", "dev", "c0"]);
    let mac = format_mac(&pod.pod_mac);
    for a in [v6.pod_ip, v6.pod_link_local] {
        let entry = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{a} ")))
            .unwrap_or_else(|| panic!("the client has no neighbour entry for {a}:\n{neigh}"));
        assert!(entry.contains(&format!("lladdr {mac}")), "{entry}");
        eprintln!("client neighbour: {entry}");
    }
}

/// `ping -c 3 target` from the client netns; asserts replies came and prints the summary.
fn client_ping(pod: &Pod, qemu: &QemuGuard, target: &str) {
    let t0 = Instant::now();
    let out = pod.client.exec(&["ping", "-c", "3", "-W", "2", target]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client ping {target} failed: {text}{}\n--- console ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        qemu.console()
    );
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("transmitted") || l.starts_with("rtt"))
        .collect();
    eprintln!(
        "client -> guest ping {target} ({:.2?}): {}",
        t0.elapsed(),
        summary.join("; ")
    );
}

/// Whether this netshim has the source guard (`attach --guard`).
fn netshim_has_guard() -> bool {
    let help = netshim(&["attach", "--help"]);
    String::from_utf8_lossy(&help.stdout).contains("--guard")
}

/// `what`'s (attach report, status) guard of endpoint 0: `enforce` (the default) when
/// `guarded`; otherwise `off` or absent (a netshim without a guard).
fn check_guard_mode(what: &str, report: &serde_json::Value, guarded: bool) {
    let mode = &report["endpoints"][0]["guard"]["mode"];
    eprintln!("{what}: guard mode {mode}");
    if guarded {
        assert_eq!(mode, "enforce", "{what}: {report}");
    } else {
        assert!(mode.is_null() || mode == "off", "{what}: {report}");
    }
}

/// The guard's counters of an endpoint of `stats --json` after legitimate traffic: every
/// reason 0, dropped and flagged (when this netshim counts them: `null`/absent otherwise).
fn check_guard_refused_nothing(ep: &serde_json::Value, guarded: bool) {
    let dropped = &ep["from_vm"]["dropped"];
    let flagged = &ep["from_vm"]["guard"]["flagged"];
    let counted: Vec<String> = GUARD_REASONS
        .iter()
        .filter_map(|r| Some(format!("{r}={}", dropped[*r].as_u64()?)))
        .collect();
    if counted.is_empty() {
        eprintln!("netshim stats: no guard counters (this netshim does not report them)");
        return;
    }
    eprintln!(
        "netshim stats: guard {} dropped {}",
        ep["from_vm"]["guard"]["mode"],
        counted.join(" ")
    );
    if guarded {
        assert_eq!(ep["from_vm"]["guard"]["mode"], "enforce", "{ep}");
    }
    for r in GUARD_REASONS {
        assert!(
            dropped[r].as_u64().unwrap_or(0) == 0 && flagged[r].as_u64().unwrap_or(0) == 0,
            "the guard refused legitimate guest traffic ({r}): {ep}"
        );
    }
}

/// `GET path` over HTTP/1.0 from the client netns to the guest's IPv4 address.
fn http_get(pod: &Pod, path: &str) -> std::io::Result<Vec<u8>> {
    http_get_from(pod, IpAddr::V4(pod.pod_ip), path)
}

/// `GET path` over HTTP/1.0 from the client netns to `ip`; returns the body.
fn http_get_from(pod: &Pod, ip: IpAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let addr = SocketAddr::from((ip, HTTP_PORT));
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
    require_root!();
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
    exercise_guest(&pod, &qemu, &config.ping);
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
