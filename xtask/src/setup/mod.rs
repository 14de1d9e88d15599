//! `cargo xtask setup`: install what building, the demo, the tests and the bench need,
//! idempotently.
//!
//! 1. Debian packages by who needs them ([`packages`]): `cargo xtask demo` installs the
//!    demo's, `cargo xtask test` (and `.ci/run`) the tests', `cargo xtask bench` the
//!    bench's; `cargo xtask setup` all of them (`--for` to choose). Each is skipped when its
//!    probe file exists. apt never removes a package to install one of these ([`apt`]).
//! 2. The tests' guest kernel: Debian's kernel package unpacked into a cache directory, not
//!    installed ([`guest_kernel`]).
//! 3. `rust-src` for the nightly toolchain (aya-build compiles netshim-ebpf with
//!    `-Z build-std=core` for `bpfel-unknown-none`).
//! 4. `bpf-linker`, built from crates.io against the nightly toolchain's own libLLVM, so no
//!    separate LLVM install is needed. Skipped when `bpf-linker --version` works.
//! 5. For the tests (and `cargo xtask image`): the `x86_64-unknown-linux-musl` target of the
//!    stable toolchain (`rustup target add`), for the static binary of the agent's image.

mod apt;
mod debversion;
pub mod guest_kernel;
pub mod packages;

pub use packages::Purpose;

use crate::cmd;
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

/// bpf-linker release installed from crates.io; bump together with the nightly toolchain
/// when a newer LLVM major needs a newer `llvm-<MAJOR>` feature.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(clap::Args, Default, Clone)]
pub struct SetupArgs {
    /// Install what these need (comma-separated): demo, test, bench. Default: all three.
    #[arg(long = "for", value_enum, value_delimiter = ',', value_name = "WHO")]
    pub purposes: Vec<Purpose>,
    /// Install bpf-linker into this root (`cargo install --root DIR`) and check
    /// DIR/bin/bpf-linker instead of the one on PATH. Env: NETSHIM_BPF_LINKER_ROOT.
    #[arg(long, value_name = "DIR")]
    pub bpf_linker_root: Option<PathBuf>,
    /// Directory for the libLLVM symlinks bpf-linker is built and run against. It must stay:
    /// the installed binary finds libLLVM through it. Env: NETSHIM_LLVM_PREFIX.
    /// Default: $CARGO_HOME/../.cache/netshim/llvm-prefix.
    #[arg(long, value_name = "DIR")]
    pub llvm_prefix: Option<PathBuf>,
    /// Reinstall bpf-linker even when it works.
    #[arg(long)]
    pub force_bpf_linker: bool,
}

/// What a setup step did, for the closing report.
pub struct Report(Vec<String>);

impl Report {
    pub fn note(&mut self, line: String) {
        println!("setup: {line}");
        self.0.push(line);
    }
}

/// `cargo xtask setup`: what `args.purposes` need (all three when empty), and the toolchain.
pub fn run(args: &SetupArgs) -> Result<()> {
    let purposes = match args.purposes.is_empty() {
        true => Purpose::ALL.to_vec(),
        false => args.purposes.clone(),
    };
    run_for(args, &purposes)
}

/// The Debian packages (and for the tests the guest kernel) `purposes` need, then the
/// toolchain every build needs. `&[]`: the toolchain only (lint, fuzz).
pub fn run_for(args: &SetupArgs, purposes: &[Purpose]) -> Result<()> {
    cmd::step("setup", || {
        let mut report = Report(Vec::new());
        let wanted = packages::for_purposes(purposes);
        apt::install_missing(&wanted, &mut report)?;
        if purposes.contains(&Purpose::Test) {
            guest_kernel::ensure(&cache_dir()?, &mut report)?;
        }
        let nightly = Nightly::probe()?;
        rust_src(&nightly, &mut report)?;
        bpf_linker(args, &nightly, &mut report)?;
        if purposes.contains(&Purpose::Test) {
            musl_target(&mut report)?;
        }
        Ok(())
    })
}

/// Facts about the installed nightly toolchain.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
}

impl Nightly {
    fn probe() -> Result<Self> {
        let vv = cmd::output(Command::new("rustc").args(["+nightly", "-vV"])).context(
            "the nightly toolchain is needed to build the eBPF object \
             (rustup toolchain install nightly)",
        )?;
        let llvm = vv
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version:"))
            .map(str::trim)
            .context("`rustc +nightly -vV` prints no `LLVM version:` line")?;
        let llvm_major = llvm
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("cannot parse LLVM version {llvm:?}"))?;
        let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
        Ok(Nightly {
            sysroot: PathBuf::from(sysroot.trim()),
            llvm_major,
        })
    }
}

