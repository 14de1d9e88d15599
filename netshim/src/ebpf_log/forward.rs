//! aya-log records of one datapath program, turned into `tracing` events.

use super::TARGET;

/// A `log::Log` that turns the records aya-log parses out of one program's ring buffer into
/// `tracing` events.
#[derive(Debug, Clone)]
pub struct Forward {
    pub prog_id: u32,
    pub netns: String,
}

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let (prog_id, netns) = (self.prog_id, self.netns.as_str());
        let source = match (record.file(), record.line()) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            _ => String::new(),
        };
        let message = record.args();
        // tracing needs the level at compile time: one call per level.
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: TARGET, $level, prog_id, netns, source, "{message}")
            };
        }
        match record.level() {
            log::Level::Error => emit!(tracing::Level::ERROR),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Trace => emit!(tracing::Level::TRACE),
        }
    }

    fn flush(&self) {}
}
