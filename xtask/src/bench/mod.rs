//! `cargo xtask bench`: throughput, packet rate, latency and CPU cost of every way netshim
//! (and its alternatives) can join two network namespaces, measured in throwaway namespaces.
//!
//! Two topologies (see [`paths`]): **pair** (client ↔ veth ↔ shim ↔ veth ↔ server: direct
//! veth pair, linux bridge, mirred, ebpf, ebpf with bpf_redirect_peer) and **sandbox** (client ↔
//! veth ↔ sandbox [eth0 ↔ tap0_kata] ↔ vm-standin ↔ guest: mirred, ebpf, ebpf-peer, macvtap).
//!
//! Per path: TCP Gbps with 1 and 4 streams (iperf3), UDP 64 B received kpps (iperf3 -u -b 0,
//! the server's count), TCP request/response RTT p50/p99 (sockperf ping-pong, full RTT, blocking
//! sockets) and its p50 with both ends busy-polling (on a VM a blocking ping-pong mostly
//! measures vCPU wake-ups from idle: 56 µs blocking vs 7 µs spinning on a direct veth pair on
//! the 2-vCPU machine), CPU seconds per GB (busy jiffies of /proc/stat over the 1-stream TCP run
//! / bytes received), and from the UDP run busy CPU and softirq time per received packet
//! (where the hop's per-packet cost shows: the sender's CPU runs the whole receive path in
//! softirq), and UDP 64 B kpps the other way (iperf3 -R: server, or guest, to client). For
//! netshim's eBPF paths, two more UDP runs (both ways) with `kernel.bpf_stats_enabled` give
//! the datapath program's own ns per packet. Each eBPF path has a twin with netshim's source
//! guard on (`<path>+guard`, see [`paths`]); the reverse runs are the ones that cross the
//! guard, and [`guard`] checks after each round that they did. The load's client is pinned to CPU 0 and its
//! server to CPU 1 (`--no-pin` leaves placement to the scheduler), which takes scheduler
//! migrations out of the round-to-round spread.
//! Rounds are interleaved (`for round { for path { ... } }`) and every path is built fresh
//! for each round and torn down after it; the report gives medians and ratios against
//! `direct` (pair) and `mirred` (both), all from the same run. It prints; it never fails on
//! speed, only when a path cannot be set up or measured.

mod datapath_profile;
mod guard;
mod machine;
mod measure;
mod path_run;
mod paths;
mod progress;
mod rate_limit;
mod report;
mod sandbox_setup;
mod vm_queue;

use machine::{cpu_count, machine_info, utc_timestamp};
use path_run::{run_path, STEPS_PER_PATH};
use progress::Progress;

use crate::topology::{Action, CleanupGuard};
use crate::{cmd, setup};
use anyhow::{bail, ensure, Context, Result};
use measure::{
    clock_ticks, iperf, sockperf, sockperf_server, BpfStats, CpuJiffies, IperfTest, ProgRuns, Wait,
};
use paths::{Caps, Namespaces, PathSpec, Topo};
use report::{PathRun, RoundResult};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smoke run: 1 round of 1 s per metric (unless --rounds/--seconds say otherwise).
    #[arg(long)]
    pub quick: bool,
    /// Interleaved rounds (default 3; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: Option<u32>,
    /// Seconds per iperf3/sockperf run (default 5; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub seconds: Option<u32>,
    /// Output directory (default: results/bench-<UTC timestamp>/ in the workspace).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these paths: ids such as `pair/ebpf`, or a topology (`pair`, `sandbox`), or
    /// `setup` (the sandbox setup section: attach/detach latency, 100 concurrent, kernel
    /// memory, watch hot-plug); comma-separated or repeated. Default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub paths: Vec<String>,
    /// Use target/release/{netshim,vm-standin} as they are instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// Do not pin the load's client to CPU 0 and its server to CPU 1.
    #[arg(long)]
    pub no_pin: bool,
    /// A/B: also run every selected netshim path (mirred, ebpf, ebpf-peer, macvtap) with this
    /// other netshim binary (a release build of another commit, say), as a twin path
    /// `<path>@<label>` right after this build's in every round (before it in even rounds);
    /// the report adds each figure's ratio this build / other.
    #[arg(long, value_name = "PATH")]
    pub compare_netshim: Option<PathBuf>,
    /// The other binary's name in the report.
    #[arg(long, default_value = "other", requires = "compare_netshim")]
    pub compare_label: String,
}

