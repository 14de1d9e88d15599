//! `netshim completions` and `netshim man`: generated from the clap definition, so they
//! cannot drift from the real flags.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;

/// The completion script for `shell`, for a binary called `netshim`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netshim", &mut out);
    out
}

/// The man page of `cmd` (built), titled in capitals as man pages are (`.TH NETSHIM 1`).
fn page(cmd: clap::Command) -> clap_mangen::Man {
    let title = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_uppercase();
    clap_mangen::Man::new(cmd)
        .title(title)
        .source(concat!("netshim ", env!("CARGO_PKG_VERSION")))
        .manual("netshim manual")
}

fn built() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `netshim.1` (roff), the page of the top-level command.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    page(built()).render(&mut out)?;
    Ok(out)
}

/// Writes `netshim.1` and one page per subcommand (`netshim-attach.1`, ...) into `dir`,
/// creating it. Returns the files written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cmd = built();
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(page(sub.clone()).generate_to(dir)?);
    }
    written.insert(0, page(cmd).generate_to(dir)?);
    Ok(written)
}

/// Writes `bytes` to stdout; a closed pipe (`| head`) is not an error worth a message.
pub fn print_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subcommands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_owned())
            .collect()
    }

    #[test]
    fn every_shell_gets_a_script_naming_every_subcommand() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for sub in subcommands() {
                assert!(script.contains(&sub), "{shell}: no {sub}");
            }
            assert!(script.contains("log-level"), "{shell}: no global flag");
        }
    }

    #[test]
    fn the_man_page_is_roff_with_every_subcommand() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        assert!(page.contains(".TH NETSHIM 1"), "{page}");
        for sub in subcommands() {
            assert!(page.contains(&sub), "no {sub}");
        }
    }
}
