//! Dispatches a parsed command to the library and prints its report.

use netshim::{backend::ebpf::AttachMode, netns::Netns, sandbox, stats};

use super::{
    args::{Cli, Command},
    output,
};

fn print<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
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

pub fn run(cli: Cli) -> Result<(), netshim::Error> {
    match cli.command {
        Command::Attach(a) => {
            let netns = Netns::resolve(&a.netns.netns)?;
            let options = sandbox::AttachOptions {
                model: a.model,
                backend: a.tc_backend,
                queues: a.queues,
                ebpf_attach: match a.ebpf_attach.as_str() {
                    "tcx" => Some(AttachMode::Tcx),
                    "cls-bpf" => Some(AttachMode::ClsBpf),
                    _ => None,
                },
            };
            let report = sandbox::attach(&netns, &options)?;
            print(a.netns.json, &report, output::attach);
        }
        Command::Detach(a) => {
            let netns = Netns::resolve(&a.netns)?;
            let report = sandbox::detach(&netns)?;
            print(a.json, &report, output::detach);
        }
        Command::Status(a) => {
            let netns = Netns::resolve(&a.netns)?;
            let report = sandbox::status(&netns)?;
            print(a.json, &report, output::status);
        }
        Command::Stats(a) => {
            let all = match &a.netns {
                Some(arg) => {
                    let netns = Netns::resolve(arg)?;
                    sandbox::stats(&netns)?.into_iter().collect::<Vec<_>>()
                }
                None => {
                    let mut all = Vec::new();
                    for entry in stats::read_all_pinned()? {
                        match entry {
                            Ok(s) => all.push(s),
                            Err(e) => eprintln!("netshim: warning: {e}"),
                        }
                    }
                    all
                }
            };
            print(a.json, &all, |v| output::stats(v));
        }
    }
    Ok(())
}

/// Runs and turns the outcome into an exit code, printing the error chain.
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
