//! Small helpers for running external commands and locating things.

use anyhow::{bail, ensure, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Render a command line for logs: `prog arg arg`, with env overrides in front.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Run with inherited stdio; fail unless the exit status is 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run quietly, capturing output; fail with stderr in the message unless the exit status is 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}`: non-UTF-8 output", display(cmd)))
}

/// Run quietly, capturing output, whatever the exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Find an executable by name on PATH, plus the sbin directories (not always on PATH, and
/// where iproute2, ethtool and bpftool live on Debian).
pub fn which(name: &str) -> Option<PathBuf> {
    which::which(name)
        .or_else(|_| {
            let sbin = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin";
            which::which_in(name, Some(sbin), "/")
        })
        .ok()
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Root of the cargo workspace (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root) or
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `cargo` from PATH (the rustup proxy, so `+nightly` works), run in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// CI runs (CI=true) build with `--locked` so a stale Cargo.lock fails loudly.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Seconds with one decimal, for step timings.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Run `f`, print `name: ok/FAILED (time)`.
pub fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    println!("==> {name}");
    let start = Instant::now();
    let result = f();
    match &result {
        Ok(_) => println!("==> {name}: ok ({})", secs(start.elapsed())),
        Err(_) => println!("==> {name}: FAILED ({})", secs(start.elapsed())),
    }
    result.with_context(|| format!("{name} failed"))
}

/// Wait up to `limit` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cargo build --release` of netshim and vm-standin (`--locked` in CI).
pub fn build_release_binaries() -> Result<()> {
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "netshim",
        "-p",
        "netshim-tests",
        "--bin",
        "netshim",
        "--bin",
        "vm-standin",
    ]);
    if in_ci() {
        build.arg("--locked");
    }
    run(&mut build)
}

/// target/release/{netshim,vm-standin}; a missing one fails with `<path> <missing>`.
pub fn release_binaries(missing: &str) -> Result<(PathBuf, PathBuf)> {
    let release = target_dir().join("release");
    let (netshim, standin) = (release.join("netshim"), release.join("vm-standin"));
    for bin in [&netshim, &standin] {
        ensure!(is_executable(bin), "{} {missing}", bin.display());
    }
    Ok((netshim, standin))
}
