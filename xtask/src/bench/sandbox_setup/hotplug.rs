//! watch hot-plug latency. Per sample: a fresh pod; `netshim watch --netns POD --json` (it
//! attaches eth0 and prints `watching`); then, with the clock started just before, a second
//! veth is added as a CNI plugin would (`h<N>` in the node netns, `eth1` in the pod, address,
//! both up). A thread in the pod netns waits for `tap1_kata`, opens it as a VMM does
//! (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR; a tap with a reader is what the datapath forwards
//! to) and reads; a thread in the node netns sends probe frames (broadcast, ethertype
//! 0x88b5, a magic payload) into `h<N>` every 200 µs. The figure: start to the first probe
//! read from the tap. Also kept: when the tap appeared and when watch reported `added`.

use super::latency::ms;
use super::pod::{ip_batch, pod_addrs, Node};
use super::{detach_cmd, interleaved, timed, Row, Variant};
use crate::topology;
use anyhow::{bail, ensure, Context, Result};
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MAGIC: &[u8] = b"netshim-hotplug-probe";
const ETHERTYPE: u16 = 0x88b5;
const LIMIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Hotplug {
    /// Link added -> first probe read from the new tap, per sample (ms).
    pub forwarding_ms: Vec<f64>,
    /// Until both `ip -batch` calls (link, addresses, up) returned: the plug's own cost.
    pub plugged_ms: Vec<f64>,
    /// Link added -> tap1_kata exists.
    pub tap_ms: Vec<f64>,
    /// Link added -> watch printed its `added` line.
    pub reported_ms: Vec<f64>,
}

pub fn run(node: &Node, variants: &[Variant], rounds: u32) -> Vec<Row<Hotplug>> {
    interleaved(variants, rounds, "hot-plug", |v, out| sample(node, v, out))
}

fn sample(node: &Node, v: &Variant, out: &mut Hotplug) -> Result<()> {
    let mut pod = node.pod()?;
    pod.arm_detach(&v.bin.path);
    let result = watch_and_plug(node, &pod.netns, pod.index, v, out);
    let detached = timed(&mut detach_cmd(&v.bin.path, &pod.netns));
    if detached.is_ok() {
        pod.detached();
    }
    pod.delete()?;
    result?;
    detached.map(|_| ())
}

fn watch_and_plug(
    node: &Node,
    netns: &str,
    index: u32,
    v: &Variant,
    out: &mut Hotplug,
) -> Result<()> {
    let mut watch = Command::new(&v.bin.path);
    watch
        .args(["watch", "--netns", netns])
        .args(v.mode.args())
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, token) = topology::spawn_killable(&mut watch, "netshim watch")?;
    let stdout = child.stdout.take().context("watch stdout")?;
    let mut stderr = child.stderr.take().context("watch stderr")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let (tx, lines) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let result = (|| -> Result<()> {
        wait_line(&lines, "\"watching\"", Duration::from_secs(10))
            .context("watch did not print `watching`")?;
        // The second endpoint takes the addresses of pod index + 8192 (no pod has them).
        let plug_index = index | (1 << 13);
        let host_if = format!("h{index}");
        let (host_addr, pod_addr) = pod_addrs(plug_index);
        let done = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let reader = s.spawn(|| {
                let r = in_netns(netns, || read_first_probe(start));
                done.store(true, Ordering::Relaxed);
                r
            });
            let sender = s.spawn(|| in_netns(&node.name, || send_probes(&host_if, &done)));
            let plugged = (|| -> Result<Duration> {
                ip_batch(
                    &node.name,
                    &[
                        format!("link add {host_if} type veth peer name eth1 netns {netns}"),
                        format!("addr add {host_addr} dev {host_if}"),
                        format!("link set {host_if} up"),
                    ],
                )?;
                ip_batch(
                    netns,
                    &[
                        format!("addr add {pod_addr} dev eth1"),
                        "link set eth1 up".into(),
                    ],
                )?;
                Ok(start.elapsed())
            })();
            if plugged.is_err() {
                done.store(true, Ordering::Relaxed);
            }
            let read = reader
                .join()
                .map_err(|_| anyhow::anyhow!("tap reader panicked"))?;
            let sent = sender
                .join()
                .map_err(|_| anyhow::anyhow!("probe sender panicked"))?;
            let plugged = plugged?;
            let (tap, first) = read?;
            sent?;
            out.plugged_ms.push(ms(plugged));
            out.tap_ms.push(ms(tap));
            out.forwarding_ms.push(ms(first));
            Ok(())
        })?;
        if let Some(at) = wait_line(&lines, "\"added\"", Duration::from_secs(2)) {
            out.reported_ms
                .push(ms(at.saturating_duration_since(start)));
        }
        Ok(())
    })();
    // SIGTERM leaves the datapath running (watch's contract); detach removes it afterwards.
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = crate::cmd::wait_timeout(&mut child, Duration::from_secs(5));
    topology::disarm(token);
    let _ = child.kill();
    let _ = child.wait();
    let stderr = stderr.join().unwrap_or_default();
    result.with_context(|| format!("watch's stderr: {}", stderr.trim()))
}

