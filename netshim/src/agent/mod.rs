//! `netshim agent`: the node daemon, one per node (a DaemonSet, see deploy/).
//!
//! - keeps netshim chained into the primary network ([`chain`]: at start, on every change
//!   in the configuration directory, and every few seconds);
//! - serves `/metrics` for every sandbox of the node, `/readyz` and `/healthz`
//!   ([`crate::metrics::server`], [`ready`]);
//! - collects sandboxes whose netns is gone without a DEL within seconds ([`collect`]);
//! - on start, checks that the kernel loads its datapath and upgrades the sandboxes that
//!   run an older one ([`rollout`]), so that a rollout of the DaemonSet upgrades every
//!   node's datapath with traffic flowing.
//!
//! SIGTERM or SIGINT stop it with exit 0 and leave everything as it is: the sandboxes'
//! datapaths (pinned), and netshim chained. The agent's exit does not uninstall, as
//! Cilium's `cni.uninstall` defaults to false: the plugin does not need the agent, and a
//! configuration removed during a rollout would leave the node's new pods without taps
//! until the new agent is up. `netshim cni uninstall` is the explicit way back.
//!
//! It needs the host's pid namespace and its `/run/netshim` and `/run/netns`
//! ([`host_view`]); it runs on the host as well as in a container with those.

pub mod chain;
pub mod collect;
pub mod dir_watch;
pub mod error;
pub mod host_view;
pub mod ready;
pub mod rollout;

use std::{
    future::Future,
    net::SocketAddr,
    os::fd::BorrowedFd,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

pub use error::AgentError;

use crate::{
    cni::install::InstallOptions,
    metrics::{server, Scope},
    Error,
};

/// How often the chain is checked without an inotify event (a missed event, a file
/// changed through another mount).
pub const RECHECK: Duration = Duration::from_secs(5);
/// How often a datapath the kernel did not load is tried again.
const DATAPATH_RETRY: Duration = Duration::from_secs(30);
/// How long a burst of changes in the configuration directory is let settle.
const SETTLE: Duration = Duration::from_millis(50);
/// Where named network namespaces are.
const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub install: InstallOptions,
    pub listen: SocketAddr,
    pub ready_file: PathBuf,
    pub gc_interval: Duration,
    /// Upgrade sandboxes running another datapath program on start.
    pub upgrade: bool,
}

/// Runs until `stop` completes (see the module docs). `on_listening` gets the metrics
/// address once it is bound.
pub fn run<S: Future<Output = ()>>(
    options: AgentOptions,
    stop: S,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    host_view::check()?;
    let readiness = Arc::new(ready::Readiness::new(options.ready_file.clone()));
    let stopping = Arc::new(AtomicBool::new(false));
    let worker = {
        let readiness = readiness.clone();
        let stopping = stopping.clone();
        let options = options.clone();
        std::thread::Builder::new()
            .name("netshim-agent".into())
            .spawn(move || work(&options, &readiness, &stopping))
            .map_err(|source| AgentError::Io {
                what: "starting the agent's thread".into(),
                source,
            })?
    };
    let probe: server::ReadyProbe = {
        let readiness = readiness.clone();
        Arc::new(move || readiness.probe())
    };
    let served = server::serve_with(options.listen, Scope::All, Some(probe), stop, on_listening);
    stopping.store(true, Ordering::Release);
    if worker.join().is_err() {
        tracing::error!("agent: the agent's thread panicked");
    }
    readiness.remove_all();
    tracing::info!("agent: stopped; the datapaths and the chained configuration stay");
    served?;
    Ok(())
}

/// The agent's thread: datapath check, chain, upgrade, then the loop.
fn work(options: &AgentOptions, readiness: &ready::Readiness, stopping: &AtomicBool) {
    let datapath = rollout::loadable_tag();
    if let Err(e) = &datapath {
        tracing::error!("agent: {e}");
    }
    readiness.set_datapath(datapath);
    let mut datapath_checked = Instant::now();
    let mut keeper = chain::ChainKeeper::new(options.install.clone());
    readiness.set_chained(keeper.reconcile());
    if options.upgrade {
        if let Ok(tag) = readiness.datapath() {
            rollout::upgrade_behind(tag);
        }
    }
    let conf_watch = dir_watch::DirWatch::new(keeper.conf_dir());
    let netns_watch = dir_watch::DirWatch::new(std::path::Path::new(NETNS_DIR));
    let mut collector = collect::Collector::new(options.gc_interval);
    let mut recheck = Instant::now() + RECHECK;
    while !stopping.load(Ordering::Acquire) {
        let timeout = collector
            .due_in()
            .min(recheck.saturating_duration_since(Instant::now()))
            .min(Duration::from_millis(250));
        wait(&[conf_watch.fd(), netns_watch.fd()], timeout);
        if conf_watch.changed() {
            std::thread::sleep(SETTLE);
            conf_watch.changed();
            recheck = Instant::now();
        }
        if Instant::now() >= recheck {
            readiness.set_chained(keeper.reconcile());
            recheck = Instant::now() + RECHECK;
        }
        if readiness.datapath().is_err() && datapath_checked.elapsed() >= DATAPATH_RETRY {
            readiness.set_datapath(rollout::loadable_tag());
            datapath_checked = Instant::now();
        }
        collector.tick(netns_watch.changed());
    }
}

/// Waits until one of `fds` is readable or `timeout` passed.
fn wait(fds: &[Option<BorrowedFd<'_>>], timeout: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pollfds: Vec<PollFd> = fds
        .iter()
        .flatten()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let _ = poll(&mut pollfds, PollTimeout::from(ms));
}
