//! The JSON Schema of the JSON netshim writes, derived (schemars) from the types serde writes
//! it with, and published in docs/schema/<name>.json. `cargo run -p netshim --example schema`
//! writes those files; a unit test fails when a committed file is not what the types give,
//! so a change of a type without its schema does not go unnoticed.
//!
//! - `intent`: the intent file ([`crate::sandbox::Intent`]);
//! - `attach`: `netshim attach --json`, also the commit file (which keeps each guard's
//!   settings only) ([`crate::sandbox::AttachReport`]);
//! - `status`: `netshim status --json` ([`crate::sandbox::StatusReport`]);
//! - `stats`: `netshim stats --json`, a list of [`crate::stats::SandboxStats`].
//!
//! The types serde writes by hand (a MAC as text, drop counts) have their schema here.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use crate::{
    interfaces::Mac,
    stats::{DropCount, Dropped},
};

/// The directory of the published schemas, relative to the workspace root.
pub const SCHEMA_DIR: &str = "docs/schema";

/// Each published schema: the file's name (without `.json`) and its text.
pub fn schemas() -> Vec<(&'static str, String)> {
    vec![
        ("intent", render::<crate::sandbox::Intent>()),
        ("attach", render::<crate::sandbox::AttachReport>()),
        ("status", render::<crate::sandbox::StatusReport>()),
        ("stats", render::<Vec<crate::stats::SandboxStats>>()),
    ]
}

/// The schema of `T` as the file holds it: pretty JSON and a final newline. It describes
/// what netshim writes (schemars' serialize contract: a field serde skips when empty is
/// optional, one it always writes is required).
fn render<T: JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

/// `aa:bb:cc:dd:ee:ff`, as `Mac`'s Display writes it.
impl JsonSchema for Mac {
    fn schema_name() -> Cow<'static, str> {
        "Mac".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$",
        })
    }
}

/// A count, or `null` where the datapath cannot count it.
impl JsonSchema for DropCount {
    fn schema_name() -> Cow<'static, str> {
        "DropCount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["integer", "null"], "minimum": 0 })
    }
}

/// One object of drop reasons; a reason that does not apply is left out.
impl JsonSchema for Dropped {
    fn schema_name() -> Cow<'static, str> {
        "Dropped".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let count = generator.subschema_for::<DropCount>();
        let properties: serde_json::Map<String, serde_json::Value> = Dropped::default()
            .reasons()
            .iter()
            .map(|(reason, _)| (reason.to_string(), count.clone().into()))
            .collect();
        json_schema!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_published_schemas_are_the_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCHEMA_DIR);
        for (name, want) in schemas() {
            let path = dir.join(format!("{name}.json"));
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{} is not the schema of the types; run `cargo run -p netshim --example \
                 schema` and commit the result",
                path.display()
            );
        }
    }

    /// What the schema says is what serde writes: the keys an intent file always has, and
    /// the attach options' names.
    #[test]
    fn the_intent_schema_names_the_fields_serde_writes() {
        let schema: serde_json::Value =
            serde_json::from_str(&render::<crate::sandbox::Intent>()).unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut want = vec![
            "op",
            "pid",
            "started_at",
            "netns_path",
            "netns_inode",
            "netns_cookie",
            "options",
        ];
        let mut got = required.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        let attach = &schema["$defs"]["AttachIntent"]["properties"];
        for key in ["model", "tc_backend", "tap_names", "guard", "ebpf_attach"] {
            assert!(attach.get(key).is_some(), "{key} in {attach}");
        }
    }
}
