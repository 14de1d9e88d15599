//! Is the sandbox still what netshim made? `status` and `stats` compare what the sandbox's
//! commit file (`attached.json`) and pin directory record with the netns as it is, and
//! report every difference as a problem: a recorded tap or pod device deleted (or
//! re-created) behind netshim's back, a pin directory or link pin that is gone, a mirred
//! filter that redirects to a device that is not the recorded one. A sandbox with problems
//! is `broken` (exit code 4, [`crate::error::EXIT_BROKEN`]); `netshim detach` repairs it
//! (it removes whatever is left and restores the netns), and attach makes it anew.

use crate::{
    datapath::{ebpf, mirred, Dev, TcBackend},
    interfaces::Interface,
    netns::Netns,
    pins, state, Error, Result,
};

use super::{AttachReport, Sandbox};
pub use crate::state::Health;

/// The sandbox's commit file, if it has one that parses.
pub(crate) fn commit(sandbox: &Sandbox) -> Option<AttachReport> {
    state::read_json(&sandbox.commit_file())
}

/// What is broken in the sandbox (empty when nothing is). `interfaces` is its netns's link
/// list; must run inside the netns.
pub(crate) async fn problems(
    handle: &rtnetlink::Handle,
    sandbox: &Sandbox,
    interfaces: &[Interface],
) -> Result<Vec<String>> {
    let netns = &sandbox.netns;
    let mut problems = Vec::new();
    let device = |problems: &mut Vec<String>, what: &str, name: &str, ifindex: u32| {
        check_device(interfaces, problems, what, name, ifindex)
    };
    let dir = &sandbox.pin_dir;
    let commit = commit(sandbox);
    // Devices the commit file's check covers (the pin records' check skips them).
    let mut checked = std::collections::BTreeSet::new();
    if let Some(report) = &commit {
        if report.backend == Some(TcBackend::Ebpf) && !dir.exists() {
            problems.push(format!(
                "the pin directory {} (maps, links) is gone: no eBPF datapath connects the \
                 endpoints",
                dir.display()
            ));
        }
        for e in &report.endpoints {
            let pod = &e.endpoint;
            checked.insert(pod.name.clone());
            checked.extend(e.tap.iter().map(|t| t.name.clone()));
            let pod_ok = device(&mut problems, "pod device", &pod.name, pod.ifindex);
            if let Some(tap) = &e.tap {
                let tap_ok = device(&mut problems, "tap", &tap.name, tap.ifindex);
                if !tap_ok && pod_ok {
                    problems.push(format!(
                        "{}'s traffic to the VM has nowhere to go: every frame arriving on \
                         {} is dropped",
                        pod.name, pod.name
                    ));
                }
                if report.backend == Some(TcBackend::Mirred) && pod_ok && tap_ok {
                    for (from, from_ifindex, to, to_ifindex) in [
                        (&pod.name, pod.ifindex, &tap.name, tap.ifindex),
                        (&tap.name, tap.ifindex, &pod.name, pod.ifindex),
                    ] {
                        mirred_problem(
                            handle,
                            netns,
                            &mut problems,
                            Dev {
                                name: from.clone(),
                                ifindex: from_ifindex,
                            },
                            to,
                            to_ifindex,
                        )
                        .await?;
                    }
                }
            }
            if let Some(m) = &e.macvtap {
                device(&mut problems, "macvtap", &m.name, m.ifindex);
            }
        }
    }
    if dir.exists() {
        pinned_problems(dir, &checked, interfaces, &mut problems);
    }
    problems.dedup();
    Ok(problems)
}

/// The eBPF datapath's own records: every in-use endpoint's two devices, and (TCX) their
/// link pins. Covers `connect`ed pairs, which have no commit file.
fn pinned_problems(
    dir: &std::path::Path,
    checked: &std::collections::BTreeSet<String>,
    interfaces: &[Interface],
    problems: &mut Vec<String>,
) {
    let device = |problems: &mut Vec<String>, what: &str, name: &str, ifindex: u32| {
        check_device(interfaces, problems, what, name, ifindex)
    };
    let records = match ebpf::recorded_endpoints(dir) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("the endpoint records cannot be read: {e}"));
            return;
        }
    };
    let tcx = ebpf::recorded_mode(dir).is_ok_and(|m| m == crate::datapath::AttachMode::Tcx);
    let name = |f: &[u8]| String::from_utf8_lossy(netshim_common::from_fixed(f)).into_owned();
    for (_, r) in records {
        for (n, ifindex) in [(&r.pod_name, r.pod_ifindex), (&r.tap_name, r.tap_ifindex)] {
            let n = name(n);
            // A device the commit file names was reported already; check it quietly.
            let present = if checked.contains(&n) {
                device(&mut Vec::new(), "device", &n, ifindex)
            } else {
                device(problems, "device", &n, ifindex)
            };
            if present && tcx && !pins::link_pin(dir, &n).exists() {
                problems.push(format!(
                    "the link pin {} is missing: {n}'s ingress has no netshim program",
                    pins::link_pin(dir, &n).display()
                ));
            }
        }
    }
}

/// A recorded device must be there under its name, with the ifindex it had; says what is
/// wrong otherwise. Returns whether it is there.
fn check_device(
    interfaces: &[Interface],
    problems: &mut Vec<String>,
    what: &str,
    name: &str,
    ifindex: u32,
) -> bool {
    match interfaces.iter().find(|i| i.name == name) {
        None => {
            problems.push(format!("{what} {name} (ifindex {ifindex}) is gone"));
            false
        }
        Some(i) if i.ifindex != ifindex => {
            problems.push(format!(
                "{what} {name} is ifindex {} now, not the recorded {ifindex}: it was \
                 re-created behind netshim's back",
                i.ifindex
            ));
            false
        }
        Some(_) => true,
    }
}

async fn mirred_problem(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    problems: &mut Vec<String>,
    from: Dev,
    to: &str,
    to_ifindex: u32,
) -> Result<()> {
    let target = mirred::redirect_target(handle, &from)
        .await
        .map_err(Error::mirred(netns))?;
    match target {
        Some(t) if t == to_ifindex => {}
        // The kernel dumps a mirred action whose device is gone with ifindex 0.
        Some(0) => problems.push(format!(
            "{}'s ingress mirred filter redirects to a device that is gone (was {to}, \
             ifindex {to_ifindex}): everything arriving on {} is dropped",
            from.name, from.name
        )),
        Some(t) => problems.push(format!(
            "{}'s ingress mirred filter redirects to ifindex {t}, not {to} (ifindex \
             {to_ifindex})",
            from.name
        )),
        None => problems.push(format!(
            "{} has no ingress mirred filter: nothing forwards its traffic to {to}",
            from.name
        )),
    }
    Ok(())
}

/// The one-line hint every broken report ends with.
pub fn repair_hint(netns: &str) -> String {
    format!("`netshim detach --netns {netns}` repairs it (then attach again)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_problems() {
        assert_eq!(Health::of(&[]), Health::Ok);
        assert_eq!(
            Health::of(&["tap tap0_kata is gone".into()]),
            Health::Broken
        );
        assert_eq!(
            serde_json::to_value(Health::Broken).unwrap(),
            serde_json::json!("broken")
        );
    }
}
