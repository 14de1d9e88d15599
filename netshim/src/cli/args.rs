//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::logging::LogLevel;
use netshim::{
    config::TapOwner,
    datapath::{AttachMode, FastPath, TcBackend},
    guard::GuardMode,
    interfaces::Mac,
    model::InternetworkingModel,
};

/// The exit code table every command's `--help` ends with, from [`netshim::error::EXIT_CODES`].
pub static EXIT_CODES_HELP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut help = String::from("Exit codes:");
    for c in netshim::error::EXIT_CODES {
        let mut lines = c.meaning.lines();
        help.push_str(&format!(
            "\n  {}  {}",
            c.code,
            lines.next().unwrap_or_default()
        ));
        for line in lines {
            help.push_str(&format!("\n     {line}"));
        }
    }
    help
});

/// eBPF-accelerated networking shim between a sandbox's pod interfaces and its microVM's taps.
#[derive(Debug, Parser)]
#[command(name = "netshim", version, after_help = EXIT_CODES_HELP.as_str())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Diagnostics on stderr at this level and above (stdout keeps only the report).
    /// RUST_LOG, when set, overrides it (e.g. RUST_LOG=netshim=debug,aya=info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogLevel::Warn,
        value_name = "LEVEL"
    )]
    pub log_level: LogLevel,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a tap per endpoint of a pod netns and connect them (kata's tcfilter model).
    /// Idempotent: an attached netns reports what was attached and changes nothing; what a
    /// killed run left is cleaned up first.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Attach(AttachArgs),
    /// Attach a netns (unless it is attached), then hand each endpoint the CNI plugin adds
    /// to the VM and take back those it removes, printing one line per change, until
    /// SIGINT/SIGTERM (which leave the datapath running). Takes attach's options.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Watch(AttachArgs),
    /// Classify every interface of a netns as kata would, changing nothing.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Scan(ScanArgs),
    /// Connect two existing devices of a netns both ways (same datapath, pins and counters
    /// as attach).
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Connect(ConnectArgs),
    /// Undo `connect` (succeeds when the two are not connected).
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Disconnect(DisconnectArgs),
    /// Remove everything attach made in a netns (succeeds when there is nothing to remove,
    /// and when the netns no longer exists).
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Detach(NetnsArgs),
    /// Show the endpoints of a netns, their taps and whether they are connected.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Status(NetnsArgs),
    /// Per-endpoint packet and byte counters (table, JSON or Prometheus text), or their
    /// per-second rates with --watch.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Stats(StatsArgs),
    /// Serve the counters for Prometheus: GET /metrics on --listen, read fresh on every
    /// scrape, until SIGINT/SIGTERM.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Metrics(MetricsArgs),
    /// Swap the datapath program of attached sandboxes for a new one without a gap in
    /// forwarding, keeping the pinned maps (peers, counters).
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Upgrade(UpgradeArgs),
    /// Remove the pins and state of namespaces that no longer exist, and take down what
    /// killed runs left half-made in live ones.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Gc(GcArgs),
    /// Show or change the source guard of an attached sandbox's endpoints (by map updates,
    /// without reattaching; the commit file records the new settings). Prints the guard as
    /// the maps hold it.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Guard(GuardCmdArgs),
    /// Show or change the rate limits of an attached sandbox's endpoints, live (a new rate
    /// is a change of the shaper's classes in place; 0 removes a limit). Prints the shapers
    /// as the kernel holds them, with their counters.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Limit(LimitCmdArgs),
    /// Install netshim on a node's CNI configuration (binary into the bin directory,
    /// chained last into the primary network), or take it out again byte for byte.
    #[command(subcommand)]
    Cni(CniCommand),
    /// The node daemon: keeps netshim chained, serves /metrics, /readyz and /healthz for
    /// every sandbox of the node, collects sandboxes whose netns is gone, and upgrades the
    /// sandboxes' datapath to its own on start, until SIGTERM/SIGINT (which leave the
    /// datapaths and the chained configuration in place: `netshim cni uninstall` removes it).
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Agent(AgentArgs),
    // --- CLI tools (logs, completions, man): see cli/tools.rs, ebpf_log/ ---
    /// Print the eBPF datapath's own log records (aya-log, e.g. a failed redirect) on
    /// stderr as they come, until SIGINT/SIGTERM.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Logs(LogsArgs),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
    /// Print the netshim(1) man page (roff) on stdout, or write it and one page per
    /// subcommand (netshim-attach.1, ...) into a directory.
    Man(ManArgs),
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Attach(_) => "attach",
            Command::Watch(_) => "watch",
            Command::Scan(_) => "scan",
            Command::Connect(_) => "connect",
            Command::Disconnect(_) => "disconnect",
            Command::Detach(_) => "detach",
            Command::Status(_) => "status",
            Command::Stats(_) => "stats",
            Command::Metrics(_) => "metrics",
            Command::Upgrade(_) => "upgrade",
            Command::Gc(_) => "gc",
            Command::Guard(_) => "guard",
            Command::Limit(_) => "limit",
            Command::Cni(CniCommand::Install(_)) => "cni install",
            Command::Cni(CniCommand::Uninstall(_)) => "cni uninstall",
            Command::Agent(_) => "agent",
            Command::Logs(_) => "logs",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }

    /// Whether the command looks at sandboxes (bpffs, /run/netshim, namespaces) and so
    /// needs the privileges and the host's mount namespace (see `netshim::host`).
    pub fn needs_host(&self) -> bool {
        // The installer only writes the CNI directories it is given.
        !matches!(
            self,
            Command::Completions(_) | Command::Man(_) | Command::Cni(_)
        )
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only the datapath of this network namespace (NAME or PATH).
    #[arg(
        long,
        value_name = "NAME|PATH",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub netns: Option<String>,
    /// Every netshim datapath program loaded on the host, including ones loaded later.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write netshim.1 and netshim-<subcommand>.1 into DIR (created if needed) and print
    /// their paths, instead of printing netshim.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GuardCmdArgs {
    #[command(flatten)]
    pub netns: NetnsArgs,
    /// Only the endpoint of this pod device (default: every endpoint with a tap).
    #[arg(long, value_name = "POD_IF")]
    pub endpoint: Option<String>,
    /// enforce, log or off.
    #[arg(long, value_name = "MODE")]
    pub mode: Option<GuardMode>,
    /// Allow a source CIDR (or address) besides the endpoint's addresses. Repeatable.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub allow: Vec<ipnet::IpNet>,
    /// Remove an allowed CIDR. Repeatable.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    pub disallow: Vec<ipnet::IpNet>,
    /// DHCP client traffic from 0.0.0.0: on or off.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub allow_dhcp: Option<bool>,
    /// Allow an ethertype (0xNNNN, >= 0x0600). Repeatable.
    #[arg(long, value_name = "TYPE", value_parser = parse_ethertype)]
    pub allow_ethertype: Vec<u16>,
    /// Remove an allowed ethertype. Repeatable.
    #[arg(long, value_name = "TYPE", value_parser = parse_ethertype)]
    pub disallow_ethertype: Vec<u16>,
}

