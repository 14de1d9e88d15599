//! Chaining netshim into a network configuration, and taking it out again.
//!
//! A `.conflist` is a list (`cniVersion`, `name`, `plugins`); a `.conf` or `.json` is one
//! plugin's configuration, which libcni runs as a list of one (`ConfListFromConf`). Chained,
//! either becomes a list whose last plugin is netshim's entry (`"type": "netshim"`): libcni
//! hands each plugin the list's `cniVersion` and `name`, so the entry carries neither. A
//! `.conf` keeps all its keys as the list's first plugin. Keys stay in their order (serde_json
//! `preserve_order`); the file is rewritten only when its plugins are not already the
//! chained ones.

use std::path::Path;

use serde_json::{Map, Value};

use super::error::InstallError;
use crate::cni::{config, version};

/// The `type` of netshim's entry.
pub const PLUGIN_TYPE: &str = "netshim";

/// A configuration file, read as the runtimes read it.
#[derive(Debug, Clone)]
pub struct NetworkConf {
    pub network: String,
    pub cni_version: String,
    /// The whole file as a list (a `.conf` wrapped).
    list: Map<String, Value>,
    /// It is a list on disk (`.conflist`).
    pub is_list: bool,
}

fn bad(path: &Path, reason: impl Into<String>) -> InstallError {
    InstallError::BadConf {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `path` is read as a list (libcni: by its extension alone).
pub fn is_list_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "conflist")
}

impl NetworkConf {
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<NetworkConf, InstallError> {
        if let Ok(link) = std::fs::read_link(path) {
            return Err(bad(
                path,
                format!(
                    "a symbolic link (to {}): netshim does not replace it with a file; chain \
                     into the file it points to (--chain-into) or make it a file",
                    link.display()
                ),
            ));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(path, format!("not JSON ({e})")))?;
        let Value::Object(obj) = value else {
            return Err(bad(path, "not a JSON object"));
        };
        let is_list = is_list_file(path);
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(path, "no \"name\""))?
            .to_owned();
        let cni_version = pick_version(path, &obj)?;
        let list = if is_list {
            match obj.get("plugins") {
                Some(Value::Array(p)) if !p.is_empty() => {}
                Some(Value::Array(_)) => return Err(bad(path, "\"plugins\" is empty")),
                _ => return Err(bad(path, "a .conflist without a \"plugins\" list")),
            }
            obj
        } else {
            if obj
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(bad(
                    path,
                    "no \"type\" (a .conf or .json is one plugin's configuration)",
                ));
            }
            let mut list = Map::new();
            list.insert("cniVersion".into(), Value::String(cni_version.clone()));
            list.insert("name".into(), Value::String(name.clone()));
            list.insert("plugins".into(), Value::Array(vec![Value::Object(obj)]));
            list
        };
        Ok(NetworkConf {
            network: name,
            cni_version,
            list,
            is_list,
        })
    }

    fn plugins(&self) -> &[Value] {
        self.list
            .get("plugins")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether its last plugin is exactly `entry` and no other is netshim's.
    pub fn is_chained_with(&self, entry: &Map<String, Value>) -> bool {
        let plugins = self.plugins();
        self.is_list
            && plugins.last() == Some(&Value::Object(entry.clone()))
            && plugins.iter().filter(|p| is_netshim(p)).count() == 1
    }

    /// Whether any plugin is netshim's.
    pub fn has_netshim(&self) -> bool {
        self.plugins().iter().any(is_netshim)
    }

    /// The list with netshim's entries taken out and `entry` appended, as file bytes.
    pub fn chained(&self, entry: &Map<String, Value>) -> Vec<u8> {
        let mut list = self.list.clone();
        let mut plugins: Vec<Value> = self
            .plugins()
            .iter()
            .filter(|p| !is_netshim(p))
            .cloned()
            .collect();
        plugins.push(Value::Object(entry.clone()));
        list.insert("plugins".into(), Value::Array(plugins));
        to_bytes(&list)
    }

    /// The list without netshim's entries, as file bytes (`None` when it had none).
    pub fn unchained(&self) -> Option<Vec<u8>> {
        if !self.has_netshim() {
            return None;
        }
        let mut list = self.list.clone();
        let plugins: Vec<Value> = self
            .plugins()
            .iter()
            .filter(|p| !is_netshim(p))
            .cloned()
            .collect();
        list.insert("plugins".into(), Value::Array(plugins));
        Some(to_bytes(&list))
    }
}

fn is_netshim(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

fn to_bytes(list: &Map<String, Value>) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(list).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// The version the runtime runs the list in: `cniVersion`; or, with only `cniVersions`
/// (spec 1.1), the newest of them netshim speaks (libcni takes the newest it supports).
fn pick_version(path: &Path, obj: &Map<String, Value>) -> Result<String, InstallError> {
    let unsupported = |v: &str| InstallError::Version {
        path: path.to_owned(),
        version: v.to_owned(),
        supported: version::SUPPORTED_VERSIONS.join(", "),
    };
    if let Some(v) = obj.get("cniVersion") {
        let v = v
            .as_str()
            .ok_or_else(|| bad(path, "\"cniVersion\" is not a string"))?;
        return version::check(v)
            .map(|()| v.to_owned())
            .map_err(|_| unsupported(v));
    }
    let listed: Vec<&str> = obj
        .get("cniVersions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    version::SUPPORTED_VERSIONS
        .iter()
        .rev()
        .find(|v| listed.contains(v))
        .map(|v| (*v).to_owned())
        .ok_or_else(|| {
            unsupported(if listed.is_empty() {
                "(none: libcni reads 0.1.0)"
            } else {
                listed[0]
            })
        })
}

/// netshim's entry from `--plugin-json` (default `{"type": "netshim"}`), checked by the
/// plugin's own parser as libcni would hand it over (with the list's version and name), so
/// that a key ADD would refuse is refused here, before any pod.
pub fn plugin_entry(json: Option<&str>) -> Result<Map<String, Value>, InstallError> {
    let mut entry = match json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(InstallError::PluginJson("not a JSON object".into())),
            Err(e) => return Err(InstallError::PluginJson(format!("not JSON: {e}"))),
        },
    };
    match entry.get("type") {
        None => {
            // The type first, as plugin entries are written.
            let mut typed = Map::new();
            typed.insert("type".into(), Value::String(PLUGIN_TYPE.into()));
            typed.extend(entry);
            entry = typed;
        }
        Some(Value::String(t)) if t == PLUGIN_TYPE => {}
        Some(other) => {
            return Err(InstallError::PluginJson(format!(
                "\"type\" is {other}: netshim's entry is of type \"{PLUGIN_TYPE}\""
            )))
        }
    }
    for key in ["cniVersion", "name", "prevResult"] {
        if entry.contains_key(key) {
            return Err(InstallError::PluginJson(format!(
                "\"{key}\" is the runtime's to set (libcni passes the list's)"
            )));
        }
    }
    check_entry(&entry, version::LATEST)?;
    Ok(entry)
}

/// The plugin's parser on `entry` under `cni_version`.
pub fn check_entry(entry: &Map<String, Value>, cni_version: &str) -> Result<(), InstallError> {
    let mut conf = entry.clone();
    conf.insert("cniVersion".into(), Value::String(cni_version.into()));
    conf.insert("name".into(), Value::String("netshim-install-check".into()));
    let bytes = serde_json::to_vec(&conf).expect("JSON values serialize");
    config::parse(&bytes).map(drop).map_err(|e| {
        InstallError::PluginJson(match e.details {
            Some(d) => format!("{} ({d})", e.msg),
            None => e.msg,
        })
    })
}
