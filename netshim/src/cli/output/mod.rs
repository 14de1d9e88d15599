//! Human-readable text for the CLI's reports (`--json` prints the structs instead): the
//! endpoint tables of attach, scan and status, the counters of stats, what lifecycle
//! commands and upgrade did, and watch's lines. [`table`] lays out the columns.

use std::fmt::Write as _;

mod endpoints;
mod lifecycle;
mod limit;
mod stats;
mod table;
mod upgrade;
mod watch;

pub use endpoints::{attach, guard, scan, status};
use lifecycle::removed_list;
pub use lifecycle::{connect, detach, disconnect, gc};
pub use limit::limit;
pub use stats::stats;
pub use upgrade::upgrade;
pub use watch::watch_line;

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The first lines of a broken sandbox's report: what is broken and how to repair it.
fn broken_lines(s: &mut String, netns: &str, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let _ = writeln!(s, "BROKEN: netns {netns}: {}", problems.join("; "));
    let _ = writeln!(s, "BROKEN: {}", netshim::sandbox::repair_hint(netns));
}
