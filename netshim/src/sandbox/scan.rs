//! `netshim scan`: the classification of every interface, changing nothing.

use super::{survey, EndpointInfo, SkippedInterface, Strictness};
use crate::{endpoint::SystemProbe, netns::Netns, Result};

/// An interface and what netshim makes of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum ScannedInterface {
    Endpoint(EndpointInfo),
    Skipped(SkippedInterface),
}

/// The result of a scan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScanReport {
    pub netns: String,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    /// In ifindex order.
    pub interfaces: Vec<ScannedInterface>,
}

/// Classifies every interface of `netns`.
pub fn scan(netns: &Netns, probe: &SystemProbe) -> Result<ScanReport> {
    let netns = netns.clone();
    let probe = probe.clone();
    netns.clone().run(move |handle| async move {
        let survey = survey(&handle, &netns, Strictness::List, &probe).await?;
        let mut interfaces: Vec<(u32, ScannedInterface)> = survey
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, (iface, class))| {
                (
                    iface.ifindex,
                    ScannedInterface::Endpoint(EndpointInfo::new(i as u32, iface, class)),
                )
            })
            .chain(
                survey
                    .skipped
                    .into_iter()
                    .map(|s| (s.ifindex, ScannedInterface::Skipped(s))),
            )
            .collect();
        interfaces.sort_by_key(|(ifindex, _)| *ifindex);
        Ok(ScanReport {
            netns: netns.arg.clone(),
            netns_inode: netns.inode,
            netns_cookie: netns.cookie,
            interfaces: interfaces.into_iter().map(|(_, i)| i).collect(),
        })
    })
}
