//! What can go wrong installing netshim into a node's CNI configuration.

use std::path::PathBuf;

/// An installer failure: which file, what was wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "no CNI network configuration in {dir} (files ending .conf, .conflist or .json): \
         netshim chains into the network the primary CNI plugin installs; install that first \
         (the agent waits for it)"
    )]
    NoPrimary { dir: PathBuf },
    #[error(
        "--chain-into {wanted:?}: no configuration in {dir} is that file or names that \
         network (there: {there})"
    )]
    NoSuchNetwork {
        dir: PathBuf,
        wanted: String,
        there: String,
    },
    #[error(
        "{path}: {reason}. The container runtime cannot use it either; fix the primary CNI's \
         configuration, or name another with --chain-into"
    )]
    BadConf { path: PathBuf, reason: String },
    #[error(
        "{path}: cniVersion {version:?}: netshim chains from 0.3.0 on (prevResult) and speaks \
         {supported}; upgrade the primary CNI's configuration"
    )]
    Version {
        path: PathBuf,
        version: String,
        supported: String,
    },
    #[error("--plugin-json: {0}")]
    PluginJson(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: netshim's install record is damaged ({reason}); remove {path} and run \
         `netshim cni install` again (uninstall then strips netshim's entry instead of \
         restoring the original bytes)"
    )]
    Record { path: PathBuf, reason: String },
}

impl InstallError {
    /// Invalid input (exit 2) rather than a failed operation (exit 1).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Self::NoSuchNetwork { .. }
                | Self::BadConf { .. }
                | Self::Version { .. }
                | Self::PluginJson(_)
                | Self::NoPrimary { .. }
        )
    }
}

/// `map_err` for an I/O step on `path`.
pub(super) fn io(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { op, path, source }
}
