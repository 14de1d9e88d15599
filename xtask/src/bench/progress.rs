//! The bench's progress line: redrawn in place on a terminal, one line per step
//! otherwise (CI logs).
//!
//! Kept hand-written rather than indicatif: indicatif hides its bar when stdout is not a
//! terminal, and the bench's main reader is a CI or `> log` run that needs one line per step
//! with position, round and ETA; on a terminal the bar is three `\r\x1b[2K` writes.

use super::*;

/// A one-line progress bar (redrawn with `\r` on a terminal; one line per step otherwise).
pub(super) struct Progress {
    total: usize,
    done: usize,
    rounds: u32,
    start: Instant,
    tty: bool,
    last: String,
}

impl Progress {
    pub(super) fn new(total: usize, rounds: u32) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            rounds,
            start: Instant::now(),
            tty: std::io::stdout().is_terminal(),
            last: String::new(),
        }
    }

    pub(super) fn step(&mut self, round: u32, id: &str, what: &str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if self.done > 0 {
            format!(
                ", ~{} left",
                mmss(elapsed / self.done as f64 * (self.total - self.done) as f64)
            )
        } else {
            String::new()
        };
        const WIDTH: usize = 24;
        let filled = WIDTH * self.done / self.total;
        self.last = format!(
            "[{}{}] {}/{} round {round}/{} {id}: {what} ({}{eta})",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.done + 1,
            self.total,
            self.rounds,
            mmss(elapsed),
        );
        self.done += 1;
        self.draw();
    }

    pub(super) fn skip(&mut self, n: usize) {
        self.done = (self.done + n).min(self.total);
    }

    fn draw(&self) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{}", self.last);
        } else {
            let _ = writeln!(out, "bench: {}", self.last);
        }
        let _ = out.flush();
    }

    /// Print a line above the bar.
    pub(super) fn note(&self, line: &str) {
        if self.tty {
            print!("\r\x1b[2K");
        }
        println!("{line}");
        if self.tty && !self.last.is_empty() {
            self.draw();
        }
    }

    pub(super) fn finish(&self) {
        if self.tty {
            println!(
                "\r\x1b[2K[{}] {}/{} done in {}",
                "#".repeat(24),
                self.total,
                self.total,
                mmss(self.start.elapsed().as_secs_f64())
            );
        } else {
            println!(
                "bench: {} steps done in {}",
                self.total,
                mmss(self.start.elapsed().as_secs_f64())
            );
        }
    }
}

pub(super) fn mmss(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
