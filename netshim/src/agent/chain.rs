//! Keeping netshim chained: the binary in the bin directory and netshim's entry last in the
//! primary network's configuration, put back whenever the primary CNI rewrites its file or
//! someone removes either (see [`crate::cni::install`]).

use std::path::PathBuf;

use crate::cni::install::{self, InstallOptions};

pub struct ChainKeeper {
    options: InstallOptions,
    /// The binary's size, to tell cheaply that the bin directory's copy is still ours.
    binary_len: Option<u64>,
    /// The last outcome, logged when it changes.
    last: Option<Result<PathBuf, String>>,
}

impl ChainKeeper {
    pub fn new(options: InstallOptions) -> ChainKeeper {
        ChainKeeper {
            options,
            binary_len: None,
            last: None,
        }
    }

    pub fn conf_dir(&self) -> &std::path::Path {
        &self.options.conf_dir
    }

    fn binary_in_place(&self) -> bool {
        let path = self.options.bin_dir.join(install::BINARY_NAME);
        self.binary_len.is_some()
            && std::fs::metadata(path).ok().map(|m| m.len()) == self.binary_len
    }

    /// Installs what is missing; the chained file, or why it is not chained.
    pub fn reconcile(&mut self) -> Result<PathBuf, String> {
        let outcome = self.try_reconcile();
        if self.last.as_ref() != Some(&outcome) {
            match &outcome {
                Ok(path) => tracing::info!("agent: netshim is chained in {}", path.display()),
                Err(e) => tracing::warn!("agent: not chained: {e}"),
            }
            self.last = Some(outcome.clone());
        }
        outcome
    }

    fn try_reconcile(&mut self) -> Result<PathBuf, String> {
        let mut binary_written = false;
        if !self.binary_in_place() {
            let report = install::install_binary(&self.options).map_err(|e| e.to_string())?;
            if report.changed {
                tracing::info!(
                    "agent: installed the plugin binary {}",
                    report.path.display()
                );
            }
            binary_written = report.changed;
            self.binary_len = std::fs::metadata(&report.path).ok().map(|m| m.len());
        }
        let report = install::chain(&self.options, binary_written).map_err(|e| e.to_string())?;
        if let Some(released) = &report.released {
            tracing::info!(
                "agent: {} is no longer the primary network's file: put back as it was",
                released.display()
            );
        }
        if report.changed {
            tracing::info!(
                "agent: chained netshim into {} (network {:?}, cniVersion {}{})",
                report.path.display(),
                report.network,
                report.cni_version,
                report
                    .converted_from
                    .as_ref()
                    .map(|p| format!(", made from {}", p.display()))
                    .unwrap_or_default()
            );
        }
        Ok(report.path)
    }
}
