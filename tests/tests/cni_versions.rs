//! netshim as a CNI plugin in every cniVersion it supports, through real chains (Debian's
//! reference plugins v1.1.1 speak 0.1.0 to 1.0.0; 1.1.0 is in cni.rs with netshim alone):
//! the result is in the conflist's version (`ips[].version` before 1.0.0 only), it fulfils
//! firecracker-go-sdk's contract ([`netshim_tests::vmconf`]: the VM's pseudo-interface, its
//! one IP, the `ip=` boot parameter equal to what ptp/host-local configured), podman's view
//! (the pod interface's IP) is prevResult's, CHECK is refused before 0.4.0, and DEL leaves
//! nothing. Also: VERSION's list, STATUS and GC only from 1.1.0.

use std::{net::Ipv4Addr, path::PathBuf};

use netshim_tests::{
    cni_runtime::{
        chain_in, cni_error, cookie, interface, leases_of, namespaces, netshim_conf, ok_json,
        plugins_missing, Runtime, IFNAME,
    },
    leaks::netshim_dirs,
    netshim_cli::netshim_bin,
    require_root,
    vmconf::static_network_conf_from,
    TestNetns,
};
use serde_json::{json, Value};

/// The `ip=` boot parameter a guest needs to be what ptp/host-local made of the pod
/// interface, read from the sandbox (its IPv4 address and default route) and the conflist's
/// nameservers: `client::gateway:netmask:::off:dns0:dns1:`.
fn boot_param_of_the_pod(sandbox: &TestNetns, nameservers: &[&str]) -> String {
    let addrs: Value =
        serde_json::from_str(&sandbox.ip(&["-j", "-4", "addr", "show", "dev", IFNAME])).unwrap();
    let addr = &addrs[0]["addr_info"][0];
    let prefix = addr["prefixlen"].as_u64().expect("prefixlen") as u32;
    let routes: Value =
        serde_json::from_str(&sandbox.ip(&["-j", "-4", "route", "show", "default"])).unwrap();
    let gateway = routes[0]["gateway"].as_str().expect("default gateway");
    let mask = Ipv4Addr::from(!(u32::MAX >> prefix));
    let ns = |i: usize| nameservers.get(i).copied().unwrap_or("");
    format!(
        "{}::{gateway}:{mask}:::off:{}:{}:",
        addr["local"].as_str().unwrap(),
        ns(0),
        ns(1)
    )
}

