//! attach/detach latency: per round, every variant in rotated order, each on a fresh pod:
//! `attach` timed from spawn to exit, then `detach` likewise, then the pod is deleted.

use super::pod::Node;
use super::{attach_cmd, detach_cmd, rotated, timed, Variant};
use anyhow::Result;

/// The samples of one variant, in ms.
#[derive(Default)]
pub struct Samples {
    pub id: String,
    pub mode: &'static str,
    pub other_binary: bool,
    pub attach_ms: Vec<f64>,
    pub detach_ms: Vec<f64>,
    pub errors: Vec<String>,
}

pub fn run(node: &Node, variants: &[Variant], rounds: u32) -> Vec<Samples> {
    let mut out: Vec<Samples> = variants
        .iter()
        .map(|v| Samples {
            id: v.id(),
            mode: v.mode.name(),
            other_binary: v.bin.label.is_some(),
            ..Default::default()
        })
        .collect();
    let order: Vec<usize> = (0..variants.len()).collect();
    for round in 1..=rounds {
        for i in rotated(&order, round) {
            let v = &variants[i];
            match sample(node, v) {
                Ok((a, d)) => {
                    out[i].attach_ms.push(a);
                    out[i].detach_ms.push(d);
                }
                Err(e) => {
                    println!("setup: {} round {round}: {e:#}", v.id());
                    out[i].errors.push(format!("round {round}: {e:#}"));
                }
            }
        }
        println!("setup: latency round {round}/{rounds} done");
    }
    out
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
