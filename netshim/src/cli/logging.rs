//! Diagnostics: `tracing` events to stderr, filtered by `RUST_LOG` or `--log-level`.
//!
//! stdout carries the reports (tables, JSON) and nothing else; every log line goes to stderr.
//! `log` records (the library's remaining ones, aya's, aya-log's) reach the same subscriber
//! through tracing-subscriber's `log` bridge.
//!
//! Precedence: a non-empty `RUST_LOG` is the whole filter (full `EnvFilter` syntax, e.g.
//! `netshim=debug,aya=info`) and `--log-level` is then ignored; otherwise `--log-level`
//! (default `warn`) applies to every target. A `RUST_LOG` that does not parse is reported
//! once and `--log-level` is used instead. `netshim logs` exists to show the datapath's
//! records, so without `RUST_LOG` it adds `netshim::ebpf=trace,netshim::guard=trace` (the
//! source guard's records) to the filter.

use std::io::IsTerminal;

use tracing_subscriber::{util::SubscriberInitExt, EnvFilter};

/// Value of `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// The filter for `RUST_LOG` (if set) and `--log-level`, and a warning to print when
/// `RUST_LOG` was set but unusable.
pub fn filter(
    rust_log: Option<&str>,
    level: LogLevel,
    show_datapath: bool,
) -> (EnvFilter, Option<String>) {
    let mut warning = None;
    if let Some(spec) = rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        match EnvFilter::try_new(spec) {
            Ok(f) => return (f, None),
            Err(e) => {
                warning = Some(format!(
                    "ignoring RUST_LOG={spec:?} ({e}); using --log-level {}",
                    level.directive()
                ))
            }
        }
    }
    let mut spec = level.directive().to_owned();
    if show_datapath {
        spec.push_str(",netshim::ebpf=trace,netshim::guard=trace");
    }
    // Built from fixed directives: cannot fail.
    let filter = EnvFilter::try_new(&spec).expect("valid built-in filter");
    (filter, warning)
}

/// Installs the global subscriber (stderr) and the `log` bridge. Call once, first thing.
pub fn init(level: LogLevel, show_datapath: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, warning) = filter(rust_log.as_deref(), level, show_datapath);
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        .finish()
        .try_init();
    if let Err(e) = installed {
        eprintln!("netshim: warning: logging not set up: {e}");
    }
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn the_default_is_warn() {
        let (f, w) = filter(None, LogLevel::default(), false);
        assert_eq!(f.max_level_hint(), Some(LevelFilter::WARN));
        assert!(w.is_none());
    }

    #[test]
    fn rust_log_wins_over_the_flag() {
        let (f, w) = filter(Some("trace"), LogLevel::Error, false);
        assert_eq!(f.max_level_hint(), Some(LevelFilter::TRACE));
        assert!(w.is_none());
        // Empty or blank RUST_LOG counts as unset.
        let (f, _) = filter(Some("  "), LogLevel::Info, false);
        assert_eq!(f.max_level_hint(), Some(LevelFilter::INFO));
    }

    #[test]
    fn a_bad_rust_log_falls_back_to_the_flag_with_a_warning() {
        let (f, w) = filter(Some("netshim=loud"), LogLevel::Debug, false);
        assert_eq!(f.max_level_hint(), Some(LevelFilter::DEBUG));
        let w = w.expect("a warning");
        assert!(w.contains("RUST_LOG") && w.contains("debug"), "{w}");
    }

    #[test]
    fn logs_shows_every_datapath_record() {
        let (f, _) = filter(None, LogLevel::Error, true);
        assert_eq!(f.max_level_hint(), Some(LevelFilter::TRACE));
        assert!(f.to_string().contains("netshim::ebpf=trace"), "{f}");
        assert!(f.to_string().contains("netshim::guard=trace"), "{f}");
    }
}
