//! Human-readable tables for the CLI's reports (`--json` prints the structs instead).

use std::fmt::Write as _;

use netshim::{
    sandbox::{
        AttachReport, Change, ConnectReport, DetachReport, DisconnectReport, EndpointInfo,
        GcReport, ScanReport, ScannedInterface, StatusReport, UpgradeOutcome, UpgradeReport,
        WatchEvent, WatchedEndpoint,
    },
    stats::{DropCount, Dropped, SandboxStats},
};
use netshim_common::GUARD_REASONS;

fn addrs(list: &[netshim::interfaces::IfAddr]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The columns attach and status share: index, name, kind, ifindex, mac, mtu.
fn endpoint_columns(e: &EndpointInfo) -> String {
    format!(
        "{:<3} {:<12} {:<7} {:>7} {:<17} {:>5}",
        e.index,
        e.name,
        e.class.kind.as_str(),
        e.ifindex,
        opt(e.mac),
        e.mtu
    )
}

const ENDPOINT_HEADER: &str = "idx endpoint     kind    ifindex mac                 mtu";

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

pub fn attach(r: &AttachReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "attached netns {} (inode {}, cookie {}) model {} datapath {}",
        r.netns, r.netns_inode, r.netns_cookie, r.model, r.datapath
    );
    if r.already_attached {
        let _ = writeln!(s, "already attached: nothing changed (the recorded attach)");
    }
    if let Some(c) = &r.cleaned_leftovers {
        let _ = writeln!(s, "cleaned up a dead run's leftovers: {}", removed_list(c));
    }
    let _ = writeln!(
        s,
        "{ENDPOINT_HEADER} {:<12} {:>7}  addresses",
        "vm device", "ifindex"
    );
    for e in &r.endpoints {
        let _ = writeln!(
            s,
            "{} {:<12} {:>7}  {}",
            endpoint_columns(&e.endpoint),
            handed_over(e),
            opt(e
                .tap
                .as_ref()
                .map(|t| t.ifindex)
                .or(e.macvtap.as_ref().map(|m| m.ifindex))),
            addrs(&e.endpoint.addresses)
        );
        if let Some(g) = &e.guard {
            let _ = writeln!(s, "    {}", g.line());
        }
    }
    skipped_lines(&mut s, &r.skipped);
    s
}

pub fn guard(r: &netshim::sandbox::GuardCommandReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "netns {} (cookie {}){}",
        r.netns,
        r.netns_cookie,
        if r.changed { ": guard changed" } else { "" }
    );
    for e in &r.endpoints {
        let _ = writeln!(s, "{} {} ({}): {}", e.index, e.name, e.tap, e.guard.line());
    }
    s
}

fn skipped_lines(s: &mut String, skipped: &[netshim::sandbox::SkippedInterface]) {
    for k in skipped {
        let detail = k
            .detail
            .as_ref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        let _ = writeln!(s, "skipped {} ({}){detail}", k.name, k.reason);
    }
}

/// What the VMM opens for an endpoint: the tap, the macvtap's char device, the vhost-user
/// socket or the PCI device.
fn handed_over(e: &netshim::sandbox::EndpointReport) -> String {
    if let Some(t) = &e.tap {
        return t.name.clone();
    }
    if let Some(m) = &e.macvtap {
        return m.device.display().to_string();
    }
    if let Some(s) = &e.endpoint.class.vhost_user_socket {
        return s.display().to_string();
    }
    if let Some(p) = &e.endpoint.class.pci_address {
        return format!("pci {p}");
    }
    "-".into()
}