/// One chain in `version`: `first` (ptp or bridge, host-local, a nameserver) then netshim
/// with `keys`, whose CNI_IFNAME tap is `tap`. ADD, the result's version, the firecracker
/// contract, podman's view, CHECK, DEL.
fn chain_in_version(version: &str, tag: &str, mut first: Value, keys: Value, tap: &str) {
    if plugins_missing() {
        return;
    }
    let nameserver = format!("10.{}.0.53", netshim_tests::netns_fixture::unique_octet());
    first["dns"] = json!({"nameservers": [nameserver]});
    let c = chain_in(version, tag, first, keys);
    let (sandbox, list) = (&c.sandbox, &c.list);
    let rt = Runtime::new(&c.host, sandbox);
    let plugins = list["plugins"].as_array().unwrap();

    let prev = ok_json(&rt.call(&plugins[0], list, "ADD", None), "ADD first");
    // What the guest must become, read before netshim (the macvtap model moves the pod
    // interface's address to the guest).
    let want_boot = boot_param_of_the_pod(sandbox, &[&nameserver]);
    let pod_mac = sandbox.link_mac(IFNAME);
    let pod_mtu = sandbox.link_mtu(IFNAME);
    assert_eq!(
        leases_of(c.data.path(), &rt.container_id).len(),
        1,
        "a lease"
    );
    let result = ok_json(
        &rt.call(&plugins[1], list, "ADD", Some(&prev)),
        "ADD netshim",
    );
    eprintln!("{version} ADD result: {result:#}");

    // In the conflist's version: 0.3.x and 0.4.0 give every IP its family, 1.0.0 none.
    assert_eq!(result["cniVersion"], version, "{result}");
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "the pod's IP and the VM's: {result}");
    let family_wanted = version.starts_with("0.");
    for ip in ips {
        assert_eq!(
            ip.get("version").is_some(),
            family_wanted,
            "{version}: {ip}"
        );
        if family_wanted {
            assert_eq!(ip["version"], "4", "{ip}");
        }
    }

    // podman's (and kata-style runtimes') view: prevResult's interfaces and IPs as they
    // were, the IP pointing at the pod interface named CNI_IFNAME in CNI_NETNS.
    let prev_interfaces = prev["interfaces"].as_array().unwrap();
    assert_eq!(
        result["interfaces"].as_array().unwrap()[..prev_interfaces.len()],
        prev_interfaces[..]
    );
    assert_eq!(ips[0], prev["ips"][0], "the pod's IP");
    let (pod_index, pod) = interface(&result, IFNAME);
    assert_eq!(ips[0]["interface"], pod_index);
    assert_eq!(pod["sandbox"], rt.netns_path.as_str());
    assert_eq!(result["routes"], prev["routes"]);
    assert_eq!(result["dns"], prev["dns"]);

    // firecracker-containerd's view.
    let vm = static_network_conf_from(&result, &rt.container_id)
        .unwrap_or_else(|e| panic!("{version}: StaticNetworkConfFrom: {e}"));
    eprintln!("{version} StaticNetworkConf: {vm:?}");
    assert_eq!(vm.tap_name, tap);
    assert_eq!(vm.netns_path, rt.netns_path);
    assert_eq!(vm.vm_mac, pod_mac, "the guest has the pod interface's MAC");
    assert_eq!(vm.vm_mtu, pod_mtu, "the tap has the pod interface's MTU");
    assert_eq!(vm.ip_boot_param(), want_boot, "ip= of {version}");
    assert_eq!(vm.vm_routes, prev["routes"].as_array().cloned().unwrap());

    // CHECK came with 0.4.0 (libcni does not call it before).
    if version.starts_with("0.3.") {
        let (code, err) = cni_error(&rt.call(&plugins[1], list, "CHECK", Some(&result)));
        assert_eq!(code, 1, "{err}");
        assert_eq!(err["msg"], "config version does not allow CHECK", "{err}");
        assert_eq!(err["cniVersion"], version, "{err}");
    } else if list["plugins"][1]["model"] == "macvtap" {
        // The model gives the pod interface a random MAC and its addresses to the guest (as
        // kata's does): ptp's own CHECK of eth0 fails. netshim's passes.
        let out = rt.call(&plugins[1], list, "CHECK", Some(&result));
        assert!(out.status.success(), "CHECK netshim: {out:?}");
    } else {
        rt.each(list, "CHECK", &result);
    }

    let cookie = cookie(sandbox);
    rt.each(list, "DEL", &result);
    assert!(!sandbox.link_exists(tap), "{tap} left after DEL");
    assert!(!sandbox.link_exists(IFNAME), "{IFNAME} left after DEL");
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new());
    assert_eq!(
        leases_of(c.data.path(), &rt.container_id),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn ptp_chain_in_0_3_0() {
    chain_in_version(
        "0.3.0",
        "v030",
        json!({"type": "ptp", "ipMasq": false}),
        json!({"tc_backend": "ebpf"}),
        "tap0_kata",
    );
}

#[test]
fn bridge_chain_in_0_3_1() {
    chain_in_version(
        "0.3.1",
        "v031",
        json!({"type": "bridge", "bridge": "nshbr0", "isGateway": true, "ipMasq": false}),
        json!({"tc_backend": "mirred"}),
        "tap0_kata",
    );
}

/// What `podman network create` writes and firecracker-containerd's fcnet.conflist says;
/// the macvtap model's entry is the macvtap.
#[test]
fn ptp_chain_in_0_4_0_with_the_macvtap_model() {
    chain_in_version(
        "0.4.0",
        "v040",
        json!({"type": "ptp", "ipMasq": false}),
        json!({"model": "macvtap"}),
        "tap0_kata",
    );
}

/// tc-redirect-tap's `tap_name`: the VM interface has that name too.
#[test]
fn ptp_chain_in_1_0_0_with_tap_name() {
    chain_in_version(
        "1.0.0",
        "v100",
        json!({"type": "ptp", "ipMasq": false}),
        json!({"tap_name": "vmtap0"}),
        "vmtap0",
    );
}

/// `report_tap: false` (for podman): the result is ptp's as it came, in the conflist's
/// version; the tap is made and connected all the same, CHECK passes without it in the
/// result, DEL leaves nothing.
#[test]
fn ptp_chain_in_0_4_0_without_the_tap_in_the_result() {
    if plugins_missing() {
        return;
    }
    let c = chain_in(
        "0.4.0",
        "v040nr",
        json!({"type": "ptp", "ipMasq": false}),
        json!({"report_tap": false}),
    );
    let (sandbox, list) = (&c.sandbox, &c.list);
    let rt = Runtime::new(&c.host, sandbox);
    let plugins = list["plugins"].as_array().unwrap();
    let prev = ok_json(&rt.call(&plugins[0], list, "ADD", None), "ADD ptp");
    let result = ok_json(
        &rt.call(&plugins[1], list, "ADD", Some(&prev)),
        "ADD netshim",
    );
    assert_eq!(result, prev, "netshim added nothing to ptp's result");
    let status = netshim_tests::netshim_cli::netshim_json(&["status", "--netns", sandbox.name()]);
    assert_eq!(status["endpoints"][0]["tap"], "tap0_kata", "{status}");
    assert_eq!(status["endpoints"][0]["connected"], true, "{status}");
    rt.each(list, "CHECK", &result);
    let cookie = cookie(sandbox);
    rt.each(list, "DEL", &result);
    assert!(
        !sandbox.link_exists("tap0_kata"),
        "tap0_kata left after DEL"
    );
    assert_eq!(netshim_dirs(cookie), Vec::<PathBuf>::new());
}

/// VERSION lists every supported version; STATUS and GC, which came with 1.1.0, are refused
/// (code 1) under an older configuration, as the reference plugins' skel does.
#[test]
fn version_lists_all_and_status_gc_need_1_1_0() {
    require_root!();
    let (host, sandbox) = namespaces("ver");
    let rt = Runtime::new(&host, &sandbox);
    let version = ok_json(
        &rt.run(
            &netshim_bin(),
            "VERSION",
            b"{\"cniVersion\":\"0.4.0\"}",
            &[],
        ),
        "VERSION",
    );
    assert_eq!(
        version,
        json!({"cniVersion": "1.1.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    for (command, v) in [("STATUS", "1.0.0"), ("STATUS", "0.4.0"), ("GC", "1.0.0")] {
        let (code, err) = cni_error(&rt.netshim(command, &netshim_conf(v, json!({})), &[]));
        assert_eq!(code, 1, "{command} {v}: {err}");
        assert_eq!(
            err["msg"],
            format!("config version does not allow {command}"),
            "{err}"
        );
        assert_eq!(err["cniVersion"], v, "{err}");
    }
    let out = rt.netshim("STATUS", &netshim_conf("1.1.0", json!({})), &[]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "STATUS 1.1.0: {out:?}"
    );
}
