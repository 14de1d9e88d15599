//! What `upgrade` did to each sandbox.

use std::fmt::Write as _;

use netshim::sandbox::{UpgradeOutcome, UpgradeReport};

use super::{
    opt,
    table::{lay_out, left},
};

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
        // The hooks' devices in one column, as wide as the longest name.
        let mut what = Vec::new();
        let mut devices = Vec::new();
        for h in &sb.hooks.swapped {
            let hook = match (h.link_id, h.prio, h.handle) {
                (Some(link), _, _) => format!("tcx link {link}"),
                (None, Some(prio), Some(handle)) => {
                    format!("cls_bpf pref {prio} handle {handle:#x}")
                }
                _ => "-".into(),
            };
            devices.push(vec![h.device.clone()]);
            what.push(format!(
                "{hook}: prog {} -> {}",
                h.old_prog_id, h.new_prog_id
            ));
        }
        for k in &sb.hooks.skipped {
            devices.push(vec![k.device.clone()]);
            what.push(format!("skipped: {}", k.reason));
        }
        let laid = lay_out(&[left("device", 12)], false, devices);
        for (device, what) in laid.lines.iter().zip(&what) {
            let _ = writeln!(s, "  {device} {what}");
        }
    }
    s
}
