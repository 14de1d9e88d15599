//! The lines `watch` prints for what it made or saw.

use netshim::sandbox::{Change, WatchEvent, WatchedEndpoint};

/// Prints one line for a change `watch` made or saw: a JSON object, or text. A closed stdout
/// does not stop the watcher.
pub fn watch_line(json: bool, change: &Change) {
    use std::io::Write as _;
    let line = if json {
        // Serializing plain structs cannot fail.
        serde_json::to_string(change).expect("serializable change")
    } else {
        format!("{} {}", change.time, watch(change))
    };
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn watched(e: &WatchedEndpoint) -> String {
    format!(
        "{} -> {} ({})",
        e.name,
        e.vm_device.as_deref().unwrap_or("-"),
        e.datapath
    )
}

/// The text of a watch change, without its timestamp.
pub fn watch(c: &Change) -> String {
    match &c.event {
        WatchEvent::Watching {
            attached,
            endpoints,
        } => {
            let list = endpoints.iter().map(watched).collect::<Vec<_>>().join(", ");
            let how = match (attached.is_some(), endpoints.is_empty()) {
                (_, true) => "no endpoint yet".to_owned(),
                (true, false) => format!("attached {list}"),
                (false, false) => format!("already attached: {list}"),
            };
            format!("watching netns {} ({how})", c.netns)
        }
        WatchEvent::Added { endpoint, .. } => format!("added {}", watched(endpoint)),
        WatchEvent::Removed { endpoint } => format!(
            "removed {} ({})",
            endpoint.name,
            endpoint
                .vm_device
                .clone()
                .unwrap_or_else(|| endpoint.datapath.to_string())
        ),
        WatchEvent::Skipped { name, detail, .. } => format!(
            "skipped {name}: {}",
            detail.as_deref().unwrap_or("unsupported")
        ),
        WatchEvent::Failed { name, error, .. } => format!("failed {name}: {error}"),
        WatchEvent::GuardAddresses {
            name, addresses, ..
        } => {
            let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            format!("guard {name}: addresses {}", list.join(" "))
        }
        WatchEvent::Stopped => format!(
            "stopped watching netns {}; the datapath stays attached",
            c.netns
        ),
    }
}
