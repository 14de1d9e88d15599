//! vm-standin, the VM stand-in of the demo and of the bench's sandbox paths: it relays frames
//! between the sandbox's queue (a tap, or a macvtap char device) and an interface in the guest
//! netns that carries the pod's MAC and IP. It prints `ready` once relaying, exits when its
//! stdin closes, and prints a JSON summary line on exit.

use crate::cmd;
use crate::topology::{self, Token};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sandbox side the stand-in opens.
pub enum Queue {
    /// A tap by name (tcfilter model).
    Tap(String),
    /// A macvtap char device (macvtap model).
    Device(PathBuf),
}

/// The vm-standin command line: `queue` in the `sandbox` netns <-> `guest_ifname` (with the
/// pod's MAC and address) in the `guest` netns.
pub fn command(
    bin: &Path,
    sandbox: &str,
    queue: &Queue,
    guest: &str,
    guest_ifname: &str,
    guest_mac: &str,
    guest_addr: &str,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--sandbox-netns")
        .arg(topology::netns_path(sandbox));
    match queue {
        Queue::Tap(name) => cmd.args(["--tap", name]),
        Queue::Device(dev) => cmd.arg("--sandbox-dev").arg(dev),
    };
    cmd.arg("--guest-netns")
        .arg(topology::netns_path(guest))
        .args(["--guest-ifname", guest_ifname])
        .args(["--guest-mac", guest_mac])
        .args(["--guest-addr", guest_addr]);
    cmd
}

/// A running stand-in. Its stdin is a pipe we hold: closing it (or our death) stops it; a
/// stand-in dropped without [`StandIn::stop`] is killed.
pub struct StandIn {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout lines (for `ready` and the summary).
    lines: Receiver<String>,
    /// Its stderr, when kept for error messages (quiet mode).
    stderr: Option<JoinHandle<String>>,
    token: Option<Token>,
    echo: bool,
}

impl StandIn {
    /// Spawn `cmd` (see [`command`]) and wait up to `ready_within` for `ready`. `echo`: print
    /// the command line and every stdout line (`vm-standin: ...`) and pass stderr through;
    /// otherwise print nothing and keep stderr for error messages.
    pub fn start(mut cmd: Command, echo: bool, ready_within: Duration) -> Result<Self> {
        if echo {
            println!("+ {}", cmd::display(&cmd));
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if echo {
                Stdio::inherit()
            } else {
                Stdio::piped()
            });
        let (mut child, token) = topology::spawn_killable(&mut cmd, "vm-standin")?;
        let stdout = child.stdout.take().context("vm-standin stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    println!("vm-standin: {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = pipe.read_to_string(&mut s);
                s
            })
        });
        let mut standin = StandIn {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            token: Some(token),
            echo,
        };
        standin.wait_ready(ready_within)?;
        Ok(standin)
    }

    /// `: <stderr>` when stderr was kept (quiet mode), else nothing.
    fn stderr_suffix(&mut self) -> String {
        match self.stderr.take() {
            Some(h) => format!(": {}", h.join().unwrap_or_default().trim()),
            None => String::new(),
        }
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!("vm-standin printed no `ready` within {within:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!(
                        "vm-standin exited before `ready` ({status}){}",
                        self.stderr_suffix()
                    );
                }
            }
        }
    }

    /// Close stdin (the stand-in exits on EOF), escalate to SIGTERM after 5 s and SIGKILL
    /// after 5 more; return the JSON summary line it printed on exit, if any.
    pub fn stop(mut self) -> Result<Option<Value>> {
        drop(self.stdin.take());
        let mut status = cmd::wait_timeout(&mut self.child, Duration::from_secs(5))?;
        if status.is_none() {
            if self.echo {
                println!("vm-standin still running after stdin EOF; sending SIGTERM");
            }
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            status = cmd::wait_timeout(&mut self.child, Duration::from_secs(5))?;
        }
        let status = match status {
            Some(s) => s,
            None => {
                self.child.kill()?;
                self.child.wait()?
            }
        };
        if let Some(token) = self.token.take() {
            topology::disarm(token);
        }
        // The reader thread ends at EOF; collect what it has not handed over yet.
        let summary = self
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .filter(Value::is_object)
            .last();
        let stderr = self.stderr_suffix();
        ensure!(status.success(), "vm-standin exited with {status}{stderr}");
        Ok(summary)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(token) = self.token.take() {
            topology::disarm(token);
        }
    }
}
