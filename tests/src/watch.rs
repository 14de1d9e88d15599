//! A running `netshim watch --json` for tests: its events as they come.

use std::{
    io::{BufRead, BufReader},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{netshim_cli::netshim_bin, ChildGuard};

/// A running `netshim watch --json`, its output lines timestamped as they arrive.
pub struct Watch {
    pub child: ChildGuard,
    lines: mpsc::Receiver<(Instant, Value)>,
    seen: Vec<Value>,
}

impl Watch {
    pub fn start(netns: &str, extra: &[&str]) -> Watch {
        let mut cmd = Command::new(netshim_bin());
        cmd.args(["watch", "--netns", netns, "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn(cmd, "netshim watch");
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send((Instant::now(), v)).is_err() {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the next `event` (for interface `name`), skipping others; returns when its
    /// line was read, and the line.
    pub fn expect(
        &mut self,
        event: &str,
        name: Option<&str>,
        timeout: Duration,
    ) -> (Instant, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, v)) => {
                    self.seen.push(v.clone());
                    let matches =
                        v["event"] == event && name.is_none_or(|n| v["name"].as_str() == Some(n));
                    if matches {
                        return (at, v);
                    }
                    assert_ne!(v["event"], "failed", "watch reported a failure: {v}");
                }
                Err(e) => panic!(
                    "no `{event}` {name:?} from netshim watch within {timeout:?} ({e}); saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Sends `sig`, waits for the exit, and returns the status and the lines printed after
    /// the last one [`Watch::expect`] took.
    pub fn stop(self, sig: Signal) -> (ExitStatus, Vec<Value>) {
        self.child.signal(sig).expect("signal netshim watch");
        let out = self.child.wait_with_output(Duration::from_secs(20));
        let rest = self.lines.iter().map(|(_, v)| v).collect();
        (out.status, rest)
    }
}
