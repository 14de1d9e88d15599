//! What reached the VMM's queue on a sandbox path, so that a rate the stand-in caps is told
//! apart from one the datapath gives: the counters of the VMM-side device (`tap0_kata`, a
//! tap or a macvtap), read before and after a load run.
//!
//! - tap: the kernel counts a frame the reader took in `tx_packets` (`tun_put_user`) and one
//!   dropped because the ring was full in `tx_dropped` (`tun_net_xmit`);
//! - macvtap: a frame handed to it counts in `rx_packets` (`macvlan_handle_frame`), and one
//!   its queue had no room for counts again in `rx_errors` (`tap_handle_frame` →
//!   `macvtap_count_rx_dropped`).

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::paths::{self, Device};
use crate::topology;

/// Frames into the VMM's queue (taken by the reader) and dropped at it, since some start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    pub delivered: u64,
    pub dropped: u64,
}

impl QueueCounters {
    pub fn since(self, before: QueueCounters) -> QueueCounters {
        QueueCounters {
            delivered: self.delivered.saturating_sub(before.delivered),
            dropped: self.dropped.saturating_sub(before.dropped),
        }
    }
}

/// The VMM-side device of a path: the sandbox's tap or macvtap.
pub fn vmm_device(devices: &[Device]) -> Option<&Device> {
    devices
        .iter()
        .find(|d| d.role == "sandbox" && matches!(d.kind, "tap" | "macvtap"))
}

/// The device's counters now (`ip -s -j link show`).
pub fn read(dev: &Device) -> Result<QueueCounters> {
    let out = paths::quiet(&mut topology::ip(
        &dev.netns,
        &["-s", "-j", "link", "show", "dev", &dev.ifname],
    ))?;
    let v: Value = serde_json::from_str(&out).context("ip -j output")?;
    counters(dev.kind, &v[0]["stats64"])
        .with_context(|| format!("the counters of {} in {}", dev.ifname, dev.netns))
}

fn counters(kind: &str, stats: &Value) -> Result<QueueCounters> {
    let n = |dir: &str, k: &str| {
        stats[dir][k]
            .as_u64()
            .with_context(|| format!("stats64.{dir}.{k} missing"))
    };
    Ok(match kind {
        "tap" => QueueCounters {
            delivered: n("tx", "packets")?,
            dropped: n("tx", "dropped")?,
        },
        "macvtap" => {
            let (handed, dropped) = (n("rx", "packets")?, n("rx", "errors")?);
            QueueCounters {
                delivered: handed.saturating_sub(dropped),
                dropped,
            }
        }
        other => bail!("no VMM queue counters for a {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rx: (u64, u64), tx: (u64, u64)) -> Value {
        serde_json::json!({
            "rx": {"packets": rx.0, "errors": rx.1, "dropped": 0},
            "tx": {"packets": tx.0, "errors": 0, "dropped": tx.1},
        })
    }

    #[test]
    fn a_tap_counts_what_its_reader_took_and_what_its_ring_dropped() {
        let c = counters("tap", &stats((5, 1), (100, 40))).unwrap();
        assert_eq!(
            c,
            QueueCounters {
                delivered: 100,
                dropped: 40
            }
        );
    }

    #[test]
    fn a_macvtap_counts_its_queue_drops_as_receive_errors() {
        let c = counters("macvtap", &stats((100, 30), (7, 2))).unwrap();
        assert_eq!(
            c,
            QueueCounters {
                delivered: 70,
                dropped: 30
            }
        );
        assert!(counters("veth", &stats((1, 0), (1, 0))).is_err());
    }

    #[test]
    fn counts_since_a_start_never_go_negative() {
        let before = QueueCounters {
            delivered: 10,
            dropped: 5,
        };
        let now = QueueCounters {
            delivered: 25,
            dropped: 5,
        };
        assert_eq!(
            now.since(before),
            QueueCounters {
                delivered: 15,
                dropped: 0
            }
        );
        assert_eq!(before.since(now).delivered, 0);
    }
}
