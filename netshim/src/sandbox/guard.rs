//! `netshim guard`: shows or changes the source guard of an attached sandbox's endpoints
//! by map updates, under the sandbox lock, without reattaching. The new settings go into the
//! commit file; what is printed is read back from the maps.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{commit::amend_commit, AttachReport, Sandbox};
use crate::{
    datapath::{ebpf, TcBackend},
    guard::{maps, GuardEntry, GuardMode, GuardReport, GuardSettings},
    model::{guard_policy::unavailable_reason, InternetworkingModel},
    netns::Netns,
    state, Error, Result,
};

/// What `netshim guard` changes; all empty = only print.
#[derive(Debug, Clone, Default)]
pub struct GuardChange {
    /// Only this endpoint (its pod device name); every endpoint with a tap without it.
    pub endpoint: Option<String>,
    pub mode: Option<GuardMode>,
    pub allow: Vec<IpNet>,
    pub disallow: Vec<IpNet>,
    pub allow_dhcp: Option<bool>,
    pub allow_ethertypes: Vec<u16>,
    pub disallow_ethertypes: Vec<u16>,
}

impl GuardChange {
    pub fn changes_anything(&self) -> bool {
        self.mode.is_some()
            || self.allow_dhcp.is_some()
            || !self.allow.is_empty()
            || !self.disallow.is_empty()
            || !self.allow_ethertypes.is_empty()
            || !self.disallow_ethertypes.is_empty()
    }

    /// `settings` with this change applied (validated).
    pub fn apply(&self, settings: &GuardSettings) -> Result<GuardSettings> {
        let mut s = settings.clone();
        if let Some(mode) = self.mode {
            s.mode = mode;
        }
        if let Some(dhcp) = self.allow_dhcp {
            s.allow_dhcp = dhcp;
        }
        let disallow: Vec<IpNet> = self.disallow.iter().map(IpNet::trunc).collect();
        s.allowed_addresses.retain(|n| !disallow.contains(n));
        s.allowed_addresses.extend(self.allow.iter().copied());
        s.allowed_ethertypes
            .retain(|t| !self.disallow_ethertypes.contains(t));
        s.allowed_ethertypes
            .extend(self.allow_ethertypes.iter().copied());
        s.validate().map_err(Error::GuardSettings)
    }
}

/// One endpoint's guard after the command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointGuard {
    pub index: u32,
    pub name: String,
    pub tap: String,
    pub guard: GuardReport,
}

/// The result of `netshim guard`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuardCommandReport {
    pub netns: String,
    pub netns_cookie: u64,
    /// Whether anything was asked to change.
    pub changed: bool,
    pub endpoints: Vec<EndpointGuard>,
}

/// Shows or changes the guard of `netns`'s endpoints (see the module docs).
pub fn guard(netns: &Netns, change: &GuardChange) -> Result<GuardCommandReport> {
    let sandbox = Sandbox::of(netns);
    let lock = sandbox.lock()?;
    let result = guard_locked(&sandbox, change);
    lock.release();
    result
}

