//! The CNI result (the "Success" format of spec 0.3.0 to 1.1.0): what a chained plugin
//! receives as `prevResult` and what ADD prints. Fields netshim does not use are kept as
//! they came. The versions differ in `ips[].version` only; [`super::convert`] reads and
//! writes each.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{CniError, INVALID_CONFIG};
use crate::interfaces::IfAddr;

/// An interface of a result. `sandbox` is set for interfaces inside a container's netns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultInterface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// `socketPath`, `pciID`, and whatever a newer spec adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An IP configuration; `interface` indexes [`CniResult::interfaces`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultIp {
    /// `4` or `6`: results before 1.0.0 only (see [`super::convert`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR: `10.1.0.2/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A CNI success result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<ResultInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<ResultIp>,
    /// Kept as they came: netshim neither reads nor changes routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CniResult {
    /// An empty result (netshim run without a plugin before it).
    pub fn empty(cni_version: &str) -> Self {
        Self {
            cni_version: cni_version.to_owned(),
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: None,
            extra: Map::new(),
        }
    }

    /// Decodes a `prevResult` (of any supported version, as it came: see
    /// [`super::convert::prev_result`]) and checks that every IP is an address with a prefix
    /// length and that its interface index is in range.
    pub fn from_value(value: Value) -> Result<Self, CniError> {
        let result: CniResult = serde_json::from_value(value).map_err(|e| {
            CniError::new(INVALID_CONFIG, "prevResult is not a CNI result")
                .with_details(e.to_string())
        })?;
        for (i, ip) in result.ips.iter().enumerate() {
            if let Err(e) = ip.address.parse::<IfAddr>() {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("prevResult ips[{i}].address: {e}"),
                ));
            }
            if let Some(index) = ip.interface {
                if index >= result.interfaces.len() {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!(
                            "prevResult ips[{i}] ({}) names interface {index}, but there are {} \
                             interfaces",
                            ip.address,
                            result.interfaces.len()
                        ),
                    ));
                }
            }
        }
        Ok(result)
    }

    /// Adds `interface`, replacing an entry of the same name in the same sandbox (an ADD
    /// retried with the result of an earlier one), and returns its index. Existing indexes
    /// stay valid: a replacement keeps its position, anything new goes last.
    pub fn put_interface(&mut self, interface: ResultInterface) -> usize {
        match self
            .interfaces
            .iter()
            .position(|i| i.name == interface.name && i.sandbox == interface.sandbox)
        {
            Some(index) => {
                self.interfaces[index] = interface;
                index
            }
            None => {
                self.interfaces.push(interface);
                self.interfaces.len() - 1
            }
        }
    }

    /// The interface `name` inside `sandbox`.
    pub fn interface(&self, name: &str, sandbox: &str) -> Option<&ResultInterface> {
        self.interface_index(name, sandbox)
            .map(|i| &self.interfaces[i])
    }

    /// The index of the interface `name` inside `sandbox`.
    pub fn interface_index(&self, name: &str, sandbox: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.as_deref() == Some(sandbox))
    }

    /// The IP configurations of interface `index`, in order.
    pub fn ips_of(&self, index: usize) -> impl Iterator<Item = &ResultIp> {
        self.ips
            .iter()
            .filter(move |ip| ip.interface == Some(index))
    }

    /// Makes `ip` (or nothing, with `None`) the one IP configuration of interface `index`:
    /// the entries that pointed at it (a retried ADD's) go, the new one goes last. Other
    /// interfaces' IPs keep their order.
    pub fn set_only_ip(&mut self, index: usize, ip: Option<ResultIp>) {
        self.ips.retain(|i| i.interface != Some(index));
        self.ips.extend(ip);
    }
}

impl ResultIp {
    /// The address without its prefix length (`None` if it does not parse, which
    /// [`CniResult::from_value`] refuses).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse::<IfAddr>().ok().map(|a| a.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ptp_result() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "veth1", "mac": "aa:bb:cc:00:00:01"},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/run/netns/p"}
            ],
            "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.1.0.1"]}
        })
    }

    #[test]
    fn prev_result_round_trips_with_the_tap_added() {
        let mut r = CniResult::from_value(ptp_result()).unwrap();
        let tap = ResultInterface {
            name: "tap0_kata".into(),
            mac: Some("aa:bb:cc:00:00:02".into()),
            mtu: None,
            sandbox: Some("/run/netns/p".into()),
            extra: Map::new(),
        };
        r.put_interface(tap.clone());
        r.put_interface(tap);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 3, "{v}");
        assert_eq!(v["interfaces"][2]["name"], "tap0_kata");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["routes"], ptp_result()["routes"]);
        assert_eq!(v["dns"], ptp_result()["dns"]);
        assert!(r.interface("tap0_kata", "/run/netns/p").is_some());
        assert!(r.interface("tap0_kata", "/run/netns/q").is_none());
    }

    #[test]
    fn ip_pointing_past_the_interfaces_is_refused() {
        let mut v = ptp_result();
        v["ips"][0]["interface"] = json!(2);
        assert_eq!(CniResult::from_value(v).unwrap_err().code, INVALID_CONFIG);
        assert!(CniResult::from_value(json!({"interfaces": "x"})).is_err());
    }

    #[test]
    fn unknown_fields_are_kept() {
        let mut v = ptp_result();
        v["interfaces"][0]["socketPath"] = json!("/s");
        v["future"] = json!(1);
        let r = CniResult::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
    }
}
