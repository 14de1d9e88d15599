//! Many sandboxes at once, as a node does at boot or after a runtime restart: N fresh pods
//! (made before the clock starts) attached by `concurrency` workers, each running one
//! `netshim attach` after the other; then detached the same way. Wall time from the first
//! spawn to the last exit, and sandboxes/s. Variants in rotated order per round.

use super::latency::ms;
use super::pod::{parallel, Node, Pod};
use super::{attach_cmd, detach_cmd, interleaved, timed, Row, SetupConfig, Variant};
use anyhow::Result;
use std::sync::Mutex;
use std::time::Instant;

/// One variant over the rounds.
#[derive(Default)]
pub struct Concurrent {
    /// Per round: wall seconds for all attaches, all detaches.
    pub attach_s: Vec<f64>,
    pub detach_s: Vec<f64>,
    /// Every call's own wall time (ms), over all rounds.
    pub attach_call_ms: Vec<f64>,
    pub detach_call_ms: Vec<f64>,
}

pub fn run(node: &Node, variants: &[Variant], cfg: &SetupConfig) -> Vec<Row<Concurrent>> {
    interleaved(variants, cfg.concurrent_rounds, "concurrent", |v, out| {
        one_round(node, v, cfg, out)
    })
}

fn one_round(node: &Node, v: &Variant, cfg: &SetupConfig, out: &mut Concurrent) -> Result<()> {
    let mut pods = node.pods(cfg.concurrent, 4)?;
    for p in &mut pods {
        p.arm_detach(&v.bin.path);
    }
    let result = (|| -> Result<()> {
        let (wall, calls) = all_at_once(&pods, cfg.concurrency, |p| attach_cmd(v, &p.netns))?;
        out.attach_s.push(wall);
        out.attach_call_ms.extend(calls);
        let (wall, calls) = all_at_once(&pods, cfg.concurrency, |p| {
            detach_cmd(&v.bin.path, &p.netns)
        })?;
        out.detach_s.push(wall);
        out.detach_call_ms.extend(calls);
        Ok(())
    })();
    if result.is_ok() {
        pods.iter_mut().for_each(Pod::detached);
    }
    let deleted: Vec<Result<()>> = {
        let pods = Mutex::new(pods.into_iter().map(Some).collect::<Vec<_>>());
        let n = pods.lock().map(|p| p.len()).unwrap_or(0);
        parallel(n, 4, |i| {
            let pod = pods.lock().unwrap_or_else(|p| p.into_inner())[i].take();
            pod.map_or(Ok(()), Pod::delete)
        })
    };
    result?;
    deleted.into_iter().collect()
}

/// Runs `make(pod)` for every pod, `workers` at a time: (wall s, each call's ms).
fn all_at_once(
    pods: &[Pod],
    workers: usize,
    make: impl Fn(&Pod) -> std::process::Command + Sync,
) -> Result<(f64, Vec<f64>)> {
    let start = Instant::now();
    let calls = parallel(pods.len(), workers, |i| {
        timed(&mut make(&pods[i])).map(|(d, _)| ms(d))
    });
    let wall = start.elapsed().as_secs_f64();
    let calls: Result<Vec<f64>> = calls.into_iter().collect();
    Ok((wall, calls?))
}
