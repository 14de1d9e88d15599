//! `cargo xtask fuzz`: run every cargo-fuzz target of `netshim/fuzz` for a bounded time.
//!
//! Installs cargo-fuzz when it is missing (built from crates.io, like bpf-linker). Each target
//! starts from the checked-in seeds (`netshim/fuzz/seeds/<target>`); what libFuzzer finds
//! goes to `target/fuzz/corpus/<target>` (kept between local runs, never into the source
//! tree) and a crashing input to `target/fuzz/artifacts/<target>/`, named in the error.

use crate::{cmd, setup};
use anyhow::{bail, ensure, Context, Result};
use std::process::Command;
use std::time::Instant;

/// The fuzz targets, one per parser of outside input.
pub const TARGETS: [&str; 4] = ["config_file", "netns_arg", "option_values", "cni_config"];

/// cargo-fuzz is built from crates.io at this version.
const CARGO_FUZZ_VERSION: &str = "0.12.0";

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub seconds: u32,
    /// Only these targets (comma-separated or repeated); all when empty.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    // The toolchain only: fuzzing runs no Debian package.
    setup::run_for(&setup::SetupArgs::default(), &[])?;
    for t in &args.targets {
        ensure!(
            TARGETS.contains(&t.as_str()),
            "unknown fuzz target {t:?}; known: {}",
            TARGETS.join(", ")
        );
    }
    cmd::step("cargo-fuzz", ensure_cargo_fuzz)?;
    let root = cmd::workspace_root();
    let fuzz_dir = root.join("netshim/fuzz");
    let work = cmd::target_dir().join("fuzz");
    cmd::step("build fuzz targets", || {
        cmd::run(
            Command::new("cargo")
                .current_dir(&root)
                .args(["+nightly", "fuzz", "build", "--fuzz-dir"])
                .arg(&fuzz_dir),
        )
    })?;
    for target in TARGETS
        .iter()
        .filter(|t| args.targets.is_empty() || args.targets.iter().any(|a| a == *t))
    {
        let corpus = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let seeds = fuzz_dir.join("seeds").join(target);
        let started = Instant::now();
        let mut run = Command::new("cargo");
        run.current_dir(&root)
            .args(["+nightly", "fuzz", "run", "--fuzz-dir"])
            .arg(&fuzz_dir)
            .arg(target)
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1");
        let out = cmd::capture(&mut run)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({}); crashing inputs in {}:\n{}",
                out.status,
                artifacts.display(),
                tail.join("\n")
            );
        }
        let runs = final_stat(&stderr, "stat::number_of_executed_units:")
            .or_else(|| done_runs(&stderr))
            .unwrap_or(0);
        let line = format!(
            "fuzz: {target}: {runs} inputs in {:.0} s, no crash (corpus {})",
            started.elapsed().as_secs_f64(),
            corpus.display()
        );
        println!("{line}");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    cmd::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        &format!("={CARGO_FUZZ_VERSION}"),
    ]))
}

/// A `stat::name: N` line of libFuzzer's -print_final_stats output.
fn final_stat(stderr: &str, key: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.trim().parse().ok())
}

/// libFuzzer's `Done N runs in S second(s)`.
fn done_runs(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Done ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let stderr = "#2\tINITED cov: 10\nDone 123456 runs in 5 second(s)\n\
                      stat::number_of_executed_units: 123457\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            final_stat(stderr, "stat::number_of_executed_units:"),
            Some(123457)
        );
        assert_eq!(done_runs(stderr), Some(123456));
        assert_eq!(final_stat("", "stat::x:"), None);
    }

    #[test]
    fn every_target_has_a_source_and_seeds() {
        let fuzz = cmd::workspace_root().join("netshim/fuzz");
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(
                fuzz.join(format!("fuzz_targets/{t}.rs")).exists(),
                "no source for {t}"
            );
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} not in Cargo.toml"
            );
            let seeds = std::fs::read_dir(fuzz.join("seeds").join(t))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(seeds > 0, "no seeds for {t}");
        }
    }
}
