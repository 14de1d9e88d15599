//! `netshim watch`: attach a netns, then keep its endpoints and the VM's taps in step while
//! the CNI plugin adds and removes interfaces.
//!
//! The watcher runs on one thread inside the sandbox netns ([`Netns::run`]) with two rtnetlink
//! sockets: one for requests, one bound to the `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR` and
//! `RTNLGRP_IPV6_IFADDR` multicast groups. Separate sockets, because the kernel stamps a
//! notification with the sequence number and port of the request that caused it, and
//! netlink-proto would take such a notification for that request's answer.
//!
//! Events only say that something changed. Each burst triggers a fresh survey under the
//! sandbox lock, compared with what the watcher has handed to the VM. A burst is every event
//! already queued when the watcher gets to it (plus those within [`WatchOptions::debounce`],
//! zero by default): a hot-plug is handled as soon as its event is read, and what arrives
//! while a survey runs is taken together by the next one. A survey that finds nothing new
//! costs a few netlink dumps.
//! - an endpoint (classified as kata does: with an address; a CNI plugin adds the veth first
//!   and its address after) that is new gets the lowest free index N and what attach would
//!   give it (`tap<N>_kata` and the configured datapath, a macvtap, or nothing for kinds the
//!   VMM takes as they are);
//! - an endpoint whose pod device is gone (by ifindex) loses its tap and datapath entries.
//!
//! What the watcher has handed to the VM is kept by pod ifindex, read back at start from the
//! datapath itself (eBPF endpoint records, mirred redirect targets, the macvtap model's state
//! files), because after its pod device is gone nothing in the kernel says which tap was its.
//! An endpoint whose pod device still exists is never re-plugged, so a `netshim detach` while
//! watching is not undone. A change that fails is reported and not retried until the
//! interface goes away and comes back.
//!
//! Stopping (the `stop` future: SIGINT/SIGTERM in the CLI) leaves the datapath as it is.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use netshim_common::MAX_ENDPOINTS;
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::RouteNetlinkMessage,
    MulticastGroup,
};

use super::{
    attach::attach, hotplug, survey, AttachOptions, Sandbox, SkippedInterface, Strictness, Survey,
};
use crate::{
    endpoint::SkipReason,
    model::{Plugged, TapDatapath, VmSide},
    netns::{Netns, NetnsError},
    state::lock::SandboxLock,
    Error, Result,
};

mod discover;
mod events;

pub use events::{Change, WatchEvent, WatchedEndpoint};

/// What `watch` does.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How endpoints are attached, at start and when they appear.
    pub attach: AttachOptions,
    /// How long to wait after the first event of a burst before surveying the netns (events
    /// already queued are always taken together). Zero by default: every millisecond here
    /// is a millisecond of hot-plug latency.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            attach: AttachOptions::default(),
            debounce: Duration::ZERO,
        }
    }
}

/// Attaches `netns` unless it is attached already (or has no endpoint yet), then hands each
/// endpoint that appears to the VM and takes back those whose pod device disappears, until
/// `stop` completes. Each change is passed to `on_change` as it happens. Returns `Ok` when
/// stopped; the attached datapath keeps running.
///
/// `stop` is first polled (on the watcher's own runtime) before anything is changed, so a
/// signal handler it installs is in place from the start.
#[tracing::instrument(level = "debug", skip_all, fields(netns = %netns))]
pub fn watch<S, F>(netns: &Netns, options: &WatchOptions, stop: S, on_change: F) -> Result<()>
where
    S: Future<Output = ()> + Send + 'static,
    F: FnMut(&Change) + Send + 'static,
{
    options.attach.validate()?;
    options.attach.check_netns(netns)?;
    let (netns, options) = (netns.clone(), options.clone());
    netns.clone().run(move |handle| async move {
        let mut stop = std::pin::pin!(stop);
        let mut emit = Emitter {
            netns: netns.arg.clone(),
            on_change,
        };
        if futures::poll!(stop.as_mut()).is_ready() {
            emit.send(WatchEvent::Stopped);
            return Ok(());
        }
        let (events_conn, _, events) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(|source| NetnsError::Netlink {
            path: netns.path.clone(),
            source,
        })?;
        let events_conn = tokio::spawn(events_conn);
        let mut watcher = Watcher {
            handle,
            sandbox: Sandbox::of(&netns),
            options,
            plugged: BTreeMap::new(),
            foreign: BTreeSet::new(),
            reported: BTreeSet::new(),
        };
        let result = watcher.run(stop, events, &mut emit).await;
        events_conn.abort();
        result
    })
}

struct Emitter<F> {
    netns: String,
    on_change: F,
}

