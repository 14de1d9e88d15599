//! Whether a sandbox is what its records say: the verdict `status` and `stats` report
//! (the checks themselves are `sandbox::health`'s).

/// Whether the sandbox is what its records say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Ok,
    /// Something the records name is missing or different; see the problems.
    Broken,
}

impl Health {
    pub fn of(problems: &[String]) -> Self {
        if problems.is_empty() {
            Self::Ok
        } else {
            Self::Broken
        }
    }
}