fn rust_src(nightly: &Nightly, report: &mut Report) -> Result<()> {
    let marker = nightly
        .sysroot
        .join("lib/rustlib/src/rust/library/core/src/lib.rs");
    if marker.exists() {
        report.note("nightly rust-src: skipped, installed".into());
        return Ok(());
    }
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    ensure!(
        marker.exists(),
        "rust-src installed, yet {} is missing",
        marker.display()
    );
    report.note("nightly rust-src: installed".into());
    Ok(())
}

/// The musl target of the toolchain the workspace builds with (the static binary).
fn musl_target(report: &mut Report) -> Result<()> {
    let target = crate::image::MUSL_TARGET;
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == target) {
        report.note(format!("{target} target: skipped, installed"));
        return Ok(());
    }
    cmd::run(Command::new("rustup").args(["target", "add", target]))?;
    report.note(format!("{target} target: installed"));
    Ok(())
}

/// netshim's cache directory: `$CARGO_HOME/../.cache/netshim` (the libLLVM prefix, the
/// tests' guest kernel, the private apt lists of the QEMU install).
pub fn cache_dir() -> Result<PathBuf> {
    Ok(cargo_home()?.join("../.cache/netshim"))
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn bpf_linker(args: &SetupArgs, nightly: &Nightly, report: &mut Report) -> Result<()> {
    let root = args
        .bpf_linker_root
        .clone()
        .or_else(|| env_path("NETSHIM_BPF_LINKER_ROOT"));
    let cargo_bin = cargo_home()?.join("bin");
    // Where the installed binary ends up / is looked for.
    let bin = match &root {
        Some(root) => root.join("bin/bpf-linker"),
        None => cmd::which("bpf-linker").unwrap_or_else(|| cargo_bin.join("bpf-linker")),
    };
    if root.is_none() {
        ensure_on_path(&cargo_bin);
    }
    if !args.force_bpf_linker {
        if let Some(version) = version_of(&bin) {
            report.note(format!(
                "bpf-linker: skipped, {version} at {}",
                bin.display()
            ));
            return Ok(());
        }
    }

    let prefix = match args
        .llvm_prefix
        .clone()
        .or_else(|| env_path("NETSHIM_LLVM_PREFIX"))
    {
        Some(p) => p,
        None => cache_dir()?.join("llvm-prefix"),
    };
    let prefix = absolute(&prefix)?;
    let libllvm = llvm_prefix(nightly, &prefix)?;
    println!(
        "setup: LLVM_PREFIX={} -> {}",
        prefix.display(),
        libllvm.display()
    );

    let features = format!("llvm-{}", nightly.llvm_major);
    let mut install = Command::new("cargo");
    install
        .args(["+nightly", "install", "bpf-linker", "--locked"])
        .args(["--version", &format!("={BPF_LINKER_VERSION}")])
        .args(["--no-default-features", "--features", &features])
        .env("LLVM_PREFIX", &prefix)
        // Out of the workspace so its .cargo/config.toml does not apply.
        .current_dir(&prefix);
    if let Some(root) = &root {
        install.arg("--root").arg(absolute(root)?);
    }
    if args.force_bpf_linker {
        install.arg("--force");
    }
    cmd::run(&mut install)?;
    let version = version_of(&bin)
        .with_context(|| format!("{} --version fails after install", bin.display()))?;
    report.note(format!(
        "bpf-linker: installed {version} at {} (LLVM {}, prefix {})",
        bin.display(),
        nightly.llvm_major,
        prefix.display()
    ));
    Ok(())
}

/// aya-build runs `bpf-linker` from PATH; make sure cargo's bin dir is on it for our children.
fn ensure_on_path(dir: &Path) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == dir) {
        return;
    }
    let joined = std::env::join_paths(
        std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)),
    );
    if let Ok(joined) = joined {
        // Edition 2021: safe; xtask is single-threaded at this point.
        std::env::set_var("PATH", joined);
    }
}

