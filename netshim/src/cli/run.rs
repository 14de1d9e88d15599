//! Dispatches a parsed command to the library and prints its report.

use netshim::{
    config::{self, FileConfig},
    datapath::{ebpf::EbpfObject, TcBackend},
    ebpf_log,
    endpoint::SystemProbe,
    guard::GuardSettings,
    model::InternetworkingModel,
    netns::Netns,
    sandbox, Error,
};

use super::{
    args::{AttachArgs, Cli, Command, EbpfAttach},
    output,
    signal::stop_signal,
    tools,
};

pub(super) fn print<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        // Serializing plain structs cannot fail.
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("serializable report")
        );
    } else {
        print!("{}", human(value));
    }
}

fn probe(dir: Option<std::path::PathBuf>) -> SystemProbe {
    match dir {
        Some(vhost_user_dir) => SystemProbe { vhost_user_dir },
        None => SystemProbe::default(),
    }
}

/// Flags over the config file over the defaults; conflicting combinations are refused.
fn attach_options(a: &AttachArgs) -> Result<sandbox::AttachOptions, Error> {
    let file = match &a.config {
        Some(path) => config::load(path)?,
        None => FileConfig::default(),
    };
    let model = a.model.or(file.model).unwrap_or_default();
    if model != InternetworkingModel::TcFilter {
        if a.tc_backend.is_some() {
            return Err(Error::InvalidOptions(format!(
                "--tc-backend applies to the tcfilter model only, not to '{model}'"
            )));
        }
        if a.fast_path.is_some() {
            return Err(Error::InvalidOptions(format!(
                "--fast-path applies to the tcfilter model only, not to '{model}'"
            )));
        }
        if a.ebpf_attach.is_some() {
            return Err(Error::InvalidOptions(format!(
                "--ebpf-attach applies to the tcfilter model only, not to '{model}'"
            )));
        }
        if a.object.is_some() {
            return Err(Error::InvalidOptions(format!(
                "--object applies to the tcfilter model only, not to '{model}'"
            )));
        }
    }
    let backend = a.tc_backend.or(file.tc_backend).unwrap_or_default();
    let ebpf_attach = a.ebpf_attach.and_then(EbpfAttach::mode);
    if ebpf_attach.is_some() && backend != TcBackend::Ebpf {
        return Err(Error::InvalidOptions(
            "--ebpf-attach applies to the ebpf tc backend only".into(),
        ));
    }
    if a.object.is_some() && backend != TcBackend::Ebpf {
        return Err(Error::InvalidOptions(
            "--object applies to the ebpf tc backend only".into(),
        ));
    }
    let ebpf_object = match &a.object {
        Some(path) => Some(
            EbpfObject::read(path).map_err(|source| Error::UpgradeObject {
                source: Box::new(source),
            })?,
        ),
        None => None,
    };
    let owner = a.tap_owner.or(file.tap_owner);
    let guard_mode = a.guard.mode.or(file.guard);
    let guard = GuardSettings {
        mode: guard_mode.unwrap_or_default(),
        allow_dhcp: a.guard.allow_dhcp || file.guard_allow_dhcp.unwrap_or(false),
        allowed_addresses: match a.guard.allow.is_empty() {
            true => file.guard_allowed_addresses.unwrap_or_default(),
            false => a.guard.allow.clone(),
        },
        allowed_ethertypes: match a.guard.allow_ethertype.is_empty() {
            true => file.guard_allowed_ethertypes.unwrap_or_default(),
            false => a.guard.allow_ethertype.clone(),
        },
    };
    Ok(sandbox::AttachOptions {
        model,
        backend,
        queues: a.queues.or(file.queues).unwrap_or(1),
        tap_owner: owner.map(|o| o.uid),
        tap_group: owner.and_then(|o| o.gid),
        txqueuelen: a.txqueuelen.or(file.txqueuelen),
        ebpf_attach,
        ebpf_object,
        fast_path: a.fast_path.unwrap_or_default(),
        probe: probe(a.vhost_user_dir.clone().or(file.vhost_user_dir)),
        skip_unsupported: a.skip_unsupported,
        disable_new_netns: a.disable_new_netns || file.disable_new_netns.unwrap_or(false),
        // Custom tap names are the CNI plugin's `tap_name` only: kata finds `tap<N>_kata`.
        tap_names: Default::default(),
        // The CNI plugin's CNI_IFNAME: the command line attaches whatever the netns has.
        needs_tap: None,
        guard,
        guard_explicit: guard_mode.is_some(),
        limits: a.limits.request().over(file.limits),
    })
}