struct Config {
    rounds: u32,
    seconds: u32,
    /// CPUs of the load's client and server.
    pin: Option<(u32, u32)>,
    /// Whether `perf` is here for the sandbox paths' step profile.
    profile: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(
        cmd::is_root(),
        "the bench creates network namespaces: run it as root"
    );
    let wall = Instant::now();
    setup::run_for(&setup::SetupArgs::default(), &[setup::Purpose::Bench])?;
    let want_rate_limit =
        args.paths.is_empty() || args.paths.iter().any(|p| p == RATE_LIMIT_SECTION);
    let paths: Vec<String> = args
        .paths
        .iter()
        .filter(|p| *p != RATE_LIMIT_SECTION)
        .cloned()
        .collect();
    let only_rate_limit = !args.paths.is_empty() && paths.is_empty();
    let (specs, want_setup) = match only_rate_limit {
        true => (Vec::new(), false),
        false => select_sections(&paths)?,
    };
    let mut tools = vec!["ip"];
    if want_rate_limit {
        tools.extend(["iperf3", "ping"]);
    }
    if !specs.is_empty() {
        tools.extend(["iperf3", "sockperf", "ethtool", "ss", "ping"]);
    }
    if want_setup {
        tools.push("bpftool");
    }
    for tool in tools {
        ensure!(
            cmd::which(tool).is_some(),
            "{tool} not found (cargo xtask setup installs it)"
        );
    }
    let (netshim, standin) = if args.no_build {
        existing_binaries()?
    } else {
        cmd::step("build release binaries", build)?
    };
    let cfg = Config {
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }),
        seconds: args.seconds.unwrap_or(if args.quick { 1 } else { 5 }),
        pin: (!args.no_pin && cpu_count() >= 2).then_some((0, 1)),
        profile: datapath_profile::available(),
    };
    if !cfg.profile {
        println!("bench: `perf` is not installed: the sandbox paths' step profile is skipped");
    }
    let caps = Caps::probe(&netshim)?;
    let other = match &args.compare_netshim {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("--compare-netshim {}", path.display()))?;
            let caps = Caps::probe(&path)?;
            Some((path, caps))
        }
        None => None,
    };
    let mut runs: Vec<PathRun> = Vec::new();
    for spec in specs {
        let why = caps.unavailable(&spec);
        let twin = other
            .as_ref()
            .filter(|_| spec.uses_netshim())
            .map(|(path, other_caps)| {
                PathRun::twin(
                    &spec,
                    &args.compare_label,
                    path,
                    other_caps.unavailable(&spec),
                )
            });
        runs.push(PathRun::new(spec, why));
        runs.extend(twin);
    }
    let started = utc_timestamp(SystemTime::now());
    let out_dir = args.out.clone().unwrap_or_else(|| {
        cmd::workspace_root()
            .join("results")
            .join(format!("bench-{}", started.compact))
    });
    let machine = machine_info();
    println!(
        "bench: {} rounds x {} s per metric; load {}; paths: {}",
        cfg.rounds,
        cfg.seconds,
        match cfg.pin {
            Some((c, s)) => format!("client on CPU {c}, server on CPU {s}"),
            None => "not pinned".into(),
        },
        runs.iter()
            .map(|r| match &r.unavailable {
                Some(_) => format!("{} (unavailable)", r.spec.id()),
                None => r.spec.id(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in runs.iter().filter(|r| r.unavailable.is_some()) {
        println!(
            "bench: {} unavailable: {}",
            r.spec.id(),
            r.unavailable.as_deref().unwrap_or("")
        );
    }

    let guard = CleanupGuard::new()?;
    let live = |t: Topo| {
        runs.iter()
            .any(|r| r.spec.topo == t && r.unavailable.is_none())
    };
    let ns = cmd::step("create namespaces", || {
        Namespaces::create(live(Topo::Pair), live(Topo::Sandbox))
    })?;
    if let Some([_, shim, _]) = &ns.pair {
        // Whatever connect left behind if a disconnect failed: detach removes netshim's pins
        // and state for the netns (a no-op when there are none). Runs before the netns goes.
        let _ = crate::topology::register(Action::Detach {
            netshim: netshim.clone(),
            netns: shim.clone(),
        });
    }

    let measure_start = Instant::now();
    let active: Vec<usize> = (0..runs.len())
        .filter(|&i| runs[i].unavailable.is_none())
        .collect();
    let mut progress = Progress::new(
        cfg.rounds as usize * active.len() * STEPS_PER_PATH,
        cfg.rounds,
    );
    for round in 1..=cfg.rounds {
        for i in round_order(&runs, &active, round) {
            let (bin, bin_caps) = match (&runs[i].netshim, &other) {
                (Some(_), Some((path, other_caps))) => (path, other_caps),
                _ => (&netshim, &caps),
            };
            let result = run_path(
                &mut runs[i],
                round,
                &cfg,
                &ns,
                bin_caps,
                bin,
                &standin,
                &mut progress,
            );
            for e in &result.errors {
                progress.note(&format!(
                    "bench: {} round {round}: {}",
                    runs[i].spec.id(),
                    e
                ));
            }
            runs[i].rounds.push(result);
        }
    }
    progress.finish();
    let setup_results = if want_setup {
        let other = other
            .as_ref()
            .map(|(path, _)| (path.as_path(), args.compare_label.as_str()));
        Some(sandbox_setup::run(
            &sandbox_setup::SetupConfig::new(args.quick),
            &netshim,
            other,
            &ns.tag,
        )?)
    } else {
        None
    };
    let rate_limit_results = if want_rate_limit {
        let seconds = if args.quick { 3 } else { cfg.seconds.max(5) };
        Some(cmd::step(
            "rate limit: netshim's shaper against kata's HTB",
            || rate_limit::run(&netshim, &standin, &ns.tag, cfg.rounds, seconds),
        )?)
    } else {
        None
    };
    let measure_secs = measure_start.elapsed().as_secs_f64();
    cmd::step("delete namespaces", || {
        drop(guard);
        Ok(())
    })?;

    let (offload_md, offload_diffs) = report::offload_markdown(&runs);
    let header = json!({
        "schema": 1,
        "tool": "cargo xtask bench",
        "started_utc": started.iso,
        "duration_s": (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "measure_duration_s": (measure_secs * 10.0).round() / 10.0,
        "params": {
            "quick": args.quick,
            "rounds": cfg.rounds,
            "seconds_per_metric": cfg.seconds,
            "order": "interleaved: for round { for path { setup, ping, tcp1, tcp1_rev, tcp4, udp64, udp64_rev, rr, rr_spin, prog, prog_rev, step profile (sandbox, perf), guard check; teardown } } (a +guard path right after its unguarded twin, before it in even rounds; with --compare-netshim each netshim path's twin right after it, before it in even rounds)",
            "tcp1_rev": "iperf3 -R, one stream: the server sends (sandbox: the guest, i.e. VM to pod)",
            "topology_lifecycle": "namespaces kept for the run; every path's links, datapath and stand-in built fresh per round and removed after it",
            "udp": "iperf3 -u -l 64 -b 0; received = server-reported packets - lost_packets over its seconds",
            "udp_rev": "the same with -R: the server (sandbox: the guest) sends, the client counts; the direction the source guard checks",
            "rr": "sockperf ping-pong --tcp -m 64 --full-rtt (full round trip), blocking sockets",
            "rr_spin": "the same with both ends busy-polling non-blocking sockets (server --nonblocked --timeout 0, client --nonblocked): no vCPU wake-ups in the figure",
            "cpu": "sum of user+nice+system+irq+softirq jiffies (/proc/stat, all CPUs) over the TCP 1-stream run / GB (1e9 bytes) received",
            "udp_cpu": "busy and softirq jiffies (/proc/stat, all CPUs; softirq tick-sampled) over the UDP 64 B run / packets received, in ns",
            "prog": "eBPF paths: one more UDP 64 B run with kernel.bpf_stats_enabled=1; delta run_time_ns / delta run_cnt of the netshim_redirect programs (bpftool prog show)",
            "prog_rev": "the same over a reverse (-R) UDP 64 B run: the guarded direction",
            "guard": "eBPF paths, after the runs: netshim stats --json endpoint 0 from_vm (the server's / guest's side): +guard paths must show mode enforce (stats, else status, else the connect/attach report; unguarded twins off or no guard), 0 packets dropped by the guard, at least the reverse UDP run's received packets counted; then a ping from an address the server does not own must go unanswered (+guard; counted as a guard drop when stats counts them) or answered (unguarded twin). +guard connect: --guard enforce --guard-mac <server eth0 MAC> --guard-allow <server IP>; +guard attach: no flag (enforce is the default); unguarded twins: connect's default (off), attach --guard off (when the netshim has a guard)",
            "pin": cfg.pin.map(|(c, s)| json!({"client_cpu": c, "server_cpu": s})),
            "step_profile": cfg.profile.then(|| json!({
                "rate_pps": datapath_profile::RATE_PPS,
                "perf_period_ns": datapath_profile::PERIOD_NS,
            })),
            "bridge": "bridge-nf-call-* set to 0 in the shim netns (where br_netfilter exists)",
            "pair_addresses": [paths::PAIR_CLIENT_ADDR, paths::PAIR_SERVER_ADDR],
            "sandbox_addresses": [paths::SANDBOX_CLIENT_ADDR, paths::SANDBOX_POD_ADDR],
            "namespaces_tag": ns.tag,
        },
        "machine": machine.clone(),
        "netshim_caps": caps.to_json(),
        "offload_differences": offload_diffs,
    });
    let mut json = report::to_json(&runs, header);
    if let Some(setup) = &setup_results {
        json["setup"] = setup.to_json();
    }
    if let Some(rl) = &rate_limit_results {
        json["rate_limit"] = rl.to_json();
    }
    let subtitle = format!(
        "{} · kernel {} · {} CPUs · {} round(s) × {} s · {}",
        machine["commit"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["nproc"],
        cfg.rounds,
        cfg.seconds,
        started.iso
    );
    let intro = format!(
        "# netshim bench\n\n\
         commit {commit} · kernel {kernel} · {nproc} CPUs ({cpu}) · {rounds} interleaved \
         round(s) × {secs} s per metric · {date} · load average before: {load}\n\n\
         Medians over rounds (± half the spread of the rounds, when there are several). TCP: \
         iperf3 receiver Gbps. UDP: packets of 64 B the server received per second \
         (iperf3 -b 0). RR: sockperf TCP ping-pong 64 B, full round trip, blocking \
         sockets (on a VM this includes vCPU wake-ups from idle); busy-poll: both ends spin \
         on non-blocking sockets, which leaves the network path's own cost. CPU: busy CPU \
         seconds (all CPUs, whole machine) per GB received during the 1-stream TCP run. UDP \
         CPU / softirq per pkt: busy and softirq CPU time (all CPUs, /proc/stat; softirq is \
         tick-sampled) per packet received during the UDP run. eBPF prog per pkt: the \
         netshim_redirect program's own run time (kernel.bpf_stats_enabled, in a separate \
         UDP run; reverse: the server, or guest, sends). `+guard`: the same path with \
         netshim's source guard in enforce mode; the guard checks only what the server \
         (pair: s0's side) or guest sends, i.e. the reverse runs. Load: {pin}.\n",
        commit = machine["commit"].as_str().unwrap_or("?"),
        kernel = machine["kernel"].as_str().unwrap_or("?"),
        nproc = machine["nproc"],
        cpu = machine["cpu_model"].as_str().unwrap_or("?"),
        rounds = cfg.rounds,
        secs = cfg.seconds,
        date = started.iso,
        load = machine["loadavg_start"].as_str().unwrap_or("?"),
        pin = match cfg.pin {
            Some((c, s)) => format!("client pinned to CPU {c}, server to CPU {s}"),
            None => "not pinned".into(),
        },
    );
    let mut md = if runs.is_empty() {
        // The setup section alone: no path tables, no offloads.
        format!(
            "# netshim bench\n\ncommit {} · kernel {} · {} CPUs ({}) · {} · load average \
             before: {}\n",
            machine["commit"].as_str().unwrap_or("?"),
            machine["kernel"].as_str().unwrap_or("?"),
            machine["nproc"],
            machine["cpu_model"].as_str().unwrap_or("?"),
            started.iso,
            machine["loadavg_start"].as_str().unwrap_or("?"),
        )
    } else {
        report::markdown(&runs, &intro, &offload_md)
    };
    let mut outputs = vec![("results.json", serde_json::to_string_pretty(&json)? + "\n")];
    if !runs.is_empty() {
        outputs.push(("chart.svg", report::svg(&runs, &subtitle)));
    }
    if let Some(setup) = &setup_results {
        md.push_str(&setup.markdown());
        outputs.push(("setup.svg", setup.svg(&subtitle)));
    }
    if let Some(rl) = &rate_limit_results {
        md.push_str(&rl.markdown());
    }
    outputs.push(("results.md", md.clone()));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let names: Vec<&str> = outputs.iter().map(|(n, _)| *n).collect();
    let names = names.join(",");
    for (name, text) in outputs {
        let path = out_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("\n{md}");
    println!(
        "bench: wrote {}/{{{names}}}; measuring took {}, the whole command {}",
        out_dir.display(),
        cmd::secs(Duration::from_secs_f64(measure_secs)),
        cmd::secs(wall.elapsed())
    );
    let mut failed: Vec<String> = runs
        .iter()
        .filter(|r| r.errors().next().is_some())
        .map(|r| r.spec.id())
        .collect();
    if let Some(setup) = &setup_results {
        if !setup.errors().is_empty() {
            failed.push(SETUP_SECTION.to_string());
        }
    }
    if rate_limit_results
        .as_ref()
        .is_some_and(|r| !r.errors.is_empty() || r.runs.is_empty())
    {
        failed.push(RATE_LIMIT_SECTION.to_string());
    }
    if !failed.is_empty() {
        bail!(
            "{} path(s) could not be set up or measured: {} (details above and in results.md)",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The order of one round: every active path, each A/B twin (or `+guard` twin) right after
/// its path, or right before it in even rounds (so that neither side always runs on a warmer
/// machine).
fn round_order(runs: &[PathRun], active: &[usize], round: u32) -> Vec<usize> {
    let mut order = Vec::with_capacity(active.len());
    let mut k = 0;
    while k < active.len() {
        let i = active[k];
        let twin = active.get(k + 1).copied().filter(|&j| {
            let (a, b) = (&runs[i], &runs[j]);
            b.twin_of == Some(a.spec.name)
                || (b.spec.guard_twin_of == Some(a.spec.name) && b.netshim == a.netshim)
        });
        match twin {
            Some(j) if round.is_multiple_of(2) => order.extend([j, i]),
            Some(j) => order.extend([i, j]),
            None => order.push(i),
        }
        k += if twin.is_some() { 2 } else { 1 };
    }
    order
}

/// `--paths rate-limit`: netshim's shaper against kata's HTB ([`rate_limit`]).
const RATE_LIMIT_SECTION: &str = "rate-limit";

/// `--paths setup`: the sandbox setup section ([`sandbox_setup`]).
const SETUP_SECTION: &str = "setup";

/// `--paths`: the paths it selects, and whether it selects the setup section (no filter:
/// every path and the section; only `setup`: no path).
fn select_sections(filter: &[String]) -> Result<(Vec<PathSpec>, bool)> {
    let want_setup = filter.is_empty() || filter.iter().any(|p| p == SETUP_SECTION);
    let paths: Vec<String> = filter
        .iter()
        .filter(|p| *p != SETUP_SECTION)
        .cloned()
        .collect();
    if !filter.is_empty() && paths.is_empty() {
        return Ok((Vec::new(), want_setup));
    }
    Ok((select_paths(&paths)?, want_setup))
}

/// `--paths` filter: ids (`pair/ebpf`) or topology names; everything when empty.
fn select_paths(filter: &[String]) -> Result<Vec<PathSpec>> {
    let all = paths::all_paths();
    if filter.is_empty() {
        return Ok(all);
    }
    for f in filter {
        ensure!(
            all.iter()
                .any(|p| p.id() == *f || p.topo.name() == f.as_str()),
            "unknown path {f:?}; known: pair, sandbox, {SETUP_SECTION}, {}",
            all.iter().map(PathSpec::id).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|p| {
            filter
                .iter()
                .any(|f| p.id() == *f || p.topo.name() == f.as_str())
        })
        .collect())
}

/// `cargo build --release` of netshim and vm-standin; returns their paths.
fn build() -> Result<(PathBuf, PathBuf)> {
    cmd::build_release_binaries()?;
    existing_binaries()
}

fn existing_binaries() -> Result<(PathBuf, PathBuf)> {
    cmd::release_binaries("is missing (build it, or drop --no-build)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_filter_takes_ids_and_topologies() {
        let ids = |f: &[&str]| -> Vec<String> {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            select_paths(&f).unwrap().iter().map(PathSpec::id).collect()
        };
        assert_eq!(
            ids(&["pair/ebpf", "sandbox/macvtap"]),
            ["pair/ebpf", "sandbox/macvtap"]
        );
        assert_eq!(ids(&["sandbox"]).len(), 6);
        assert_eq!(ids(&[]).len(), 13);
        assert!(select_paths(&["pair/nope".to_string()]).is_err());
    }

    #[test]
    fn the_setup_section_runs_alone_with_paths_or_by_default() {
        let sel = |f: &[&str]| {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            let (specs, setup) = select_sections(&f).unwrap();
            (specs.len(), setup)
        };
        assert_eq!(sel(&["setup"]), (0, true));
        assert_eq!(sel(&["sandbox", "setup"]), (6, true));
        assert_eq!(sel(&["pair/ebpf"]), (1, false));
        assert_eq!(sel(&[]), (13, true));
        assert!(select_sections(&["setup/x".to_string()]).is_err());
    }

    #[test]
    fn program_cost_is_measured_on_ebpf_paths_only() {
        let ebpf: Vec<String> = paths::all_paths()
            .into_iter()
            .filter(PathSpec::runs_netshim_ebpf)
            .map(|p| p.id())
            .collect();
        assert_eq!(
            ebpf,
            [
                "pair/ebpf",
                "pair/ebpf+guard",
                "pair/ebpf-peer",
                "pair/ebpf-peer+guard",
                "sandbox/ebpf",
                "sandbox/ebpf+guard",
                "sandbox/ebpf-peer",
                "sandbox/ebpf-peer+guard"
            ]
        );
    }

    #[test]
    fn ab_twins_run_next_to_their_path_alternating_first() {
        let specs = select_paths(&["pair/direct".into(), "pair/ebpf-peer".into()]).unwrap();
        let other = Path::new("/opt/netshim-base");
        let runs = vec![
            PathRun::new(specs[0].clone(), None),
            PathRun::new(specs[1].clone(), None),
            PathRun::twin(&specs[1], "base", other, None),
        ];
        assert!(!specs[0].uses_netshim() && specs[1].uses_netshim());
        assert_eq!(runs[2].spec.name, "ebpf-peer@base");
        assert_eq!(runs[2].netshim.as_deref(), Some(other));
        let active = [0, 1, 2];
        assert_eq!(round_order(&runs, &active, 1), [0, 1, 2]);
        assert_eq!(round_order(&runs, &active, 2), [0, 2, 1]);
        assert_eq!(round_order(&runs, &active, 3), [0, 1, 2]);
        // An unavailable twin is not in `active`: its path runs alone.
        assert_eq!(round_order(&runs, &[0, 1], 2), [0, 1]);
    }

    #[test]
    fn guard_twins_run_next_to_their_path_alternating_first() {
        let specs =
            select_paths(&["pair/ebpf-peer".into(), "pair/ebpf-peer+guard".into()]).unwrap();
        let runs: Vec<PathRun> = specs
            .iter()
            .map(|s| PathRun::new(s.clone(), None))
            .collect();
        assert_eq!(runs[1].spec.guard_twin_of, Some("ebpf-peer"));
        assert_eq!(round_order(&runs, &[0, 1], 1), [0, 1]);
        assert_eq!(round_order(&runs, &[0, 1], 2), [1, 0]);
        // With --compare-netshim each keeps its own A/B twin next to it.
        let other = Path::new("/opt/netshim-base");
        let runs = vec![
            PathRun::new(specs[0].clone(), None),
            PathRun::twin(&specs[0], "base", other, None),
            PathRun::new(specs[1].clone(), None),
            PathRun::twin(&specs[1], "base", other, None),
        ];
        assert_eq!(runs[3].spec.guard_twin_of, Some("ebpf-peer@base"));
        assert_eq!(round_order(&runs, &[0, 1, 2, 3], 2), [1, 0, 3, 2]);
    }
}
