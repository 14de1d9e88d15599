//! Concurrency: many sandboxes attached at once all forward and all detach cleanly.
//!
//! The size comes from the environment so CI runs a reduced version:
//! `NETSHIM_CONCURRENT_SANDBOXES` (default 100).

use std::{
    process::{Child, Command, Stdio},
    time::Instant,
};

use netshim::netns::Netns;
use netshim_tests::{
    leaks::{netshim_dirs, size_from_env, NetnsSnapshot},
    netshim_cli::{netshim_bin, Pod},
    require_root, traffic,
};

fn spawn_netshim(args: &[&str]) -> Child {
    Command::new(netshim_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netshim")
}

/// Runs one `netshim` process per netns, all at once, and returns the failures.
fn all_at_once(verb: &str, pods: &[Pod]) -> Vec<String> {
    let children: Vec<(String, Child)> = pods
        .iter()
        .map(|p| {
            let ns = p.netns().to_owned();
            let child = spawn_netshim(&[verb, "--netns", &ns, "--json"]);
            (ns, child)
        })
        .collect();
    children
        .into_iter()
        .filter_map(|(ns, child)| {
            let out = child.wait_with_output().expect("wait for netshim");
            (!out.status.success()).then(|| {
                format!(
                    "{verb} {ns}: {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect()
}

/// Many sandboxes attached by parallel `netshim attach` processes: every one forwards both
/// ways, and parallel detaches leave every netns as it was.
#[test]
fn many_sandboxes_attach_concurrently() {
    require_root!();
    let n = size_from_env("NETSHIM_CONCURRENT_SANDBOXES", 100).max(2);
    let setup = Instant::now();
    let pods: Vec<Pod> = (0..n).map(|i| Pod::new(&format!("par{i}"))).collect();
    let before: Vec<NetnsSnapshot> = pods
        .iter()
        .map(|p| NetnsSnapshot::take(&p.sandbox))
        .collect();
    let cookies: Vec<u64> = pods
        .iter()
        .map(|p| Netns::resolve(p.netns()).expect("resolve").cookie)
        .collect();
    let setup = setup.elapsed();

    let t = Instant::now();
    let failed = all_at_once("attach", &pods);
    let attach_time = t.elapsed();
    assert!(failed.is_empty(), "attach failures: {failed:#?}");

    let t = Instant::now();
    let not_forwarding: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            let f = traffic::probe(p, "tap0_kata", 3);
            (f != traffic::Forwarded {
                to_vm: 3,
                from_vm: 3,
            })
            .then(|| format!("{}: {f:?}", p.netns()))
        })
        .collect();
    let probe_time = t.elapsed();

    let t = Instant::now();
    let failed = all_at_once("detach", &pods);
    let detach_time = t.elapsed();
    assert!(failed.is_empty(), "detach failures: {failed:#?}");

    let mut leftovers = Vec::new();
    for ((pod, before), cookie) in pods.iter().zip(&before).zip(&cookies) {
        for leak in NetnsSnapshot::take(&pod.sandbox).diff(before) {
            leftovers.push(format!("{}: {leak}", pod.netns()));
        }
        for dir in netshim_dirs(*cookie) {
            leftovers.push(format!("{}: {}", pod.netns(), dir.display()));
        }
    }
    println!(
        "concurrent: {n} sandboxes ({} namespaces made in {:.1} s); {n} parallel attach \
         processes done in {:.2} s; {}/{n} forwarding both ways (checked in {:.1} s); {n} \
         parallel detaches in {:.2} s; leftovers: {}",
        2 * n,
        setup.as_secs_f64(),
        attach_time.as_secs_f64(),
        n - not_forwarding.len(),
        probe_time.as_secs_f64(),
        detach_time.as_secs_f64(),
        leftovers.len()
    );
    assert!(
        not_forwarding.is_empty(),
        "not forwarding: {not_forwarding:#?}"
    );
    assert!(leftovers.is_empty(), "left behind: {leftovers:#?}");
}