/// What attach and watch both start from: the checked options, then the netns (options
/// are refused before the netns argument is looked at).
fn attach_target(a: &AttachArgs) -> Result<(Netns, sandbox::AttachOptions), Error> {
    let options = attach_options(a)?;
    options.validate()?;
    // Without a netns of its own the sandbox lives in the caller's.
    let arg = a.netns.as_deref().unwrap_or("/proc/self/ns/net");
    Ok((Netns::resolve(arg)?, options))
}

pub fn run(cli: Cli) -> Result<(), Error> {
    if cli.command.needs_host() {
        netshim::host::require(cli.command.name())?;
    }
    match cli.command {
        Command::Attach(a) => {
            let (netns, options) = attach_target(&a)?;
            let report = sandbox::attach(&netns, &options)?;
            print(a.json, &report, output::attach);
        }
        Command::Watch(a) => {
            let (netns, options) = attach_target(&a)?;
            let options = sandbox::WatchOptions {
                attach: options,
                ..sandbox::WatchOptions::default()
            };
            let json = a.json;
            sandbox::watch(&netns, &options, stop_signal(), move |change| {
                output::watch_line(json, change)
            })?;
        }
        Command::Connect(a) => {
            let ebpf_attach = a.ebpf_attach.and_then(EbpfAttach::mode);
            if a.tc_backend != TcBackend::Ebpf
                && (ebpf_attach.is_some() || a.fast_path != Default::default())
            {
                return Err(Error::InvalidOptions(
                    "--fast-path off|auto and --ebpf-attach apply to the ebpf tc backend only; \
                     use --fast-path auto (the default) with mirred"
                        .into(),
                ));
            }
            let guard = match (a.guard, a.guard_mac) {
                (Some(mode), Some(mac)) if mode.is_on() => {
                    if a.tc_backend != TcBackend::Ebpf {
                        return Err(Error::InvalidOptions(
                            "--guard enforce|log: the mirred tc backend has no source guard; \
                             use --tc-backend ebpf or --guard off"
                                .into(),
                        ));
                    }
                    Some(sandbox::ConnectGuard {
                        mode,
                        mac,
                        allow: a.guard_allow.clone(),
                    })
                }
                _ => None,
            };
            let netns = Netns::resolve(&a.netns.netns)?;
            let options = sandbox::ConnectOptions {
                backend: a.tc_backend,
                fast_path: a.fast_path,
                ebpf_attach,
                guard,
            };
            let report = sandbox::connect(&netns, &a.dev_a, &a.dev_b, &options)?;
            print(a.netns.json, &report, output::connect);
        }
        Command::Disconnect(a) => {
            let netns = Netns::resolve(&a.netns.netns)?;
            let report = sandbox::disconnect(&netns, &a.dev_a, &a.dev_b)?;
            print(a.netns.json, &report, output::disconnect);
        }
        Command::Scan(a) => {
            let netns = Netns::resolve(&a.netns.netns)?;
            let report = sandbox::scan(&netns, &probe(a.vhost_user_dir))?;
            print(a.netns.json, &report, output::scan);
        }
        Command::Detach(a) => {
            let report = sandbox::detach_arg(&a.netns)?;
            print(a.json, &report, output::detach);
        }
        Command::Gc(a) => {
            if !netshim::agent::host_view::in_host_pid_ns() {
                return Err(netshim::agent::AgentError::NotHostPid { command: "gc" }.into());
            }
            let report = sandbox::gc()?;
            print(a.json, &report, output::gc);
            if let Some(first) = report.failed.first() {
                return Err(Error::GcIncomplete {
                    count: report.failed.len(),
                    cookie: first.netns_cookie,
                    error: first.error.clone(),
                });
            }
        }
        Command::Status(a) => {
            let netns = Netns::resolve(&a.netns)?;
            let report = sandbox::status(&netns)?;
            print(a.json, &report, output::status);
            if !report.problems.is_empty() {
                return Err(Error::Broken {
                    netns: report.netns,
                    problems: report.problems,
                });
            }
        }
        Command::Guard(a) => {
            let netns = Netns::resolve(&a.netns.netns)?;
            let change = sandbox::GuardChange {
                endpoint: a.endpoint,
                mode: a.mode,
                allow: a.allow,
                disallow: a.disallow,
                allow_dhcp: a.allow_dhcp,
                allow_ethertypes: a.allow_ethertype,
                disallow_ethertypes: a.disallow_ethertype,
            };
            let report = sandbox::guard(&netns, &change)?;
            print(a.netns.json, &report, output::guard);
        }
        Command::Limit(a) => {
            let netns = Netns::resolve(&a.netns.netns)?;
            let request = netshim::limit::LimitRequest {
                rx_rate: a.rx,
                rx_burst: a.rx_burst,
                tx_rate: a.tx,
                tx_burst: a.tx_burst,
                profile: a.profile,
            };
            let report = sandbox::limit(&netns, a.endpoint.as_deref(), &request)?;
            print(a.netns.json, &report, output::limit);
        }
        Command::Cni(c) => super::install::run(c)?,
        Command::Agent(a) => super::install::agent(a)?,
        Command::Stats(a) => super::metrics::stats(a)?,
        Command::Metrics(a) => super::metrics::serve(a)?,
        Command::Upgrade(a) => {
            let options = sandbox::UpgradeOptions {
                object: a.object,
                guard: a.guard,
            };
            let report = match &a.netns {
                Some(arg) => sandbox::upgrade(&Netns::resolve(arg)?, &options)?,
                None => sandbox::upgrade_all(&options)?,
            };
            print(a.json, &report, output::upgrade);
            let failed = report.failed();
            if failed > 0 {
                return Err(Error::UpgradeIncomplete {
                    failed,
                    total: report.sandboxes.len(),
                });
            }
        }
        // --- CLI tools (logs, completions, man) ---
        Command::Logs(a) => {
            let scope = match &a.netns {
                Some(arg) => ebpf_log::Scope::sandbox(&Netns::resolve(arg)?),
                None => ebpf_log::Scope::All,
            };
            ebpf_log::follow(&scope, stop_signal())?;
        }
        Command::Completions(a) => stdout(&tools::completions(a.shell))?,
        Command::Man(a) => match &a.out {
            None => stdout(&tools::man_page().map_err(stdout_err)?)?,
            Some(dir) => {
                let written = tools::write_man_pages(dir).map_err(|source| Error::Write {
                    path: dir.clone(),
                    source,
                })?;
                for path in written {
                    println!("{}", path.display());
                }
            }
        },
    }
    Ok(())
}

fn stdout_err(source: std::io::Error) -> Error {
    Error::Write {
        path: "stdout".into(),
        source,
    }
}

fn stdout(bytes: &[u8]) -> Result<(), Error> {
    tools::print_bytes(bytes).map_err(stdout_err)
}

/// Runs and turns the outcome into an exit code, printing the error.
pub fn main_with_exit_code(cli: Cli) -> i32 {
    match run(cli) {
        Ok(()) => netshim::error::EXIT_OK,
        Err(e) => {
            // Every library error already names its cause in its message; printing the
            // source chain as well would repeat it.
            eprintln!("netshim: {e}");
            e.exit_code()
        }
    }
}
