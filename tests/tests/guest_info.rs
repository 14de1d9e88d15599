//! attach reports what the guest agent needs: addresses (v4 and v6), routes without the
//! kernel's own (route MTU kept, IPv6 device routes without gateway), neighbours.

use netshim_tests::{
    netshim_cli::{netshim_json, Pod},
    require_root,
};
use serde_json::{json, Value};

#[test]
fn attach_json_carries_addresses_routes_and_neighbours() {
    require_root!();
    let pod = Pod::new("gi");
    let s = &pod.sandbox;
    s.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
    s.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:123::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    s.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.123.0.1",
        "dev",
        "eth0",
    ]);
    s.ip(&[
        "route",
        "add",
        "10.200.0.0/16",
        "via",
        "10.123.0.1",
        "mtu",
        "1400",
    ]);
    s.ip(&["-6", "route", "add", "fd00:1::/64", "dev", "eth0"]);
    let gw_mac = netshim_tests::tap_reader::format_mac(&pod.client_mac);
    s.neigh("add 10.123.0.9 lladdr 02:00:00:00:00:09 dev eth0 nud permanent");
    s.neigh(&format!(
        "replace 10.123.0.1 lladdr {gw_mac} dev eth0 nud reachable"
    ));

    let report = netshim_json(&["attach", "--netns", pod.netns()]);
    let e = &report["endpoints"][0];
    assert_eq!(e["guest_ifname"], "eth0");
    let addrs: Vec<String> = e["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["address"].as_str().unwrap(), a["prefix_len"]))
        .collect();
    assert!(addrs.contains(&"10.123.0.2/24".to_owned()), "{addrs:?}");
    assert!(addrs.contains(&"fd00:123::2/64".to_owned()), "{addrs:?}");

    let routes = e["routes"].as_array().unwrap();
    let find = |dst: &str| -> &Value {
        routes
            .iter()
            .find(|r| r["destination"] == dst)
            .unwrap_or_else(|| panic!("route {dst} missing from {routes:?}"))
    };
    assert_eq!(find("default")["gateway"], "10.123.0.1");
    assert_eq!(find("10.200.0.0/16")["mtu"], 1400);
    assert_eq!(find("10.200.0.0/16")["gateway"], "10.123.0.1");
    let dev_route = find("fd00:1::/64");
    assert_eq!(dev_route["gateway"], Value::Null, "kata #2768");
    assert_eq!(dev_route["scope"], "link");
    assert!(
        routes.iter().all(|r| r["destination"] != "10.123.0.0/24"),
        "connected (proto kernel) routes are the guest kernel's own: {routes:?}"
    );

    let neigh = e["neighbors"].as_array().unwrap();
    assert!(
        neigh.contains(
            &json!({"address": "10.123.0.9", "mac": "02:00:00:00:00:09", "state": "permanent"})
        ),
        "{neigh:?}"
    );
    assert!(
        neigh.contains(&json!({"address": "10.123.0.1", "mac": gw_mac, "state": "reachable"})),
        "the default gateway: {neigh:?}"
    );
    // status --json reports the same guest information.
    let status = netshim_json(&["status", "--netns", pod.netns()]);
    let st = &status["endpoints"][0];
    assert_eq!(st["routes"], e["routes"], "{status}");
    assert_eq!(st["neighbors"], e["neighbors"], "{status}");
    netshim_json(&["detach", "--netns", pod.netns()]);
}
