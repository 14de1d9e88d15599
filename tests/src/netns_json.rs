//! A netns as `ip -j` and `tc -j` report it, cut down to the fields a before/after comparison
//! looks at (the attach-then-detach tests compare these as JSON values).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::TestNetns;

/// The array `ip -j`/`tc -j` printed (empty output is an empty list).
pub fn json(out: String) -> Vec<Value> {
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// An object with only those of `keys` that `v` has.
pub fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(x) = v.get(*k) {
            m.insert((*k).to_owned(), x.clone());
        }
    }
    Value::Object(m)
}

/// The links: index, name, flags, MTU, MAC, qdisc, and `kind` (the linkinfo's).
pub fn links(ns: &TestNetns) -> Vec<Value> {
    json(ns.ip(&["-j", "-d", "link", "show"]))
        .iter()
        .map(|l| {
            let mut v = pick(
                l,
                &["ifindex", "ifname", "flags", "mtu", "address", "qdisc"],
            );
            v["kind"] = l["linkinfo"]["info_kind"].clone();
            v
        })
        .collect()
}

/// The addresses, by interface name.
pub fn addresses(ns: &TestNetns) -> Vec<Value> {
    json(ns.ip(&["-j", "addr", "show"]))
        .iter()
        .map(|a| pick(a, &["ifname", "addr_info"]))
        .collect()
}

/// The qdiscs: device, kind, handle, parent.
pub fn qdiscs(ns: &TestNetns) -> Vec<Value> {
    json(ns.tc(&["-j", "qdisc", "show"]))
        .iter()
        .map(|q| pick(q, &["dev", "kind", "handle", "parent"]))
        .collect()
}

/// The tc filters on `dev`'s ingress and egress, under the keys `dev/ingress`, `dev/egress`.
pub fn add_filters(ns: &TestNetns, dev: &str, filters: &mut BTreeMap<String, Value>) {
    for hook in ["ingress", "egress"] {
        let out = ns.tc(&["-j", "filter", "show", "dev", dev, hook]);
        filters.insert(format!("{dev}/{hook}"), Value::Array(json(out)));
    }
}
