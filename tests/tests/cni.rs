//! netshim as a CNI plugin in conflists of cniVersion 1.0.0 and 1.1.0, driven the way a
//! runtime (libcni) drives them ([`netshim_tests::cni_runtime`]): the datapath through the
//! tap, a VMM on it, CHECK, DEL, `tap_name`, a killed ADD, error codes. Other cniVersions
//! are in cni_versions.rs, failures' cleanup in cni_failures.rs. Every assertion is about
//! this file's own namespaces.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netshim_tests::{
    cni_runtime::{
        chain, cni_error, cookie, interface, namespaces, netshim_conf, ok_json, plugins_missing,
        veth_pod, walk, Runtime, CNI_VERSION, IFNAME,
    },
    leaks::netshim_dirs,
    netns_fixture::random_u32,
    netshim_cli::{netshim_bin, netshim_json, vm_standin_bin},
    require_root,
    tap_reader::parse_mac,
    traffic::{probe_path, ProbePath},
    veth_pair, ChildGuard, TestNetns,
};
use serde_json::{json, Value};

/// Checks the shape of ADD's result: prevResult's pod interface and IP kept, the tap `tap`
/// added with the pod interface's MAC in the sandbox, then the VM's pseudo-interface (the
/// tap's name and MAC, sandbox CNI_CONTAINERID) with a copy of the pod IP. Returns (pod
/// IP, gateway).
fn check_result(
    result: &Value,
    rt: &Runtime,
    sandbox: &TestNetns,
    (a, b): (u8, u8),
    tap: &str,
) -> (Ipv4Addr, Ipv4Addr) {
    let netns_path = sandbox.path().display().to_string();
    assert_eq!(result["cniVersion"], CNI_VERSION, "{result}");
    let (pod_index, pod) = interface(result, IFNAME);
    assert_eq!(pod["sandbox"], netns_path.as_str(), "{result}");
    let pod_mac = sandbox.link_mac(IFNAME);
    assert_eq!(pod["mac"], pod_mac.as_str(), "{result}");
    let interfaces = result["interfaces"].as_array().unwrap();
    let n = interfaces.len();
    assert_eq!(
        interfaces[n - 2..],
        [
            json!({"name": tap, "mac": pod_mac, "sandbox": netns_path}),
            json!({"name": tap, "mac": pod_mac, "sandbox": rt.container_id}),
        ],
        "{result}"
    );
    assert!(sandbox.link_exists(tap));
    let ips = result["ips"].as_array().unwrap();
    let ip = &ips[0];
    assert_eq!(ip["interface"], pod_index, "{result}");
    let mut vm_ip = ip.clone();
    vm_ip["interface"] = json!(n - 1);
    assert_eq!(ips[1..], [vm_ip], "{result}");
    let address = ip["address"].as_str().expect("ips[0].address");
    let (addr, prefix) = address.split_once('/').expect("CIDR");
    assert_eq!(prefix, "24");
    let pod_ip: Ipv4Addr = addr.parse().unwrap();
    assert_eq!(pod_ip.octets()[..3], [10, a, b], "{result}");
    let gateway: Ipv4Addr = ip["gateway"].as_str().expect("gateway").parse().unwrap();
    assert!(!result["routes"].as_array().unwrap().is_empty(), "{result}");
    (pod_ip, gateway)
}

/// Datagrams both ways between the host device (with the gateway address) and the tap.
fn assert_traffic(
    host: &TestNetns,
    host_dev: &str,
    sandbox: &TestNetns,
    ips: (Ipv4Addr, Ipv4Addr),
    tap: &str,
) {
    let (pod_ip, gateway) = ips;
    let path = ProbePath {
        client: host,
        client_dev: host_dev,
        client_ip: gateway,
        client_mac: parse_mac(&host.link_mac(host_dev)).unwrap(),
        sandbox,
        pod_ip,
        pod_mac: parse_mac(&sandbox.link_mac(IFNAME)).unwrap(),
    };
    let forwarded = probe_path(&path, tap, 5);
    assert_eq!(
        (forwarded.to_vm, forwarded.from_vm),
        (5, 5),
        "through {tap}"
    );
}

