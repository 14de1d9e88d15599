//! One path in one round: build it, run the seven loads, the program-cost runs and (sandbox
//! paths) the step profile towards the VM, tear it down.

use super::*;

/// setup + the seven load runs + the two program-cost runs + the step profile.
pub(super) const STEPS_PER_PATH: usize = 11;

#[allow(clippy::too_many_arguments)]
pub(super) fn run_path(
    run: &mut PathRun,
    round: u32,
    cfg: &Config,
    ns: &Namespaces,
    caps: &Caps,
    netshim: &Path,
    standin: &Path,
    progress: &mut Progress,
) -> RoundResult {
    let spec = run.spec.clone();
    let id = spec.id();
    let start = Instant::now();
    let mut result = RoundResult {
        round,
        ..Default::default()
    };
    progress.step(round, &id, "setup");
    let live = match paths::setup(&spec, ns, caps, netshim, standin) {
        Ok(live) => live,
        Err(e) => {
            result.errors.push(format!("setup: {e:#}"));
            progress.skip(STEPS_PER_PATH - 1);
            result.seconds = start.elapsed().as_secs_f64();
            return result;
        }
    };
    run.setup_output = live.setup_output.clone();
    let ep = live.endpoints(cfg.pin);
    if let Err(e) = measure::wait_reachable(&ep, Duration::from_secs(5)) {
        result.errors.push(format!("reachability: {e:#}"));
        progress.skip(STEPS_PER_PATH - 1);
    } else {
        if round == 1 {
            for dev in &live.devices {
                let label = dev.label();
                match paths::offloads(dev) {
                    Ok(map) => {
                        run.offloads.insert(label, map);
                    }
                    Err(e) => result.errors.push(format!("ethtool {label}: {e:#}")),
                }
            }
        }
        let vm_queue = vm_queue::vmm_device(&live.devices);
        measure_path(
            &ep,
            vm_queue,
            cfg.seconds,
            &mut result,
            progress,
            round,
            &id,
        );
        for (test, key, what) in [
            (IperfTest::Udp64, report::PROG, "prog"),
            (IperfTest::Udp64Reverse, report::PROG_REVERSE, "prog_rev"),
        ] {
            progress.step(round, &id, &format!("eBPF program cost ({what})"));
            if !spec.runs_netshim_ebpf() {
                continue;
            }
            match prog_cost(&ep, test, cfg.seconds) {
                Ok(Some(ns)) => {
                    result.values.insert(key, ns);
                }
                Ok(None) => result
                    .errors
                    .push(format!("{what}: no netshim_redirect program ran")),
                Err(e) => result.errors.push(format!("{what}: {e:#}")),
            }
        }
        progress.step(round, &id, "step profile towards the VM");
        if let Some(queue) = vm_queue.filter(|_| cfg.profile) {
            match datapath_profile::profile(&ep, queue, cfg.seconds) {
                Ok(steps) => result.extra.extend(steps),
                Err(e) => result.errors.push(format!("step profile: {e:#}")),
            }
        }
        if spec.runs_netshim_ebpf() {
            guard::check(netshim, &live, spec.guarded(), &mut result);
        }
        if let Some(stats_ns) = &live.stats_netns {
            run.netshim_stats = Some(paths::stats(netshim, stats_ns));
        }
    }
    match live.teardown() {
        Ok(summary) => run.standin = summary,
        Err(e) => result.errors.push(format!("teardown: {e:#}")),
    }
    result.seconds = start.elapsed().as_secs_f64();
    result
}

