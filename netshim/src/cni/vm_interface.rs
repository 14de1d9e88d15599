//! The VM's pseudo-interface: the contract of firecracker-go-sdk's `cni/vmconf`, which
//! tc-redirect-tap fulfils and firecracker-containerd relies on.
//!
//! `StaticNetworkConfFrom(result, containerID)` reads the chain's result this way: exactly
//! one interface has `sandbox` = CNI_CONTAINERID (the VM id): it is no device but the VM's
//! own interface, with the MAC the guest must use; exactly one other interface has its name:
//! the tap, whose `sandbox` is the netns the VMM opens it in; exactly one IP configuration
//! points at the VM interface, and with the result's routes and DNS it becomes the guest's
//! `ip=` boot parameter.
//!
//! So ADD appends, after the tap, `{"name": <tap>, "mac": <the pod interface's MAC>,
//! "sandbox": CNI_CONTAINERID}` and a copy of the pod interface's IP configuration pointing
//! at it (the first IPv4 one, `ip=` being IPv4, else the first). The pod interface keeps its
//! own: runtimes that read it (podman, kata-style ones) see what they saw before. Without an
//! IP on the pod interface (netshim alone, or an IPAM-less chain) the VM interface has none,
//! and the SDK refuses such a result, as tc-redirect-tap refuses that ADD.

use super::result::{CniResult, ResultInterface, ResultIp};

/// Adds (or, on a retried ADD, replaces in place) the VM interface of `tap`, the entry ADD
/// made for CNI_IFNAME's tap, and its IP configuration: `pod_ifname` in sandbox `netns` is
/// the pod interface, `vm_id` is CNI_CONTAINERID.
pub fn put(
    result: &mut CniResult,
    tap: &ResultInterface,
    pod_ifname: &str,
    netns: &str,
    vm_id: &str,
) {
    let pod_ip = result
        .interface_index(pod_ifname, netns)
        .and_then(|pod| vm_ip(result, pod));
    let vm = result.put_interface(ResultInterface {
        name: tap.name.clone(),
        mac: tap.mac.clone(),
        mtu: None,
        sandbox: Some(vm_id.to_owned()),
        extra: Default::default(),
    });
    result.set_only_ip(
        vm,
        pod_ip.map(|ip| ResultIp {
            interface: Some(vm),
            ..ip
        }),
    );
}

/// The pod interface's IP configuration the VM gets: its first IPv4 one, else its first.
fn vm_ip(result: &CniResult, pod: usize) -> Option<ResultIp> {
    let mut ips = result.ips_of(pod).peekable();
    let first = ips.peek().cloned().cloned();
    ips.find(|ip| ip.ip().is_some_and(|a| a.is_ipv4()))
        .cloned()
        .or(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const NETNS: &str = "/run/netns/p";
    const VM: &str = "vm-1";

    fn tap() -> ResultInterface {
        serde_json::from_value(
            json!({"name": "tap0_kata", "mac": "aa:bb:cc:00:00:02", "sandbox": NETNS}),
        )
        .unwrap()
    }

    fn added(prev: Value) -> Value {
        let mut r = CniResult::from_value(prev).unwrap();
        r.put_interface(tap());
        put(&mut r, &tap(), "eth0", NETNS, VM);
        serde_json::to_value(&r).unwrap()
    }

    fn ptp(ips: Value) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "veth1", "mac": "aa:bb:cc:00:00:01"},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": NETNS}
            ],
            "ips": ips,
        })
    }

    #[test]
    fn the_vm_interface_follows_the_tap_with_a_copy_of_the_pod_ip() {
        let v = added(ptp(
            json!([{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1}]),
        ));
        assert_eq!(
            v["interfaces"][3],
            json!({"name": "tap0_kata", "mac": "aa:bb:cc:00:00:02", "sandbox": VM})
        );
        assert_eq!(
            v["ips"],
            json!([
                {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1},
                {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 3}
            ])
        );
        // A retried ADD, given this result: the same result, nothing doubled.
        assert_eq!(added(v.clone()), v);
    }

    #[test]
    fn the_vm_gets_the_first_ipv4_address() {
        let v = added(ptp(json!([
            {"address": "fd00::2/64", "interface": 1},
            {"address": "10.1.0.2/24", "interface": 1},
            {"address": "10.1.0.3/24", "interface": 1},
            {"address": "10.9.0.2/24", "interface": 0}
        ])));
        let vm_ips: Vec<&Value> = v["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|ip| ip["interface"] == 3)
            .collect();
        assert_eq!(vm_ips, [&json!({"address": "10.1.0.2/24", "interface": 3})]);
        let v6 = added(ptp(json!([{"address": "fd00::2/64", "interface": 1}])));
        assert_eq!(
            v6["ips"][1],
            json!({"address": "fd00::2/64", "interface": 3})
        );
    }

    #[test]
    fn without_a_pod_ip_the_vm_interface_has_none() {
        let v = added(json!({"cniVersion": "1.1.0"}));
        assert_eq!(
            v["interfaces"],
            json!([
                {"name": "tap0_kata", "mac": "aa:bb:cc:00:00:02", "sandbox": NETNS},
                {"name": "tap0_kata", "mac": "aa:bb:cc:00:00:02", "sandbox": VM}
            ])
        );
        assert!(v.get("ips").is_none(), "{v}");
    }
}
