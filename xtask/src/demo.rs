//! `cargo xtask demo`: the end-to-end path a kata sandbox uses, with a stand-in for the VM.
//!
//! ```text
//! client netns            sandbox netns (pod)                         guest netns
//! veth-c 10.99.0.1 <-> eth0 (pod veth) <=netshim=> tap0_kata <-> vm-standin <-> eth0 10.99.0.2
//! ```
//!
//! The sandbox eth0 keeps the address the CNI gave it; netshim redirects at its ingress, so
//! the sandbox stack never sees the client's packets and the guest answers for the pod IP.

use crate::standin::{self, Queue, StandIn};
use crate::topology::{self, Action, CleanupGuard, DemoTopology};
use crate::{cmd, iperf, setup};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tap name kata gives the first endpoint's tap (`tap%d_kata`).
const TAP: &str = "tap0_kata";

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
    setup::run_for(&setup::SetupArgs::default(), &[setup::Purpose::Demo])?;
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

    let standin = cmd::step("start vm-standin", || {
        let cmd = standin::command(
            &standin,
            &topo.sandbox,
            &Queue::Tap(TAP.into()),
            &topo.guest,
            topology::POD_IFNAME,
            &topo.pod_mac,
            topology::POD_ADDR,
        );
        StandIn::start(cmd, true, Duration::from_secs(20))
    })?;

    cmd::step("ping guest from client", || {
        cmd::run(&mut topology::exec_in(
            &topo.client,
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", topology::POD_IP],
        ))
    })?;

    let forward = cmd::step("iperf3 client -> guest", || {
        run_iperf(&topo, args.seconds, false)
    })?;
    let reverse = cmd::step("iperf3 guest -> client (-R)", || {
        run_iperf(&topo, args.seconds, true)
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
    cmd::build_release_binaries()?;
    cmd::release_binaries("was not built")
}

/// What netshim's exit codes mean (0 ok, 1 operation failed, 2 invalid input, 3 conflict).
fn netshim_failure(code: Option<i32>) -> &'static str {
    match code {
        Some(1) => "operation failed",
        Some(2) => "invalid input",
        Some(3) => "conflict: the netns is attached differently (detach first)",
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

/// One iperf3 run's end-of-test totals.
#[derive(Debug, PartialEq)]
struct IperfResult {
    sent_bps: f64,
    received_bps: f64,
    retransmits: Option<u64>,
}

/// Start a one-shot iperf3 server in the guest netns, run the client from the client netns.
fn run_iperf(topo: &DemoTopology, seconds: u32, reverse: bool) -> Result<IperfResult> {
    let mut server_cmd = topology::exec_in(&topo.guest, "iperf3", &iperf::SERVER_ARGS);
    println!("+ {}", cmd::display(&server_cmd));
    server_cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let (mut server, token) = topology::spawn_killable(&mut server_cmd, "iperf3 server")?;
    wait_listening(&topo.guest, &mut server)?;

    let secs = seconds.to_string();
    let mut client_args = iperf::client_args(topology::POD_IP, &secs);
    if reverse {
        client_args.push("-R");
    }
    let mut client = topology::exec_in(&topo.client, "iperf3", &client_args);
    println!("+ {}", cmd::display(&client));
    client
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, client_token) = topology::spawn_killable(&mut client, "iperf3 client")?;
    let out = child
        .wait_with_output()
        .context("waiting for iperf3 client")?;
    topology::disarm(client_token);
    let result = iperf::client_result(&out, parse_iperf);

    if cmd::wait_timeout(&mut server, Duration::from_secs(5))?.is_none() {
        server.kill()?;
        server.wait()?;
    }
    topology::disarm(token);
    result
}

/// Poll `ss` in the guest netns until the server listens (or it died).
fn wait_listening(netns: &str, server: &mut Child) -> Result<()> {
    let filter = format!("sport = :{}", iperf::PORT);
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
    let end = iperf::end_section(json)?;
    Ok(IperfResult {
        sent_bps: iperf::end_number(&end, "sum_sent", "bits_per_second")?,
        received_bps: iperf::end_number(&end, "sum_received", "bits_per_second")?,
        retransmits: iperf::retransmits(&end),
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
