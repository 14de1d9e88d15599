//! Command-line arguments (clap).

use clap::{Args, Parser, Subcommand};
use netshim::{backend::TcBackend, model::InternetworkingModel};

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  an operation on the system failed (netlink, bpf, tap ioctl, bpffs)
  2  invalid input: bad usage, unknown model (kata's \"Unknown type <x>\"), a netns that is
     missing or not a network namespace, an interface kind kata refuses, nothing to attach to
  3  conflict: the netns is already attached";

/// eBPF-accelerated networking shim between a sandbox's pod interfaces and its microVM's taps.
#[derive(Debug, Parser)]
#[command(name = "netshim", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a tap per endpoint of a pod netns and connect them (kata's tcfilter model).
    #[command(after_help = EXIT_CODES_HELP)]
    Attach(AttachArgs),
    /// Remove everything attach made in a netns (succeeds when there is nothing to remove).
    #[command(after_help = EXIT_CODES_HELP)]
    Detach(NetnsArgs),
    /// Show the endpoints of a netns, their taps and whether they are connected.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(NetnsArgs),
    /// Per-endpoint packet and byte counters, read from the pinned maps.
    #[command(after_help = EXIT_CODES_HELP)]
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct NetnsArgs {
    /// Network namespace: a NAME under /run/netns, or a PATH such as /proc/<pid>/ns/net.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub netns: NetnsArgs,
    /// Internetworking model, as kata's `internetworking_model`: default (= tcfilter),
    /// tcfilter, macvtap, none.
    #[arg(long, default_value = "tcfilter", value_parser = parse_model)]
    pub model: InternetworkingModel,
    /// Datapath for tcfilter: ebpf (TC classifier + bpf_redirect) or mirred (kata's
    /// u32 + mirred).
    #[arg(long, default_value = "ebpf", value_parser = parse_backend)]
    pub tc_backend: TcBackend,
    /// How the eBPF classifier is hooked: auto (TCX links on kernels >= 6.6, else clsact +
    /// cls_bpf), tcx, or cls-bpf.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcx", "cls-bpf"])]
    pub ebpf_attach: String,
    /// Queues per tap (more than 1 makes it multi-queue).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub queues: u32,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this network namespace (NAME or PATH); without it, every pinned sandbox.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_model(s: &str) -> Result<InternetworkingModel, String> {
    s.parse()
        .map_err(|e: netshim::model::UnknownModel| e.to_string())
}

fn parse_backend(s: &str) -> Result<TcBackend, String> {
    s.parse()
        .map_err(|e: netshim::backend::UnknownBackend| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_model_is_a_usage_error_in_katas_words() {
        let err = Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--model", "bridge"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("Unknown type bridge"), "{err}");
    }

    #[test]
    fn default_model_is_tcfilter_with_ebpf() {
        let cli = Cli::try_parse_from(["netshim", "attach", "--netns", "x"]).unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!(a.model, InternetworkingModel::TcFilter);
        assert_eq!(a.tc_backend, TcBackend::Ebpf);
        let cli = Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--model", "default"])
            .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!(a.model, InternetworkingModel::TcFilter);
    }

    #[test]
    fn queues_are_bounded() {
        assert!(
            Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--queues", "0"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--queues", "257"]).is_err()
        );
    }
}
