//! `cargo xtask demo`: the end-to-end path a kata sandbox uses, with a stand-in for the VM.
//!
//! ```text
//! client netns            sandbox netns (pod)                         guest netns
//! veth-c 10.99.0.1 <-> eth0 (pod veth) <=netshim=> tap0_kata <-> vm-standin <-> eth0 10.99.0.2
//! ```
//!
//! The sandbox eth0 keeps the address the CNI gave it; netshim redirects at its ingress, so
//! the sandbox stack never sees the client's packets and the guest answers for the pod IP.

use crate::topology::{self, Action, CleanupGuard, DemoTopology};
use crate::{cmd, setup};
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Tap name kata gives the first endpoint's tap (`tap%d_kata`).
const TAP: &str = "tap0_kata";
const IPERF_PORT: &str = "5201";

#[derive(clap::Args)]
pub struct DemoArgs {
    /// TC backend passed to `netshim attach` (default: netshim's own default).
    #[arg(long, value_parser = ["ebpf", "mirred"])]
    pub tc_backend: Option<String>,
    /// Duration of each iperf3 run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub seconds: u32,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "the demo creates network namespaces: run it as root"
    );
    setup::run(&setup::SetupArgs::default())?;
    let (netshim, standin) = cmd::step("build release binaries", build)?;

    let guard = CleanupGuard::new()?;
    let topo = cmd::step("create topology", || DemoTopology::create(&guard))?;
    println!(
        "topology: {client} [{cif} {caddr}] <-> {sandbox} [{pif} {paddr}, mac {mac}] \
         <-> {TAP} <-> vm-standin <-> {guest} [{pif} {paddr}]",
        client = topo.client,
        sandbox = topo.sandbox,
        guest = topo.guest,
        cif = topology::CLIENT_IFNAME,
        caddr = topology::CLIENT_ADDR,
        pif = topology::POD_IFNAME,
        paddr = topology::POD_ADDR,
        mac = topo.pod_mac,
    );

    let detach = topology::register(Action::Detach {
        netshim: netshim.clone(),
        netns: topo.sandbox.clone(),
    });
    cmd::step("netshim attach", || attach(&netshim, &topo, args))?;

    let mut standin = cmd::step("start vm-standin", || {
        StandIn::start(&standin, &topo, Duration::from_secs(20))
    })?;

    cmd::step("ping guest from client", || {
        cmd::run(&mut topology::exec_in(
            &topo.client,
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", topology::POD_IP],
        ))
    })?;

    let forward = cmd::step("iperf3 client -> guest", || {
        iperf(&topo, args.seconds, false)
    })?;
    let reverse = cmd::step("iperf3 guest -> client (-R)", || {
        iperf(&topo, args.seconds, true)
    })?;
    println!();
    println!("iperf3, single TCP stream, {} s each (the server runs only in the guest netns, so these bytes crossed netshim, the tap and the stand-in):", args.seconds);
    println!(
        "  {:<22} {:>14} {:>14} {:>12}",
        "direction", "sent", "received", "retransmits"
    );
    for (name, r) in [
        ("client -> guest", &forward),
        ("guest -> client (-R)", &reverse),
    ] {
        println!(
            "  {:<22} {:>9.2} Gbps {:>9.2} Gbps {:>12}",
            name,
            r.sent_bps / 1e9,
            r.received_bps / 1e9,
            r.retransmits.map_or("n/a".to_string(), |n| n.to_string())
        );
    }
    println!();

    cmd::step("netshim stats", || {
        netshim_cmd(&netshim, &["stats", "--netns", &topo.sandbox])
    })?;

    cmd::step("stop vm-standin", || {
        let summary = standin.stop()?;
        match summary {
            Some(json) => println!("vm-standin relayed: {}", relay_digest(&json)),
            None => println!("vm-standin printed no JSON summary"),
        }
        Ok(())
    })?;

    // Like kata: the VM goes first, then the network plumbing (detach removes the tap).
    cmd::step("netshim detach", || {
        netshim_cmd(&netshim, &["detach", "--netns", &topo.sandbox])
    })?;
    topology::disarm(detach);

    cmd::step("delete namespaces", || {
        drop(guard);
        Ok(())
    })?;
    println!("demo: done");
    Ok(())
}

