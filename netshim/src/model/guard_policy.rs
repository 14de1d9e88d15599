//! Which models and datapaths can have a source guard: only the tcfilter model on the eBPF
//! datapath has a program on the tap to enforce it.

use super::InternetworkingModel;
use crate::{
    datapath::TcBackend,
    guard::{GuardMode, GuardSettings},
};

/// Why a sandbox attached this way has no guard (its datapath has no eBPF program on the
/// tap), or `None` when it can have one.
pub fn unavailable_reason(model: InternetworkingModel, backend: TcBackend) -> Option<String> {
    match (model, backend) {
        (InternetworkingModel::TcFilter, TcBackend::Ebpf) => None,
        (InternetworkingModel::TcFilter, TcBackend::Mirred) => Some(
            "the mirred tc backend has no source guard; use --tc-backend ebpf or --guard off"
                .into(),
        ),
        (model, _) => Some(format!(
            "the {model} model has no eBPF datapath, so no source guard; use --model \
             tcfilter --tc-backend ebpf or --guard off"
        )),
    }
}

/// Enforce or log asked for explicitly where the datapath cannot guard (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guard {mode} was asked for, but {reason}")]
pub struct GuardUnavailable {
    pub mode: GuardMode,
    pub reason: String,
}

/// The guard an attach gives its endpoints: `Ok(Ok(settings))` on the eBPF datapath,
/// `Ok(Err(reason))` where there is none and nobody asked for one (guard off, the report
/// says why), an error where enforce or log was asked for (`explicit`) and cannot be had.
pub fn resolve(
    settings: &GuardSettings,
    explicit: bool,
    model: InternetworkingModel,
    backend: TcBackend,
) -> Result<Result<GuardSettings, String>, GuardUnavailable> {
    match unavailable_reason(model, backend) {
        None => Ok(Ok(settings.clone())),
        Some(reason) if explicit && settings.mode.is_on() => Err(GuardUnavailable {
            mode: settings.mode,
            reason,
        }),
        Some(reason) => Ok(Err(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_enforce_or_log_needs_the_ebpf_datapath() {
        use InternetworkingModel::*;
        let log = GuardSettings {
            mode: GuardMode::Log,
            ..GuardSettings::default()
        };
        let ok = resolve(&log, true, TcFilter, TcBackend::Ebpf).unwrap();
        assert_eq!(ok, Ok(log.clone()));
        let e = resolve(&log, true, TcFilter, TcBackend::Mirred).unwrap_err();
        assert!(
            e.to_string()
                .contains("mirred tc backend has no source guard"),
            "{e}"
        );
        for model in [MacVtap, None] {
            assert!(resolve(&log, true, model, TcBackend::Ebpf).is_err());
            // Not asked for: off, with the reason.
            let off = resolve(&log, false, model, TcBackend::Ebpf).unwrap();
            assert!(off.unwrap_err().contains("no eBPF datapath"));
        }
        let off = GuardSettings {
            mode: GuardMode::Off,
            ..GuardSettings::default()
        };
        assert!(resolve(&off, true, TcFilter, TcBackend::Mirred)
            .unwrap()
            .is_err());
    }
}
