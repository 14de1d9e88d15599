//! `netshim limit`'s text: per endpoint and direction, the limit, where it is shaped, and
//! what the shaper counted.

use std::fmt::Write as _;

use netshim::{
    limit::{apply::LiveShaper, rate::display_rate},
    sandbox::LimitReport,
};

pub fn limit(r: &LimitReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "netns {} (cookie {}){}",
        r.netns,
        r.netns_cookie,
        if r.changed { ": limits changed" } else { "" }
    );
    for e in &r.endpoints {
        for (direction, shaper) in [("rx", &e.rx), ("tx", &e.tx)] {
            let _ = writeln!(
                s,
                "{} {} {direction}: {}",
                e.index,
                e.name,
                line(shaper.as_ref())
            );
        }
    }
    s
}

/// One direction's shaper on one line.
pub fn line(shaper: Option<&LiveShaper>) -> String {
    let Some(l) = shaper else {
        return "unlimited".into();
    };
    let s = &l.shaper;
    let mut out = format!(
        "{} burst {} B on {} ({} profile)",
        display_rate(s.rate_bps),
        s.burst_bytes,
        s.device,
        s.profile.as_str()
    );
    match (l.live_rate_bps, &l.counters) {
        (Some(live), Some(c)) => {
            if live != s.rate_bps {
                let _ = write!(out, "; the kernel's class is at {}", display_rate(live));
            }
            let _ = write!(
                out,
                "; sent {} pkts {} B, throttled {}, dropped {}, queued {} B",
                c.sent_packets, c.sent_bytes, c.throttled, c.dropped, c.backlog_bytes
            );
        }
        _ => out.push_str("; MISSING: the shaper is not on the device"),
    }
    out
}