/// Rate limits, as `attach`/`watch` flags (`--rx-rate`) and as `netshim limit`'s
/// (`--rx`): per direction a rate in bits per second (0 = none) and a burst in bytes.
#[derive(Debug, Args, Clone, Default)]
pub struct LimitArgs {
    /// Limit of the traffic into the VM (kata's rx_rate_limiter_max_rate), bits per second:
    /// 100000000, 100M, 1Gbit; 0 = unlimited.
    #[arg(long = "rx-rate", value_name = "RATE", value_parser = parse_rate)]
    pub rx_rate: Option<u64>,
    /// Limit of the traffic out of the VM (kata's tx_rate_limiter_max_rate).
    #[arg(long = "tx-rate", value_name = "RATE", value_parser = parse_rate)]
    pub tx_rate: Option<u64>,
    /// Burst of the rx limit, bytes (65536, 64k, 1MiB); default: the profile's.
    #[arg(long = "rx-burst", value_name = "BYTES", value_parser = parse_burst)]
    pub rx_burst: Option<u64>,
    /// Burst of the tx limit, bytes.
    #[arg(long = "tx-burst", value_name = "BYTES", value_parser = parse_burst)]
    pub tx_burst: Option<u64>,
    /// The shaper's parameters: netshim (a burst sized for GSO frames) or kata (exactly
    /// kata's addHTBQdisc).
    #[arg(long = "limit-profile", value_name = "PROFILE")]
    pub profile: Option<netshim::limit::HtbProfile>,
}

