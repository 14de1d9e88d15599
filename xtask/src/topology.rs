//! Throwaway network topologies for the demo, and the cleanup that always removes them.
//!
//! Everything happens inside uniquely named network namespaces created here (`ip -n NS ...`,
//! `ip netns exec NS ...`); nothing touches the root namespace's interfaces. Cleanup actions
//! are kept in a process-wide registry and run last-registered-first when the
//! [`CleanupGuard`] drops (normal end, `?` error, panic) or when SIGINT/SIGTERM/SIGHUP
//! arrives. Register an action *before* doing the thing it undoes.

use crate::cmd;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// Something to undo.
#[derive(Clone)]
pub enum Action {
    /// SIGTERM (then SIGKILL) a child process of ours.
    Kill { pid: u32, what: String },
    /// `netshim detach --netns NS` (removes netshim's pins and filters).
    Detach { netshim: PathBuf, netns: String },
    /// `ip netns del NS`.
    DeleteNetns(String),
    /// Any other command (argv), run quietly; a failure is only reported. For undo steps
    /// the variants above do not cover (e.g. `netshim disconnect`, `ip link del`).
    Command { argv: Vec<String> },
}

struct Registry {
    next: u64,
    actions: Vec<(u64, Action)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    actions: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Handle to a registered action, to drop it once it is no longer needed.
#[must_use]
pub struct Token(u64);

pub fn register(action: Action) -> Token {
    let mut reg = registry();
    reg.next += 1;
    let id = reg.next;
    reg.actions.push((id, action));
    Token(id)
}

/// Spawns `cmd` (error: "starting WHAT") and registers the child to be killed as `what`.
pub fn spawn_killable(cmd: &mut Command, what: &str) -> Result<(Child, Token)> {
    let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
    let token = register(Action::Kill {
        pid: child.id(),
        what: what.to_string(),
    });
    Ok((child, token))
}

/// Forget an action without running it (the main flow undid it itself).
pub fn disarm(token: Token) {
    registry().actions.retain(|(id, _)| *id != token.0);
}

/// Run every registered action, newest first. Holding the lock throughout serialises the
/// signal handler with a Drop in progress; whoever comes second finds nothing left.
fn cleanup_all() {
    let mut reg = registry();
    while let Some((_, action)) = reg.actions.pop() {
        action.run();
    }
}

impl Action {
    fn run(self) {
        match self {
            Action::Kill { pid, what } => kill_child(pid, &what),
            Action::Detach { netshim, netns } => {
                let mut detach = Command::new(&netshim);
                detach.args(["detach", "--netns", &netns]);
                println!("cleanup: + {}", cmd::display(&detach));
                match cmd::capture(&mut detach) {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => eprintln!(
                        "cleanup: warning: detach failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    Err(err) => eprintln!("cleanup: warning: {err:#}"),
                }
            }
            Action::Command { argv } => {
                let Some((prog, args)) = argv.split_first() else {
                    return;
                };
                let mut undo = Command::new(prog);
                undo.args(args);
                println!("cleanup: + {}", cmd::display(&undo));
                if let Err(err) = cmd::output(&mut undo) {
                    eprintln!("cleanup: warning: {err:#}");
                }
            }
            Action::DeleteNetns(name) => {
                if !Path::new("/run/netns").join(&name).exists() {
                    return;
                }
                let mut del = Command::new("ip");
                del.args(["netns", "del", &name]);
                println!("cleanup: + {}", cmd::display(&del));
                if let Err(err) = cmd::output(&mut del) {
                    eprintln!("cleanup: warning: {err:#}");
                }
            }
        }
    }
}

fn kill_child(pid: u32, what: &str) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    let reaped = |deadline: Duration| {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: plain syscall on our own child; WNOHANG never blocks.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                return true; // reaped, or not (any longer) our child
            }
            if start.elapsed() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    if reaped(Duration::ZERO) {
        return;
    }
    println!("cleanup: stopping {what} (pid {pid})");
    // SAFETY: signalling our own, not yet reaped child (its pid cannot have been reused).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if !reaped(Duration::from_secs(3)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reaped(Duration::from_secs(3));
    }
}

/// Runs all registered cleanup on Drop; the first one created also installs the
/// SIGINT/SIGTERM/SIGHUP handler that cleans up and exits 130.
pub struct CleanupGuard(());

impl CleanupGuard {
    pub fn new() -> Result<Self> {
        static HANDLER: Once = Once::new();
        let mut result = Ok(());
        HANDLER.call_once(|| {
            result = ctrlc::set_handler(|| {
                eprintln!("\nxtask: interrupted, cleaning up");
                cleanup_all();
                std::process::exit(130);
            });
        });
        result.context("installing the signal handler")?;
        Ok(CleanupGuard(()))
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        cleanup_all();
    }
}

/// `ip -n NS <args>`.
pub fn ip(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", netns]).args(args);
    cmd
}

/// `ip netns exec NS <prog> <args>` (ip execs the program, so the child pid is the program's).
pub fn exec_in(netns: &str, prog: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, prog]).args(args);
    cmd
}

