//! `netshim connect` / `disconnect`: the tcfilter datapath between any two devices of a
//! netns, with the same pins and counters as attach (which uses it for pod device ↔ tap).
//! Device A plays the pod side: A → B counts as `to_vm`, B → A as `from_vm`.

use std::path::PathBuf;

use netshim_common::MAX_ENDPOINTS;

use super::{
    redirect_loop::{self, PeerFacts},
    Sandbox,
};
use crate::{
    datapath::{
        ebpf, mirred, AttachMode, DatapathKind, Dev, FastPath, Pair, RedirectMode, TcBackend,
    },
    guard::{GuardEntry, GuardSettings},
    interfaces::{self, Interface, Mac},
    model::{tcfilter::connect_pairs, undo::Undo},
    netns::Netns,
    Error, Result,
};

/// What `connect` does.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub backend: TcBackend,
    pub fast_path: FastPath,
    pub ebpf_attach: Option<AttachMode>,
    /// The source guard of what B sends (the pair bench's "VM" side); eBPF only.
    pub guard: Option<ConnectGuard>,
}

/// `connect --guard MODE --guard-mac MAC --guard-allow CIDR...`: B's frames must come from
/// `mac` and from the sources in `allow`. Host addresses (/32, /128) are held as an
/// endpoint's own addresses are (inline, the first four per family), CIDRs as allowed
/// addresses (in the tries), so that the bench measures the paths a sandbox takes.
#[derive(Debug, Clone)]
pub struct ConnectGuard {
    pub mode: crate::guard::GuardMode,
    pub mac: Mac,
    pub allow: Vec<ipnet::IpNet>,
}

impl ConnectGuard {
    fn entry(&self) -> GuardEntry {
        let (hosts, cidrs): (Vec<&ipnet::IpNet>, Vec<&ipnet::IpNet>) = self
            .allow
            .iter()
            .partition(|n| n.prefix_len() == n.max_prefix_len());
        let addresses: Vec<std::net::IpAddr> = hosts.iter().map(|n| n.addr()).collect();
        let settings = GuardSettings {
            mode: self.mode,
            allowed_addresses: cidrs.into_iter().copied().collect(),
            ..GuardSettings::default()
        };
        GuardEntry::build(self.mac, &addresses, &settings)
    }
}

/// The result of `connect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectReport {
    pub netns: String,
    pub netns_cookie: u64,
    pub a: String,
    pub b: String,
    pub backend: TcBackend,
    pub datapath: DatapathKind,
    /// Counter slot pair (endpoint index) in the pinned maps (eBPF).
    pub index: Option<u32>,
    pub a_to_b: Option<RedirectMode>,
    pub b_to_a: Option<RedirectMode>,
    pub pin_dir: Option<PathBuf>,
    /// The source guard of what B sends, read back from the maps (eBPF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<crate::guard::GuardReport>,
}

/// The result of `disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DisconnectReport {
    pub netns: String,
    pub a: String,
    pub b: String,
    /// `ebpf`, `mirred`, or null when the two were not connected.
    pub removed: Option<TcBackend>,
}

async fn lookup(handle: &rtnetlink::Handle, netns: &Netns, name: &str) -> Result<Interface> {
    interfaces::by_name(handle, name)
        .await
        .map_err(|source| Error::Netlink {
            op: "RTM_GETLINK",
            target: name.to_owned(),
            netns: netns.to_string(),
            source: Box::new(source),
        })?
        .ok_or_else(|| Error::NoSuchDevice {
            netns: netns.to_string(),
            name: name.to_owned(),
        })
}

/// Connects devices `a` and `b` of `netns` both ways.
pub fn connect(netns: &Netns, a: &str, b: &str, options: &ConnectOptions) -> Result<ConnectReport> {
    if a == b {
        return Err(Error::InvalidOptions(format!(
            "cannot connect {a} to itself"
        )));
    }
    let (netns, a, b, options) = (netns.clone(), a.to_owned(), b.to_owned(), options.clone());
    let sandbox = Sandbox::of(&netns);
    // One operation per sandbox at a time (see crate::state::lock).
    let lock = sandbox.lock()?;
    let result = netns.clone().run(move |handle| async move {
        let ia = lookup(&handle, &netns, &a).await?;
        let ib = lookup(&handle, &netns, &b).await?;
        refuse_loop(&handle, &netns, &ia, &ib).await?;
        for d in [Dev::of(&ia), Dev::of(&ib)] {
            let target = mirred::redirect_target(&handle, &d)
                .await
                .map_err(Error::mirred(&netns))?;
            if target.is_some() {
                return Err(Error::AlreadyAttached {
                    netns: netns.to_string(),
                    detail: format!("{} already has a mirred redirect on its ingress", d.name),
                });
            }
        }
        if options.backend == TcBackend::Ebpf {
            let mode = options.ebpf_attach.unwrap_or_else(AttachMode::auto);
            for d in [Dev::of(&ia), Dev::of(&ib)] {
                super::coexist::check_ingress_free(&handle, &netns, &d, mode).await?;
            }
        }
        let dir = &sandbox.pin_dir;
        let mut index = None;
        // Also for mirred: a device the eBPF datapath already redirects is taken.
        let free = free_index(&netns, dir, &[&a, &b])?;
        if options.backend == TcBackend::Ebpf {
            index = Some(free);
        }
        let fast_path = match options.backend {
            TcBackend::Ebpf => options.fast_path,
            TcBackend::Mirred => FastPath::Off,
        };
        let mut pair = Pair::new(index.unwrap_or(0), &ia, &ib, fast_path);
        if options.backend == TcBackend::Ebpf {
            pair.guard = options.guard.as_ref().map(ConnectGuard::entry);
        }
        let mut undo = Undo::default();
        let connected = match connect_pairs(
            &handle,
            &netns,
            options.backend,
            (options.ebpf_attach, None),
            std::slice::from_ref(&pair),
            None,
            &mut undo,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                undo.run(&handle, &netns).await;
                return Err(e);
            }
        };
        let ebpf = options.backend == TcBackend::Ebpf;
        let guard = match &connected.pin_dir {
            Some(dir) if ebpf => Some(
                crate::guard::GuardReport::applied(dir, pair.index, pair.b.ifindex)
                    .map_err(|s| Error::guard_map(&netns, pair.index, s))?,
            ),
            _ => None,
        };
        Ok(ConnectReport {
            guard,
            netns: netns.arg.clone(),
            netns_cookie: netns.cookie,
            a,
            b,
            backend: connected.backend,
            datapath: connected.datapath,
            index,
            a_to_b: ebpf.then_some(pair.a_to_b),
            b_to_a: ebpf.then_some(pair.b_to_a),
            pin_dir: connected.pin_dir,
        })
    });
    lock.release();
    result
}

