//! The CNI spec versions netshim speaks, and the VERSION command's answer.

use super::error::{CniError, INCOMPATIBLE_VERSION};

/// Versions whose configuration and result formats netshim implements. 0.x results differ
/// (`ips[].version`, no CHECK before 0.4.0) and are not supported.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

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
    fn only_1_0_and_1_1_are_accepted() {
        assert!(check("1.0.0").is_ok());
        assert!(check("1.1.0").is_ok());
        for v in ["0.4.0", "0.3.1", "2.0.0", "", "1.0"] {
            assert_eq!(check(v).unwrap_err().code, INCOMPATIBLE_VERSION, "{v}");
        }
        assert_eq!(version_info()["supportedVersions"][1], "1.1.0");
    }
}
