//! firecracker-go-sdk's reading of a CNI result (`cni/vmconf.StaticNetworkConfFrom` and
//! `IPBootParam`), reimplemented to test netshim's result against the contract
//! firecracker-containerd relies on. It checks what the SDK checks, in its order:
//! 1. exactly one interface has `sandbox` = the container id (the VM interface);
//! 2. exactly one *other* interface has its name (the tap);
//! 3. exactly one IP configuration has an `interface` index naming an interface of that
//!    name and sandbox;
//! 4. the tap's `sandbox` is a path that opens as a network namespace and has a link of the
//!    tap's name, whose MTU becomes the VM's.
//!
//! It then gives what the SDK gives: the VM's MAC (the VM interface's), MTU, IP
//! configuration, routes and nameservers, and the kernel's `ip=` boot parameter built from
//! them.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
};

use serde_json::Value;

use crate::netns_fixture::try_on_netns_thread;

/// What `StaticNetworkConfFrom` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetworkConf {
    pub tap_name: String,
    pub netns_path: String,
    pub vm_mac: String,
    pub vm_mtu: u32,
    pub vm_ip: IpAddr,
    pub vm_prefix_len: u8,
    pub vm_gateway: Option<IpAddr>,
    pub vm_routes: Vec<Value>,
    pub vm_nameservers: Vec<String>,
}

fn interfaces(result: &Value) -> &[Value] {
    result["interfaces"].as_array().map_or(&[], Vec::as_slice)
}

fn sandbox(iface: &Value) -> &str {
    iface["sandbox"].as_str().unwrap_or("")
}

