//! `--paths rate-limit`: netshim's rate-limit shaper against kata's HTB setup, both made by
//! `netshim limit` (profile `netshim`, and profile `kata`: exactly kata's `addHTBQdisc`,
//! built through netlink as kata builds it), at 1 Gbit/s each way, side by side in one run.
//!
//! Topology: client netns `veth-c` (10.98.0.1/24) <-> sandbox netns `eth0` (10.98.0.2/24,
//! attached by netshim: tcfilter, eBPF) <-> `tap0_kata` <-> vm-standin <-> guest netns
//! running `iperf3 -s`. Per round and profile (the order rotates each round) and direction
//! (rx = client -> guest, tx = `-R`): one TCP iperf3 run, and `ping -i 0.01` from the client
//! to the guest over the same path during it (its first and last half second left out).
//! Reported: goodput, the wire rate the shaper counted, retransmits, ping RTT p50/p99.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::sandbox_setup::percentile;
use crate::{cmd, standin, topology};

/// The limit both profiles are measured at.
pub const LIMIT_BPS: u64 = 1_000_000_000;
const PROFILES: [&str; 2] = ["netshim", "kata"];
const DIRECTIONS: [&str; 2] = ["rx", "tx"];

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    pub profile: &'static str,
    pub direction: &'static str,
    pub goodput_bps: f64,
    pub wire_bps: f64,
    pub retransmits: u64,
    pub rtt_ms: Vec<f64>,
}

/// The section's results.
#[derive(Debug, Default)]
pub struct RateLimitResults {
    pub runs: Vec<Run>,
    pub errors: Vec<String>,
    pub seconds: u32,
    pub rounds: u32,
}

struct Topo {
    client: String,
    sandbox: String,
    guest: String,
}

const CLIENT_ADDR: &str = "10.98.0.1/24";
const POD_ADDR: &str = "10.98.0.2/24";
const POD_IP: &str = "10.98.0.2";

fn topo(tag: &str) -> Result<Topo> {
    let t = Topo {
        client: format!("{tag}-rlc"),
        sandbox: format!("{tag}-rls"),
        guest: format!("{tag}-rlg"),
    };
    for n in [&t.client, &t.sandbox, &t.guest] {
        topology::add_netns(n)?;
    }
    cmd::run(&mut topology::ip(
        &t.client,
        &[
            "link", "add", "veth-c", "type", "veth", "peer", "name", "eth0", "netns", &t.sandbox,
        ],
    ))?;
    cmd::run(&mut topology::ip(
        &t.client,
        &["addr", "add", CLIENT_ADDR, "dev", "veth-c"],
    ))?;
    cmd::run(&mut topology::ip(
        &t.sandbox,
        &["addr", "add", POD_ADDR, "dev", "eth0"],
    ))?;
    cmd::run(&mut topology::ip(
        &t.client,
        &["link", "set", "veth-c", "up"],
    ))?;
    cmd::run(&mut topology::ip(
        &t.sandbox,
        &["link", "set", "eth0", "up"],
    ))?;
    Ok(t)
}

fn netshim_json(netshim: &Path, args: &[&str]) -> Result<Value> {
    let out = cmd::output(Command::new(netshim).args(args).arg("--json"))?;
    serde_json::from_str(&out).with_context(|| format!("netshim {args:?}: {out}"))
}

fn shaper_sent(netshim: &Path, netns: &str, direction: &str) -> Result<u64> {
    let v = netshim_json(netshim, &["limit", "--netns", netns])?;
    v["endpoints"][0][direction]["counters"]["sent_bytes"]
        .as_u64()
        .with_context(|| format!("no {direction} shaper counters: {v}"))
}

