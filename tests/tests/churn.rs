//! Churn: many attach/detach cycles leave nothing behind. A test binary of its own, so that
//! the open fds and RSS it measures are this test's alone.
//!
//! The size comes from the environment so CI runs a reduced version:
//! `NETSHIM_CHURN_CYCLES` (default 1000).

use std::{collections::BTreeSet, time::Instant};

use netshim::{
    datapath::TcBackend,
    netns::Netns,
    sandbox::{attach, detach, AttachOptions},
};
use netshim_tests::{
    leaks::{
        netshim_dirs, open_fds, prog_loaded, rss_kib, size_from_env, tcx_prog_ids, NetnsSnapshot,
    },
    netshim_cli::Pod,
    require_root, traffic,
};

/// glibc's allocator as the RSS check needs it: one arena (every attach and detach runs on
/// a thread of its own, and a thread that lands on a fresh arena makes RSS step up once by
/// what that arena keeps: one step of 18-20 MB was seen in some 1000-cycle runs on a loaded
/// machine, though nothing leaked), and a
/// fixed mmap threshold (a freed large mmap'd buffer otherwise raises the threshold, and
/// later buffers of that size stay in the heap). A leak still grows RSS cycle by cycle.
fn steady_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before the cycles start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Attach/detach cycles in this process through the library (so open fds and RSS are this
/// process's own), alternating the eBPF and mirred backends. Afterwards the netns must be as
/// it was, every program an eBPF attach loaded must be gone, and fds and RSS must be flat.
#[test]
fn churn_attach_detach_leaks_nothing() {
    require_root!();
    let cycles = size_from_env("NETSHIM_CHURN_CYCLES", 1000).max(20);
    steady_allocator();
    let pod = Pod::new("churn");
    let netns = Netns::resolve(pod.netns()).expect("resolve the sandbox netns");
    // TCX: the programs it loads are found by a TCX query, for the unload check below.
    let options = |backend| AttachOptions {
        backend,
        ebpf_attach: Some(netshim::datapath::AttachMode::Tcx),
        ..AttachOptions::default()
    };
    let before = NetnsSnapshot::take(&pod.sandbox);
    // The snapshot sees what attach makes (else "no leaks" below would prove nothing).
    attach(&netns, &options(TcBackend::Ebpf)).expect("attach");
    let attached = NetnsSnapshot::take(&pod.sandbox).diff(&before);
    detach(&netns).expect("detach");
    for what in [
        "leaked link: tap0_kata",
        "leaked tcx: eth0 tcx/ingress",
        "leaked tcx: tap0_kata",
    ] {
        assert!(
            attached.iter().any(|l| l.starts_with(what)),
            "the snapshot misses {what:?}: {attached:#?}"
        );
    }

    let cycle = |i: usize| -> Option<u64> {
        let backend = if i.is_multiple_of(2) {
            TcBackend::Ebpf
        } else {
            TcBackend::Mirred
        };
        let report = attach(&netns, &options(backend))
            .unwrap_or_else(|e| panic!("cycle {i}: attach ({backend:?}): {e}"));
        assert_eq!(report.endpoints.len(), 1);
        // Programs this attach loaded: checked for unloading at the end. Every 20th cycle, to
        // keep the query's cost out of the loop.
        let prog = (backend == TcBackend::Ebpf && i.is_multiple_of(20))
            .then(|| tcx_prog_ids(&pod.sandbox))
            .and_then(|ids| ids.first().copied());
        detach(&netns).unwrap_or_else(|e| panic!("cycle {i}: detach: {e}"));
        prog
    };

    // Warm-up: the allocator, rtnetlink and aya reach their steady state.
    let mut progs = BTreeSet::new();
    for i in 0..10 {
        progs.extend(cycle(i));
    }
    let (fds_start, rss_start) = (open_fds(), rss_kib());
    let started = Instant::now();
    for i in 10..cycles {
        progs.extend(cycle(i));
    }
    let elapsed = started.elapsed();
    let (fds_end, rss_end) = (open_fds(), rss_kib());

    let after = NetnsSnapshot::take(&pod.sandbox);
    let leaks = after.diff(&before);
    let dirs = netshim_dirs(netns.cookie);
    let loaded: Vec<u64> = progs
        .iter()
        .copied()
        .filter(|&id| prog_loaded(id))
        .collect();
    println!(
        "churn: {cycles} attach/detach cycles (ebpf and mirred alternating) in {:.1} s \
         ({:.1} ms per cycle); leaked links/addresses/qdiscs/filters/TCX links: {}, pin dirs, state \
         dirs and lock files left: {}, programs still loaded: {} of {} sampled; open fds {fds_start} -> \
         {fds_end}; RSS {rss_start} -> {rss_end} KiB",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / (cycles - 10) as f64,
        leaks.len(),
        dirs.len(),
        loaded.len(),
        progs.len()
    );
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
    assert!(dirs.is_empty(), "left behind: {dirs:?}");
    assert!(!progs.is_empty(), "no program ids were sampled");
    assert!(loaded.is_empty(), "programs still loaded: {loaded:?}");
    assert!(
        fds_end <= fds_start,
        "open fds grew from {fds_start} to {fds_end}"
    );
    // Flat: allow allocator noise, not per-cycle growth (1000 cycles leaking even 8 KiB each
    // would be 8 MiB).
    assert!(
        rss_end <= rss_start + 4096,
        "RSS grew from {rss_start} to {rss_end} KiB"
    );

    // The netns still works with netshim after all that.
    attach(&netns, &options(TcBackend::Ebpf)).expect("final attach");
    let crossed = traffic::probe(&pod, "tap0_kata", 5);
    detach(&netns).expect("final detach");
    assert_eq!(
        crossed,
        traffic::Forwarded {
            to_vm: 5,
            from_vm: 5
        }
    );
}