/// `StaticNetworkConfFrom(result, container_id)`; the error texts are the SDK's.
pub fn static_network_conf_from(
    result: &Value,
    container_id: &str,
) -> Result<StaticNetworkConf, String> {
    let all = interfaces(result);
    let (vm, others): (Vec<&Value>, Vec<&Value>) =
        all.iter().partition(|i| sandbox(i) == container_id);
    if vm.len() != 1 {
        return Err(format!(
            "expected to find 1 interface in sandbox {container_id:?}, but instead found {}",
            vm.len()
        ));
    }
    let vm = vm[0];
    let name = vm["name"].as_str().unwrap_or("");
    let taps: Vec<&Value> = others.into_iter().filter(|i| i["name"] == name).collect();
    if taps.len() != 1 {
        return Err(format!(
            "expected to find 1 interface with name {name:?}, but instead found {}",
            taps.len()
        ));
    }
    let tap = taps[0];
    let vm_ips: Vec<&Value> = result["ips"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|ip| {
            ip["interface"]
                .as_u64()
                .and_then(|i| all.get(i as usize))
                .is_some_and(|i| i["name"] == name && sandbox(i) == container_id)
        })
        .collect();
    if vm_ips.len() != 1 {
        return Err(format!(
            "expected to find 1 IP for vm interface {name:?}, but instead found {vm_ips:?}"
        ));
    }
    let (vm_ip, vm_prefix_len) = parse_cidr(vm_ips[0]["address"].as_str().unwrap_or(""))?;
    let vm_gateway = match vm_ips[0]["gateway"].as_str() {
        Some(g) => Some(g.parse().map_err(|e| format!("gateway {g:?}: {e}"))?),
        None => None,
    };
    let netns_path = sandbox(tap).to_owned();
    let vm_mtu = mtu_of(name, Path::new(&netns_path))?;
    let dns = &result["dns"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    Ok(StaticNetworkConf {
        tap_name: name.to_owned(),
        netns_path,
        vm_mac: vm["mac"].as_str().unwrap_or("").to_owned(),
        vm_mtu,
        vm_ip,
        vm_prefix_len,
        vm_gateway,
        vm_routes: result["routes"].as_array().cloned().unwrap_or_default(),
        vm_nameservers: strings(&dns["nameservers"]),
    })
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("address {s:?} is not a CIDR");
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    Ok((
        ip.parse().map_err(|_| bad())?,
        len.parse().map_err(|_| bad())?,
    ))
}

/// The MTU of link `name` in the netns at `path` (the SDK's `ns.GetNS` then `GetLink`).
fn mtu_of(name: &str, path: &Path) -> Result<u32, String> {
    let out = try_on_netns_thread(path, || {
        Command::new("ip")
            .args(["-j", "link", "show", "dev", name])
            .output()
    })
    .map_err(|e| format!("failed to find netns at path {:?}: {e}", path.display()))?
    .map_err(|e| format!("run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "failed to find device {name:?} in netns {:?}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let links: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    links[0]["mtu"]
        .as_u64()
        .map(|m| m as u32)
        .ok_or_else(|| format!("no MTU for {name}: {links}"))
}

impl StaticNetworkConf {
    /// `IPBootParam()`: `client-ip:server-ip:gw-ip:netmask:hostname:device:autoconf:dns0:dns1:ntp`
    /// with no server, hostname, device or NTP, autoconf off, up to two nameservers. Go prints
    /// a missing gateway as `<nil>`; the mask is the IPv4 prefix in dotted decimal.
    pub fn ip_boot_param(&self) -> String {
        let gateway = self
            .vm_gateway
            .map_or_else(|| "<nil>".to_owned(), |g| g.to_string());
        let mask = Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.vm_prefix_len))
                .unwrap_or(0),
        );
        let ns = |i: usize| self.vm_nameservers.get(i).cloned().unwrap_or_default();
        [
            self.vm_ip.to_string(),
            String::new(),
            gateway,
            mask.to_string(),
            String::new(),
            String::new(),
            "off".to_owned(),
            ns(0),
            ns(1),
            String::new(),
        ]
        .join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(prefix: u8, gateway: Option<&str>, ns: &[&str]) -> StaticNetworkConf {
        StaticNetworkConf {
            tap_name: "tap0".into(),
            netns_path: "/run/netns/x".into(),
            vm_mac: "02:00:00:00:00:01".into(),
            vm_mtu: 1500,
            vm_ip: "10.1.2.3".parse().unwrap(),
            vm_prefix_len: prefix,
            vm_gateway: gateway.map(|g| g.parse().unwrap()),
            vm_routes: vec![],
            vm_nameservers: ns.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn boot_parameter_is_the_sdks() {
        assert_eq!(
            conf(24, Some("10.1.2.1"), &["1.1.1.1", "8.8.8.8", "9.9.9.9"]).ip_boot_param(),
            "10.1.2.3::10.1.2.1:255.255.255.0:::off:1.1.1.1:8.8.8.8:"
        );
        assert_eq!(
            conf(20, None, &[]).ip_boot_param(),
            "10.1.2.3::<nil>:255.255.240.0:::off:::"
        );
    }

    /// tc-redirect-tap's result before its pseudo-interface, or with two: refused.
    #[test]
    fn the_vm_interface_must_be_there_once() {
        let mut r = json!({
            "interfaces": [
                {"name": "eth0", "sandbox": "/run/netns/x"},
                {"name": "tap0", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "10.1.2.3/24", "interface": 0}]
        });
        let e = static_network_conf_from(&r, "vm1").unwrap_err();
        assert!(
            e.contains("expected to find 1 interface in sandbox \"vm1\""),
            "{e}"
        );
        r["interfaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "tap0", "sandbox": "vm1"}));
        let e = static_network_conf_from(&r, "vm1").unwrap_err();
        assert!(e.contains("expected to find 1 IP for vm interface"), "{e}");
        r["interfaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "tap0", "sandbox": "/run/netns/y"}));
        let e = static_network_conf_from(&r, "vm1").unwrap_err();
        assert!(
            e.contains("expected to find 1 interface with name \"tap0\""),
            "{e}"
        );
    }
}
