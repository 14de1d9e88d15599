//! The `netshim` binary. See `netshim --help`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::args::Cli::parse();
    std::process::exit(cli::run::main_with_exit_code(args));
}
