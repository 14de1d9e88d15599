//! Whether the bench's traffic really crossed netshim's source guard on a `+guard` path (and
//! did not on its twin): without that check a guarded figure could as well measure a guard
//! that is off, or one that dropped part of the load.
//!
//! After a path's measurements, from `netshim stats --json` (endpoint 0, `from_vm`: what the
//! server or guest sent): the guard's mode is `enforce` (`off` on the unguarded twin), as
//! stats, else `status --json`, else the connect/attach report (each reads it back from the
//! maps) says; none of the load was refused
//! (every `dropped` reason of the guard is 0, when stats counts them), and the program counted
//! at least every packet the client received in the reverse UDP run. Then a probe: one ping
//! from an address the server does not own. Through the guard it gets no answer and is
//! counted (when stats counts); on the unguarded twin it is answered (so the probe itself
//! works).

use crate::bench::paths::{self, Live};
use crate::bench::report::RoundResult;
use crate::topology;
use anyhow::{Context, Result};
use netshim_common::GUARD_REASONS;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// What `stats --json` says about endpoint 0's `from_vm` direction.
#[derive(Debug, Default, PartialEq)]
pub struct FromVm {
    pub packets: u64,
    /// `from_vm.guard.mode`, when stats reports the guard.
    pub mode: Option<String>,
    /// The sum of the guard's `dropped` reasons; None when stats does not count them.
    pub guard_dropped: Option<u64>,
}

impl FromVm {
    pub fn parse(stats: &Value) -> Result<FromVm> {
        let from_vm = &stats[0]["endpoints"][0]["from_vm"];
        let packets = from_vm["packets"]
            .as_u64()
            .with_context(|| format!("no endpoints[0].from_vm.packets in stats: {stats}"))?;
        let dropped: Vec<u64> = GUARD_REASONS
            .iter()
            .filter_map(|r| from_vm["dropped"][*r].as_u64())
            .collect();
        Ok(FromVm {
            packets,
            mode: from_vm["guard"]["mode"].as_str().map(str::to_string),
            guard_dropped: (!dropped.is_empty()).then(|| dropped.iter().sum()),
        })
    }
}

/// The checks of the module docs, for an eBPF path after its measurements: problems go into
/// `result.errors`, the figures into `result.extra` (`guard_*`).
pub fn check(netshim: &Path, live: &Live, guarded: bool, result: &mut RoundResult) {
    if let Err(e) = check_inner(netshim, live, guarded, result) {
        result.errors.push(format!("guard check: {e:#}"));
    }
}

fn check_inner(netshim: &Path, live: &Live, guarded: bool, result: &mut RoundResult) -> Result<()> {
    let netns = live.stats_netns.as_deref().context("no netns for stats")?;
    let before = FromVm::parse(&paths::stats(netshim, netns))?;
    result
        .extra
        .insert("guard_from_vm_packets", before.packets as f64);
    if let Some(n) = before.guard_dropped {
        result.extra.insert("guard_dropped", n as f64);
    }
    let mode = match &before.mode {
        Some(m) => Some(m.clone()),
        None => status_guard_mode(netshim, netns)?.or_else(|| setup_guard_mode(live)),
    };
    if !guarded {
        anyhow::ensure!(
            mode.as_deref().is_none_or(|m| m == "off"),
            "the guard of an unguarded path is {mode:?}"
        );
    }
    if guarded {
        let mode = mode.context("neither stats, status nor the setup report shows the guard")?;
        anyhow::ensure!(
            mode == "enforce",
            "the guard of a +guard path is {mode:?}, not enforce"
        );
        if let Some(n) = before.guard_dropped.filter(|&n| n > 0) {
            anyhow::bail!("the guard refused {n} packets of the bench's own traffic");
        }
        let udp_rev = result
            .extra
            .get("udp64_rev_packets")
            .copied()
            .unwrap_or(0.0);
        anyhow::ensure!(
            before.packets as f64 >= udp_rev,
            "the program counted {} packets from the server, fewer than the {udp_rev} the \
             client received in the reverse UDP run",
            before.packets
        );
    }
    let replied = probe(live)?;
    result
        .extra
        .insert("guard_probe_replied", f64::from(u8::from(replied)));
    if !guarded {
        anyhow::ensure!(
            replied,
            "a ping from {} got no answer without the guard: the probe proves nothing",
            live.spoofed_ip
        );
        return Ok(());
    }
    anyhow::ensure!(
        !replied,
        "a ping from {} (not the server's address) crossed the guard",
        live.spoofed_ip
    );
    let after = FromVm::parse(&paths::stats(netshim, netns))?;
    if let (Some(a), Some(b)) = (after.guard_dropped, before.guard_dropped) {
        result.extra.insert("guard_probe_dropped", (a - b) as f64);
        anyhow::ensure!(a > b, "the guard did not count the probe's refused packets");
    }
    Ok(())
}

/// `status --json`'s guard mode of the endpoint with a tap (read from the maps), if shown.
fn status_guard_mode(netshim: &Path, netns: &str) -> Result<Option<String>> {
    let out =
        crate::cmd::output(Command::new(netshim).args(["status", "--netns", netns, "--json"]))?;
    let v: Value = serde_json::from_str(&out).context("parsing `netshim status --json`")?;
    Ok(v["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|e| e["guard"]["mode"].as_str())
        .map(str::to_string))
}

/// The guard mode the connect report (`guard`) or attach report (`endpoints[0].guard`) gave.
fn setup_guard_mode(live: &Live) -> Option<String> {
    let out = live.setup_output.as_ref()?;
    [&out["guard"]["mode"], &out["endpoints"][0]["guard"]["mode"]]
        .iter()
        .find_map(|m| m.as_str())
        .map(str::to_string)
}

/// One ping from the server to the client with `live.spoofed_ip` (added to the server's
/// eth0 for it) as source. Returns whether it was answered.
fn probe(live: &Live) -> Result<bool> {
    let addr = format!("{}/32", live.spoofed_ip);
    let ip = |args: &[&str]| -> Result<()> {
        let out = crate::cmd::capture(&mut topology::ip(&live.server, args))?;
        anyhow::ensure!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            live.server,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    };
    ip(&["addr", "add", &addr, "dev", "eth0"])?;
    let ping = crate::cmd::capture(&mut topology::exec_in(
        &live.server,
        "ping",
        &["-c", "1", "-W", "2", "-I", live.spoofed_ip, live.client_ip],
    ));
    ip(&["addr", "del", &addr, "dev", "eth0"])?;
    Ok(ping?.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_vm_counters_with_and_without_guard_counting() {
        let stats = json!([{"endpoints": [{"from_vm": {
            "packets": 10, "bytes": 640, "errors": 0,
            "dropped": {"mtu": 0, "source_mac": 0, "source_ip": 2, "arp": 1, "nd": 0,
                        "ra": 0, "dhcp_server": 0, "ethertype": 0},
            "guard": {"mode": "enforce", "flagged": {}}
        }}]}]);
        assert_eq!(
            FromVm::parse(&stats).unwrap(),
            FromVm {
                packets: 10,
                mode: Some("enforce".into()),
                guard_dropped: Some(3)
            }
        );
        // A netshim without guard counters (or a sandbox without guard maps: nulls).
        let old = json!([{"endpoints": [{"from_vm": {"packets": 4, "dropped":
            {"mtu": 0, "source_ip": null}}}]}]);
        assert_eq!(
            FromVm::parse(&old).unwrap(),
            FromVm {
                packets: 4,
                mode: None,
                guard_dropped: None
            }
        );
        assert!(FromVm::parse(&json!({"error": "x"})).is_err());
    }
}