/// A VMM on the tap, as a runtime would run one: vm-standin opens `tap` in the sandbox and
/// relays its frames to a "guest" netns whose interface has the pod's MAC, IP and gateway
/// (what the CNI result tells the VM). The host pings the guest through the whole chain:
/// ptp's veth, netshim's datapath, the tap and the stand-in. Returns the stand-in's summary.
fn ping_guest_through_vm_standin(
    host: &TestNetns,
    sandbox: &TestNetns,
    tap: &str,
    (pod_ip, gateway): (Ipv4Addr, Ipv4Addr),
) -> Value {
    let guest = TestNetns::new("nsh-cni-gu");
    let mac = sandbox.link_mac(IFNAME);
    let mtu = sandbox.link_mtu(IFNAME).to_string();
    let mut cmd = Command::new(vm_standin_bin());
    cmd.arg("--sandbox-netns")
        .arg(sandbox.path())
        .args(["--tap", tap])
        .arg("--guest-netns")
        .arg(guest.path())
        .args([
            "--guest-ifname",
            "eth0",
            "--guest-mac",
            &mac,
            "--guest-mtu",
            &mtu,
        ])
        .args(["--guest-addr", &format!("{pod_ip}/24")])
        .args(["--guest-gw", &gateway.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut standin = ChildGuard::spawn(cmd, "vm-standin");
    let mut lines = BufReader::new(standin.child_mut().stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(|l| l.ok());
    assert_eq!(ready.as_deref(), Some("ready"), "vm-standin did not start");
    let ping = host.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        &pod_ip.to_string(),
    ]);
    assert!(
        ping.status.success(),
        "host -> guest through ptp, netshim, {tap} and vm-standin: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    drop(standin.child_mut().stdin.take());
    let out = standin.wait_with_output(Duration::from_secs(5));
    assert!(out.status.success(), "vm-standin exit: {}", out.status);
    let summary: Value = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| serde_json::from_str(&l).ok())
        .expect("vm-standin summary line");
    for dir in ["sandbox_to_guest", "guest_to_sandbox"] {
        assert!(
            summary[dir]["frames"].as_u64().unwrap_or(0) >= 3,
            "{dir}: {summary}"
        );
    }
    summary
}

/// After DEL: no tap, no netshim pins/state for the netns, no host-local lease.
fn assert_nothing_left(
    sandbox: &TestNetns,
    cookie: u64,
    data_dir: &Path,
    pod_ip: Ipv4Addr,
    tap: &str,
) {
    assert!(!sandbox.link_exists(tap), "{tap} left after DEL");
    assert!(!sandbox.link_exists(IFNAME), "{IFNAME} left after DEL");
    assert_eq!(
        netshim_dirs(cookie),
        Vec::<PathBuf>::new(),
        "netshim state left"
    );
    let leases: Vec<String> = walk(data_dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n == pod_ip.to_string().as_str())
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(leases.is_empty(), "host-local lease left: {leases:?}");
}

/// ptp + host-local + netshim with `netshim_keys`, the way firecracker-containerd runs
/// tc-redirect-tap: ADD (the result lists `tap`), traffic both ways through `tap`, CHECK,
/// `attached` (the test's own checks of the attached netns), DEL (nothing left), CHECK
/// after DEL fails, DEL again succeeds.
fn ptp_chain(
    tag: &str,
    netshim_keys: Value,
    tap: &str,
    attached: impl FnOnce(&Runtime, &Value, &Value, &TestNetns),
) {
    if plugins_missing() {
        return;
    }
    let c = chain(tag, json!({"type": "ptp", "ipMasq": false}), netshim_keys);
    let (host, sandbox, data, net, list) = (c.host, c.sandbox, c.data, c.net, c.list);
    let rt = Runtime::new(&host, &sandbox);
    let result = rt.add(&list);
    eprintln!("ADD result: {result:#}");
    let ips = check_result(&result, &rt, &sandbox, net, tap);
    // ptp's host end: the one interface without a sandbox, in the host netns.
    let host_veth = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none())
        .and_then(|i| i["name"].as_str())
        .expect("ptp's host veth")
        .to_owned();
    assert!(host.link_exists(&host_veth));
    assert_traffic(&host, &host_veth, &sandbox, ips, tap);
    let relayed = ping_guest_through_vm_standin(&host, &sandbox, tap, ips);
    eprintln!("vm-standin relayed: {relayed}");

    rt.each(&list, "CHECK", &result);
    attached(&rt, &list, &result, &sandbox);
    let cookie = cookie(&sandbox);
    rt.each(&list, "DEL", &result);
    assert_nothing_left(&sandbox, cookie, data.path(), ips.0, tap);
    assert!(!host.link_exists(&host_veth), "ptp's host veth left");

    // CHECK after DEL: netshim says what is missing.
    rt.check_fails(&list, &result, "not attached");
    // DEL again: still success.
    rt.each(&list, "DEL", &result);
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new());
}

