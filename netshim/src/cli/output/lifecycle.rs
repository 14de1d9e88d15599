//! What `connect`, `disconnect`, `detach` and `gc` did, in words.

use std::fmt::Write as _;

use netshim::sandbox::{ConnectReport, DetachReport, DisconnectReport, GcReport};

pub fn connect(r: &ConnectReport) -> String {
    let mode = |m: Option<netshim::datapath::RedirectMode>| match m {
        Some(netshim::datapath::RedirectMode::RedirectPeer) => " (bpf_redirect_peer)",
        Some(netshim::datapath::RedirectMode::Redirect) => " (bpf_redirect)",
        None => "",
    };
    format!(
        "connected {} <-> {} in netns {} with {} ({}): {} -> {}{}, {} -> {}{}\n",
        r.a,
        r.b,
        r.netns,
        r.backend.as_str(),
        r.datapath,
        r.a,
        r.b,
        mode(r.a_to_b),
        r.b,
        r.a,
        mode(r.b_to_a)
    )
}

pub fn disconnect(r: &DisconnectReport) -> String {
    match r.removed {
        Some(b) => format!(
            "disconnected {} <-> {} in netns {} ({})\n",
            r.a,
            r.b,
            r.netns,
            b.as_str()
        ),
        None => format!(
            "{} and {} in netns {} were not connected; nothing removed\n",
            r.a, r.b, r.netns
        ),
    }
}

pub fn detach(r: &DetachReport) -> String {
    if r.netns_gone {
        let path = r
            .netns_path
            .as_ref()
            .map(|p| format!(" (no {})", p.display()))
            .unwrap_or_default();
        let mut s = format!(
            "no network namespace {} exists{path}; nothing to detach\n",
            r.netns
        );
        let collected = |c: &u64| {
            r.gc.as_ref()
                .is_some_and(|g| g.removed_dead.iter().any(|d| d.netns_cookie == *c))
        };
        match r.recorded_sandboxes.as_slice() {
            [] => s.push_str("netshim has no record of a sandbox in it\n"),
            cookies => {
                for c in cookies {
                    let what = match collected(c) {
                        true => "its leftovers were collected",
                        false => "its leftovers were not collected (see gc below)",
                    };
                    let _ = writeln!(s, "netshim had a record of it (netns cookie {c}): {what}");
                }
            }
        }
        if let Some(gc) = &r.gc {
            for line in self::gc(gc).lines() {
                match line.starts_with("gc:") {
                    true => s.push_str(line),
                    false => {
                        s.push_str("gc: ");
                        s.push_str(line);
                    }
                }
                s.push('\n');
            }
        }
        return s;
    }
    if !r.removed_anything() {
        return format!("netns {}: nothing attached, nothing removed\n", r.netns);
    }
    format!("detached netns {}; {}\n", r.netns, removed_list(r))
}

/// What a teardown removed, on one line.
pub(super) fn removed_list(r: &DetachReport) -> String {
    let mut parts = Vec::new();
    if !r.removed_taps.is_empty() {
        parts.push(format!("removed taps {}", r.removed_taps.join(",")));
    }
    if let Some(dir) = &r.removed_pin_dir {
        parts.push(format!("removed pins {}", dir.display()));
    }
    if !r.removed_mirred.is_empty() {
        parts.push(format!(
            "removed ingress qdiscs on {}",
            r.removed_mirred.join(",")
        ));
    }
    if !r.removed_shapers.is_empty() {
        parts.push(format!(
            "removed shapers on {}",
            r.removed_shapers.join(",")
        ));
    }
    if !r.removed_macvtaps.is_empty() {
        parts.push(format!("removed macvtaps {}", r.removed_macvtaps.join(",")));
    }
    if !r.removed_state.is_empty() {
        let files: Vec<String> = r
            .removed_state
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        parts.push(format!("removed state {}", files.join(",")));
    }
    if !r.repaired.is_empty() {
        let paths: Vec<String> = r.repaired.iter().map(|p| p.display().to_string()).collect();
        parts.push(format!("repaired (removed) {}", paths.join(",")));
    }
    if parts.is_empty() {
        return "nothing removed".into();
    }
    parts.join("; ")
}

pub fn gc(r: &GcReport) -> String {
    if r.is_empty() {
        return "gc: nothing to collect\n".into();
    }
    let mut s = String::new();
    for d in &r.removed_dead {
        let paths: Vec<String> = d.removed.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(
            s,
            "dead netns cookie {}: removed {}",
            d.netns_cookie,
            paths.join(", ")
        );
    }
    for h in &r.cleaned_half_made {
        let _ = writeln!(
            s,
            "half-made sandbox in netns {} (cookie {}): {}",
            h.netns_path.display(),
            h.netns_cookie,
            removed_list(&h.removed)
        );
    }
    for r in &r.repaired {
        let paths: Vec<String> = r.removed.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(
            s,
            "netns cookie {}: removed paths of the wrong type {}",
            r.netns_cookie,
            paths.join(", ")
        );
    }
    for b in &r.skipped_busy {
        let _ = writeln!(s, "skipped netns cookie {}: {}", b.netns_cookie, b.reason);
    }
    for f in &r.failed {
        let _ = writeln!(s, "failed netns cookie {}: {}", f.netns_cookie, f.error);
    }
    s
}
