//! `cargo xtask lint` and `cargo xtask test`.
//!
//! Host crates only: netshim-ebpf is a `no_std` BPF program built by netshim's build.rs
//! (aya-build) and cannot be compiled or tested for the host target.

use crate::{cmd, image, setup};
use anyhow::Result;

/// Where the tests look for the guest kernel first (tests/src/qemu.rs reads it).
const GUEST_KERNEL_ENV: &str = "NETSHIM_GUEST_KERNEL_DIR";

/// The workspace member that is not a host crate.
const EBPF_CRATE: &str = "netshim-ebpf";

#[derive(clap::Args)]
pub struct TestArgs {
    /// Test threads per test binary. Integration tests create network namespaces and are
    /// parallel-safe; the machines have 2 cores.
    #[arg(long, default_value_t = 2)]
    pub test_threads: usize,
    /// Skip rustfmt/clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments for the test binaries (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// `cargo <sub> --workspace --exclude netshim-ebpf [--locked]`.
fn host_cargo(sub: &str) -> std::process::Command {
    let mut cmd = cmd::cargo();
    cmd.args([sub, "--workspace", "--exclude", EBPF_CRATE]);
    if cmd::in_ci() {
        cmd.arg("--locked");
    }
    cmd
}

/// rustfmt check (all members, eBPF included: formatting needs no target) and clippy on the
/// host crates with warnings denied. Assumes setup ran (clippy runs netshim's build.rs).
pub fn lint() -> Result<()> {
    cmd::step("fmt", || {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    cmd::step("clippy", || {
        cmd::run(host_cargo("clippy").args(["--all-targets", "--", "-D", "warnings"]))
    })
}

pub fn run(args: &TestArgs) -> Result<()> {
    setup::run_for(&setup::SetupArgs::default(), &[setup::Purpose::Test])?;
    if !args.no_lint {
        lint()?;
    }
    if !cmd::is_root() {
        println!("xtask: warning: not root; tests that create network namespaces will fail");
    }
    cmd::step("build", || cmd::run(&mut host_cargo("build")))?;
    // The agent's container test builds its image from the static binary.
    let static_bin = image::static_binary()?;
    cmd::step("test", || {
        let mut test = host_cargo("test");
        test.env(image::STATIC_BIN_ENV, &static_bin);
        // Where setup unpacked the real-VMM test's kernel (tests/src/qemu.rs).
        test.env(
            GUEST_KERNEL_ENV,
            setup::guest_kernel::dir(&setup::cache_dir()?),
        );
        test.arg("--no-fail-fast")
            .arg("--")
            .arg(format!("--test-threads={}", args.test_threads.max(1)))
            .args(&args.test_args);
        cmd::run(&mut test)
    })
}
