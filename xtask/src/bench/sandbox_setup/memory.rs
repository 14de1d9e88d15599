//! Kernel memory per attached sandbox: `n` pods attached one after the other, then every BPF
//! object each one uses, by id: the maps pinned in its pin directory, the programs on its
//! devices (clsact filters from `bpftool net show` in its netns, TCX links pinned in its
//! directory, programs pinned there, programs that use its pinned maps) and every map those
//! programs use (unpinned ones too, e.g. aya-log's AYA_LOGS ring). Each object's `memlock`
//! (its fdinfo, as bpftool reports it from BPF_OBJ_GET_INFO) is counted once; an object used
//! by several of the pods is "shared" and reported apart, not in the per-sandbox figure.

use super::pod::Node;
use super::{attach_cmd, detach_cmd, interleaved, timed, Row, Variant};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// A BPF object: ("map" | "prog", id).
type ObjId = (&'static str, u64);

#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub kind: &'static str,
    pub name: String,
    pub bytes: u64,
}

#[derive(Default)]
pub struct Memory {
    /// Bytes of the objects only that sandbox uses, per sandbox.
    pub per_sandbox: Vec<u64>,
    /// The first sandbox's own objects (the breakdown).
    pub breakdown: Vec<Object>,
    /// Objects used by more than one sandbox, each once.
    pub shared: Vec<Object>,
}

pub fn run(node: &Node, variants: &[Variant], n: usize) -> Vec<Row<Memory>> {
    interleaved(variants, 1, "memory", |v, out| measure(node, v, n, out))
}

fn measure(node: &Node, v: &Variant, n: usize, out: &mut Memory) -> Result<()> {
    let mut pods = node.pods(n, 4)?;
    let result = (|| -> Result<()> {
        let mut pin_dirs = Vec::new();
        for p in &mut pods {
            p.arm_detach(&v.bin.path);
            let (_, report) = timed(&mut attach_cmd(v, &p.netns))?;
            let report: Value = serde_json::from_str(&report).context("attach --json")?;
            let dir = report["pin_dir"]
                .as_str()
                .context("attach --json reports no pin_dir")?
                .to_string();
            pin_dirs.push(dir);
        }
        let objects = Snapshot::take()?;
        let uses = pods
            .iter()
            .zip(&pin_dirs)
            .map(|(p, dir)| objects.used_by(dir, &p.netns))
            .collect::<Result<Vec<_>>>()?;
        let (per, shared) = split(&uses);
        out.per_sandbox = per
            .iter()
            .map(|own| own.iter().map(|o| objects.bytes(o)).sum())
            .collect();
        let biggest_first =
            |objs: &mut Vec<Object>| objs.sort_by_key(|o| std::cmp::Reverse(o.bytes));
        out.breakdown = per.first().map_or(Vec::new(), |own| {
            own.iter().map(|o| objects.describe(o)).collect()
        });
        biggest_first(&mut out.breakdown);
        out.shared = shared.iter().map(|o| objects.describe(o)).collect();
        biggest_first(&mut out.shared);
        for p in &mut pods {
            timed(&mut detach_cmd(&v.bin.path, &p.netns))?;
            p.detached();
        }
        Ok(())
    })();
    for p in pods {
        p.delete()?;
    }
    result
}

/// Per sandbox the objects only it uses, and the objects several use.
fn split(uses: &[BTreeSet<ObjId>]) -> (Vec<BTreeSet<ObjId>>, BTreeSet<ObjId>) {
    let mut count: BTreeMap<ObjId, usize> = BTreeMap::new();
    for u in uses {
        for o in u {
            *count.entry(*o).or_default() += 1;
        }
    }
    let shared: BTreeSet<ObjId> = count
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(o, _)| *o)
        .collect();
    let own = uses
        .iter()
        .map(|u| u.difference(&shared).copied().collect())
        .collect();
    (own, shared)
}

/// bpftool's view of every map, program and link on the host (`-f`: with their pins).
struct Snapshot {
    maps: BTreeMap<u64, Value>,
    progs: BTreeMap<u64, Value>,
    links: Vec<Value>,
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let out = crate::cmd::output(Command::new("bpftool").args(args))?;
    serde_json::from_str(&out).with_context(|| format!("parsing `bpftool {}`", args.join(" ")))
}

