//! Running the `vm-standin` binary from a test: spawned, its `ready` line awaited, its
//! later stdout lines (the JSON summary) handed over on a channel.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::ChildGuard;

/// Spawns `cmd` (a `vm-standin` command line) with piped stdin/stdout and waits up to 10 s
/// for its `ready` line. Closing its stdin stops it.
pub fn spawn_ready(mut cmd: Command) -> (ChildGuard, mpsc::Receiver<String>) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = ChildGuard::spawn(cmd, "vm-standin");
    let stdout = guard.child_mut().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("vm-standin did not print ready");
    assert_eq!(first, "ready");
    (guard, rx)
}
