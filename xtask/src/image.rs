//! `cargo xtask image`: netshim's static binary (the musl target: it runs on any node, as
//! the CNI plugin the agent installs there, and in a `FROM scratch` image) and the container
//! image of deploy/Containerfile built from it with podman. `cargo xtask test` builds the
//! binary too and hands its path to the tests ([`STATIC_BIN_ENV`]).

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use crate::{cmd, setup};

/// The target of the static build.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The environment variable the container tests read the static binary's path from.
pub const STATIC_BIN_ENV: &str = "NETSHIM_STATIC_BIN";

#[derive(clap::Args)]
pub struct ImageArgs {
    /// The image's name (default localhost/netshim:<netshim's version>).
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// Also write the image as an OCI archive to FILE (`podman save`), to load on nodes
    /// (`ctr -n k8s.io images import FILE`).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

/// `cargo build --release -p netshim --target x86_64-unknown-linux-musl`; its path.
pub fn static_binary() -> Result<PathBuf> {
    cmd::step("static build", || {
        let mut build = cmd::cargo();
        build.args([
            "build",
            "--release",
            "-p",
            "netshim",
            "--target",
            MUSL_TARGET,
        ]);
        if cmd::in_ci() {
            build.arg("--locked");
        }
        cmd::run(&mut build)?;
        let bin = cmd::target_dir().join(MUSL_TARGET).join("release/netshim");
        ensure!(bin.is_file(), "the static build made no {}", bin.display());
        Ok(bin)
    })
}

/// The image's default name: `localhost/netshim:<version>` (deploy/netshim-agent.yaml's).
fn default_tag() -> String {
    format!("localhost/netshim:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the static binary and the image into podman's default storage.
pub fn run(args: &ImageArgs) -> Result<()> {
    setup::run_for(&setup::SetupArgs::default(), &[setup::Purpose::Test])?;
    let bin = static_binary()?;
    let context = cmd::target_dir().join("image-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context).with_context(|| format!("create {}", context.display()))?;
    std::fs::copy(&bin, context.join("netshim"))
        .with_context(|| format!("copy {} into {}", bin.display(), context.display()))?;
    let tag = args.tag.clone().unwrap_or_else(default_tag);
    let containerfile = cmd::workspace_root().join("deploy/Containerfile");
    cmd::step("podman build", || {
        cmd::run(
            std::process::Command::new("podman")
                .arg("build")
                .arg("-f")
                .arg(&containerfile)
                .arg("-t")
                .arg(&tag)
                .arg(&context),
        )
    })?;
    if let Some(file) = &args.save {
        cmd::run(
            std::process::Command::new("podman")
                .args(["save", "--format", "oci-archive", "-o"])
                .arg(file)
                .arg(&tag),
        )?;
        println!("image: {tag}, saved to {}", file.display());
    } else {
        println!("image: {tag}");
    }
    Ok(())
}