/// Runs the section; needs a live cleanup guard (the namespaces are registered with it).
pub fn run(
    netshim: &Path,
    standin_bin: &Path,
    tag: &str,
    rounds: u32,
    seconds: u32,
) -> Result<RateLimitResults> {
    let t = topo(tag)?;
    let mut results = RateLimitResults {
        seconds,
        rounds,
        ..Default::default()
    };
    let sb = topology::netns_path(&t.sandbox);
    // Runs before the netns goes, also when a step below fails.
    let _ = topology::register(topology::Action::Detach {
        netshim: netshim.to_path_buf(),
        netns: sb.clone(),
    });
    netshim_json(netshim, &["attach", "--netns", &sb])?;
    let mac = topology::link_mac(&t.sandbox, "eth0")?;
    let queue = standin::Queue::Tap("tap0_kata".into());
    let sin = standin::StandIn::start(
        standin::command(
            standin_bin,
            &t.sandbox,
            &queue,
            &t.guest,
            "eth0",
            &mac,
            POD_ADDR,
        ),
        false,
        Duration::from_secs(10),
    )?;
    let (mut server, server_token) = topology::spawn_killable(
        topology::exec_in(&t.guest, "iperf3", &["-s", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "iperf3 -s (rate limit)",
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let limit = LIMIT_BPS.to_string();
    for round in 0..rounds {
        let order: Vec<&'static str> = if round % 2 == 0 {
            PROFILES.to_vec()
        } else {
            PROFILES.iter().rev().copied().collect()
        };
        for profile in order {
            netshim_json(
                netshim,
                &[
                    "limit",
                    "--netns",
                    &sb,
                    "--rx",
                    &limit,
                    "--tx",
                    &limit,
                    "--profile",
                    profile,
                ],
            )?;
            for direction in DIRECTIONS {
                match measure(netshim, &t, &sb, profile, direction, seconds) {
                    Ok(run) => {
                        println!(
                            "rate-limit round {}: {profile} {direction}: {:.0} Mbit/s goodput, {:.0} Mbit/s wire, {} retransmits, ping p50 {:.2} ms",
                            round + 1,
                            run.goodput_bps / 1e6,
                            run.wire_bps / 1e6,
                            run.retransmits,
                            percentile(&run.rtt_ms, 50.0).unwrap_or(f64::NAN)
                        );
                        results.runs.push(run);
                    }
                    Err(e) => results
                        .errors
                        .push(format!("round {} {profile} {direction}: {e:#}", round + 1)),
                }
            }
            // The next profile starts from an unlimited device, as a new sandbox would.
            netshim_json(
                netshim,
                &["limit", "--netns", &sb, "--rx", "0", "--tx", "0"],
            )?;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    topology::disarm(server_token);
    let _ = sin.stop();
    netshim_json(netshim, &["detach", "--netns", &sb])?;
    Ok(results)
}

fn measure(
    netshim: &Path,
    t: &Topo,
    sb: &str,
    profile: &'static str,
    direction: &'static str,
    seconds: u32,
) -> Result<Run> {
    let before = shaper_sent(netshim, sb, direction)?;
    let secs = seconds.to_string();
    let mut args = vec!["-c", POD_IP, "-p", "5201", "-t", &secs, "-J"];
    if direction == "tx" {
        args.push("-R");
    }
    let mut iperf = topology::exec_in(&t.client, "iperf3", &args);
    iperf.stdout(Stdio::piped()).stderr(Stdio::null());
    let (iperf_child, iperf_token) =
        topology::spawn_killable(&mut iperf, "iperf3 -c (rate limit)")?;
    std::thread::sleep(Duration::from_millis(500));
    let count = ((seconds as f64 - 1.0).max(1.0) * 100.0) as u32;
    let ping = cmd::output(&mut topology::exec_in(
        &t.client,
        "ping",
        &[
            "-n",
            "-i",
            "0.01",
            "-c",
            &count.to_string(),
            "-W",
            "1",
            POD_IP,
        ],
    ));
    let out = iperf_child.wait_with_output()?;
    topology::disarm(iperf_token);
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let end = &v["end"]["sum_received"];
    let goodput_bps = end["bits_per_second"].as_f64().context("sum_received")?;
    let elapsed = end["seconds"].as_f64().context("seconds")?;
    let wire_bps = (shaper_sent(netshim, sb, direction)? - before) as f64 * 8.0 / elapsed;
    let rtt_ms: Vec<f64> = ping
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    if rtt_ms.is_empty() {
        bail!("no ping replies under load");
    }
    Ok(Run {
        profile,
        direction,
        goodput_bps,
        wire_bps,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        rtt_ms,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

impl RateLimitResults {
    fn rows(&self) -> Vec<(&'static str, &'static str, [Option<f64>; 5])> {
        let mut out = Vec::new();
        for direction in DIRECTIONS {
            for profile in PROFILES {
                let runs: Vec<&Run> = self
                    .runs
                    .iter()
                    .filter(|r| r.profile == profile && r.direction == direction)
                    .collect();
                let all_rtt: Vec<f64> = runs.iter().flat_map(|r| r.rtt_ms.clone()).collect();
                out.push((
                    profile,
                    direction,
                    [
                        median(runs.iter().map(|r| r.goodput_bps).collect()),
                        median(runs.iter().map(|r| r.wire_bps).collect()),
                        median(runs.iter().map(|r| r.retransmits as f64).collect()),
                        percentile(&all_rtt, 50.0),
                        percentile(&all_rtt, 99.0),
                    ],
                ));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows()
            .into_iter()
            .map(|(profile, direction, [g, w, r, p50, p99])| {
                json!({"profile": profile, "direction": direction, "goodput_bps": g,
                       "wire_bps": w, "retransmits": r, "ping_p50_ms": p50, "ping_p99_ms": p99})
            })
            .collect();
        json!({"limit_bps": LIMIT_BPS, "rounds": self.rounds, "seconds": self.seconds,
               "rows": rows, "errors": self.errors})
    }

    pub fn markdown(&self) -> String {
        let pct = |x: Option<f64>| {
            x.map_or("-".into(), |v| {
                format!("{:.1}%", v / LIMIT_BPS as f64 * 100.0)
            })
        };
        let f = |x: Option<f64>, d: usize| x.map_or("-".into(), |v| format!("{v:.d$}"));
        let mut s = format!(
            "\n## Rate limit: netshim's shaper against kata's HTB, {} Gbit/s each way\n\n\
             `netshim limit --rx {LIMIT_BPS} --tx {LIMIT_BPS} --profile netshim|kata` on one \
             attached sandbox; per round and profile one {} s TCP iperf3 run per direction \
             with `ping -i 0.01` over the same path during it; medians of {} round(s) \
             (ping percentiles over every reply). rx: into the VM (shaper on the tap), tx: out \
             of it (shaper on the pod device). Wire: Ethernet frames as the shaper counted them.\n\n\
             | shaper | direction | goodput | wire | retransmits | ping p50 ms | ping p99 ms |\n\
             |---|---|--:|--:|--:|--:|--:|\n",
            LIMIT_BPS / 1_000_000_000,
            self.seconds,
            self.rounds
        );
        for (profile, direction, [g, w, r, p50, p99]) in self.rows() {
            s.push_str(&format!(
                "| {} | {direction} | {} | {} | {} | {} | {} |\n",
                if profile == "kata" {
                    "kata HTB"
                } else {
                    "netshim"
                },
                pct(g),
                pct(w),
                f(r, 0),
                f(p50, 2),
                f(p99, 2)
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("\nerror: {e}\n"));
        }
        s
    }
}
