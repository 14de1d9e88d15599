//! Builds the eBPF object (netshim-ebpf, nightly, bpfel-unknown-none, bpf-linker) into OUT_DIR
//! so that `include_bytes_aligned!` embeds it in the netshim binary.
//! `cargo xtask setup` installs what this needs (rust-src, bpf-linker).
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("netshim crate has no parent directory"))?
        .join("netshim-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    println!("cargo:rerun-if-changed=../netshim-common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "netshim-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