/// The time of the first line containing `needle` within `limit`.
fn wait_line(
    lines: &mpsc::Receiver<(Instant, String)>,
    needle: &str,
    limit: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((at, line)) if line.contains(needle) => return Some(at),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Run `f` on a fresh thread that has joined the named netns (netns is per thread).
fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(topology::netns_path(netns))
                .with_context(|| format!("opening netns {netns}"))?;
            // SAFETY: setns on this thread only, with a netns fd we hold open.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(r == 0, "setns {netns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {netns} panicked"))?
    })
}

fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).expect("no NUL in interface names");
    // SAFETY: a NUL-terminated name; returns 0 when there is no such interface.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// In the pod netns: wait for tap1_kata, open it, read until a probe arrives. Returns (tap
/// seen, probe read), both since `start`.
fn read_first_probe(start: Instant) -> Result<(Duration, Duration)> {
    const TAP: &str = "tap1_kata";
    let tap_seen = loop {
        if ifindex(TAP) != 0 {
            break start.elapsed();
        }
        ensure!(
            start.elapsed() < LIMIT,
            "{TAP} did not appear within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let fd = loop {
        match open_tap(TAP) {
            Ok(fd) => break fd,
            // netshim still holds it while it sets it up (a single-queue tap takes one fd).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e).context(format!("opening {TAP}")),
        }
        ensure!(start.elapsed() < LIMIT, "{TAP} stayed busy for {LIMIT:?}");
        std::thread::sleep(Duration::from_micros(200));
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let left = LIMIT.saturating_sub(start.elapsed());
        if left.is_zero() {
            bail!("no probe came through {TAP} within {LIMIT:?}");
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 10) as i32) };
        if n <= 0 {
            continue;
        }
        // SAFETY: reading into our buffer from our fd.
        let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got > 0 && contains(&buf[..got as usize], MAGIC) {
            return Ok((tap_seen, start.elapsed()));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Attach to an existing tap (TUNSETIFF on a name that exists attaches, it does not create:
/// the caller checked that it exists).
fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: open(2) of a path literal.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF with a valid ifreq.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// In the node netns: once `ifname` exists, send a probe into it every 200 µs until `done`.
fn send_probes(ifname: &str, done: &AtomicBool) -> Result<()> {
    let start = Instant::now();
    let index = loop {
        let i = ifindex(ifname);
        if i != 0 {
            break i;
        }
        if done.load(Ordering::Relaxed) || start.elapsed() > LIMIT {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    // SAFETY: socket(2); the fd is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETHERTYPE.to_be()),
        )
    };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETHERTYPE.to_be();
    addr.sll_ifindex = index as i32;
    let mut frame = vec![0xffu8; 6];
    frame.extend([0x02, 0, 0, 0, 0, 0x01]);
    frame.extend(ETHERTYPE.to_be_bytes());
    frame.extend(MAGIC);
    frame.resize(64, 0);
    while !done.load(Ordering::Relaxed) && start.elapsed() < LIMIT * 2 {
        // SAFETY: sending our buffer to a valid sockaddr_ll; errors (link still down) ignored.
        unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}
