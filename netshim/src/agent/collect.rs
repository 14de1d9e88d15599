//! Collecting sandboxes whose netns is gone without a DEL (a runtime that died, a netns
//! deleted first): `netshim gc` every interval, and at once when a name goes from
//! `/run/netns` (a netns deleted by name is usually gone with its name).

use std::time::{Duration, Instant};

use crate::sandbox;

pub struct Collector {
    interval: Duration,
    last: Option<Instant>,
}

impl Collector {
    pub fn new(interval: Duration) -> Collector {
        Collector {
            interval,
            last: None,
        }
    }

    /// Time until the next collection is due.
    pub fn due_in(&self) -> Duration {
        self.last.map_or(Duration::ZERO, |t| {
            self.interval.saturating_sub(t.elapsed())
        })
    }

    /// Collects when due, or now with `now`.
    pub fn tick(&mut self, now: bool) {
        if !now && !self.due_in().is_zero() {
            return;
        }
        self.last = Some(Instant::now());
        match sandbox::gc() {
            Ok(report) => {
                for dead in &report.removed_dead {
                    tracing::info!(
                        "agent: collected sandbox netns-{} (its netns is gone): removed {}",
                        dead.netns_cookie,
                        dead.removed
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                for half in &report.cleaned_half_made {
                    tracing::info!(
                        "agent: took down what a killed run left half-made in {}",
                        half.netns_path.display()
                    );
                }
                for failed in &report.failed {
                    tracing::warn!(
                        "agent: collecting sandbox netns-{}: {}",
                        failed.netns_cookie,
                        failed.error
                    );
                }
            }
            Err(e) => tracing::warn!("agent: gc: {e}"),
        }
    }
}