#[test]
fn ptp_host_local_then_netshim() {
    ptp_chain(
        "ptp",
        json!({"tc_backend": "ebpf"}),
        "tap0_kata",
        |_, _, _, _| {},
    );
}

/// tc-redirect-tap's `tap_name`: CNI_IFNAME's tap is `vmtap0` (and no `tap0_kata`). ADD
/// reports it, traffic crosses it, status and CHECK find it, a retried ADD returns the
/// recorded result, another `tap_name` is a conflict (ADD) or a failure (CHECK), and DEL
/// leaves nothing (no tap, no pins, state or lock file).
#[test]
fn ptp_host_local_then_netshim_with_tap_name() {
    let keys = json!({"tc_backend": "ebpf", "tap_name": "vmtap0"});
    ptp_chain("tapname", keys, "vmtap0", |rt, list, result, sandbox| {
        assert!(!sandbox.link_exists("tap0_kata"), "tap0_kata made as well");
        let status = netshim_json(&["status", "--netns", sandbox.name()]);
        assert_eq!(status["endpoints"].as_array().unwrap().len(), 1, "{status}");
        assert_eq!(status["endpoints"][0]["tap"], "vmtap0", "{status}");
        assert_eq!(status["endpoints"][0]["connected"], true, "{status}");

        // A retried ADD (the last plugin again, with ptp's result, or with its own): the
        // recorded attach, the same result.
        let netshim = list["plugins"][1].clone();
        let mut ptp_result = result.clone();
        let ptp_interfaces = result["interfaces"].as_array().unwrap().len() - 2;
        ptp_result["interfaces"]
            .as_array_mut()
            .unwrap()
            .truncate(ptp_interfaces);
        ptp_result["ips"]
            .as_array_mut()
            .unwrap()
            .retain(|ip| ip["interface"].as_u64() < Some(ptp_interfaces as u64));
        for prev in [&ptp_result, result] {
            let again = ok_json(&rt.call(&netshim, list, "ADD", Some(prev)), "ADD again");
            assert_eq!(&again, result);
        }
        // The same netns asked for under another tap name: a conflict, nothing changed.
        let mut other = netshim.clone();
        other["tap_name"] = json!("vmtap1");
        let (code, err) = cni_error(&rt.call(&other, list, "ADD", Some(&ptp_result)));
        assert_eq!(code, 101, "{err}");
        let details = err["details"].as_str().unwrap();
        assert!(details.contains("tap name vmtap1 for eth0"), "{err}");
        assert!(sandbox.link_exists("vmtap0") && !sandbox.link_exists("vmtap1"));
        // CHECK with another tap_name says which one is attached.
        let mut other_list = list.clone();
        other_list["plugins"][1] = other;
        rt.check_fails(&other_list, result, "attached with tap vmtap0");
    });
}

