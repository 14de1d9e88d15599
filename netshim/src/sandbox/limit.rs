//! Rate limits of a sandbox's endpoints: made by `attach` (and `watch`, the CNI plugin),
//! shown and changed live by `netshim limit` under the sandbox lock. A change of rate is a
//! change of the HTB classes in place (the next dequeue runs at the new rate, nothing is
//! re-attached); adding or removing a limit swaps the device's root qdisc. The new shapers
//! go into the commit file; what is printed is read back from the kernel.

use super::{commit::amend_commit, AttachReport, EndpointReport, Sandbox};
use crate::{
    limit::{
        apply::{self, LiveShaper, Sandboxed},
        HtbProfile, LimitDirection, LimitRequest, Limits,
    },
    netns::Netns,
    state, Error, Result,
};

/// Where `report`'s endpoints sit.
fn sandboxed<'a>(netns: &'a Netns, report: &'a AttachReport) -> Sandboxed<'a> {
    Sandboxed {
        netns,
        model: report.model,
        backend: report.backend,
        pin_dir: report.pin_dir.as_deref(),
    }
}

/// Whether an endpoint has a device of netshim's that a limit could shape.
fn shapeable(e: &EndpointReport) -> bool {
    e.tap.is_some() || e.macvtap.is_some()
}

/// Shapes every endpoint of a new attach with `request`. Checks every endpoint before the
/// first change; a failure takes back the shapers already made (the taps go with attach's
/// undo, a pod device's tree does not).
pub(crate) async fn limit_new_endpoints(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    report: &mut AttachReport,
    request: &LimitRequest,
) -> Result<()> {
    let limits = request
        .limits()
        .map_err(|e| Error::InvalidOptions(format!("rate limit: {e}")))?;
    if limits.is_empty() {
        return Ok(());
    }
    let profile = request.profile.unwrap_or_default();
    let mut endpoints = std::mem::take(&mut report.endpoints);
    let result = shape_all(handle, netns, report, &mut endpoints, &limits, profile).await;
    if result.is_err() {
        let at = sandboxed(netns, report);
        for e in endpoints.iter_mut().filter(|e| !e.shapers.is_empty()) {
            if let Err(undo) = apply::apply(handle, &at, e, &Limits::default(), profile).await {
                tracing::warn!("taking back the shaper of {}: {undo}", e.endpoint.name);
            }
        }
    }
    report.endpoints = endpoints;
    result
}

async fn shape_all(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    report: &AttachReport,
    endpoints: &mut [EndpointReport],
    limits: &Limits,
    profile: HtbProfile,
) -> Result<()> {
    let at = sandboxed(netns, report);
    for e in endpoints.iter() {
        if !shapeable(e) {
            return Err(Error::InvalidOptions(format!(
                "netns {netns}: rate limits apply to endpoints with a tap or macvtap, and {} \
                 is handed to the VMM as it is ({}); set no limit for this sandbox",
                e.endpoint.name,
                e.endpoint.class.kind.as_str()
            )));
        }
        apply::check(&at, e, limits)?;
    }
    for e in endpoints.iter_mut() {
        apply::apply(handle, &at, e, limits, profile).await?;
    }
    Ok(())
}

/// Shapes one endpoint `watch` has just plugged (`at`: model, datapath, pin directory)
/// with `request`; a failure takes back what it made (the tap goes with hotplug's undo).
pub(crate) async fn limit_plugged(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    (model, backend, pin_dir): (
        crate::model::InternetworkingModel,
        Option<crate::datapath::TcBackend>,
        Option<&std::path::Path>,
    ),
    endpoint: &mut EndpointReport,
    request: &LimitRequest,
) -> Result<()> {
    let limits = request
        .limits()
        .map_err(|e| Error::InvalidOptions(format!("rate limit: {e}")))?;
    let at = Sandboxed {
        netns,
        model,
        backend,
        pin_dir,
    };
    let profile = request.profile.unwrap_or_default();
    let result = apply::apply(handle, &at, endpoint, &limits, profile).await;
    if result.is_err() && !endpoint.shapers.is_empty() {
        if let Err(undo) = apply::apply(handle, &at, endpoint, &Limits::default(), profile).await {
            tracing::warn!(
                "taking back the shaper of {}: {undo}",
                endpoint.endpoint.name
            );
        }
    }
    result
}

