//! iperf3 pieces the demo and the bench share: the port, the one-shot server's and the JSON
//! client's arguments, and reading the client's `-J` report.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::process::Output;

pub const PORT: &str = "5201";

/// A one-shot server (`-1`: it exits after one test) on [`PORT`].
pub const SERVER_ARGS: [&str; 4] = ["-s", "-1", "-p", PORT];

/// A client run of `secs` seconds against `server_ip` that reports in JSON (`-J`).
pub fn client_args<'a>(server_ip: &'a str, secs: &'a str) -> Vec<&'a str> {
    vec![
        "-c",
        server_ip,
        "-p",
        PORT,
        "-t",
        secs,
        "-J",
        "--connect-timeout",
        "3000",
    ]
}

/// The `end` section of a `-J` report; the error iperf3 reported, if it did.
pub fn end_section(json: &str) -> Result<Value> {
    let mut v: Value = serde_json::from_str(json).context("iperf3 printed no JSON")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    v.get_mut("end")
        .map(Value::take)
        .context("iperf3 JSON has no `end` section")
}

/// `end.<section>.<name>` as a number.
pub fn end_number(end: &Value, section: &str, name: &str) -> Result<f64> {
    end.get(section)
        .and_then(|s| s.get(name))
        .and_then(Value::as_f64)
        .with_context(|| format!("iperf3 JSON has no end.{section}.{name}"))
}

/// The sender's TCP retransmits (`end.sum_sent.retransmits`), when reported.
pub fn retransmits(end: &Value) -> Option<u64> {
    end.get("sum_sent")
        .and_then(|s| s.get("retransmits"))
        .and_then(Value::as_u64)
}

/// What a finished client run yields: `parse` of its stdout; when that fails, the reason with
/// the client's exit status and stderr; a failure when the client exited non-zero.
pub fn client_result<T>(out: &Output, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = parse(&stdout).with_context(|| {
        format!(
            "iperf3 client ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    ensure!(
        out.status.success(),
        "iperf3 client exited with {}",
        out.status
    );
    Ok(result)
}