#[test]
fn bridge_host_local_then_netshim() {
    if plugins_missing() {
        return;
    }
    let c = chain(
        "br",
        json!({"type": "bridge", "bridge": "nshbr0", "isGateway": true, "ipMasq": false}),
        json!({"tc_backend": "mirred"}),
    );
    let (host, sandbox, data, net, list) = (c.host, c.sandbox, c.data, c.net, c.list);
    let rt = Runtime::new(&host, &sandbox);
    let result = rt.add(&list);
    let ips = check_result(&result, &rt, &sandbox, net, "tap0_kata");
    assert_eq!(interface(&result, "nshbr0").1.get("sandbox"), None);
    assert_traffic(&host, "nshbr0", &sandbox, ips, "tap0_kata");
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");
    rt.each(&list, "CHECK", &result);
    // A tap that went away behind netshim's back: CHECK says so; DEL still cleans up.
    // (The cookie is read first: `status` of the broken sandbox exits 4.)
    let cookie = cookie(&sandbox);
    sandbox.ip(&["link", "del", "tap0_kata"]);
    rt.check_fails(&list, &result, "tap0_kata of eth0");
    rt.each(&list, "DEL", &result);
    assert_nothing_left(&sandbox, cookie, data.path(), ips.0, "tap0_kata");
}

/// An ADD killed right after it made the custom-named tap (debug builds:
/// NETSHIM_TEST_KILL_AT=tap-created) leaves `vmtap0`, found by no `tap<N>_kata` pattern:
/// `netshim gc` finds it through the intent file and takes it away, with the state.
#[test]
fn a_killed_add_with_tap_name_is_cleaned_up_by_gc() {
    require_root!();
    let (host, sandbox) = veth_pod("tnkill", 202);
    let rt = Runtime::new(&host, &sandbox);
    let conf = serde_json::to_vec(&json!({
        "cniVersion": "1.1.0", "name": "nsh-kill", "type": "netshim", "tap_name": "vmtap0"
    }))
    .unwrap();
    let cookie = cookie(&sandbox);
    let out = rt.run(
        &netshim_bin(),
        "ADD",
        &conf,
        &[("NETSHIM_TEST_KILL_AT", "tap-created")],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGKILL),
        "ADD with NETSHIM_TEST_KILL_AT=tap-created did not die by SIGKILL: {out:?}"
    );
    assert!(
        sandbox.link_exists("vmtap0"),
        "the killed ADD made no vmtap0"
    );
    assert!(!netshim_dirs(cookie).is_empty(), "no intent file left");
    // The tap is netshim's, not a tuntap endpoint: status does not offer it to the VM.
    let status = netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["endpoints"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["endpoints"][0]["name"], IFNAME, "{status}");
    assert_eq!(
        status["attached"], true,
        "vmtap0 is not seen as netshim's: {status}"
    );
    let skipped = status["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["name"] == "vmtap0" && s["reason"] == "netshim-tap"),
        "{status}"
    );

    let gc = netshim_json(&["gc"]);
    eprintln!("gc: {gc:#}");
    assert!(
        gc["cleaned_half_made"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["netns_cookie"] == cookie),
        "gc did not clean netns cookie {cookie}: {gc}"
    );
    assert!(!sandbox.link_exists("vmtap0"), "gc left vmtap0: {gc}");
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new(), "gc: {gc}");
    assert!(sandbox.link_exists(IFNAME), "gc took the pod device");
}