impl<F: FnMut(&Change)> Emitter<F> {
    fn send(&mut self, event: WatchEvent) {
        (self.on_change)(&Change {
            time: rfc3339_utc(SystemTime::now()),
            netns: self.netns.clone(),
            event,
        });
    }
}

type Events = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

struct Watcher {
    handle: rtnetlink::Handle,
    sandbox: Sandbox,
    options: WatchOptions,
    /// What was handed to the VM, by pod ifindex.
    plugged: BTreeMap<u32, Plugged>,
    /// Devices of `netshim connect` pairs: not endpoints of this sandbox.
    foreign: BTreeSet<u32>,
    /// Interfaces a failure or a refusal was reported for (once each, while they exist).
    reported: BTreeSet<u32>,
}

impl Watcher {
    async fn run<S, F>(
        &mut self,
        mut stop: std::pin::Pin<&mut S>,
        mut events: Events,
        emit: &mut Emitter<F>,
    ) -> Result<()>
    where
        S: Future<Output = ()>,
        F: FnMut(&Change),
    {
        // Subscribed before attaching: whatever changes from here on is seen, either by the
        // first survey below or as an event. The sandbox lock is not held around attach:
        // attach is to take it itself, and flock on a second open of the lock file would
        // wait for this process forever.
        let attached = match attach(&self.sandbox.netns, &self.options.attach) {
            Ok(report) if report.already_attached => None,
            Ok(report) => Some(Box::new(report)),
            Err(Error::AlreadyAttached { .. }) | Err(Error::NoUsableInterface { .. }) => None,
            Err(e) => return Err(e),
        };
        {
            let Some(_lock) = self.lock(stop.as_mut()).await? else {
                emit.send(WatchEvent::Stopped);
                return Ok(());
            };
            let survey = self.survey().await?;
            self.discover(&survey).await?;
            self.check_datapath()?;
            emit.send(WatchEvent::Watching {
                attached,
                endpoints: self.plugged.values().map(WatchedEndpoint::of).collect(),
            });
            self.reconcile(survey, emit).await?;
        }
        // The datapath's own log records (aya-log) become tracing events while watching.
        let _datapath_logs =
            crate::ebpf_log::spawn_follower(crate::ebpf_log::Scope::sandbox(&self.sandbox.netns));
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let deadline = due.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                biased;
                _ = stop.as_mut() => break,
                event = events.next() => match event {
                    Some((msg, _)) => {
                        if due.is_none() && relevant(&msg) {
                            due = Some(tokio::time::Instant::now() + self.options.debounce);
                        }
                    }
                    None => {
                        return Err(Error::Watch {
                            netns: self.sandbox.netns.to_string(),
                            detail: "the rtnetlink event socket closed".into(),
                        })
                    }
                },
                _ = tokio::time::sleep_until(deadline), if due.is_some() => {
                    due = None;
                    tracing::debug!("interfaces changed: surveying the netns");
                    let mut steps = super::steps::Steps::start();
                    let Some(_lock) = self.lock(stop.as_mut()).await? else {
                        break;
                    };
                    steps.done("sandbox lock taken");
                    let survey = self.survey().await?;
                    steps.done("interfaces surveyed");
                    self.reconcile(survey, emit).await?;
                    steps.done("reconciled");
                }
            }
        }
        emit.send(WatchEvent::Stopped);
        Ok(())
    }

    /// The sandbox lock, or `None` when `stop` completes while waiting for it.
    async fn lock<S: Future<Output = ()>>(
        &self,
        stop: std::pin::Pin<&mut S>,
    ) -> Result<Option<SandboxLock>> {
        let cookie = self.sandbox.netns.cookie;
        if let Some(lock) = SandboxLock::try_acquire(cookie)? {
            return Ok(Some(lock));
        }
        tracing::info!("waiting for the lock of netns {}", self.sandbox.netns);
        let wait = tokio::task::spawn_blocking(move || SandboxLock::acquire(cookie));
        tokio::select! {
            biased;
            _ = stop => Ok(None),
            got = wait => match got {
                Ok(lock) => Ok(Some(lock?)),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
        }
    }

    async fn survey(&self) -> Result<Survey> {
        survey(
            &self.handle,
            &self.sandbox.netns,
            Strictness::List,
            &self.options.attach.probe,
        )
        .await
    }

    /// Brings the VM side in step with `survey`: removals first (their indexes become
    /// free), then new endpoints in kata's order.
    async fn reconcile<F: FnMut(&Change)>(
        &mut self,
        survey: Survey,
        emit: &mut Emitter<F>,
    ) -> Result<()> {
        let present: BTreeSet<u32> = survey
            .endpoints
            .iter()
            .map(|(i, _)| i.ifindex)
            .chain(survey.skipped.iter().map(|s| s.ifindex))
            .collect();
        let gone: Vec<u32> = self
            .plugged
            .keys()
            .filter(|i| !present.contains(i))
            .copied()
            .collect();
        for ifindex in gone {
            let Some(p) = self.plugged.remove(&ifindex) else {
                continue;
            };
            let unplugged = hotplug::unplug(&self.handle, &self.sandbox.netns, &p).await;
            let unplugged = unplugged.and_then(|()| {
                super::commit::amend_commit(&self.sandbox, None, |r| {
                    r.endpoints.retain(|e| e.endpoint.ifindex != ifindex)
                })
            });
            match unplugged {
                Ok(()) => emit.send(WatchEvent::Removed {
                    endpoint: WatchedEndpoint::of(&p),
                }),
                Err(e) => emit.send(WatchEvent::Failed {
                    name: p.pod.name.clone(),
                    ifindex,
                    error: format!(
                        "removing what was made for it ({}): {e}",
                        p.vm_device().unwrap_or_default()
                    ),
                }),
            }
        }
        self.foreign.retain(|i| present.contains(i));
        self.reported.retain(|i| present.contains(i));

        for s in &survey.skipped {
            if s.reason == SkipReason::Unsupported && self.reported.insert(s.ifindex) {
                emit.send(self.refused(s));
            }
        }
        self.follow_addresses(&survey, emit);
        let new: Vec<_> = survey
            .endpoints
            .iter()
            .filter(|(i, _)| {
                !self.plugged.contains_key(&i.ifindex)
                    && !self.foreign.contains(&i.ifindex)
                    && !self.reported.contains(&i.ifindex)
            })
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // Read before the macvtap model moves addresses (and their routes) away.
        let guest = super::collect_guest_network(&self.handle, &self.sandbox.netns).await?;
        let mut used = self.used_indices(&survey)?;
        for (iface, class) in new {
            let Some(index) = free_index(&used) else {
                self.reported.insert(iface.ifindex);
                emit.send(WatchEvent::Failed {
                    name: iface.name.clone(),
                    ifindex: iface.ifindex,
                    error: Error::TooManyEndpoints {
                        netns: self.sandbox.netns.to_string(),
                        count: used.len() + 1,
                        max: MAX_ENDPOINTS,
                    }
                    .to_string(),
                });
                continue;
            };
            let plugged = hotplug::plug(
                &self.handle,
                &self.sandbox,
                &self.options.attach,
                index,
                iface,
                class,
                &guest,
            )
            .await;
            let plugged = plugged.and_then(|(p, report)| {
                let options = Some(&self.options.attach);
                super::commit::amend_commit(&self.sandbox, options, |r| {
                    r.endpoints.push(report.clone())
                })?;
                Ok((p, report))
            });
            match plugged {
                Ok((p, report)) => {
                    used.insert(index);
                    emit.send(WatchEvent::Added {
                        endpoint: WatchedEndpoint::of(&p),
                        report: Box::new(report),
                    });
                    self.plugged.insert(iface.ifindex, p);
                }
                Err(e) => {
                    self.reported.insert(iface.ifindex);
                    emit.send(WatchEvent::Failed {
                        name: iface.name.clone(),
                        ifindex: iface.ifindex,
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The source guard of every eBPF endpoint follows its pod device's addresses: where
    /// they differ from what the guard map holds, the map is rewritten (same MAC and
    /// settings, the new addresses) and the commit file records them. A failure is
    /// reported; watching goes on.
    fn follow_addresses<F: FnMut(&Change)>(&self, survey: &Survey, emit: &mut Emitter<F>) {
        let dir = &self.sandbox.pin_dir;
        if !crate::guard::maps::has_guard_maps(dir) {
            return;
        }
        for p in self.plugged.values() {
            let VmSide::Tap {
                datapath: TapDatapath::Ebpf,
                ..
            } = &p.vm
            else {
                continue;
            };
            let Some((iface, _)) = survey
                .endpoints
                .iter()
                .find(|(i, _)| i.ifindex == p.pod.ifindex)
            else {
                continue;
            };
            match self.update_guard_addresses(dir, p.index, iface) {
                Ok(Some(addresses)) => emit.send(WatchEvent::GuardAddresses {
                    name: iface.name.clone(),
                    ifindex: iface.ifindex,
                    index: p.index,
                    addresses,
                }),
                Ok(None) => {}
                Err(e) => emit.send(WatchEvent::Failed {
                    name: iface.name.clone(),
                    ifindex: iface.ifindex,
                    error: format!("updating the addresses of its source guard: {e}"),
                }),
            }
        }
    }

    /// Rewrites endpoint `index`'s guard with `iface`'s addresses when they changed;
    /// returns the addresses it allows now.
    fn update_guard_addresses(
        &self,
        dir: &std::path::Path,
        index: u32,
        iface: &crate::interfaces::Interface,
    ) -> Result<Option<Vec<std::net::IpAddr>>> {
        use crate::guard::{maps, GuardEntry};
        let guard_err = |source| Error::guard_map(&self.sandbox.netns, index, source);
        let Some(old) = maps::read(dir, index).map_err(guard_err)? else {
            return Ok(None);
        };
        if old.config.mac == [0; 6] {
            // Never written (an endpoint without a MAC, or a guard never set up).
            return Ok(None);
        }
        let addresses: Vec<_> = iface.addresses.iter().map(|a| a.address).collect();
        let new = GuardEntry::build(old.mac(), &addresses, &old.settings());
        let mut before = old.addresses();
        let mut after = new.addresses();
        before.sort();
        after.sort();
        if before == after {
            return Ok(None);
        }
        maps::write(dir, index, &new).map_err(guard_err)?;
        let now = maps::read(dir, index)
            .map_err(guard_err)?
            .map(|e| e.addresses())
            .unwrap_or_default();
        super::commit::amend_commit(&self.sandbox, None, |r| {
            for e in &mut r.endpoints {
                if e.endpoint.ifindex == iface.ifindex {
                    e.endpoint.addresses = iface.addresses.clone();
                }
            }
        })?;
        Ok(Some(now))
    }

    /// An interface kata would refuse: skipped with `--skip-unsupported`, a failure without.
    fn refused(&self, s: &SkippedInterface) -> WatchEvent {
        if self.options.attach.skip_unsupported {
            WatchEvent::Skipped {
                name: s.name.clone(),
                ifindex: s.ifindex,
                detail: s.detail.clone(),
            }
        } else {
            WatchEvent::Failed {
                name: s.name.clone(),
                ifindex: s.ifindex,
                error: format!(
                    "{} in netns {}",
                    s.detail.as_deref().unwrap_or("unsupported interface"),
                    self.sandbox.netns
                ),
            }
        }
    }
}

/// Whether an event can change what is an endpoint: links and addresses coming and going,
/// and lost events (the socket's buffer overran).
fn relevant(msg: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
    match &msg.payload {
        NetlinkPayload::InnerMessage(m) => matches!(
            m,
            RouteNetlinkMessage::NewLink(_)
                | RouteNetlinkMessage::DelLink(_)
                | RouteNetlinkMessage::NewAddress(_)
                | RouteNetlinkMessage::DelAddress(_)
        ),
        NetlinkPayload::Overrun(_) => true,
        _ => false,
    }
}

fn free_index(used: &BTreeSet<u32>) -> Option<u32> {
    (0..MAX_ENDPOINTS).find(|i| !used.contains(i))
}

/// `2026-01-31T12:34:56.789Z`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.max(SystemTime::UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| {
            rfc3339_utc(SystemTime::UNIX_EPOCH + Duration::from_millis(s * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn events_serialize_as_json_lines() {
        let change = Change {
            time: "2026-01-01T00:00:00.000Z".into(),
            netns: "pod".into(),
            event: WatchEvent::Removed {
                endpoint: WatchedEndpoint {
                    name: "eth1".into(),
                    ifindex: 5,
                    index: 1,
                    vm_device: Some("tap1_kata".into()),
                    datapath: crate::model::EndpointDatapath::TcFilter(
                        crate::datapath::TcBackend::Ebpf,
                    ),
                },
            },
        };
        let v = serde_json::to_value(&change).unwrap();
        assert_eq!(v["event"], "removed");
        assert_eq!(v["name"], "eth1");
        assert_eq!(v["vm_device"], "tap1_kata");
        assert_eq!(v["index"], 1);
        let stopped = serde_json::to_value(Change {
            event: WatchEvent::Stopped,
            ..change
        })
        .unwrap();
        assert_eq!(stopped["event"], "stopped");
        assert_eq!(stopped["netns"], "pod");
    }

    #[test]
    fn only_link_and_address_events_are_relevant() {
        use rtnetlink::packet_route::{address::AddressMessage, link::LinkMessage};
        let msg = |m| NetlinkMessage::from(m);
        assert!(relevant(&msg(RouteNetlinkMessage::NewLink(
            LinkMessage::default()
        ))));
        assert!(relevant(&msg(RouteNetlinkMessage::DelAddress(
            AddressMessage::default()
        ))));
        assert!(!relevant(&msg(RouteNetlinkMessage::NewRoute(
            Default::default()
        ))));
    }

    #[test]
    fn the_lowest_free_index_is_taken() {
        assert_eq!(free_index(&BTreeSet::new()), Some(0));
        assert_eq!(free_index(&[0, 2].into_iter().collect()), Some(1));
        assert_eq!(free_index(&(0..MAX_ENDPOINTS).collect()), None);
    }
}
