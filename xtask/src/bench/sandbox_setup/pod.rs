//! Throwaway pods as a CNI leaves them for the runtime: a fresh netns whose `eth0` is one end
//! of a veth pair (addresses set, up), the other end (`v<N>`, up, addressed) in a shared
//! "node" netns that stands for the host. Every netns is registered for deletion before it
//! exists, and every attach for a `netshim detach` before it runs (cleanup runs even on
//! Ctrl-C); nothing here touches the root netns.

use crate::cmd;
use crate::topology::{self, Action, Token};
use anyhow::{ensure, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The netns holding the node side of every pod's veth.
pub struct Node {
    pub name: String,
    tag: String,
    next: AtomicU32,
}

/// One pod netns with its `eth0`.
pub struct Pod {
    pub netns: String,
    /// Index of the pod (its addresses derive from it).
    pub index: u32,
    detach: Option<(Token, PathBuf)>,
}

/// `ip -n NETNS -batch -` fed `lines`.
pub fn ip_batch(netns: &str, lines: &[String]) -> Result<()> {
    let mut ip = Command::new("ip");
    ip.args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = ip.spawn().context("starting ip -batch")?;
    child
        .stdin
        .take()
        .context("ip -batch stdin")?
        .write_all((lines.join("\n") + "\n").as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "ip -n {netns} -batch ({}): {}",
        lines.join("; "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Pod `index`'s /30: 10.210.0.0/16 holds 16384 of them (the pod side is .2 of its block).
pub fn pod_addrs(index: u32) -> (String, String) {
    let block = (index % 16384) * 4;
    let (hi, lo) = (block / 256, block % 256);
    (
        format!("10.210.{hi}.{}/30", lo + 1),
        format!("10.210.{hi}.{}/30", lo + 2),
    )
}

impl Node {
    /// Needs a live [`topology::CleanupGuard`] (the netns is registered for deletion).
    pub fn create(tag: &str) -> Result<Node> {
        let name = format!("{tag}-node");
        topology::add_netns(&name)?;
        Ok(Node {
            name,
            tag: tag.to_string(),
            next: AtomicU32::new(0),
        })
    }

    /// A fresh pod netns with eth0 (veth, addressed, up) whose peer is in the node netns.
    pub fn pod(&self) -> Result<Pod> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let netns = format!("{}-p{index}", self.tag);
        let node_ifname = format!("v{index}");
        let _ = topology::register(Action::DeleteNetns(netns.clone()));
        cmd::output(Command::new("ip").args(["netns", "add", &netns]))?;
        cmd::output(&mut topology::ip(
            &self.name,
            &[
                "link",
                "add",
                &node_ifname,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ],
        ))?;
        let (node_addr, pod_addr) = pod_addrs(index);
        ip_batch(
            &netns,
            &[
                "link set lo up".into(),
                format!("addr add {pod_addr} dev eth0"),
                "link set eth0 up".into(),
            ],
        )?;
        ip_batch(
            &self.name,
            &[
                format!("addr add {node_addr} dev {node_ifname}"),
                format!("link set {node_ifname} up"),
            ],
        )?;
        Ok(Pod {
            netns,
            index,
            detach: None,
        })
    }

    /// `n` fresh pods, made by `threads` threads.
    pub fn pods(&self, n: usize, threads: usize) -> Result<Vec<Pod>> {
        let made: Vec<Result<Pod>> = parallel(n, threads, |_| self.pod());
        made.into_iter().collect()
    }
}

impl Pod {
    /// Register `netshim detach` of this pod (before an attach that may leave something).
    pub fn arm_detach(&mut self, netshim: &Path) {
        if self.detach.is_none() {
            let token = topology::register(Action::Detach {
                netshim: netshim.to_path_buf(),
                netns: self.netns.clone(),
            });
            self.detach = Some((token, netshim.to_path_buf()));
        }
    }

    /// The pod's netns was detached by the main flow.
    pub fn detached(&mut self) {
        if let Some((token, _)) = self.detach.take() {
            topology::disarm(token);
        }
    }

    /// Delete the netns (its veth pair goes with it).
    pub fn delete(mut self) -> Result<()> {
        // Whatever a failed detach left (pins, state): detach once more before the netns goes.
        if let Some((token, netshim)) = self.detach.take() {
            let _ = cmd::capture(Command::new(netshim).args(["detach", "--netns", &self.netns]));
            topology::disarm(token);
        }
        cmd::output(Command::new("ip").args(["netns", "del", &self.netns]))?;
        Ok(())
    }
}

/// `f(0..n)` on `threads` threads pulling the next index from a shared counter; results in
/// index order.
pub fn parallel<T: Send>(n: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicU32::new(0);
    let results: std::sync::Mutex<Vec<Option<T>>> =
        std::sync::Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    break;
                }
                let r = f(i);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every index ran"))
        .collect()
}