#[test]
fn bad_input_gets_cni_error_codes() {
    require_root!();
    let (host, sandbox) = namespaces("err");
    let rt = Runtime::new(&host, &sandbox);
    let plain = |v: &str| netshim_conf(v, json!({}));

    let (code, err) = cni_error(&rt.run(&netshim_bin(), "ADD", b"{\"cniVersion\": ", &[]));
    assert_eq!(code, 6, "{err}");
    let (code, err) = cni_error(&rt.netshim("ADD", &plain("0.2.0"), &[]));
    assert_eq!(code, 1, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("0.2.0"), "{err}");
    let (code, err) = cni_error(&rt.netshim("ADD", &plain("1.1.0"), &[("CNI_NETNS", "")]));
    assert_eq!(code, 4, "{err}");
    assert_eq!(err["cniVersion"], "1.1.0");
    assert!(err["msg"].as_str().unwrap().contains("CNI_NETNS"), "{err}");
    let gone = format!("/run/netns/nsh-cni-gone-{:08x}", random_u32());
    let (code, err) = cni_error(&rt.netshim("ADD", &plain("1.0.0"), &[("CNI_NETNS", &gone)]));
    assert_eq!(code, 3, "{err}");
    let tap_name = |name: &str| netshim_conf("1.0.0", json!({ "tap_name": name }));
    let (code, err) = cni_error(&rt.netshim("ADD", &tap_name("vm/0"), &[]));
    assert_eq!(code, 7, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("tap_name"), "{err}");
    // A tap name an interface of the netns already has: a conflict, refused before any
    // change.
    veth_pair(&host, "h0", &sandbox, IFNAME);
    sandbox.ip(&["addr", "add", "10.203.0.2/24", "dev", IFNAME]);
    let (code, err) = cni_error(&rt.netshim("ADD", &tap_name(IFNAME), &[]));
    assert_eq!(code, 101, "{err}");
    assert!(
        err["details"].as_str().unwrap().contains(
            "has a veth named eth0 that netshim did not make: netshim names eth0's tap (the \
             CNI tap_name) eth0; give tap_name another value"
        ),
        "{err}"
    );
    assert_eq!(netshim_dirs(cookie(&sandbox)), Vec::<PathBuf>::new());
    // Nothing of that reached the sandbox.
    assert!(!sandbox.link_exists("tap0_kata"));

    let out = rt.netshim("DEL", &plain("1.0.0"), &[("CNI_NETNS", &gone)]);
    assert!(out.status.success(), "DEL of a gone netns: {out:?}");
    assert!(out.stdout.is_empty());
    let out = rt.netshim("DEL", &plain("1.0.0"), &[("CNI_NETNS", "")]);
    assert!(out.status.success(), "DEL without CNI_NETNS: {out:?}");
}

/// netshim alone (no prevResult) in a netns that is deleted before DEL: DEL succeeds and
/// what the attach left is collected.
#[test]
fn del_after_the_netns_is_gone() {
    require_root!();
    let (host, sandbox) = veth_pod("gone", 201);
    let rt = Runtime::new(&host, &sandbox);
    let conf = netshim_conf("1.1.0", json!({}));
    let result = ok_json(&rt.netshim("ADD", &conf, &[]), "ADD");
    // The tap, and the VM's pseudo-interface without an IP (there is no prevResult).
    let mac = sandbox.link_mac(IFNAME);
    assert_eq!(
        result,
        json!({"cniVersion": "1.1.0", "interfaces": [
            {"name": "tap0_kata", "mac": mac, "sandbox": rt.netns_path},
            {"name": "tap0_kata", "mac": mac, "sandbox": rt.container_id}
        ]})
    );
    // ADD again (a runtime retrying): the same result, nothing new.
    let again = ok_json(&rt.netshim("ADD", &conf, &[]), "ADD again");
    assert_eq!(again, result);
    let cookie = cookie(&sandbox);
    assert!(!netshim_dirs(cookie).is_empty());
    drop(sandbox);
    // The kernel frees a netns in a worker shortly after its last reference; until then its
    // pins are not collectable, and DEL (which succeeds anyway) is called again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = rt.netshim("DEL", &conf, &[]);
        assert!(out.status.success(), "DEL of a gone netns: {out:?}");
        if netshim_dirs(cookie).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {:?}",
            netshim_dirs(cookie)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
