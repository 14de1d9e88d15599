//! netshim's CNI failures leave nothing, and never stop the chain's cleanup:
//! - DEL needs no valid configuration: after an ADD netshim refused for its options, the
//!   runtime's DEL of the whole chain succeeds for every plugin and host-local's lease goes;
//!   DEL with garbage on stdin still detaches; DEL of a netns never attached succeeds.
//! - An ADD refused for CNI_IFNAME (absent, `lo`, not an interface name) changes nothing:
//!   no tap, no pins, no state, no lock file, the netns as it was; over a killed ADD's
//!   leftovers it leaves nothing either, and an attached netns stays as it is.
//! - CHECK's failures are said in words.
//! - An ADD for a ninth interface of a netns attached with eight is refused in words and
//!   leaves the eight as they were; DEL then ADD attaches all nine.

use std::path::PathBuf;

use netshim_tests::{
    cni_runtime::{
        chain, cni_error, cookie, leases_of, namespaces, netshim_conf, ok_json, plugins_missing,
        veth_pod, Runtime, IFNAME,
    },
    leaks::{netshim_dirs, NetnsSnapshot},
    netshim_cli::{netshim_bin, netshim_json},
    require_root, veth_pair, TestNetns,
};
use serde_json::{json, Value};

/// Nothing of netshim in `sandbox`: no tap, no pins, state or lock file for its cookie, and
/// (when given) the netns as `before` was.
fn assert_untouched(sandbox: &TestNetns, cookie: u64, before: Option<&NetnsSnapshot>, what: &str) {
    assert!(!sandbox.link_exists("tap0_kata"), "{what}: tap0_kata left");
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "{what}");
    if let Some(before) = before {
        let diff = NetnsSnapshot::take(sandbox).diff(before);
        assert!(diff.is_empty(), "{what}: {diff:#?}");
    }
}

/// ptp ADD, then netshim's ADD refused (code 7) for `keys`; the runtime then DELs the whole
/// chain without a result (libcni caches none for a failed ADD): every plugin succeeds,
/// netshim first, and the lease is released.
fn refused_options_then_del(tag: &str, keys: Value) {
    let c = chain(tag, json!({"type": "ptp", "ipMasq": false}), keys);
    let rt = Runtime::new(&c.host, &c.sandbox);
    let plugins = c.list["plugins"].as_array().unwrap();
    let prev = ok_json(&rt.call(&plugins[0], &c.list, "ADD", None), "ADD ptp");
    let cookie = cookie(&c.sandbox);
    let (code, err) = cni_error(&rt.call(&plugins[1], &c.list, "ADD", Some(&prev)));
    assert_eq!(code, 7, "{err}");
    assert_eq!(leases_of(c.data.path(), &rt.container_id).len(), 1);
    rt.each_with(&c.list, "DEL", None);
    assert_eq!(
        leases_of(c.data.path(), &rt.container_id),
        Vec::<PathBuf>::new(),
        "host-local lease left ({tag})"
    );
    assert!(!c.sandbox.link_exists(IFNAME), "ptp's {IFNAME} left");
    assert_untouched(&c.sandbox, cookie, None, tag);
}

#[test]
fn del_after_an_add_refused_for_a_bad_tap_name_releases_the_lease() {
    if plugins_missing() {
        return;
    }
    refused_options_then_del("delbad", json!({"tap_name": "bad/name"}));
}

#[test]
fn del_after_an_add_refused_for_macvtap_with_tap_name_releases_the_lease() {
    if plugins_missing() {
        return;
    }
    refused_options_then_del("delmvt", json!({"model": "macvtap", "tap_name": "vm0"}));
}

