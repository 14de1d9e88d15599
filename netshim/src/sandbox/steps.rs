//! The per-step timing of attach, detach and hot-plug, as debug events (`--log-level
//! debug` shows where the time of one run goes).

use std::time::{Duration, Instant};

/// Times the steps of one operation: each [`Steps::done`] logs the step's own time and
/// the time since the operation started.
pub(crate) struct Steps {
    started: Instant,
    last: Instant,
}

impl Steps {
    pub(crate) fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
        }
    }

    /// Logs `step` as done: how long it took, and the total so far.
    pub(crate) fn done(&mut self, step: &str) {
        let now = Instant::now();
        tracing::debug!(
            step,
            elapsed_ms = ms(now - self.last),
            total_ms = ms(now - self.started),
            "step done"
        );
        self.last = now;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