impl LimitArgs {
    pub fn request(&self) -> netshim::limit::LimitRequest {
        netshim::limit::LimitRequest {
            rx_rate: self.rx_rate,
            rx_burst: self.rx_burst,
            tx_rate: self.tx_rate,
            tx_burst: self.tx_burst,
            profile: self.profile,
        }
    }
}

fn parse_rate(s: &str) -> Result<u64, String> {
    netshim::limit::rate::parse_rate(s).map_err(|e| e.to_string())
}

fn parse_burst(s: &str) -> Result<u64, String> {
    netshim::limit::rate::parse_burst(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct LimitCmdArgs {
    #[command(flatten)]
    pub netns: NetnsArgs,
    /// Only the endpoint of this pod device (default: every endpoint with a tap or macvtap).
    #[arg(long, value_name = "POD_IF")]
    pub endpoint: Option<String>,
    /// New limit into the VM, bits per second (100M, 1G); 0 removes it.
    #[arg(long = "rx", value_name = "RATE", value_parser = parse_rate)]
    pub rx: Option<u64>,
    /// New limit out of the VM; 0 removes it.
    #[arg(long = "tx", value_name = "RATE", value_parser = parse_rate)]
    pub tx: Option<u64>,
    /// New burst of the rx limit, bytes.
    #[arg(long = "rx-burst", value_name = "BYTES", value_parser = parse_burst)]
    pub rx_burst: Option<u64>,
    /// New burst of the tx limit, bytes.
    #[arg(long = "tx-burst", value_name = "BYTES", value_parser = parse_burst)]
    pub tx_burst: Option<u64>,
    /// The shapers' parameters, netshim or kata, for both directions of the endpoints this
    /// changes (default: what they have).
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profile: Option<netshim::limit::HtbProfile>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

#[derive(Debug, Subcommand)]
pub enum CniCommand {
    /// Copy this binary into the bin directory (atomically) and chain netshim as the last
    /// plugin of the primary network: the first configuration file as the runtimes pick
    /// it, or the one --chain-into names. A .conf becomes a .conflist. Idempotent: a run
    /// that finds it chained as asked writes nothing.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Install(CniInstallArgs),
    /// Put the configuration back as it was before install (byte for byte, unless it was
    /// changed since: then only netshim's entry is taken out) and remove the binary.
    #[command(after_help = EXIT_CODES_HELP.as_str())]
    Uninstall(CniDirsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CniDirsArgs {
    /// The runtimes' CNI configuration directory.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// The runtimes' CNI plugin directory.
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ChainArgs {
    /// The network to chain into: a file of the configuration directory (or a path), or a
    /// network name; without it, the first file as the runtimes pick it.
    #[arg(long, value_name = "NAME|FILE")]
    pub chain_into: Option<String>,
    /// netshim's entry in the list (a JSON object, default {"type": "netshim"}), e.g.
    /// '{"type": "netshim", "report_tap": false}'. Checked as the plugin reads it.
    #[arg(long, value_name = "JSON")]
    pub plugin_json: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CniInstallArgs {
    #[command(flatten)]
    pub dirs: CniDirsArgs,
    #[command(flatten)]
    pub chain: ChainArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The runtimes' CNI configuration directory (in a container: where the host's is
    /// mounted).
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// The runtimes' CNI plugin directory (in a container: where the host's is mounted).
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Address to serve GET /metrics, /readyz and /healthz on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9464")]
    pub listen: std::net::SocketAddr,
    /// The file that exists while the agent is ready (chained, datapath loadable).
    #[arg(long, value_name = "PATH", default_value = "/run/netshim/agent/ready")]
    pub ready_file: PathBuf,
    /// Seconds between collections of sandboxes whose netns is gone (also run at once
    /// when a name leaves /run/netns).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_interval)]
    pub gc_interval: f64,
    /// Do not upgrade the sandboxes that run another datapath program on start.
    #[arg(long)]
    pub no_upgrade: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// Network namespace: a NAME under /run/netns, or a PATH such as /proc/<pid>/ns/net.
    /// Optional with --disable-new-netns (then: the caller's own netns).
    #[arg(
        long,
        value_name = "NAME|PATH",
        required_unless_present = "disable_new_netns"
    )]
    pub netns: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// kata-style TOML configuration ([runtime] internetworking_model, disable_new_netns;
    /// [hypervisor.*] rx_rate_limiter_max_rate, tx_rate_limiter_max_rate; [netshim]
    /// tc_backend, queues, tap_owner, txqueuelen, vhost_user_dir, guard, guard_allow_dhcp,
    /// guard_allowed_addresses, guard_allowed_ethertypes, rx_rate, tx_rate, rx_burst,
    /// tx_burst, limit_profile). Flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Internetworking model, as kata's `internetworking_model`: default (= tcfilter),
    /// tcfilter, macvtap, none. Default: tcfilter.
    #[arg(long, value_parser = parse_model)]
    pub model: Option<InternetworkingModel>,
    /// Datapath of the tcfilter model: ebpf (TC classifier + bpf_redirect) or mirred
    /// (kata's u32 + mirred). Default: ebpf.
    #[arg(long, value_parser = parse_backend)]
    pub tc_backend: Option<TcBackend>,
    /// How the eBPF classifier is hooked: auto (= cls-bpf: a clsact qdisc and a cls_bpf
    /// filter, the fastest to attach and detach), tcx (pinned TCX links, kernel >= 6.6;
    /// each link waits for an RCU grace period), or cls-bpf.
    #[arg(long, value_enum)]
    pub ebpf_attach: Option<EbpfAttach>,
    /// The eBPF object a new sandbox's datapath is loaded from (default: the one built into
    /// this binary), e.g. an earlier release's, as `upgrade --object` takes it. A sandbox
    /// that is attached already keeps its program.
    #[arg(long, value_name = "FILE")]
    pub object: Option<PathBuf>,
    /// bpf_redirect_peer for VM → pod where the pod device is a veth whose peer is in
    /// another netns (auto), or always plain bpf_redirect (off). Default: auto.
    #[arg(long, value_parser = parse_fast_path)]
    pub fast_path: Option<FastPath>,
    /// Queues per tap or macvtap (more than 1 makes taps multi-queue). Default: 1.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub queues: Option<u32>,
    /// Owner of the taps (TUNSETOWNER / TUNSETGROUP): the VMM's UID[:GID], each 0-4294967294
    /// (4294967295 is (uid_t)-1, the kernel's "no owner").
    #[arg(long, value_name = "UID[:GID]")]
    pub tap_owner: Option<TapOwner>,
    /// txqueuelen of the taps (kernel default 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub txqueuelen: Option<u32>,
    /// Where kata's vhost-user sockets are: <DIR>/vhostuser_<IP>/vhu.sock. Default: /tmp.
    #[arg(long, value_name = "DIR")]
    pub vhost_user_dir: Option<PathBuf>,
    /// List interfaces kata would refuse (tun mode, unknown kinds) as skipped instead of
    /// failing.
    #[arg(long)]
    pub skip_unsupported: bool,
    /// kata's disable_new_netns: the sandbox has no netns of its own; only valid with
    /// --model none.
    #[arg(long)]
    pub disable_new_netns: bool,
    #[command(flatten)]
    pub guard: GuardArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `--ebpf-attach`: how the eBPF classifier is hooked. (The variants have no doc comments
/// on purpose: `--help` lists them as `[possible values: auto, tcx, cls-bpf]`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfAttach {
    // cls-bpf on every kernel (see AttachMode::auto).
    Auto,
    Tcx,
    ClsBpf,
}

impl EbpfAttach {
    /// The hook asked for; `None` for auto, which the datapath chooses by the kernel.
    pub fn mode(self) -> Option<AttachMode> {
        match self {
            EbpfAttach::Auto => None,
            EbpfAttach::Tcx => Some(AttachMode::Tcx),
            EbpfAttach::ClsBpf => Some(AttachMode::ClsBpf),
        }
    }
}

/// The source guard of attach and watch.
#[derive(Debug, Args)]
pub struct GuardArgs {
    /// Source guard of what the VM sends (eBPF backend): enforce (drop and count spoofed
    /// sources, foreign ethertypes, RAs, DHCP servers), log (count and log, deliver) or
    /// off. Default: enforce on the eBPF backend, off where there is none (mirred, macvtap,
    /// none; asking for enforce or log there is an error).
    #[arg(long = "guard", value_name = "MODE")]
    pub mode: Option<GuardMode>,
    /// Let DHCP client traffic from 0.0.0.0 (UDP 68 -> 67) through the guard.
    #[arg(long = "guard-allow-dhcp")]
    pub allow_dhcp: bool,
    /// A source the guest may use besides its addresses (VRRP, secondary IPs): a CIDR, or
    /// an address (= /32, /128). Repeatable.
    #[arg(long = "guard-allow", value_name = "CIDR", value_parser = parse_cidr)]
    pub allow: Vec<ipnet::IpNet>,
    /// An ethertype the guest may send besides IPv4, ARP and IPv6 (0xNNNN, >= 0x0600).
    /// Repeatable, at most 4.
    #[arg(long = "guard-allow-ethertype", value_name = "TYPE", value_parser = parse_ethertype)]
    pub allow_ethertype: Vec<u16>,
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    netshim::guard::settings::parse_cidr(s).map_err(|e| e.to_string())
}

fn parse_ethertype(s: &str) -> Result<u16, String> {
    netshim::guard::settings::parse_ethertype(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub netns: NetnsArgs,
    /// The first device (the "pod" side: its traffic counts as to_vm).
    pub dev_a: String,
    /// The second device (the "VM" side).
    pub dev_b: String,
    /// ebpf (TC classifier + bpf_redirect) or mirred (kata's u32 + mirred).
    #[arg(long, default_value = "ebpf", value_parser = parse_backend)]
    pub tc_backend: TcBackend,
    /// bpf_redirect_peer towards a veth whose peer is in another netns (auto), or always
    /// plain bpf_redirect (off).
    #[arg(long, default_value = "auto", value_parser = parse_fast_path)]
    pub fast_path: FastPath,
    /// How the eBPF classifier is hooked (auto, tcx, cls-bpf).
    #[arg(long, value_enum)]
    pub ebpf_attach: Option<EbpfAttach>,
    /// Source guard of what dev_b sends (as of a VM's tap): enforce, log or off (default:
    /// off; ebpf only). Needs --guard-mac.
    #[arg(long, value_name = "MODE", requires = "guard_mac")]
    pub guard: Option<GuardMode>,
    /// The only source MAC dev_b's frames may have.
    #[arg(long, value_name = "MAC", requires = "guard")]
    pub guard_mac: Option<Mac>,
    /// A source dev_b's frames may have: an address (held inline, as an endpoint's own
    /// addresses are) or a CIDR (in the LPM trie, as allowed addresses are). Repeatable.
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr, requires = "guard")]
    pub guard_allow: Vec<ipnet::IpNet>,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    #[command(flatten)]
    pub netns: NetnsArgs,
    pub dev_a: String,
    pub dev_b: String,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub netns: NetnsArgs,
    /// Where kata's vhost-user sockets are: <DIR>/vhostuser_<IP>/vhu.sock. Default: /tmp.
    #[arg(long, value_name = "DIR")]
    pub vhost_user_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this network namespace (NAME or PATH); without it, every sandbox (pinned ones,
    /// and those attached with mirred).
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// Print JSON instead of a table (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output: table (default), json (= --json), or prometheus (text exposition 0.0.4).
    #[arg(long, value_enum)]
    pub format: Option<StatsFormat>,
    /// Print per-second rates per endpoint and direction every --interval until Ctrl-C: a
    /// table (redrawn on a terminal), or one JSON object per interval with --json.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between two --watch reports (default 1; fractions allowed).
    #[arg(long, value_name = "SECS", requires = "watch", value_parser = parse_interval)]
    pub interval: Option<f64>,
}

/// What `netshim stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatsFormat {
    Table,
    Json,
    Prometheus,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address to serve GET /metrics on (Prometheus text exposition).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Only this network namespace (NAME or PATH); without it, every sandbox.
    #[arg(long, value_name = "NAME|PATH")]
    pub netns: Option<String>,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds from 0.1 to 3600")),
    }
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Only this network namespace (NAME or PATH).
    #[arg(
        long,
        value_name = "NAME|PATH",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub netns: Option<String>,
    /// Every sandbox pinned in bpffs.
    #[arg(long)]
    pub all: bool,
    /// The eBPF object to load (default: the one built into this binary). Its maps must
    /// match the pinned ones.
    #[arg(long, value_name = "PATH")]
    pub object: Option<PathBuf>,
    /// The source guard's mode for every endpoint (enforce, log, off), over what the
    /// sandbox's commit file records (a sandbox attached before the guard: enforce).
    #[arg(long, value_name = "MODE")]
    pub guard: Option<GuardMode>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_model(s: &str) -> Result<InternetworkingModel, String> {
    s.parse()
        .map_err(|e: netshim::model::UnknownModel| e.to_string())
}

fn parse_fast_path(s: &str) -> Result<FastPath, String> {
    s.parse()
}

fn parse_backend(s: &str) -> Result<TcBackend, String> {
    s.parse()
        .map_err(|e: netshim::datapath::UnknownBackend| e.to_string())
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
        assert_eq!(
            a.model, None,
            "the default is applied after the config file"
        );
        assert_eq!(a.tc_backend, None);
        let cli = Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--model", "default"])
            .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!(a.model, Some(InternetworkingModel::TcFilter));
    }

    #[test]
    fn netns_is_required_unless_disable_new_netns() {
        assert!(Cli::try_parse_from(["netshim", "attach"]).is_err());
        let cli = Cli::try_parse_from([
            "netshim",
            "attach",
            "--disable-new-netns",
            "--model",
            "none",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert!(a.disable_new_netns);
        assert_eq!(a.netns, None);
    }

    #[test]
    fn tap_owner_parses_uid_and_gid() {
        let cli = Cli::try_parse_from([
            "netshim",
            "attach",
            "--netns",
            "x",
            "--tap-owner",
            "1000:100",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!(
            a.tap_owner,
            Some(TapOwner {
                uid: 1000,
                gid: Some(100)
            })
        );
        assert!(
            Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--tap-owner", "qemu"])
                .is_err()
        );
        for (owner, why) in [
            ("4294967295", "uid 4294967295 is (uid_t)-1"),
            (
                "99999999999",
                "uid 99999999999 is out of range (0..=4294967294)",
            ),
        ] {
            let err =
                Cli::try_parse_from(["netshim", "attach", "--netns", "x", "--tap-owner", owner])
                    .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{owner}");
            assert!(err.to_string().contains(why), "{owner}: {err}");
        }
    }

    #[test]
    fn upgrade_takes_a_netns_or_all() {
        assert!(Cli::try_parse_from(["netshim", "upgrade"]).is_err());
        assert!(Cli::try_parse_from(["netshim", "upgrade", "--netns", "x", "--all"]).is_err());
        let cli = Cli::try_parse_from(["netshim", "upgrade", "--all", "--object", "/x.o"]).unwrap();
        let Command::Upgrade(u) = cli.command else {
            panic!("not upgrade")
        };
        assert!(u.all);
        assert_eq!(u.object, Some(PathBuf::from("/x.o")));
    }

    #[test]
    fn watch_takes_attach_options() {
        let cli = Cli::try_parse_from([
            "netshim",
            "watch",
            "--netns",
            "x",
            "--tc-backend",
            "mirred",
            "--json",
        ])
        .unwrap();
        let Command::Watch(a) = cli.command else {
            panic!("not watch")
        };
        assert_eq!(a.netns.as_deref(), Some("x"));
        assert_eq!(a.tc_backend, Some(TcBackend::Mirred));
        assert!(a.json);
        assert!(Cli::try_parse_from(["netshim", "watch"]).is_err());
    }

    #[test]
    fn stats_format_json_and_watch_options() {
        let parse = |args: &[&str]| {
            let mut all = vec!["netshim", "stats"];
            all.extend(args);
            Cli::try_parse_from(all).map(|c| match c.command {
                Command::Stats(s) => s,
                _ => panic!("not stats"),
            })
        };
        let s = parse(&["--format", "prometheus"]).unwrap();
        assert_eq!(s.format, Some(StatsFormat::Prometheus));
        assert!(parse(&["--json", "--format", "table"]).is_err());
        assert!(
            parse(&["--interval", "2"]).is_err(),
            "--interval needs --watch"
        );
        assert!(parse(&["--watch", "--interval", "0"]).is_err());
        let s = parse(&["--watch", "--interval", "0.5", "--json"]).unwrap();
        assert_eq!(s.interval, Some(0.5));
        assert!(s.watch && s.json);
        let cli = Cli::try_parse_from(["netshim", "metrics"]).unwrap();
        let Command::Metrics(m) = cli.command else {
            panic!("not metrics")
        };
        assert_eq!(m.listen, "127.0.0.1:9464".parse().unwrap());
    }

    #[test]
    fn ebpf_attach_is_one_of_three_values() {
        let parse = |cmd: &str, value: &str| {
            let mut args = vec!["netshim", cmd, "--netns", "x"];
            if cmd == "connect" {
                args.extend(["a", "b"]);
            }
            args.extend(["--ebpf-attach", value]);
            Cli::try_parse_from(args).map(|c| match c.command {
                Command::Attach(a) | Command::Watch(a) => a.ebpf_attach,
                Command::Connect(c) => c.ebpf_attach,
                _ => panic!("not attach, watch or connect"),
            })
        };
        for cmd in ["attach", "watch", "connect"] {
            for (value, mode) in [
                ("auto", None),
                ("tcx", Some(AttachMode::Tcx)),
                ("cls-bpf", Some(AttachMode::ClsBpf)),
            ] {
                let parsed = parse(cmd, value).unwrap().expect("given");
                assert_eq!(parsed.mode(), mode, "{cmd} --ebpf-attach {value}");
            }
            for value in ["cls_bpf", "TCX", "xdp", ""] {
                let err = parse(cmd, value).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{cmd} --ebpf-attach {value:?}");
                assert!(
                    err.to_string()
                        .contains("possible values: auto, tcx, cls-bpf"),
                    "{cmd} --ebpf-attach {value:?}: {err}"
                );
            }
        }
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