fn by_id(v: Value) -> BTreeMap<u64, Value> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| Some((o["id"].as_u64()?, o.clone())))
        .collect()
}

fn pinned_under(o: &Value, dir: &str) -> bool {
    o["pinned"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|p| p.starts_with(&format!("{dir}/")))
}

fn ids(v: &Value) -> impl Iterator<Item = u64> + '_ {
    v.as_array().into_iter().flatten().filter_map(Value::as_u64)
}

impl Snapshot {
    fn take() -> Result<Snapshot> {
        Ok(Snapshot {
            maps: by_id(bpftool(&["-j", "-f", "map", "show"])?),
            progs: by_id(bpftool(&["-j", "-f", "prog", "show"])?),
            links: bpftool(&["-j", "-f", "link", "show"])?
                .as_array()
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// The objects of the sandbox whose pin directory is `dir` and netns `netns`.
    fn used_by(&self, dir: &str, netns: &str) -> Result<BTreeSet<ObjId>> {
        let maps: BTreeSet<u64> = self
            .maps
            .iter()
            .filter(|(_, m)| pinned_under(m, dir))
            .map(|(id, _)| *id)
            .collect();
        let mut progs: BTreeSet<u64> = self
            .progs
            .iter()
            .filter(|(_, p)| pinned_under(p, dir) || ids(&p["map_ids"]).any(|m| maps.contains(&m)))
            .map(|(id, _)| *id)
            .collect();
        progs.extend(
            self.links
                .iter()
                .filter(|l| pinned_under(l, dir))
                .filter_map(|l| l["prog_id"].as_u64()),
        );
        let net = crate::cmd::output(&mut crate::topology::exec_in(
            netns,
            "bpftool",
            &["-j", "net", "show"],
        ))?;
        let net: Value = serde_json::from_str(&net).context("parsing `bpftool net show`")?;
        for hook in net.as_array().into_iter().flatten() {
            for kind in ["tc", "xdp"] {
                progs.extend(
                    hook[kind]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["id"].as_u64()),
                );
            }
        }
        let mut all: BTreeSet<ObjId> = maps.iter().map(|&m| ("map", m)).collect();
        for p in &progs {
            all.insert(("prog", *p));
            if let Some(prog) = self.progs.get(p) {
                all.extend(ids(&prog["map_ids"]).map(|m| ("map", m)));
            }
        }
        Ok(all)
    }

    fn get(&self, o: &ObjId) -> Option<&Value> {
        match o.0 {
            "map" => self.maps.get(&o.1),
            _ => self.progs.get(&o.1),
        }
    }

    fn bytes(&self, o: &ObjId) -> u64 {
        self.get(o)
            .and_then(|v| v["bytes_memlock"].as_u64())
            .unwrap_or(0)
    }

    fn describe(&self, o: &ObjId) -> Object {
        Object {
            kind: o.0,
            name: self
                .get(o)
                .and_then(|v| v["name"].as_str())
                .unwrap_or("?")
                .to_string(),
            bytes: self.bytes(o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_several_sandboxes_are_shared_and_counted_once() {
        let a: BTreeSet<ObjId> = [("map", 1), ("prog", 9), ("map", 100)].into();
        let b: BTreeSet<ObjId> = [("map", 2), ("prog", 9), ("map", 100)].into();
        let c: BTreeSet<ObjId> = [("map", 3), ("prog", 10)].into();
        let (own, shared) = split(&[a, b, c]);
        assert_eq!(shared, [("map", 100), ("prog", 9)].into());
        assert_eq!(own[0], [("map", 1)].into());
        assert_eq!(own[2], [("map", 3), ("prog", 10)].into());
    }

    #[test]
    fn pins_match_the_directory_not_a_prefix_of_its_name() {
        let m = serde_json::json!({"pinned": ["/sys/fs/bpf/netshim/netns-12/counters"]});
        assert!(pinned_under(&m, "/sys/fs/bpf/netshim/netns-12"));
        assert!(!pinned_under(&m, "/sys/fs/bpf/netshim/netns-1"));
        assert!(!pinned_under(&serde_json::json!({}), "/x"));
    }
}