fn version_of(bin: &Path) -> Option<String> {
    if !cmd::is_executable(bin) {
        return None;
    }
    let out = cmd::capture(Command::new(bin).arg("--version")).ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// Lay out `<prefix>/lib/{libLLVM.so,<SONAME>}` as symlinks to the nightly toolchain's
/// libLLVM, which is what bpf-linker's build (`LLVM_PREFIX`) and its RUNPATH look for.
/// Returns the real library path.
fn llvm_prefix(nightly: &Nightly, prefix: &Path) -> Result<PathBuf> {
    let libdir = nightly.sysroot.join("lib");
    let wanted = format!("libLLVM.so.{}", nightly.llvm_major);
    let mut candidates = Vec::new();
    for entry in
        std::fs::read_dir(&libdir).with_context(|| format!("reading {}", libdir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // The real file, not linker scripts (libLLVM-<N>-rust-*.so is one) or symlinks.
        if name.starts_with(&wanted) && entry.file_type()?.is_file() {
            candidates.push(entry.path());
        }
    }
    let real = match candidates.as_slice() {
        [one] => one.clone(),
        [] => bail!("no {wanted}* in {}", libdir.display()),
        many => bail!(
            "several libLLVM candidates in {}: {many:?}",
            libdir.display()
        ),
    };
    let soname =
        elf_soname(&real)?.with_context(|| format!("{} has no DT_SONAME", real.display()))?;
    let file_name = real.file_name().unwrap_or_default().to_string_lossy();
    if soname != file_name {
        println!("setup: note: SONAME {soname} differs from file name {file_name}");
    }
    let out = prefix.join("lib");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for link in ["libLLVM.so", soname.as_str()] {
        let link = out.join(link);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&real, &link)
            .with_context(|| format!("symlinking {} -> {}", link.display(), real.display()))?;
    }
    Ok(real)
}

/// Read DT_SONAME from a little-endian ELF64 shared object via its section headers
/// (SHT_DYNAMIC and the string table its sh_link names). Reads only what it needs.
pub fn elf_soname(path: &Path) -> Result<Option<String>> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    elf_soname_from(&mut f).with_context(|| format!("reading ELF {}", path.display()))
}

fn elf_soname_from(f: &mut (impl Read + Seek)) -> Result<Option<String>> {
    const SHT_DYNAMIC: u32 = 6;
    const DT_NULL: u64 = 0;
    const DT_SONAME: u64 = 14;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());

    let mut ehdr = [0u8; 64];
    f.read_exact(&mut ehdr).context("short ELF header")?;
    ensure!(&ehdr[..4] == b"\x7fELF", "not an ELF file");
    ensure!(
        ehdr[4] == 2 && ehdr[5] == 1,
        "not a little-endian ELF64 file"
    );
    let shoff = u64_at(&ehdr, 0x28);
    let shentsize = usize::from(u16_at(&ehdr, 0x3a));
    let shnum = usize::from(u16_at(&ehdr, 0x3c));
    ensure!(shentsize >= 64 && shnum > 0, "no usable section headers");
    let mut shdrs = vec![0u8; shentsize * shnum];
    f.seek(SeekFrom::Start(shoff))?;
    f.read_exact(&mut shdrs)
        .context("short section header table")?;
    let shdr = |i: usize| &shdrs[i * shentsize..i * shentsize + 64];

    let Some(dynamic) = (0..shnum).map(shdr).find(|s| u32_at(s, 4) == SHT_DYNAMIC) else {
        return Ok(None);
    };
    let (dyn_off, dyn_size) = (u64_at(dynamic, 0x18), u64_at(dynamic, 0x20));
    let strtab = usize::try_from(u32_at(dynamic, 0x28))?;
    ensure!(strtab < shnum, "SHT_DYNAMIC sh_link out of range");
    ensure!(dyn_size <= 1 << 20, "implausible .dynamic size {dyn_size}");
    let mut dyns = vec![0u8; usize::try_from(dyn_size)?];
    f.seek(SeekFrom::Start(dyn_off))?;
    f.read_exact(&mut dyns).context("short .dynamic")?;
    let soname_off = dyns
        .chunks_exact(16)
        .map(|e| (u64_at(e, 0), u64_at(e, 8)))
        .take_while(|&(tag, _)| tag != DT_NULL)
        .find(|&(tag, _)| tag == DT_SONAME)
        .map(|(_, val)| val);
    let Some(soname_off) = soname_off else {
        return Ok(None);
    };
    let (str_off, str_size) = (u64_at(shdr(strtab), 0x18), u64_at(shdr(strtab), 0x20));
    ensure!(
        soname_off < str_size,
        "DT_SONAME offset outside the string table"
    );
    f.seek(SeekFrom::Start(str_off + soname_off))?;
    let mut name = Vec::new();
    f.take(4096.min(str_size - soname_off))
        .read_to_end(&mut name)?;
    let end = name
        .iter()
        .position(|&b| b == 0)
        .context("unterminated DT_SONAME string")?;
    Ok(Some(String::from_utf8(name[..end].to_vec())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soname_of_libc() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !libc.exists() {
            eprintln!("skipping: {} not present", libc.display());
            return;
        }
        assert_eq!(elf_soname(libc).unwrap().as_deref(), Some("libc.so.6"));
    }

    #[test]
    fn not_elf_is_an_error() {
        let mut data = std::io::Cursor::new(vec![b'#'; 128]);
        assert!(elf_soname_from(&mut data).is_err());
    }
}