/// `cargo build --release` of the two binaries; returns their paths.
fn build() -> Result<(PathBuf, PathBuf)> {
    let mut build = cmd::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "netshim",
        "-p",
        "netshim-tests",
        "--bin",
        "netshim",
        "--bin",
        "vm-standin",
    ]);
    if cmd::in_ci() {
        build.arg("--locked");
    }
    cmd::run(&mut build)?;
    let release = cmd::target_dir().join("release");
    let (netshim, standin) = (release.join("netshim"), release.join("vm-standin"));
    for bin in [&netshim, &standin] {
        ensure!(cmd::is_executable(bin), "{} was not built", bin.display());
    }
    Ok((netshim, standin))
}

/// What netshim's exit codes mean (0 ok, 1 operation failed, 2 invalid input, 3 conflict).
fn netshim_failure(code: Option<i32>) -> &'static str {
    match code {
        Some(1) => "operation failed",
        Some(2) => "invalid input",
        Some(3) => "conflict: the netns is already attached",
        Some(_) => "unexpected exit code",
        None => "killed by a signal",
    }
}

/// Run netshim with inherited stdio; explain its exit code on failure.
fn netshim_cmd(netshim: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(netshim);
    cmd.args(args);
    println!("+ {}", cmd::display(&cmd));
    let status = cmd.status().context("starting netshim")?;
    if !status.success() {
        bail!(
            "netshim {}: {} ({status})",
            args[0],
            netshim_failure(status.code())
        );
    }
    Ok(())
}

fn attach(netshim: &Path, topo: &DemoTopology, args: &DemoArgs) -> Result<()> {
    let mut cmd = Command::new(netshim);
    cmd.args(["attach", "--netns", &topo.sandbox, "--json"]);
    if let Some(backend) = &args.tc_backend {
        cmd.args(["--tc-backend", backend]);
    }
    println!("+ {}", cmd::display(&cmd));
    let out = cmd::capture(&mut cmd)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match serde_json::from_str::<serde_json::Value>(&stdout) {
        Ok(json) => println!("{}", serde_json::to_string_pretty(&json)?),
        Err(_) => print!("{stdout}"),
    }
    eprint!("{stderr}");
    if !out.status.success() {
        bail!(
            "netshim attach: {} ({})",
            netshim_failure(out.status.code()),
            out.status
        );
    }
    Ok(())
}

/// The VM stand-in: relays frames between the sandbox's tap and an interface in the guest
/// netns that carries the pod's MAC and IP.
struct StandIn {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    token: Option<topology::Token>,
}

impl StandIn {
    fn start(bin: &Path, topo: &DemoTopology, ready_within: Duration) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--sandbox-netns")
            .arg(DemoTopology::path(&topo.sandbox))
            .args(["--tap", TAP])
            .arg("--guest-netns")
            .arg(DemoTopology::path(&topo.guest))
            .args(["--guest-ifname", topology::POD_IFNAME])
            .args(["--guest-mac", &topo.pod_mac])
            .args(["--guest-addr", topology::POD_ADDR]);
        println!("+ {}", cmd::display(&cmd));
        // stdin is a pipe we hold: closing it (or our death) stops the stand-in.
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting vm-standin")?;
        let token = topology::register(Action::Kill {
            pid: child.id(),
            what: "vm-standin".into(),
        });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("vm-standin stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("vm-standin: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut standin = StandIn {
            child,
            stdin,
            lines,
            token: Some(token),
        };
        standin.wait_ready(ready_within)?;
        Ok(standin)
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
                    bail!("vm-standin exited before `ready` ({status})");
                }
            }
        }
    }

    /// Close stdin (the stand-in exits on EOF), escalate to SIGTERM after 5 s; return the
    /// JSON summary line it printed on exit, if any.
    fn stop(&mut self) -> Result<Option<serde_json::Value>> {
        drop(self.stdin.take());
        let mut status = wait_timeout(&mut self.child, Duration::from_secs(5))?;
        if status.is_none() {
            println!("vm-standin still running after stdin EOF; sending SIGTERM");
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            status = wait_timeout(&mut self.child, Duration::from_secs(5))?;
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
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .filter(|v| v.is_object())
            .last();
        ensure!(status.success(), "vm-standin exited with {status}");
        Ok(summary)
    }
}