/// DEL reads nothing of stdin but the version: garbage, nothing, or a configuration ADD
/// would refuse still detach. And a DEL of a netns netshim never attached succeeds, quietly,
/// changing nothing.
#[test]
fn del_detaches_whatever_is_on_stdin() {
    require_root!();
    let (host, sandbox) = veth_pod("delstdin", 204);
    let rt = Runtime::new(&host, &sandbox);
    let cookie = cookie(&sandbox);
    let before = NetnsSnapshot::take(&sandbox);
    let conf = netshim_conf("1.0.0", json!({}));
    let out = rt.netshim("DEL", &conf, &[]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert_untouched(
        &sandbox,
        cookie,
        Some(&before),
        "DEL of a netns never attached",
    );

    let garbage: [&[u8]; 3] = [
        b"\x00{not json",
        b"",
        br#"{"cniVersion":"1.0.0","name":"n","type":"netshim","queues":0}"#,
    ];
    for stdin in garbage {
        ok_json(&rt.netshim("ADD", &conf, &[]), "ADD");
        assert!(sandbox.link_exists("tap0_kata"));
        let out = rt.run(&netshim_bin(), "DEL", stdin, &[]);
        let what = format!("DEL with stdin {:?}", String::from_utf8_lossy(stdin));
        assert!(out.status.success(), "{what}: {out:?}");
        assert!(out.stdout.is_empty(), "{what} prints nothing");
        assert_untouched(&sandbox, cookie, Some(&before), &what);
    }
}

/// CNI_IFNAME absent, `lo`, or no interface name at all: ADD is refused and the netns is as
/// it was (the survey refuses before anything is made). In a chain, the chain's DEL then
/// succeeds and releases the lease.
#[test]
fn an_add_refused_for_cni_ifname_leaves_nothing() {
    if plugins_missing() {
        return;
    }
    let c = chain("ifname", json!({"type": "ptp", "ipMasq": false}), json!({}));
    let rt = Runtime::new(&c.host, &c.sandbox);
    let plugins = c.list["plugins"].as_array().unwrap();
    let prev = ok_json(&rt.call(&plugins[0], &c.list, "ADD", None), "ADD ptp");
    let cookie = cookie(&c.sandbox);
    let before = NetnsSnapshot::take(&c.sandbox);
    let mut conf = plugins[1].clone();
    conf["cniVersion"] = c.list["cniVersion"].clone();
    conf["name"] = c.list["name"].clone();
    conf["prevResult"] = prev.clone();
    let long = "e".repeat(300);
    for (ifname, code, says) in [
        ("eth9", 102, "eth9 in netns"),
        ("lo", 102, "it is not an endpoint (loopback)"),
        (long.as_str(), 4, "is not a Linux interface name"),
    ] {
        let (got, err) = cni_error(&rt.netshim("ADD", &conf, &[("CNI_IFNAME", ifname)]));
        let what = format!("ADD with CNI_IFNAME {}", &ifname[..ifname.len().min(8)]);
        assert_eq!(got, code, "{what}: {err}");
        assert_untouched(&c.sandbox, cookie, Some(&before), &what);
        let text = format!("{} {}", err["msg"], err["details"]);
        assert!(text.contains(says), "{what}: {err}");
    }
    rt.each(&c.list, "DEL", &prev);
    assert_eq!(
        leases_of(c.data.path(), &rt.container_id),
        Vec::<PathBuf>::new()
    );
    assert_untouched(&c.sandbox, cookie, None, "after the chain's DEL");
}

/// A killed ADD left a tap and its intent file; an ADD for an absent CNI_IFNAME takes those
/// leftovers away and attaches nothing.
#[test]
fn an_add_refused_over_leftovers_leaves_nothing() {
    require_root!();
    let (host, sandbox) = veth_pod("ifleft", 205);
    let rt = Runtime::new(&host, &sandbox);
    let cookie = cookie(&sandbox);
    let before = NetnsSnapshot::take(&sandbox);
    let conf = netshim_conf("1.0.0", json!({}));
    let out = rt.netshim("ADD", &conf, &[("NETSHIM_TEST_KILL_AT", "tap-created")]);
    assert!(!out.status.success(), "the ADD was to be killed: {out:?}");
    assert!(
        sandbox.link_exists("tap0_kata"),
        "the killed ADD left no tap"
    );
    assert!(
        !netshim_dirs(cookie).is_empty(),
        "the killed ADD left no state"
    );
    let (code, err) = cni_error(&rt.netshim("ADD", &conf, &[("CNI_IFNAME", "eth9")]));
    assert_eq!(code, 102, "{err}");
    assert_untouched(&sandbox, cookie, Some(&before), "ADD over leftovers");
}

/// An attached netns asked for a CNI_IFNAME it did not attach: refused (102), and the
/// attachment stays as it was (CHECK still passes).
#[test]
fn an_add_refused_for_cni_ifname_keeps_an_attached_netns() {
    require_root!();
    let (host, sandbox) = veth_pod("ifatt", 206);
    let rt = Runtime::new(&host, &sandbox);
    let conf = netshim_conf("1.0.0", json!({}));
    let result = ok_json(&rt.netshim("ADD", &conf, &[]), "ADD");
    let commit = format!("/run/netshim/netns-{}/attached.json", cookie(&sandbox));
    let recorded = std::fs::read(&commit).expect("commit file");
    let before = NetnsSnapshot::take(&sandbox);
    let (code, err) = cni_error(&rt.netshim("ADD", &conf, &[("CNI_IFNAME", "eth9")]));
    assert_eq!(code, 102, "{err}");
    assert!(
        err["details"].as_str().unwrap().contains("eth9 in netns")
            && err["details"]
                .as_str()
                .unwrap()
                .contains("would get no tap"),
        "{err}"
    );
    assert_eq!(std::fs::read(&commit).expect("commit file"), recorded);
    assert!(NetnsSnapshot::take(&sandbox).diff(&before).is_empty());
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    let out = rt.netshim("CHECK", &check, &[]);
    assert!(out.status.success(), "CHECK: {out:?}");
    let out = rt.netshim("DEL", &conf, &[]);
    assert!(out.status.success(), "DEL: {out:?}");
}

/// CHECK says which model, backend and MAC in words, not in Rust's debug text.
#[test]
fn check_failures_are_plain_words() {
    require_root!();
    let (host, sandbox) = veth_pod("chkwords", 207);
    let rt = Runtime::new(&host, &sandbox);
    let conf = netshim_conf("1.0.0", json!({"tc_backend": "ebpf"}));
    let result = ok_json(&rt.netshim("ADD", &conf, &[]), "ADD");
    let check = |keys: Value, prev: &Value| {
        let mut c = netshim_conf("1.0.0", keys);
        c["prevResult"] = prev.clone();
        let (code, err) = cni_error(&rt.netshim("CHECK", &c, &[]));
        assert_eq!(code, 103, "{err}");
        let msg = err["msg"].as_str().unwrap().to_owned();
        assert!(!msg.contains("Some(") && !msg.contains("None"), "{msg}");
        msg
    };
    let msg = check(json!({"tc_backend": "mirred"}), &result);
    assert!(
        msg.contains("attached with model tcfilter, tc backend ebpf, the configuration asks for model tcfilter, tc backend mirred"),
        "{msg}"
    );
    let msg = check(json!({"model": "macvtap"}), &result);
    assert!(msg.ends_with("asks for model macvtap"), "{msg}");
    let mut other_mac = result.clone();
    other_mac["interfaces"][0]["mac"] = json!("02:00:00:00:00:99");
    let msg = check(json!({}), &other_mac);
    let mac = sandbox.link_mac(IFNAME);
    assert!(
        msg.contains(&format!(
            "MAC 02:00:00:00:00:99, it is attached with MAC {mac}"
        )),
        "{msg}"
    );
    let out = rt.netshim("DEL", &conf, &[]);
    assert!(out.status.success(), "DEL: {out:?}");
}

/// Detaches the netns when the test ends (before the netns goes), so a failing assertion
/// leaves no pins or state behind.
struct DetachOnDrop<'a>(&'a TestNetns);