/// Create a named netns (registered for deletion first) with loopback up.
pub fn add_netns(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty() && name.len() <= 64 && !name.contains('/'),
        "bad netns name {name:?}"
    );
    ensure!(
        !Path::new("/run/netns").join(name).exists(),
        "netns {name} already exists"
    );
    // Token deliberately dropped: the netns lives until the guard cleans up.
    let _ = register(Action::DeleteNetns(name.to_string()));
    cmd::run(Command::new("ip").args(["netns", "add", name]))?;
    cmd::run(&mut ip(name, &["link", "set", "lo", "up"]))
}

/// Addresses of the embedded default demo topology.
pub const CLIENT_ADDR: &str = "10.99.0.1/24";
pub const POD_ADDR: &str = "10.99.0.2/24";
pub const POD_IP: &str = "10.99.0.2";
/// Pod interface name inside the sandbox netns, as a CNI would create it.
pub const POD_IFNAME: &str = "eth0";
pub const CLIENT_IFNAME: &str = "veth-c";

/// client netns (veth-c 10.99.0.1/24) <-> sandbox netns (eth0 10.99.0.2/24, the pod
/// interface), plus an empty guest netns for the VM stand-in.
pub struct DemoTopology {
    pub client: String,
    pub sandbox: String,
    pub guest: String,
    /// MAC of the sandbox's eth0: the guest must use it (the CNI expects traffic from it).
    pub pod_mac: String,
}

impl DemoTopology {
    /// Needs a live [`CleanupGuard`]: the namespaces are registered for deletion.
    pub fn create(_guard: &CleanupGuard) -> Result<Self> {
        let tag = std::process::id();
        let client = format!("netshim-demo-{tag}-client");
        let sandbox = format!("netshim-demo-{tag}-sandbox");
        let guest = format!("netshim-demo-{tag}-guest");
        for ns in [&client, &sandbox, &guest] {
            add_netns(ns)?;
        }
        // Created inside the client netns, peer straight into the sandbox netns.
        cmd::run(&mut ip(
            &client,
            &[
                "link",
                "add",
                CLIENT_IFNAME,
                "type",
                "veth",
                "peer",
                "name",
                POD_IFNAME,
                "netns",
                &sandbox,
            ],
        ))?;
        cmd::run(&mut ip(
            &client,
            &["addr", "add", CLIENT_ADDR, "dev", CLIENT_IFNAME],
        ))?;
        cmd::run(&mut ip(
            &sandbox,
            &["addr", "add", POD_ADDR, "dev", POD_IFNAME],
        ))?;
        cmd::run(&mut ip(&client, &["link", "set", CLIENT_IFNAME, "up"]))?;
        cmd::run(&mut ip(&sandbox, &["link", "set", POD_IFNAME, "up"]))?;
        let pod_mac = link_mac(&sandbox, POD_IFNAME)?;
        Ok(DemoTopology {
            client,
            sandbox,
            guest,
            pod_mac,
        })
    }
}

/// `/run/netns/NAME`, the bind mount of a named netns.
pub fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// MAC address of an interface inside a netns (`ip -j link show`).
pub fn link_mac(netns: &str, ifname: &str) -> Result<String> {
    let out = cmd::output(&mut ip(netns, &["-j", "link", "show", "dev", ifname]))?;
    let json: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("parsing `ip -j link`: {out}"))?;
    json.get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .with_context(|| format!("no MAC for {ifname} in {netns}: {out}"))
}
