//! The `netshim` binary. See `netshim --help`.

mod cli;

use clap::Parser;

fn main() {
    // First, while the process is single-threaded: under `ip netns exec` (a private mount
    // namespace with a fresh /sys) join the host's, where the pins are. A failure is kept
    // and refuses the commands that need the host's bpffs (netshim::host::require).
    let _ = netshim::host::mntns::join_host();
    // A CNI runtime calls the binary as a plugin: CNI_COMMAND set, config on stdin.
    if let Some(code) = cli::cni::main_if_plugin() {
        std::process::exit(code);
    }
    // A debug build's NETSHIM_TEST_KILL_AT must name a crash point (see netshim::crash).
    if let Err(e) = netshim::crash::check_env() {
        eprintln!("netshim: {e}");
        std::process::exit(e.exit_code());
    }
    let args = cli::args::Cli::parse();
    cli::logging::init(
        args.log_level,
        matches!(args.command, cli::args::Command::Logs(_)),
    );
    netshim::host::mntns::log_outcome();
    std::process::exit(cli::run::main_with_exit_code(args));
}