impl Drop for DetachOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(netshim_bin())
            .args(["detach", "--netns", self.0.name()])
            .output();
    }
}

/// The CNI side of a sandbox's endpoint capacity. Each ADD attaches every endpoint present
/// (as `netshim attach`), so the maps are sized by the first ADD for all the interfaces
/// the netns has then (8, or more: at most 32) and an ADD never hot-plugs one endpoint
/// into them: the room-for-8 refusal of `connect` and `watch` cannot happen through CNI.
/// What the plugin promises instead: an ADD for a ninth interface that appeared after the
/// netns was attached with eight is refused (102) saying which endpoints are attached and
/// what to do (netshim last in the last network; DEL, then ADD again), with nothing half
/// made (no tap, no qdisc or filter on it, the netns and the attachment of the eight as they
/// were); DEL then ADD attaches all nine, in maps sized for nine.
#[test]
fn an_add_for_a_ninth_interface_after_eight_is_refused_and_del_add_attaches_nine() {
    require_root!();
    let (host, sandbox) = namespaces("cap9");
    let pod = |i: u32| {
        veth_pair(&host, &format!("h{i}"), &sandbox, &format!("eth{i}"));
        sandbox.ip(&[
            "addr",
            "add",
            &format!("10.209.{i}.2/24"),
            "dev",
            &format!("eth{i}"),
        ]);
    };
    for i in 0..8 {
        pod(i);
    }
    let _detach = DetachOnDrop(&sandbox);
    let rt = Runtime::new(&host, &sandbox);
    let conf = netshim_conf("1.0.0", json!({}));
    // netshim as the last plugin of the last network: CNI_IFNAME is the last interface.
    let result = ok_json(&rt.netshim("ADD", &conf, &[("CNI_IFNAME", "eth7")]), "ADD");
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    let endpoints = status["endpoints"].as_array().expect("endpoints").clone();
    assert_eq!(endpoints.len(), 8, "{status}");
    let cookie = cookie(&sandbox);
    let commit = format!("/run/netshim/netns-{cookie}/attached.json");
    let recorded = std::fs::read(&commit).expect("commit file");

    // Another network's plugin makes a ninth interface; netshim's ADD for it is refused.
    pod(8);
    let before = NetnsSnapshot::take(&sandbox);
    let (code, err) = cni_error(&rt.netshim("ADD", &conf, &[("CNI_IFNAME", "eth8")]));
    assert_eq!(code, 102, "{err}");
    let details = err["details"].as_str().expect("details");
    for want in [
        "eth8 in netns",
        "not one of the endpoints attached already (eth0, eth1, eth2, eth3, eth4, eth5, \
         eth6, eth7)",
        "netshim must be the last plugin of the last network",
        "DEL, then ADD again, re-attaches everything",
    ] {
        assert!(details.contains(want), "{want:?} missing: {err}");
    }
    let diff = NetnsSnapshot::take(&sandbox).diff(&before);
    assert!(
        diff.is_empty(),
        "the refused ADD changed the netns: {diff:#?}"
    );
    assert!(!sandbox.link_exists("tap8_kata"), "a tap made for eth8");
    assert_eq!(
        sandbox
            .tc(&["filter", "show", "dev", "eth8", "ingress"])
            .trim(),
        "",
        "a filter on eth8"
    );
    assert_eq!(std::fs::read(&commit).expect("commit file"), recorded);
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["health"], "ok", "{status}");
    // The eight connected through their taps as before; eth8 listed, not connected.
    let listed = status["endpoints"].as_array().unwrap();
    assert_eq!(listed.len(), 9, "{status}");
    for (i, e) in listed.iter().enumerate() {
        let attached = i < 8;
        assert_eq!(e["name"], format!("eth{i}"), "{status}");
        assert_eq!(e["connected"], attached, "{status}");
        assert_eq!(e["tap"].is_string(), attached, "{status}");
    }
    let mut check = conf.clone();
    check["prevResult"] = result;
    let out = rt.netshim("CHECK", &check, &[("CNI_IFNAME", "eth7")]);
    assert!(out.status.success(), "CHECK of the eight: {out:?}");

    // What the refusal says to do: DEL, then ADD again; all nine, in maps sized for nine.
    let out = rt.netshim("DEL", &conf, &[("CNI_IFNAME", "eth7")]);
    assert!(out.status.success(), "DEL: {out:?}");
    ok_json(
        &rt.netshim("ADD", &conf, &[("CNI_IFNAME", "eth8")]),
        "ADD again",
    );
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["health"], "ok", "{status}");
    assert_eq!(status["endpoints"].as_array().unwrap().len(), 9, "{status}");
    let pins = netshim_tests::netshim_cli::pin_dir(&sandbox);
    let shown = std::process::Command::new("bpftool")
        .args(["map", "show", "pinned"])
        .arg(pins.join("endpoints"))
        .arg("--json")
        .output()
        .expect("bpftool map show");
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("bpftool json");
    assert_eq!(shown["max_entries"], 9, "{shown}");
    let out = rt.netshim("DEL", &conf, &[("CNI_IFNAME", "eth8")]);
    assert!(out.status.success(), "DEL: {out:?}");
    assert_eq!(
        netshim_dirs(cookie),
        Vec::<PathBuf>::new(),
        "netshim state left"
    );
    assert!(!sandbox.link_exists("tap8_kata"), "tap8_kata left");
}
