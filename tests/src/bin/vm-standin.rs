//! vm-standin: plays a microVM behind a sandbox tap, without a VM.
//!
//! It opens one queue of the sandbox tap (as the VMM would, with the usual virtio-net
//! offloads), creates a non-persistent tap in a "guest" netns that stands for the guest's
//! virtio NIC (eth0 MAC, IP addresses, default route), and relays frames between the two with
//! their virtio-net headers, so GSO frames cross whole. Prints `ready` once relaying; runs until
//! SIGINT/SIGTERM or EOF on stdin; then prints a one-line JSON summary and exits.
//!
//! ```text
//! vm-standin --sandbox-netns /run/netns/sb --tap tap0_kata \
//!     --guest-netns /run/netns/guest --guest-ifname eth0 --guest-mac 02:00:0a:4d:00:02 \
//!     --guest-addr 10.77.0.2/24 --guest-gw 10.77.0.1
//! ```
//!
//! For the macvtap model, `--sandbox-dev /dev/tap<ifindex>` replaces `--tap NAME`: the stand-in
//! opens the macvtap's char device as a VMM does (vnet header on by default there, 10 bytes)
//! and sets the same offloads on it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use netshim::tap::TapError;
use netshim_tests::relay::{DirectionSummary, Relay};
use netshim_tests::tap_reader::parse_mac;
use netshim_tests::try_on_netns_thread;
use netshim_tests::vmm_tap::{self, VMM_OFFLOADS};

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MultiQueue {
    /// Try single queue, then multi-queue.
    Auto,
    /// The sandbox tap is multi-queue.
    On,
    /// The sandbox tap is single-queue.
    Off,
}

/// Stand-in for a microVM: relays between a sandbox tap and a guest-side tap.
#[derive(Debug, Parser)]
#[command(name = "vm-standin", version)]
struct Args {
    /// Network namespace holding the sandbox tap (/run/netns/NAME or /proc/PID/ns/net).
    #[arg(long)]
    sandbox_netns: PathBuf,
    /// The sandbox tap to attach to (it must exist).
    #[arg(long, default_value = "tap0_kata")]
    tap: String,
    /// A macvtap char device (`/dev/tap<ifindex>`) to open instead of `--tap`: the VMM side of
    /// the macvtap model.
    #[arg(long, value_name = "PATH", conflicts_with = "multi_queue")]
    sandbox_dev: Option<PathBuf>,
    /// Whether the sandbox tap is multi-queue (we open one queue).
    #[arg(long, value_enum, default_value = "auto")]
    multi_queue: MultiQueue,
    /// Network namespace standing for the guest.
    #[arg(long)]
    guest_netns: PathBuf,
    /// Name of the guest's NIC (a non-persistent tap created in the guest netns).
    #[arg(long, default_value = "eth0")]
    guest_ifname: String,
    /// MAC of the guest NIC (the sandbox veth's MAC, as kata does).
    #[arg(long)]
    guest_mac: String,
    /// MTU of the guest NIC.
    #[arg(long)]
    guest_mtu: Option<u32>,
    /// Address (CIDR) of the guest NIC; repeatable, IPv4 or IPv6.
    #[arg(long = "guest-addr")]
    guest_addrs: Vec<String>,
    /// Default gateway of the guest; repeatable (one IPv4, one IPv6).
    #[arg(long = "guest-gw")]
    guest_gws: Vec<String>,
    /// Clear the offloads (TUNSETOFFLOAD 0) instead of enabling CSUM|TSO4|TSO6|TSO_ECN: GSO
    /// frames then get segmented in software before reaching the relay (for comparisons).
    #[arg(long)]
    no_offloads: bool,
    /// Keep running on stdin EOF (stop only on SIGINT/SIGTERM).
    #[arg(long)]
    ignore_stdin: bool,
}

