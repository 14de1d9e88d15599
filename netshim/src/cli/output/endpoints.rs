//! The endpoint tables: what `attach`, `scan` and `status` found and made, and the guard
//! lines of `guard`.

use std::fmt::Write as _;

use netshim::guard::GuardReport;
use netshim::sandbox::{
    AttachReport, EndpointInfo, EndpointReport, GuardCommandReport, ScanReport, ScannedInterface,
    SkippedInterface, StatusReport,
};

use super::{
    broken_lines, opt, removed_list,
    table::{lay_out, left, right, Column},
};

fn addrs(list: &[netshim::interfaces::IfAddr]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The columns attach, scan and status share: index, name, kind, ifindex, mac, mtu.
const ENDPOINT: [Column; 6] = [
    left("idx", 3),
    left("endpoint", 12),
    left("kind", 7),
    right("ifindex", 7),
    left("mac", 17),
    right("mtu", 5),
];

fn endpoint_cells(e: &EndpointInfo) -> Vec<String> {
    vec![
        e.index.to_string(),
        e.name.clone(),
        e.class.kind.as_str().to_owned(),
        e.ifindex.to_string(),
        opt(e.mac),
        e.mtu.to_string(),
    ]
}

/// The endpoint columns followed by `more`.
fn endpoint_columns_and(more: &[Column]) -> Vec<Column> {
    [ENDPOINT.as_slice(), more].concat()
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
    let endpoints = r.endpoints.iter().map(|e| {
        let ifindex = e
            .tap
            .as_ref()
            .map(|t| t.ifindex)
            .or(e.macvtap.as_ref().map(|m| m.ifindex));
        let more = vec![handed_over(e), opt(ifindex)];
        (&e.endpoint, e.guard.as_ref(), more)
    });
    endpoint_table(
        &mut s,
        &[left("vm device", 12), right("ifindex", 7)],
        endpoints,
    );
    skipped_lines(&mut s, &r.skipped);
    s
}

pub fn guard(r: &GuardCommandReport) -> String {
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

/// The endpoint columns and `more` of each endpoint (its info, guard and cells for `more`),
/// each row followed by the endpoint's addresses and, on a line of its own, its guard.
fn endpoint_table<'a>(
    s: &mut String,
    more: &[Column],
    endpoints: impl Iterator<Item = (&'a EndpointInfo, Option<&'a GuardReport>, Vec<String>)>,
) {
    let mut rows = Vec::new();
    let mut tails = Vec::new();
    for (info, guard, cells) in endpoints {
        rows.push([endpoint_cells(info), cells].concat());
        tails.push((addrs(&info.addresses), guard.map(|g| g.line())));
    }
    let laid = lay_out(&endpoint_columns_and(more), true, rows);
    let _ = writeln!(s, "{}  addresses", laid.lines[0]);
    for (line, (addresses, guard)) in laid.lines[1..].iter().zip(tails) {
        let _ = writeln!(s, "{line}  {addresses}");
        if let Some(g) = guard {
            let _ = writeln!(s, "    {g}");
        }
    }
}

fn skipped_lines(s: &mut String, skipped: &[SkippedInterface]) {
    for k in skipped {
        let _ = writeln!(s, "skipped {} ({}){}", k.name, k.reason, detail(k));
    }
}

/// A skipped interface's detail, after a colon, or nothing.
fn detail(k: &SkippedInterface) -> String {
    k.detail
        .as_ref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// What the VMM opens for an endpoint: the tap, the macvtap's char device, the vhost-user
/// socket or the PCI device.
fn handed_over(e: &EndpointReport) -> String {
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
    // A skipped interface's row has its index and name only: its name widens the name
    // column too, and what follows is why it was skipped.
    let rows = r
        .interfaces
        .iter()
        .map(|i| match i {
            ScannedInterface::Endpoint(e) => endpoint_cells(e),
            ScannedInterface::Skipped(k) => vec!["-".to_owned(), k.name.clone()],
        })
        .collect();
    let laid = lay_out(&ENDPOINT, true, rows);
    let _ = writeln!(s, "{}  addresses / why skipped", laid.lines[0]);
    let (idx, name) = (laid.widths[0], laid.widths[1]);
    for (line, i) in laid.lines[1..].iter().zip(&r.interfaces) {
        match i {
            ScannedInterface::Endpoint(e) => {
                let _ = writeln!(s, "{line}  {}", addrs(&e.addresses));
            }
            ScannedInterface::Skipped(k) => {
                let _ = writeln!(
                    s,
                    "{:<idx$} {:<name$} skipped ({}){}",
                    "-",
                    k.name,
                    k.reason,
                    detail(k)
                );
            }
        }
    }
    s
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
    let endpoints = r.endpoints.iter().map(|e| {
        let vmm = match e.vmm_attached {
            Some(true) => "attached",
            Some(false) => "no VMM attached",
            None => "-",
        };
        let connected = if e.connected { "yes" } else { "no" };
        let more = vec![opt(e.tap.as_ref()), connected.to_owned(), vmm.to_owned()];
        (&e.endpoint, e.guard.as_ref(), more)
    });
    endpoint_table(
        &mut s,
        &[left("tap", 12), left("connected", 9), left("vmm", 15)],
        endpoints,
    );
    for e in &r.endpoints {
        for (direction, l) in [("rx", &e.rx_limit), ("tx", &e.tx_limit)] {
            if l.is_some() {
                let line = super::limit::line(l.as_ref());
                let _ = writeln!(s, "{} limit {direction}: {line}", e.endpoint.name);
            }
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
        for (direction, l) in [("rx", &m.rx_limit), ("tx", &m.tx_limit)] {
            if l.is_some() {
                let line = super::limit::line(l.as_ref());
                let _ = writeln!(s, "{} limit {direction}: {line}", m.name);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> Vec<String> {
        ["0", name, "veth", "7", "02:00:00:00:00:01", "1500"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn endpoint_columns_are_as_before_and_widen_for_a_15_byte_name() {
        let laid = lay_out(&ENDPOINT, true, vec![row("eth0")]);
        assert_eq!(
            laid.lines,
            [
                "idx endpoint     kind    ifindex mac                 mtu".to_owned(),
                format!(
                    "{:<3} {:<12} {:<7} {:>7} {:<17} {:>5}",
                    0, "eth0", "veth", 7, "02:00:00:00:00:01", 1500
                ),
            ]
        );
        let long = lay_out(&ENDPOINT, true, vec![row("eth0"), row("abcdefghijklmno")]);
        let mac_at = |l: &str| l.find("02:00").unwrap();
        assert_eq!(mac_at(&long.lines[1]), mac_at(&long.lines[2]), "{long:?}");
        assert!(
            long.lines[2].starts_with("0   abcdefghijklmno veth "),
            "{long:?}"
        );
        assert!(
            long.lines[0].starts_with("idx endpoint        kind "),
            "{long:?}"
        );
    }
}
