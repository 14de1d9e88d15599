//! attach/detach latency: per round, every variant in rotated order, each on a fresh pod:
//! `attach` timed from spawn to exit, then `detach` likewise, then the pod is deleted.

use super::pod::Node;
use super::{attach_cmd, detach_cmd, interleaved, timed, Row, Variant};
use anyhow::Result;

/// The samples of one variant, in ms.
#[derive(Default)]
pub struct Latency {
    pub attach_ms: Vec<f64>,
    pub detach_ms: Vec<f64>,
}

pub fn run(node: &Node, variants: &[Variant], rounds: u32) -> Vec<Row<Latency>> {
    interleaved(variants, rounds, "latency", |v, out: &mut Latency| {
        let (a, d) = sample(node, v)?;
        out.attach_ms.push(a);
        out.detach_ms.push(d);
        Ok(())
    })
}
fn sample(node: &Node, v: &Variant) -> Result<(f64, f64)> {
    let mut pod = node.pod()?;
    pod.arm_detach(&v.bin.path);
    let result = (|| -> Result<(f64, f64)> {
        let (attach, _) = timed(&mut attach_cmd(v, &pod.netns))?;
        let (detach, _) = timed(&mut detach_cmd(&v.bin.path, &pod.netns))?;
        pod.detached();
        Ok((ms(attach), ms(detach)))
    })();
    pod.delete()?;
    result
}

pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