#[derive(serde::Serialize)]
struct Summary {
    sandbox_to_guest: DirectionSummary,
    guest_to_sandbox: DirectionSummary,
    error: Option<String>,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vm-standin: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> Result<i32> {
    install_signal_handlers()?;
    let mac = parse_mac(&args.guest_mac)
        .with_context(|| format!("invalid --guest-mac {:?}", args.guest_mac))?;
    // Offloads stick to a persistent tap across fds, so "none" is set explicitly (0).
    let offload_bits = if args.no_offloads { 0 } else { VMM_OFFLOADS };
    let offloads = Some(offload_bits);

    let sandbox_fd = match &args.sandbox_dev {
        Some(dev) => open_macvtap_queue(dev, offload_bits)
            .with_context(|| format!("open macvtap queue {}", dev.display()))?,
        None => try_on_netns_thread(&args.sandbox_netns, || {
            open_sandbox_queue(&args.tap, args.multi_queue, offloads)
        })
        .with_context(|| format!("enter sandbox netns {}", args.sandbox_netns.display()))?
        .with_context(|| {
            format!(
                "open queue of tap {} in {}",
                args.tap,
                args.sandbox_netns.display()
            )
        })?,
    };

    let guest_fd = try_on_netns_thread(&args.guest_netns, || -> Result<_> {
        let fd = vmm_tap::create_tap_queue(&args.guest_ifname, false, offloads)
            .context("create guest NIC")?;
        // Processes spawned from this thread start in the guest netns.
        configure_guest_nic(args, &netshim_tests::tap_reader::format_mac(&mac))?;
        Ok(fd)
    })
    .with_context(|| format!("enter guest netns {}", args.guest_netns.display()))?
    .with_context(|| {
        format!(
            "guest NIC {} in {}",
            args.guest_ifname,
            args.guest_netns.display()
        )
    })?;

    let relay = Relay::start(sandbox_fd, guest_fd).context("start relay")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }

    if !args.ignore_stdin {
        std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(|| {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin().lock();
                loop {
                    match stdin.read(&mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                SHUTDOWN.store(true, Ordering::SeqCst);
            })
            .context("spawn stdin watcher")?;
    }

    while !SHUTDOWN.load(Ordering::SeqCst) && !relay.is_broken() {
        std::thread::sleep(Duration::from_millis(50));
    }

    let (summary, result) = relay.stop();
    let error = result.err().map(|e| e.to_string());
    let line = serde_json::to_string(&Summary {
        sandbox_to_guest: summary.a_to_b,
        guest_to_sandbox: summary.b_to_a,
        error: error.clone(),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    if let Some(e) = error {
        eprintln!("vm-standin: relay failed: {e}");
        return Ok(1);
    }
    Ok(0)
}

fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &act) }.with_context(|| format!("sigaction {sig}"))?;
    }
    Ok(())
}

fn open_sandbox_queue(
    name: &str,
    mq: MultiQueue,
    offloads: Option<u32>,
) -> Result<std::os::fd::OwnedFd, TapError> {
    match mq {
        MultiQueue::On => vmm_tap::open_tap_queue(name, true, offloads),
        MultiQueue::Off => vmm_tap::open_tap_queue(name, false, offloads),
        MultiQueue::Auto => match vmm_tap::open_tap_queue(name, false, offloads) {
            Err(TapError::Incompatible { .. }) => vmm_tap::open_tap_queue(name, true, offloads),
            r => r,
        },
    }
}

/// Opens one queue of a macvtap through its char device, as a VMM does: `O_RDWR`, then
/// `TUNSETOFFLOAD`. A macvtap queue has `IFF_VNET_HDR` on from the start; its header size is
/// checked (and set) to the 10 bytes the relay and the guest tap use. The char device is found
/// by path, so no netns needs entering.
fn open_macvtap_queue(dev: &std::path::Path, offloads: u32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .context("open")?;
    let fd = std::os::fd::OwnedFd::from(file);
    let flags = vmm_tap::tun_flags(fd.as_fd())?;
    if flags & vmm_tap::IFF_VNET_HDR == 0 {
        bail!("{} has no IFF_VNET_HDR (flags {flags:#x})", dev.display());
    }
    if vmm_tap::vnet_hdr_size(fd.as_fd())? != vmm_tap::VNET_HDR_LEN {
        vmm_tap::set_vnet_hdr_size(fd.as_fd(), vmm_tap::VNET_HDR_LEN)?;
    }
    vmm_tap::set_offloads(fd.as_fd(), offloads)?;
    Ok(fd)
}

/// Configures the guest NIC with `ip` (run from a thread inside the guest netns).
fn configure_guest_nic(args: &Args, mac: &str) -> Result<()> {
    let dev = args.guest_ifname.as_str();
    ip(&["link", "set", "dev", dev, "address", mac])?;
    if let Some(mtu) = args.guest_mtu {
        ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])?;
    }
    ip(&["link", "set", "dev", "lo", "up"])?;
    ip(&["link", "set", "dev", dev, "up"])?;
    for addr in &args.guest_addrs {
        if addr.contains(':') {
            ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"])?;
        } else {
            ip(&["addr", "add", addr, "dev", dev])?;
        }
    }
    for gw in &args.guest_gws {
        let fam = if gw.contains(':') { "-6" } else { "-4" };
        ip(&[fam, "route", "replace", "default", "via", gw, "dev", dev])?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
