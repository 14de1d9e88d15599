//! What the results record about the machine and the run: kernel, CPUs, commit, tool
//! versions, load, and the start time.

use super::*;

/// Kernel, CPUs, commit, tool versions and load, for results.json and the table header.
pub(super) fn machine_info() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let first_line = |prog: &str, args: &[&str]| -> String {
        cmd::capture(Command::new(prog).args(args))
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let git = |args: &[&str]| -> Option<String> {
        let out = cmd::capture(
            Command::new("git")
                .current_dir(cmd::workspace_root())
                .args(args),
        )
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        None => "unknown".into(),
    };
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let loadavg = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "nproc": cpu_count(),
        "cpu_model": cpu_model,
        "commit": commit,
        "iperf3": first_line("iperf3", &["--version"]),
        "sockperf": first_line("sockperf", &["--version"]).replace("sockperf: ", ""),
        "loadavg_start": loadavg,
        "user_hz": clock_ticks(),
    })
}

pub(super) struct Timestamp {
    /// `20250102-030405Z`, for directory names.
    pub(super) compact: String,
    /// `2025-01-02T03:04:05Z`.
    pub(super) iso: String,
}

pub(super) fn utc_timestamp(t: SystemTime) -> Timestamp {
    let iso = humantime::format_rfc3339_seconds(t.max(SystemTime::UNIX_EPOCH)).to_string();
    let compact = iso.replace(['-', ':'], "").replace('T', "-");
    Timestamp { compact, iso }
}

pub(super) fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29
        let ts = utc_timestamp(t);
        assert_eq!(ts.iso, "2000-02-29T01:02:03Z");
        assert_eq!(ts.compact, "20000229-010203Z");
        assert_eq!(
            utc_timestamp(SystemTime::UNIX_EPOCH).iso,
            "1970-01-01T00:00:00Z"
        );
    }
}