/// Refuses `a` ↔ `b` when the redirects would come back to them (see
/// [`super::redirect_loop`]), before anything is changed. The veths' peers are read in
/// their own netns (`IFLA_TARGET_NETNSID`); a kernel that refuses that is reported and the
/// pair is let through.
async fn refuse_loop(
    handle: &rtnetlink::Handle,
    netns: &Netns,
    a: &Interface,
    b: &Interface,
) -> Result<()> {
    let mut peers = None;
    if redirect_loop::peers_to_query(a, b) {
        let facts = |i: &Interface| {
            let (handle, peer, netnsid) = (handle.clone(), i.link.unwrap_or(0), i.link_netnsid);
            async move {
                interfaces::by_index(&handle, peer, netnsid)
                    .await
                    .map(|p| p.map(|p| PeerFacts { master: p.master }))
            }
        };
        match (facts(a).await, facts(b).await) {
            (Ok(Some(pa)), Ok(Some(pb))) => peers = Some((pa, pb)),
            (Err(e), _) | (_, Err(e)) => tracing::warn!(
                "netns {netns}: cannot read the peers of {} and {} (RTM_GETLINK with \
                 IFLA_TARGET_NETNSID: {e}), so whether a bridge joins them is not checked",
                a.name,
                b.name
            ),
            _ => tracing::warn!(
                "netns {netns}: the peers of {} and {} were not found in their netns, so \
                 whether a bridge joins them is not checked",
                a.name,
                b.name
            ),
        }
    }
    match redirect_loop::find(a, b, peers) {
        Some(why) => Err(Error::RedirectLoop {
            netns: netns.to_string(),
            a: a.name.clone(),
            b: b.name.clone(),
            reason: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// The first free endpoint index of the sandbox's pins; an error when either device is
/// already connected there.
fn free_index(netns: &Netns, dir: &std::path::Path, names: &[&str]) -> Result<u32> {
    if !dir.exists() {
        return Ok(0);
    }
    let records = ebpf::recorded_endpoints(dir).map_err(Error::ebpf(netns))?;
    for (_, r) in &records {
        for side in [&r.pod_name, &r.tap_name] {
            let name = String::from_utf8_lossy(netshim_common::from_fixed(side)).into_owned();
            if names.contains(&name.as_str()) {
                return Err(Error::AlreadyAttached {
                    netns: netns.to_string(),
                    detail: format!("{name} is already connected"),
                });
            }
        }
    }
    (0..MAX_ENDPOINTS)
        .find(|i| records.iter().all(|(used, _)| used != i))
        .ok_or(Error::TooManyEndpoints {
            netns: netns.to_string(),
            count: records.len() + 1,
            max: MAX_ENDPOINTS,
        })
}

/// Disconnects `a` and `b`; succeeds (removing nothing) when they are not connected.
pub fn disconnect(netns: &Netns, a: &str, b: &str) -> Result<DisconnectReport> {
    let (netns, a, b) = (netns.clone(), a.to_owned(), b.to_owned());
    let sandbox = Sandbox::of(&netns);
    // One operation per sandbox at a time (see crate::state::lock).
    let lock = sandbox.lock()?;
    let result = netns.clone().run(move |handle| async move {
        let mut report = DisconnectReport {
            netns: netns.arg.clone(),
            a: a.clone(),
            b: b.clone(),
            removed: None,
        };
        let dir = &sandbox.pin_dir;
        if dir.exists() {
            let found = ebpf::disconnect_pair(&handle, dir, &a, &b)
                .await
                .map_err(Error::ebpf(&netns))?;
            if found {
                report.removed = Some(TcBackend::Ebpf);
                return Ok(report);
            }
        }
        let (Ok(ia), Ok(ib)) = (
            lookup(&handle, &netns, &a).await,
            lookup(&handle, &netns, &b).await,
        ) else {
            return Ok(report);
        };
        let (da, db) = (Dev::of(&ia), Dev::of(&ib));
        let on_a = mirred::ingress_qdisc(&handle, &da)
            .await
            .map_err(Error::mirred(&netns))?;
        if on_a == mirred::IngressQdisc::Ingress {
            mirred::disconnect(&handle, &da, &db)
                .await
                .map_err(Error::mirred(&netns))?;
            report.removed = Some(TcBackend::Mirred);
        }
        Ok(report)
    });
    lock.release();
    result
}
