//! The tap is the VM's port, not an interface of the sandbox: with IPv6 on in the sandbox
//! netns, the taps netshim makes get no IPv6 address (`addrgenmode none`), so the sandbox's
//! own stack sends nothing through them (no DAD probe, MLD report or router solicitation).
//! A reader on the tap while the sandbox is otherwise idle receives exactly the frames the
//! datapath counted towards the VM: none.

use std::time::{Duration, Instant};

use netshim_tests::{
    netshim_cli::{netshim_json, Pod},
    require_root, traffic,
};

fn tap_ipv6_addresses(pod: &Pod) -> Vec<String> {
    let out = pod
        .sandbox
        .ip(&["-j", "-6", "addr", "show", "dev", "tap0_kata"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j addr");
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| a["local"].to_string())
        .collect()
}

fn a_reader_on_the_tap_gets_only_what_the_datapath_forwards(backend: &str) {
    require_root!();
    let pod = Pod::new(&format!("v6{}", &backend[..1]));
    // IPv6 on in the sandbox (Pod turns it off), as a pod netns normally has it; the client
    // keeps it off, so nothing crosses from there either.
    for key in ["all", "default", "eth0"] {
        pod.sandbox.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{key}.disable_ipv6=0"),
        ]);
    }
    pod.pin_pod_neighbor();
    netshim_json(&["attach", "--netns", pod.netns(), "--tc-backend", backend]);
    let gen_mode = pod.sandbox.link_json("tap0_kata")["inet6_addr_gen_mode"].clone();

    // A VMM opens the tap: it has carrier now, when IPv6 would configure it.
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    let mut read = Vec::new();
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        if let Some(frame) = tap.read_frame(Duration::from_millis(200)) {
            read.push(frame);
        }
    }
    let stats = netshim_json(&["stats", "--netns", pod.netns()]);
    let counted = stats[0]["endpoints"][0]["to_vm"]["packets"].clone();
    let ethertypes: Vec<String> = read
        .iter()
        .map(|f| format!("{:02x}{:02x}", f[12], f[13]))
        .collect();
    println!(
        "{backend}: the reader got {} frames (ethertypes {ethertypes:?}), the datapath counted {counted}; tap addrgenmode {gen_mode}, addresses {:?}",
        read.len(),
        tap_ipv6_addresses(&pod)
    );
    assert_eq!(gen_mode, "none");
    assert_eq!(tap_ipv6_addresses(&pod), Vec::<String>::new());
    assert_eq!(
        counted,
        read.len(),
        "frames the VM got that netshim did not forward"
    );
    assert_eq!(read.len(), 0, "an idle sandbox sends the VM nothing");
}

#[test]
fn a_reader_on_the_tap_gets_only_what_the_datapath_forwards_ebpf() {
    a_reader_on_the_tap_gets_only_what_the_datapath_forwards("ebpf");
}

#[test]
fn a_reader_on_the_tap_gets_only_what_the_datapath_forwards_mirred() {
    a_reader_on_the_tap_gets_only_what_the_datapath_forwards("mirred");
}
