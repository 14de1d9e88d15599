//! The CNI spec versions netshim speaks, which commands each allows, and the VERSION
//! command's answer.

use super::error::{CniError, INCOMPATIBLE_VERSION};

/// Versions whose configuration and result formats netshim implements, oldest first: every
/// version that has plugin chaining (`prevResult`, from 0.3.0), as tc-redirect-tap does.
/// Their results differ only in `ips[].version` (0.3.x and 0.4.0, see [`super::convert`]).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version: what VERSION and errors before a config was read report.
pub const LATEST: &str = "1.1.0";

/// Refuses a configuration version netshim does not implement (code 1).
pub fn check(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        INCOMPATIBLE_VERSION,
        format!("incompatible CNI version {version:?}"),
    )
    .with_details(format!(
        "netshim supports cniVersion {}",
        SUPPORTED_VERSIONS.join(", ")
    )))
}

/// Whether supported version `version` is `floor` or newer.
fn at_least(version: &str, floor: &str) -> bool {
    let position = |v: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == v);
    position(version) >= position(floor)
}

/// The first spec version that has `command`: CHECK came with 0.4.0, STATUS and GC with
/// 1.1.0; ADD, DEL and VERSION are in all of them.
fn first_version_with(command: &str) -> Option<&'static str> {
    match command {
        "CHECK" => Some("0.4.0"),
        "STATUS" | "GC" => Some("1.1.0"),
        _ => None,
    }
}

/// Refuses `command` under a configuration of supported `version` that predates it (code 1,
/// as the reference plugins' skel does: "config version does not allow CHECK").
pub fn allows(command: &str, version: &str) -> Result<(), CniError> {
    match first_version_with(command) {
        Some(floor) if !at_least(version, floor) => Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("config version does not allow {command}"),
        )
        .with_details(format!(
            "cniVersion {version} has no {command}; it came with spec {floor}"
        ))),
        _ => Ok(()),
    }
}

/// Whether results of `version` give each IP's family (`ips[].version`, before 1.0.0).
pub fn has_ip_versions(version: &str) -> bool {
    !at_least(version, "1.0.0")
}

/// The VERSION command's output.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "cniVersion": LATEST,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chaining_versions_are_accepted() {
        for v in SUPPORTED_VERSIONS {
            assert!(check(v).is_ok(), "{v}");
        }
        for v in ["0.2.0", "0.1.0", "2.0.0", "", "1.0", "0.4"] {
            assert_eq!(check(v).unwrap_err().code, INCOMPATIBLE_VERSION, "{v}");
        }
        assert_eq!(
            version_info()["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }

    #[test]
    fn commands_need_the_version_that_brought_them() {
        for v in SUPPORTED_VERSIONS {
            assert!(allows("ADD", v).is_ok() && allows("DEL", v).is_ok(), "{v}");
        }
        for (command, refused, allowed) in [
            (
                "CHECK",
                &["0.3.0", "0.3.1"][..],
                &["0.4.0", "1.0.0", "1.1.0"][..],
            ),
            ("STATUS", &["0.3.1", "0.4.0", "1.0.0"], &["1.1.0"]),
            ("GC", &["0.3.0", "1.0.0"], &["1.1.0"]),
        ] {
            for v in refused {
                let e = allows(command, v).unwrap_err();
                assert_eq!(e.code, INCOMPATIBLE_VERSION, "{command} {v}");
                assert_eq!(e.msg, format!("config version does not allow {command}"));
            }
            for v in allowed {
                assert!(allows(command, v).is_ok(), "{command} {v}");
            }
        }
        assert!(has_ip_versions("0.3.0") && has_ip_versions("0.4.0"));
        assert!(!has_ip_versions("1.0.0") && !has_ip_versions("1.1.0"));
    }
}