pub fn scan(r: &ScanReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "netns {} (inode {}, cookie {})",
        r.netns, r.netns_inode, r.netns_cookie
    );
    let _ = writeln!(s, "{ENDPOINT_HEADER}  addresses / why skipped");
    for i in &r.interfaces {
        match i {
            ScannedInterface::Endpoint(e) => {
                let _ = writeln!(s, "{}  {}", endpoint_columns(e), addrs(&e.addresses));
            }
            ScannedInterface::Skipped(k) => {
                let _ = writeln!(
                    s,
                    "{:<3} {:<12} skipped ({}){}",
                    "-",
                    k.name,
                    k.reason,
                    k.detail
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    s
}

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
fn removed_list(r: &DetachReport) -> String {
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

/// The first lines of a broken sandbox's report: what is broken and how to repair it.
fn broken_lines(s: &mut String, netns: &str, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let _ = writeln!(s, "BROKEN: netns {netns}: {}", problems.join("; "));
    let _ = writeln!(s, "BROKEN: {}", netshim::sandbox::repair_hint(netns));
}

pub fn status(r: &StatusReport) -> String {
    let mut s = String::new();
    broken_lines(&mut s, &r.netns, &r.problems);
    let _ = writeln!(
        s,
        "netns {} (inode {}, cookie {}): {}{}",
        r.netns,
        r.netns_inode,
        r.netns_cookie,
        if r.attached {
            "attached"
        } else {
            "not attached"
        },
        r.datapath
            .as_ref()
            .map(|d| format!(", datapath {d}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "{ENDPOINT_HEADER} {:<12} {:<9} {:<15}  addresses",
        "tap", "connected", "vmm"
    );
    for e in &r.endpoints {
        let vmm = match e.vmm_attached {
            Some(true) => "attached",
            Some(false) => "no VMM attached",
            None => "-",
        };
        let _ = writeln!(
            s,
            "{} {:<12} {:<9} {:<15}  {}",
            endpoint_columns(&e.endpoint),
            opt(e.tap.as_ref()),
            if e.connected { "yes" } else { "no" },
            vmm,
            addrs(&e.endpoint.addresses)
        );
        if let Some(g) = &e.guard {
            let _ = writeln!(s, "    {}", g.line());
        }
    }
    for m in &r.macvtaps {
        let _ = writeln!(
            s,
            "macvtap {} (ifindex {}, {}) on pod ifindex {}, {}",
            m.name,
            m.ifindex,
            m.device.display(),
            m.pod_ifindex,
            if m.up { "up" } else { "down" }
        );
    }
    skipped_lines(&mut s, &r.skipped);
    for d in &r.damaged {
        let _ = writeln!(
            s,
            "damaged: {} {} (attach refuses this; `netshim detach --netns {}` repairs it)",
            d.path.display(),
            d.problem,
            r.netns
        );
    }
    s
}

pub fn stats(all: &[SandboxStats]) -> String {
    let w = all
        .iter()
        .map(|sb| sb.netns.len())
        .chain(["netns".len()])
        .max()
        .unwrap_or(5);
    let mut s = String::new();
    for sb in all {
        broken_lines(&mut s, &sb.netns, &sb.problems);
    }
    let _ = writeln!(
        s,
        "{:<w$} {:<7} {:<12} {:<12} {:<7} {:>12} {:>14} {:>6} {:>12}  dropped",
        "netns", "backend", "endpoint", "tap", "dir", "forwarded", "bytes", "errs", "delivered"
    );
    let count = |c: DropCount| c.value().map_or_else(|| "-".to_owned(), |n| n.to_string());
    for sb in all {
        for e in &sb.endpoints {
            for (dir, d) in [("to_vm", &e.to_vm), ("from_vm", &e.from_vm)] {
                let mut dropped: Vec<String> = d
                    .dropped
                    .reasons()
                    .iter()
                    // The guard's seven reasons only when they counted something (a
                    // sandbox without guard maps says so in its notes).
                    .filter(|(reason, c)| {
                        !c.is_not_applicable()
                            && (!Dropped::is_guard_reason(reason) || c.value().unwrap_or(0) > 0)
                    })
                    .map(|(reason, c)| format!("{reason}={}", count(*c)))
                    .collect();
                if let Some(g) = &d.guard {
                    dropped.push(format!("guard={}", g.mode));
                    dropped.extend(
                        GUARD_REASONS
                            .iter()
                            .zip(g.flagged)
                            .filter(|(_, n)| *n > 0)
                            .map(|(reason, n)| format!("flagged_{reason}={n}")),
                    );
                }
                let _ = writeln!(
                    s,
                    "{:<w$} {:<7} {:<12} {:<12} {:<7} {:>12} {:>14} {:>6} {:>12}  {}",
                    sb.netns,
                    sb.backend.as_str(),
                    e.pod,
                    e.tap,
                    dir,
                    d.packets,
                    d.bytes,
                    d.errors,
                    d.delivered
                        .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    dropped.join(" ")
                );
            }
        }
        if sb.unmatched.packets > 0 {
            let _ = writeln!(
                s,
                "{:<w$} unmatched (passed, no peer entry): {} packets, {} bytes",
                sb.netns, sb.unmatched.packets, sb.unmatched.bytes
            );
        }
        for note in &sb.notes {
            let _ = writeln!(s, "{:<w$} note: {note}", sb.netns);
        }
    }
    s
}

pub fn upgrade(r: &UpgradeReport) -> String {
    if r.sandboxes.is_empty() {
        return "nothing to upgrade: no netshim sandbox is pinned\n".into();
    }
    let mut s = String::new();
    for sb in &r.sandboxes {
        let datapath = sb.datapath.as_deref().unwrap_or("-");
        match sb.outcome {
            UpgradeOutcome::Upgraded => {
                let _ = writeln!(
                    s,
                    "upgraded netns {} (cookie {}, {datapath}) to program {} from {}",
                    sb.netns,
                    sb.netns_cookie,
                    opt(sb.new_prog_id),
                    r.object
                );
                if !sb.created_maps.is_empty() {
                    let _ = writeln!(
                        s,
                        "  created maps the sandbox's datapath version lacked: {}",
                        sb.created_maps.join(", ")
                    );
                }
                for g in &sb.guard {
                    let _ = writeln!(s, "  {} ({}): {}", g.name, g.tap, g.guard.line());
                }
                if let Some(why) = &sb.guard_reason {
                    let _ = writeln!(s, "  guard: not set up: {why}");
                }
            }
            UpgradeOutcome::Skipped | UpgradeOutcome::Failed => {
                let _ = writeln!(
                    s,
                    "{} netns {} (cookie {}, {datapath}): {}",
                    if sb.outcome == UpgradeOutcome::Skipped {
                        "skipped"
                    } else {
                        "FAILED"
                    },
                    sb.netns,
                    sb.netns_cookie,
                    sb.reason.as_deref().unwrap_or("-")
                );
            }
        }
        for h in &sb.hooks.swapped {
            let hook = match (h.link_id, h.prio, h.handle) {
                (Some(link), _, _) => format!("tcx link {link}"),
                (None, Some(prio), Some(handle)) => {
                    format!("cls_bpf pref {prio} handle {handle:#x}")
                }
                _ => "-".into(),
            };
            let _ = writeln!(
                s,
                "  {:<12} {hook}: prog {} -> {}",
                h.device, h.old_prog_id, h.new_prog_id
            );
        }
        for k in &sb.hooks.skipped {
            let _ = writeln!(s, "  {:<12} skipped: {}", k.device, k.reason);
        }
    }
    s
}

/// Prints one line for a change `watch` made or saw: a JSON object, or text. A closed stdout
/// does not stop the watcher.
pub fn watch_line(json: bool, change: &Change) {
    use std::io::Write as _;
    let line = if json {
        // Serializing plain structs cannot fail.
        serde_json::to_string(change).expect("serializable change")
    } else {
        format!("{} {}", change.time, watch(change))
    };
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn watched(e: &WatchedEndpoint) -> String {
    format!(
        "{} -> {} ({})",
        e.name,
        e.vm_device.as_deref().unwrap_or("-"),
        e.datapath
    )
}

/// The text of a watch change, without its timestamp.
pub fn watch(c: &Change) -> String {
    match &c.event {
        WatchEvent::Watching {
            attached,
            endpoints,
        } => {
            let list = endpoints.iter().map(watched).collect::<Vec<_>>().join(", ");
            let how = match (attached.is_some(), endpoints.is_empty()) {
                (_, true) => "no endpoint yet".to_owned(),
                (true, false) => format!("attached {list}"),
                (false, false) => format!("already attached: {list}"),
            };
            format!("watching netns {} ({how})", c.netns)
        }
        WatchEvent::Added { endpoint, .. } => format!("added {}", watched(endpoint)),
        WatchEvent::Removed { endpoint } => format!(
            "removed {} ({})",
            endpoint.name,
            endpoint
                .vm_device
                .clone()
                .unwrap_or_else(|| endpoint.datapath.to_string())
        ),
        WatchEvent::Skipped { name, detail, .. } => format!(
            "skipped {name}: {}",
            detail.as_deref().unwrap_or("unsupported")
        ),
        WatchEvent::Failed { name, error, .. } => format!("failed {name}: {error}"),
        WatchEvent::GuardAddresses {
            name, addresses, ..
        } => {
            let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            format!("guard {name}: addresses {}", list.join(" "))
        }
        WatchEvent::Stopped => format!(
            "stopped watching netns {}; the datapath stays attached",
            c.netns
        ),
    }
}

#[cfg(test)]
mod tests {
    use netshim::{
        datapath::TcBackend,
        stats::{DirectionStats, EndpointStats, GuardStats},
    };

    use super::*;

    fn one_endpoint(from_vm: DirectionStats) -> SandboxStats {
        SandboxStats {
            netns: "pod-a".into(),
            netns_inode: 1,
            netns_cookie: 2,
            backend: TcBackend::Ebpf,
            endpoints: vec![EndpointStats {
                index: 0,
                pod: "eth0".into(),
                tap: "tap0_kata".into(),
                to_vm: DirectionStats::default(),
                from_vm,
            }],
            unmatched: DirectionStats::default(),
            notes: vec![],
            health: netshim::sandbox::Health::Ok,
            problems: vec![],
        }
    }

    #[test]
    fn stats_show_the_guard_reasons_that_counted_and_the_guard_mode() {
        let mut guard = [DropCount::Counted(0); 7];
        guard[1] = DropCount::Counted(1000);
        let mut flagged = [0; 7];
        flagged[0] = 3;
        let table = stats(&[one_endpoint(DirectionStats {
            packets: 5,
            dropped: Dropped {
                mtu: DropCount::Counted(0),
                guard,
                pod_tx_dropped: DropCount::Counted(0),
                ..Dropped::default()
            },
            guard: Some(GuardStats {
                mode: netshim::guard::GuardMode::Enforce,
                flagged,
            }),
            ..DirectionStats::default()
        })]);
        let line = table.lines().find(|l| l.contains("from_vm")).unwrap();
        assert!(
            line.ends_with(
                "mtu=0 source_ip=1000 pod_tx_dropped=0 guard=enforce flagged_source_mac=3"
            ),
            "{table}"
        );
        assert!(!line.contains("arp="), "{table}");
    }

    #[test]
    fn stats_of_a_sandbox_without_guard_maps_list_no_guard_reason() {
        let table = stats(&[one_endpoint(DirectionStats {
            dropped: Dropped {
                mtu: DropCount::Counted(0),
                guard: [DropCount::NotCounted; 7],
                ..Dropped::default()
            },
            ..DirectionStats::default()
        })]);
        let line = table.lines().find(|l| l.contains("from_vm")).unwrap();
        assert!(line.ends_with("mtu=0"), "{table}");
    }
}