/// `sandbox_to_guest N frames / B bytes, guest_to_sandbox ...` from the stand-in's summary.
fn relay_digest(summary: &serde_json::Value) -> String {
    ["sandbox_to_guest", "guest_to_sandbox"]
        .iter()
        .map(|dir| {
            let n = |field: &str| {
                summary[dir][field]
                    .as_u64()
                    .map_or("?".into(), |v| v.to_string())
            };
            format!("{dir} {} frames / {} bytes", n("frames"), n("bytes"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One iperf3 run's end-of-test totals.
#[derive(Debug, PartialEq)]
struct IperfResult {
    sent_bps: f64,
    received_bps: f64,
    retransmits: Option<u64>,
}

/// Start a one-shot iperf3 server in the guest netns, run the client from the client netns.
fn iperf(topo: &DemoTopology, seconds: u32, reverse: bool) -> Result<IperfResult> {
    let mut server_cmd = topology::exec_in(&topo.guest, "iperf3", &["-s", "-1", "-p", IPERF_PORT]);
    println!("+ {}", cmd::display(&server_cmd));
    let mut server = server_cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting iperf3 server")?;
    let token = topology::register(Action::Kill {
        pid: server.id(),
        what: "iperf3 server".into(),
    });
    wait_listening(&topo.guest, &mut server)?;

    let secs = seconds.to_string();
    let mut client_args = vec![
        "-c",
        topology::POD_IP,
        "-p",
        IPERF_PORT,
        "-t",
        &secs,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    if reverse {
        client_args.push("-R");
    }
    let mut client = topology::exec_in(&topo.client, "iperf3", &client_args);
    println!("+ {}", cmd::display(&client));
    let child = client
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting iperf3 client")?;
    let client_token = topology::register(Action::Kill {
        pid: child.id(),
        what: "iperf3 client".into(),
    });
    let out = child
        .wait_with_output()
        .context("waiting for iperf3 client")?;
    topology::disarm(client_token);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = parse_iperf(&stdout);

    if wait_timeout(&mut server, Duration::from_secs(5))?.is_none() {
        server.kill()?;
        server.wait()?;
    }
    topology::disarm(token);

    let result = result.with_context(|| {
        format!(
            "iperf3 client ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    ensure!(
        out.status.success(),
        "iperf3 client exited with {}",
        out.status
    );
    Ok(result)
}

/// Poll `ss` in the guest netns until the server listens (or it died).
fn wait_listening(netns: &str, server: &mut Child) -> Result<()> {
    let filter = format!("sport = :{IPERF_PORT}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cmd::output(&mut topology::exec_in(netns, "ss", &["-Hltn", &filter]))?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if let Some(status) = server.try_wait()? {
            bail!("iperf3 server exited early ({status})");
        }
        ensure!(
            Instant::now() < deadline,
            "iperf3 server not listening after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Totals from `iperf3 -J`: `end.sum_sent` / `end.sum_received` (TCP).
fn parse_iperf(json: &str) -> Result<IperfResult> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 printed no JSON")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let end = v.get("end").context("iperf3 JSON has no `end` section")?;
    let bps = |section: &str| {
        end.get(section)
            .and_then(|s| s.get("bits_per_second"))
            .and_then(|b| b.as_f64())
            .with_context(|| format!("iperf3 JSON has no end.{section}.bits_per_second"))
    };
    Ok(IperfResult {
        sent_bps: bps("sum_sent")?,
        received_bps: bps("sum_received")?,
        retransmits: end
            .get("sum_sent")
            .and_then(|s| s.get("retransmits"))
            .and_then(|r| r.as_u64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iperf_totals() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bytes":100,"bits_per_second":2.5e10,"retransmits":3},
            "sum_received":{"bytes":100,"bits_per_second":2.4e10}}}"#;
        assert_eq!(
            parse_iperf(json).unwrap(),
            IperfResult {
                sent_bps: 2.5e10,
                received_bps: 2.4e10,
                retransmits: Some(3)
            }
        );
    }

    #[test]
    fn iperf_error_is_reported() {
        let json = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server"}"#;
        let err = parse_iperf(json).unwrap_err().to_string();
        assert!(err.contains("unable to connect"), "{err}");
    }

    #[test]
    fn exit_codes_are_explained() {
        assert_eq!(netshim_failure(Some(2)), "invalid input");
        assert_eq!(netshim_failure(Some(1)), "operation failed");
    }
}