#[allow(clippy::too_many_arguments)]
pub(super) fn measure_path(
    ep: &measure::Endpoints,
    vm_queue: Option<&paths::Device>,
    seconds: u32,
    result: &mut RoundResult,
    progress: &mut Progress,
    round: u32,
    id: &str,
) {
    progress.step(round, id, "TCP 1 stream");
    let hz = clock_ticks();
    let tcp1 = (|| {
        let before = CpuJiffies::now()?;
        let r = iperf(ep, IperfTest::Tcp { streams: 1 }, seconds)?;
        Ok::<_, anyhow::Error>((r, CpuJiffies::now()?.since(before).busy))
    })();
    match tcp1 {
        Ok((r, jiffies)) => {
            result.values.insert(report::TCP1, r.received_bps / 1e9);
            if r.received_bytes > 0.0 {
                result
                    .values
                    .insert(report::CPU, jiffies as f64 / hz / (r.received_bytes / 1e9));
            }
            result.extra.insert("tcp1_cpu_s", jiffies as f64 / hz);
            result.extra.insert("tcp1_bytes", r.received_bytes);
            if let Some(n) = r.retransmits {
                result.extra.insert("tcp1_retransmits", n as f64);
            }
        }
        Err(e) => result.errors.push(format!("tcp1: {e:#}")),
    }

    progress.step(round, id, "TCP 1 stream reverse");
    match iperf(ep, IperfTest::TcpReverse, seconds) {
        Ok(r) => {
            result
                .values
                .insert(report::TCP1_REVERSE, r.received_bps / 1e9);
            if let Some(n) = r.retransmits {
                result.extra.insert("tcp1_rev_retransmits", n as f64);
            }
        }
        Err(e) => result.errors.push(format!("tcp1_rev: {e:#}")),
    }

    progress.step(round, id, "TCP 4 streams");
    match iperf(ep, IperfTest::Tcp { streams: 4 }, seconds) {
        Ok(r) => {
            result.values.insert(report::TCP4, r.received_bps / 1e9);
            if let Some(n) = r.retransmits {
                result.extra.insert("tcp4_retransmits", n as f64);
            }
        }
        Err(e) => result.errors.push(format!("tcp4: {e:#}")),
    }

    progress.step(round, id, "UDP 64 B");
    // The VMM's queue is read around the run; a failed read costs only its figures.
    let queue_before = vm_queue.map(vm_queue::read);
    let udp = (|| {
        let before = CpuJiffies::now()?;
        let r = iperf(ep, IperfTest::Udp64, seconds)?;
        Ok::<_, anyhow::Error>((r, CpuJiffies::now()?.since(before)))
    })();
    match (vm_queue.map(vm_queue::read), queue_before) {
        (Some(Ok(after)), Some(Ok(before))) if udp.is_ok() => {
            let q = after.since(before);
            let per_s = |n: u64| n as f64 / f64::from(seconds.max(1)) / 1e3;
            result
                .extra
                .insert(report::UDP64_VM_QUEUE, per_s(q.delivered));
            result
                .extra
                .insert(report::UDP64_VM_DROPPED, per_s(q.dropped));
        }
        (Some(Err(e)), _) | (_, Some(Err(e))) => result.errors.push(format!("vm queue: {e:#}")),
        _ => {}
    }
    match udp {
        Ok((r, cpu)) => {
            if let Some(pps) = r.udp_received_pps {
                result.values.insert(report::UDP64, pps / 1e3);
            }
            if let Some(packets) = r.udp_received_packets.filter(|&p| p > 0.0) {
                let ns_per_jiffy = 1e9 / hz;
                result
                    .values
                    .insert(report::UDP_CPU, cpu.busy as f64 * ns_per_jiffy / packets);
                result.values.insert(
                    report::UDP_SOFTIRQ,
                    cpu.softirq as f64 * ns_per_jiffy / packets,
                );
            }
            if let Some(pps) = r.udp_sent_pps {
                result.extra.insert("udp64_sent_kpps", pps / 1e3);
            }
        }
        Err(e) => result.errors.push(format!("udp64: {e:#}")),
    }

    progress.step(round, id, "UDP 64 B reverse");
    match iperf(ep, IperfTest::Udp64Reverse, seconds) {
        Ok(r) => {
            if let Some(pps) = r.udp_received_pps {
                result.values.insert(report::UDP64_REVERSE, pps / 1e3);
            }
            if let Some(packets) = r.udp_received_packets {
                result.extra.insert("udp64_rev_packets", packets);
            }
            if let Some(pps) = r.udp_sent_pps {
                result.extra.insert("udp64_rev_sent_kpps", pps / 1e3);
            }
        }
        Err(e) => result.errors.push(format!("udp64_rev: {e:#}")),
    }

    for wait in [Wait::Block, Wait::Spin] {
        let (label, name) = match wait {
            Wait::Block => ("TCP RR", "rr"),
            Wait::Spin => ("TCP RR busy-poll", "rr_spin"),
        };
        progress.step(round, id, label);
        let rr = sockperf_server(ep, wait).and_then(|server| {
            let r = sockperf(ep, seconds, wait);
            drop(server);
            r
        });
        match (rr, wait) {
            (Ok(r), Wait::Block) => {
                result.values.insert(report::RR_P50, r.p50_us);
                result.values.insert(report::RR_P99, r.p99_us);
                result.extra.insert("rr_avg_us", r.avg_us);
                if let Some(n) = r.observations {
                    result.extra.insert("rr_observations", n as f64);
                }
            }
            (Ok(r), Wait::Spin) => {
                result.values.insert(report::RR_SPIN_P50, r.p50_us);
                result.extra.insert("rr_spin_p99_us", r.p99_us);
                result.extra.insert("rr_spin_avg_us", r.avg_us);
                if let Some(n) = r.observations {
                    result.extra.insert("rr_spin_observations", n as f64);
                }
            }
            (Err(e), _) => result.errors.push(format!("{name}: {e:#}")),
        }
    }
}

/// The netshim_redirect program's own ns per packet over a UDP 64 B run (`test`: client to
/// server, or the reverse, which crosses the source guard), timed by the kernel
/// (`kernel.bpf_stats_enabled` on for this run only). None when no netshim program ran.
pub(super) fn prog_cost(
    ep: &measure::Endpoints,
    test: IperfTest,
    seconds: u32,
) -> Result<Option<f64>> {
    let _stats = BpfStats::enable()?;
    let before = ProgRuns::now()?;
    iperf(ep, test, seconds)?;
    Ok(ProgRuns::now()?.ns_per_run_since(before))
}
