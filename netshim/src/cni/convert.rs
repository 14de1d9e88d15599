//! A result in each supported cniVersion.
//!
//! From 0.3.0 to 1.1.0 the result has one format but for `ips[].version` (`"4"` or `"6"`),
//! which 0.3.0, 0.3.1 and 0.4.0 give and 1.0.0 removed. So a `prevResult` is read in its
//! own `cniVersion` (the configuration's when it has none, as libcni does) and ADD writes
//! it in the configuration's: converting is giving every IP its family (derived from its
//! address, whatever an older `version` said) or taking the field away. Fields of newer
//! versions that older ones lack (1.1.0's route `mtu`, `socketPath`, ...) are kept as they
//! came, like every field netshim does not know.

use serde_json::Value;

use super::{error::CniError, result::CniResult, version};

/// Decodes the `prevResult` of a configuration of `config_version`, converted to it.
pub fn prev_result(value: Value, config_version: &str) -> Result<CniResult, CniError> {
    let own = value
        .get("cniVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or(config_version)
        .to_owned();
    version::check(&own).map_err(|e| CniError {
        msg: format!("prevResult has cniVersion {own:?}, a result netshim cannot read"),
        ..e
    })?;
    let mut result = CniResult::from_value(value)?;
    result.cni_version = own;
    into_version(&mut result, config_version);
    Ok(result)
}

/// Rewrites `result` as a result of supported `version`.
pub fn into_version(result: &mut CniResult, version: &str) {
    let with_family = version::has_ip_versions(version);
    for ip in &mut result.ips {
        ip.version = with_family.then(|| match ip.ip() {
            Some(std::net::IpAddr::V6(_)) => "6".to_owned(),
            _ => "4".to_owned(),
        });
    }
    result.cni_version = version.to_owned();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::error::{INCOMPATIBLE_VERSION, INVALID_CONFIG};
    use serde_json::json;

    fn result(version: Option<&str>, ip_versions: bool) -> Value {
        let mut v = json!({
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/run/netns/p"}],
            "ips": [
                {"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0},
                {"address": "fd00::2/64", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "mtu": 1400}],
            "dns": {"nameservers": ["10.1.0.1"]}
        });
        if let Some(version) = version {
            v["cniVersion"] = json!(version);
        }
        if ip_versions {
            v["ips"][0]["version"] = json!("4");
            v["ips"][1]["version"] = json!("6");
        }
        v
    }

    #[test]
    fn results_are_written_in_the_configurations_version() {
        for (from, from_has) in [("0.3.1", true), ("0.4.0", true), ("1.0.0", false)] {
            for to in version::SUPPORTED_VERSIONS {
                let r = prev_result(result(Some(from), from_has), to).unwrap();
                let written = serde_json::to_value(&r).unwrap();
                let mut want = result(Some(to), version::has_ip_versions(to));
                want["cniVersion"] = json!(to);
                assert_eq!(written, want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_result_without_version_is_the_configurations() {
        // A 0.4.0 configuration's prevResult without cniVersion keeps its families.
        let r = prev_result(result(None, true), "0.4.0").unwrap();
        assert_eq!(r.ips[1].version.as_deref(), Some("6"));
        // A wrong family is not believed: the address says which it is.
        let mut v = result(Some("0.3.0"), true);
        v["ips"][0]["version"] = json!("6");
        let r = prev_result(v, "0.3.0").unwrap();
        assert_eq!(r.ips[0].version.as_deref(), Some("4"));
    }

    #[test]
    fn unreadable_results_are_refused() {
        let e = prev_result(result(Some("0.2.0"), false), "1.0.0").unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("0.2.0"), "{e}");
        let mut v = result(Some("1.0.0"), false);
        v["ips"][0]["address"] = json!("10.1.0.2");
        let e = prev_result(v, "1.0.0").unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("ips[0].address"), "{e}");
    }
}