/// One endpoint's limits after `netshim limit`, read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointLimit {
    pub index: u32,
    pub name: String,
    pub rx: Option<LiveShaper>,
    pub tx: Option<LiveShaper>,
}

/// The result of `netshim limit`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LimitReport {
    pub netns: String,
    pub netns_cookie: u64,
    /// Whether anything was asked to change.
    pub changed: bool,
    pub endpoints: Vec<EndpointLimit>,
}

/// Shows or changes the limits of `netns`'s endpoints (`endpoint`: only that one).
pub fn limit(netns: &Netns, endpoint: Option<&str>, request: &LimitRequest) -> Result<LimitReport> {
    let sandbox = Sandbox::of(netns);
    let lock = sandbox.lock()?;
    let result = limit_locked(&sandbox, endpoint, request);
    lock.release();
    result
}

fn limit_locked(
    sandbox: &Sandbox,
    endpoint: Option<&str>,
    request: &LimitRequest,
) -> Result<LimitReport> {
    let netns = &sandbox.netns;
    let commit = sandbox.commit_file();
    let Some(recorded) = state::read_json::<AttachReport>(&commit) else {
        return Err(Error::NotAttached {
            netns: netns.to_string(),
            detail: format!("no commit file {}", commit.display()),
        });
    };
    let selected: Vec<usize> = recorded
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| shapeable(e))
        .filter(|(_, e)| endpoint.is_none_or(|n| n == e.endpoint.name))
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return Err(Error::InvalidOptions(match endpoint {
            Some(name) => format!("netns {netns} has no endpoint {name} with a tap or macvtap"),
            None => format!("netns {netns} has no endpoint with a tap or macvtap"),
        }));
    }
    let changed = !request.is_empty();
    // Every endpoint's new limits, checked before the first change.
    let mut wanted = Vec::new();
    {
        let at = sandboxed(netns, &recorded);
        for &i in &selected {
            let e = &recorded.endpoints[i];
            let new = request
                .applied_to(&e.shapers.limits())
                .map_err(|e| Error::InvalidOptions(format!("rate limit: {e}")))?;
            apply::check(&at, e, &new)?;
            let profile = request
                .profile
                .or_else(|| {
                    LimitDirection::ALL
                        .iter()
                        .find_map(|d| e.shapers.get(*d).map(|s| s.profile))
                })
                .unwrap_or_default();
            wanted.push((i, new, profile));
        }
    }
    let n = netns.clone();
    let (recorded, endpoints) = netns.run(move |handle| async move {
        let mut recorded = recorded;
        if changed {
            let mut endpoints = std::mem::take(&mut recorded.endpoints);
            let at = sandboxed(&n, &recorded);
            let mut failed = None;
            for (i, limits, profile) in &wanted {
                if let Err(e) =
                    apply::apply(&handle, &at, &mut endpoints[*i], limits, *profile).await
                {
                    failed = Some(e);
                    break;
                }
            }
            recorded.endpoints = endpoints;
            if let Some(e) = failed {
                // What did change is recorded before the error is reported.
                return Ok::<_, Error>((recorded, Err(e)));
            }
        }
        let mut out = Vec::new();
        for (i, _, _) in &wanted {
            let e = &recorded.endpoints[*i];
            let live = apply::read_live(&handle, &n, &e.shapers).await?;
            let of = |d| {
                live.iter()
                    .find(|(dir, _)| *dir == d)
                    .map(|(_, s)| s.clone())
            };
            out.push(EndpointLimit {
                index: e.endpoint.index,
                name: e.endpoint.name.clone(),
                rx: of(LimitDirection::Rx),
                tx: of(LimitDirection::Tx),
            });
        }
        Ok::<_, Error>((recorded, Ok(out)))
    })?;
    if changed {
        let shapers: Vec<_> = recorded
            .endpoints
            .iter()
            .map(|e| (e.endpoint.name.clone(), e.shapers.clone(), e.redirect))
            .collect();
        amend_commit(sandbox, None, |report| {
            for e in &mut report.endpoints {
                if let Some((_, s, r)) = shapers.iter().find(|(n, _, _)| *n == e.endpoint.name) {
                    e.shapers = s.clone();
                    e.redirect = *r;
                }
            }
        })?;
    }
    Ok(LimitReport {
        netns: netns.arg.clone(),
        netns_cookie: netns.cookie,
        changed,
        endpoints: endpoints?,
    })
}