fn guard_locked(sandbox: &Sandbox, change: &GuardChange) -> Result<GuardCommandReport> {
    let netns = &sandbox.netns;
    let commit = sandbox.commit_file();
    let Some(recorded) = state::read_json::<AttachReport>(&commit) else {
        return Err(Error::NotAttached {
            netns: netns.to_string(),
            detail: format!("no commit file {}", commit.display()),
        });
    };
    let model: InternetworkingModel = recorded.model;
    let backend = recorded.backend.unwrap_or(TcBackend::Mirred);
    if let Some(reason) = unavailable_reason(model, backend) {
        return Err(Error::InvalidOptions(format!(
            "netns {netns} is attached with model {model}, datapath {}: {reason}",
            recorded.datapath
        )));
    }
    let dir = &sandbox.pin_dir;
    if !maps::has_guard_maps(dir) {
        return Err(Error::InvalidOptions(format!(
            "netns {netns} has no guard maps in {} (attached before the guard existed): run \
             `netshim upgrade --netns {netns}` first",
            dir.display()
        )));
    }
    let ebpf_err = |index, source| Error::guard_map(netns, index, source);
    let records = ebpf::recorded_endpoints(dir).map_err(Error::ebpf(netns))?;
    let selected: Vec<_> = recorded
        .endpoints
        .iter()
        .filter(|e| e.tap.is_some())
        .filter(|e| {
            change
                .endpoint
                .as_ref()
                .is_none_or(|n| *n == e.endpoint.name)
        })
        .collect();
    if selected.is_empty() {
        return Err(Error::InvalidOptions(match &change.endpoint {
            Some(name) => format!("netns {netns} has no endpoint {name} with a tap"),
            None => format!("netns {netns} has no endpoint with a tap"),
        }));
    }
    // The pod devices' addresses as they are now (what watch would have written).
    let current = {
        let n = netns.clone();
        netns.run(move |handle| async move { super::status::list_interfaces(&handle, &n).await })?
    };
    let mut out = Vec::new();
    let mut new_settings = Vec::new();
    for e in selected {
        let tap = e.tap.as_ref().expect("selected endpoints have a tap");
        let Some((index, _)) = records.iter().find(|(_, r)| r.tap_ifindex == tap.ifindex) else {
            return Err(Error::InvalidOptions(format!(
                "netns {netns}: tap {} of {} has no endpoint record in {}: `netshim status` \
                 says what is broken",
                tap.name,
                e.endpoint.name,
                dir.display()
            )));
        };
        if change.changes_anything() {
            let old = maps::read(dir, *index)
                .map_err(|s| ebpf_err(*index, s))?
                .map(|entry| entry.settings())
                .unwrap_or_default();
            let settings = change.apply(&old)?;
            let pod = current.iter().find(|i| i.ifindex == e.endpoint.ifindex);
            let Some(mac) = e.endpoint.mac.or(pod.and_then(|p| p.mac)) else {
                return Err(Error::InvalidOptions(format!(
                    "netns {netns}: {} has no MAC address, so its guest's cannot be checked",
                    e.endpoint.name
                )));
            };
            let addresses: Vec<IpAddr> = match pod {
                Some(p) => p.addresses.iter().map(|a| a.address).collect(),
                None => e.endpoint.addresses.iter().map(|a| a.address).collect(),
            };
            let entry = GuardEntry::build(mac, &addresses, &settings);
            write_guard(dir, *index, tap.ifindex, &entry).map_err(|s| ebpf_err(*index, s))?;
            new_settings.push((e.endpoint.name.clone(), settings));
        }
        out.push(EndpointGuard {
            index: *index,
            name: e.endpoint.name.clone(),
            tap: tap.name.clone(),
            guard: GuardReport::applied(dir, *index, tap.ifindex)
                .map_err(|s| ebpf_err(*index, s))?,
        });
    }
    if !new_settings.is_empty() {
        amend_commit(sandbox, None, |report| {
            for e in &mut report.endpoints {
                if let Some((_, s)) = new_settings.iter().find(|(n, _)| *n == e.endpoint.name) {
                    e.guard = Some(GuardReport::Guard {
                        settings: s.clone(),
                        mac: None,
                        addresses: None,
                    });
                }
            }
        })?;
    }
    Ok(GuardCommandReport {
        netns: netns.arg.clone(),
        netns_cookie: netns.cookie,
        changed: change.changes_anything(),
        endpoints: out,
    })
}

/// Writes endpoint `index`'s guard into the maps, then sets (or clears) `PEER_GUARD` on its
/// tap's `peers` entry: the checks run from the next packet on, with the new values.
pub(crate) fn write_guard(
    dir: &std::path::Path,
    index: u32,
    tap_ifindex: u32,
    entry: &GuardEntry,
) -> std::result::Result<(), crate::guard::GuardMapError> {
    maps::write(dir, index, entry)?;
    maps::set_peer_guard(dir, tap_ifindex, entry.mode().is_on())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_add_and_remove_what_they_name() {
        let old = GuardSettings {
            allowed_addresses: vec!["10.0.0.5/32".parse().unwrap()],
            allowed_ethertypes: vec![0x88b5],
            ..GuardSettings::default()
        };
        let change = GuardChange {
            mode: Some(GuardMode::Log),
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            disallow: vec!["10.0.0.5/32".parse().unwrap()],
            allow_dhcp: Some(true),
            allow_ethertypes: vec![0x88b6],
            disallow_ethertypes: vec![0x88b5],
            ..GuardChange::default()
        };
        assert!(change.changes_anything());
        let new = change.apply(&old).unwrap();
        assert_eq!(new.mode, GuardMode::Log);
        assert!(new.allow_dhcp);
        assert_eq!(new.allowed_addresses, vec!["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(new.allowed_ethertypes, vec![0x88b6]);
        assert!(!GuardChange::default().changes_anything());
        let too_many = GuardChange {
            allow_ethertypes: vec![0x9000, 0x9001, 0x9002, 0x9003],
            ..GuardChange::default()
        };
        assert!(too_many.apply(&old).is_err());
    }
}
