//! `netshim cni install`, `netshim cni uninstall` and `netshim agent`.

use std::{fmt::Write as _, io::Write as _, time::Duration};

use netshim::{
    agent::{self, AgentOptions},
    cni::install::{self, conflist, InstallOptions, InstallReport, UninstallReport},
    Error,
};

use super::{
    args::{AgentArgs, ChainArgs, CniCommand},
    run::print,
    signal::stop_signal,
};

fn install_options(
    conf_dir: &std::path::Path,
    bin_dir: &std::path::Path,
    chain: &ChainArgs,
) -> Result<InstallOptions, Error> {
    Ok(InstallOptions {
        conf_dir: conf_dir.to_owned(),
        bin_dir: bin_dir.to_owned(),
        chain_into: chain.chain_into.clone(),
        plugin: conflist::plugin_entry(chain.plugin_json.as_deref())?,
        binary: None,
    })
}

pub fn run(command: CniCommand) -> Result<(), Error> {
    match command {
        CniCommand::Install(a) => {
            let options = install_options(&a.dirs.conf_dir, &a.dirs.bin_dir, &a.chain)?;
            let report = install::install(&options)?;
            print(a.dirs.json, &report, installed);
        }
        CniCommand::Uninstall(a) => {
            let report = install::uninstall(&a.conf_dir, &a.bin_dir)?;
            print(a.json, &report, uninstalled);
        }
    }
    Ok(())
}

fn installed(r: &InstallReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "binary   {} ({})",
        r.binary.path.display(),
        if r.binary.changed {
            "written"
        } else {
            "unchanged"
        }
    );
    let c = &r.chain;
    let _ = writeln!(
        s,
        "chained  {} (network {:?}, cniVersion {}): {}",
        c.path.display(),
        c.network,
        c.cni_version,
        if c.changed {
            "netshim appended"
        } else {
            "already chained, unchanged"
        }
    );
    if let Some(from) = &c.converted_from {
        let _ = writeln!(
            s,
            "         made from {} (kept for uninstall)",
            from.display()
        );
    }
    if let Some(released) = &c.released {
        let _ = writeln!(s, "released {} (put back as it was)", released.display());
    }
    s
}

fn uninstalled(r: &UninstallReport) -> String {
    let mut s = String::new();
    for p in &r.restored {
        let _ = writeln!(
            s,
            "restored  {} (the bytes it had before netshim)",
            p.display()
        );
    }
    for p in &r.removed {
        let _ = writeln!(s, "removed   {}", p.display());
    }
    for p in &r.unchained {
        let _ = writeln!(
            s,
            "unchained {} (changed since install: netshim's entry taken out)",
            p.display()
        );
    }
    if let Some(p) = &r.binary_removed {
        let _ = writeln!(s, "removed   {}", p.display());
    }
    if s.is_empty() {
        s.push_str("nothing of netshim's was installed\n");
    }
    s
}

pub fn agent(a: AgentArgs) -> Result<(), Error> {
    let options = AgentOptions {
        install: install_options(&a.conf_dir, &a.bin_dir, &a.chain)?,
        listen: a.listen,
        ready_file: a.ready_file,
        gc_interval: Duration::from_secs_f64(a.gc_interval),
        upgrade: !a.no_upgrade,
    };
    agent::run(options, stop_signal(), |addr| {
        tracing::info!("agent: serving /metrics, /readyz and /healthz on http://{addr}");
        println!("serving metrics on http://{addr}/metrics");
        let _ = std::io::stdout().flush();
    })
}
