//! Developer and CI tasks for the netshim workspace: `cargo xtask <command>`.
//!
//! - `setup`: install what building, the demo, the tests and the bench need (apt packages
//!   by who needs them, the tests' guest kernel, nightly rust-src, bpf-linker). Idempotent;
//!   every other command runs it first, for what it runs.
//! - `lint`: rustfmt check and clippy (`-D warnings`) on the host crates.
//! - `test`: lint, build, then `cargo test` over the host crates.
//! - `demo`: client netns <-> sandbox netns (pod veth) <-> netshim <-> tap <-> vm-standin,
//!   with ping and iperf3 through it, then stats and teardown.
//! - `bench`: iperf3/sockperf benchmark of every path (direct veth, bridge, mirred, eBPF,
//!   eBPF + redirect_peer, macvtap) in pair and sandbox topologies; JSON, markdown and SVG.
//! - `fuzz`: every cargo-fuzz target of netshim/fuzz for a bounded time.
//! - `image`: the static (musl) netshim binary and its container image (deploy/).

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod image;
mod iperf;
mod setup;
mod standin;
mod test;
mod topology;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "netshim developer tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install prerequisites: the Debian packages the demo, the tests and the bench need
    /// (--for to choose), the tests' guest kernel, nightly rust-src, bpf-linker.
    Setup(setup::SetupArgs),
    /// rustfmt --check and clippy -D warnings on the host crates.
    Lint,
    /// Lint, build and run the test suite (needs root for the netns tests).
    Test(test::TestArgs),
    /// Build release binaries and run the end-to-end demo in private network namespaces.
    Demo(demo::DemoArgs),
    /// Benchmark the datapaths (iperf3, sockperf) in private network namespaces.
    Bench(bench::BenchArgs),
    /// Fuzz every parser of outside input for a bounded time (cargo-fuzz, nightly).
    Fuzz(fuzz::FuzzArgs),
    /// Build the static (musl) binary and the agent's container image (deploy/Containerfile)
    /// with podman, into podman's default storage.
    Image(image::ImageArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args).map(|_| ()),
        Command::Lint => {
            setup::run_for(&setup::SetupArgs::default(), &[]).and_then(|_| test::lint())
        }
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Image(args) => image::run(&args),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
