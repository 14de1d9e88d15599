//! `netshim gc`: collect what dead namespaces and killed runs left behind.
//!
//! Every sandbox netshim knows of has a pin directory `/sys/fs/bpf/netshim/netns-<cookie>`,
//! a state directory `/run/netshim/netns-<cookie>`, or a lock file beside it. For each:
//!
//! - Is a network namespace with that cookie still alive? The candidates are every nsfs
//!   bind mount of a net namespace (the mount tables of all mount namespaces: /run/netns,
//!   docker's, ...), every process's and thread's `ns/net`, every open namespace fd, and
//!   the path the sandbox recorded. (An fd opened on a bind mount that was detached since,
//!   as `ip netns del` does, reads back as `/`, not `net:[…]`: those are stat'ed.) They
//!   are compared by inode first (the inode the sandbox
//!   recorded; a readlink each) and confirmed by cookie (inodes are reused, cookies never).
//!   A sandbox is dead only when no live namespace has its cookie.
//! - Dead: its lock is taken (a sandbox whose lock is held is skipped) and its pin
//!   directory, state directory and lock file are removed. Its devices went with the netns;
//!   unpinning TCX links of vanished devices is fine. A pinned TCX link that is still on a
//!   device vetoes this (the netns lives on, held by something without a path).
//! - Alive and half-made: it has an intent file and no commit file, and its lock is free (a
//!   held lock means the operation is still running). The run that wrote the intent died:
//!   what it made is taken away inside the netns, exactly as `detach` would.
//! - Alive otherwise: not touched. A sandbox without an intent file is a complete attach,
//!   or another tool's (or an older netshim's) business.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::{
    integrity,
    removed::{
        DeadSandbox, DetachReport, FailedSandbox, GcReport, HalfMadeSandbox, RepairedSandbox,
        SkippedSandbox,
    },
    teardown::teardown,
    SandboxFiles,
};
use crate::{
    datapath::{
        bpf_sys, ebpf,
        netns_anchor::{self, Anchor},
        preload, upgrade,
    },
    netns::{self, Netns},
    pins, state,
    state::lock::{self, SandboxLock},
    Error, Result,
};

/// Collects dead namespaces' sandboxes and cleans half-made ones (see the module docs).
pub fn gc() -> Result<GcReport> {
    collect(true)
}

/// Collects dead namespaces' sandboxes only (detach of a netns that is gone).
pub(crate) fn collect_dead() -> Result<GcReport> {
    collect(false)
}

fn collect(half_made_too: bool) -> Result<GcReport> {
    // Listed before the namespaces are scanned: a sandbox directory exists only after its
    // netns did, so a sandbox listed here whose netns is alive is found alive below.
    let mut cookies: BTreeSet<u64> = pins::sandbox_cookies()?.into_iter().collect();
    cookies.extend(state::sandbox_cookies()?);
    let mut report = GcReport::default();
    // What killed attaches (a preloaded datapath) and upgrades (a staging copy) left at
    // the root of bpffs.
    pins::remove_stale_process_dirs(preload::PRELOAD_PREFIX);
    pins::remove_stale_process_dirs(upgrade::STAGING_PREFIX);
    pins::remove_stale_process_dirs(ebpf::CHECK_PREFIX);
    if cookies.is_empty() {
        return Ok(report);
    }
    let live = Live::scan();
    for cookie in cookies {
        let failed = |e: Error| FailedSandbox {
            netns_cookie: cookie,
            error: e.to_string(),
        };
        let busy = || SkippedSandbox {
            netns_cookie: cookie,
            reason: "its lock is held: an operation is in progress".into(),
        };
        match repair_wrong_types(cookie) {
            Ok(Some(removed)) if !removed.is_empty() => report.repaired.push(RepairedSandbox {
                netns_cookie: cookie,
                removed,
            }),
            Ok(Some(_)) => {}
            Ok(None) => {
                report.skipped_busy.push(busy());
                continue;
            }
            Err(e) => {
                report.failed.push(failed(e));
                continue;
            }
        }
        let files = SandboxFiles::of(cookie);
        let liveness = match live.find(cookie, &Hints::of(&files)) {
            Liveness::Dead => attached_links(&files),
            other => other,
        };
        match liveness {
            Liveness::Dead => match remove_dead(&files) {
                Ok(Some(removed)) => report.removed_dead.push(DeadSandbox {
                    netns_cookie: cookie,
                    removed,
                }),
                Ok(None) => report.skipped_busy.push(busy()),
                Err(e) => report.failed.push(failed(e)),
            },
            Liveness::Alive(path) if half_made_too => match clean_half_made(&files, &path) {
                Ok(HalfMade::Cleaned(removed)) => report.cleaned_half_made.push(HalfMadeSandbox {
                    netns_cookie: cookie,
                    netns_path: path,
                    removed: *removed,
                }),
                Ok(HalfMade::Busy) => report.skipped_busy.push(busy()),
                Ok(HalfMade::No) => {}
                Err(e) => report.failed.push(failed(e)),
            },
            Liveness::Alive(_) => {}
            Liveness::Unknown(reason) => report.skipped_busy.push(SkippedSandbox {
                netns_cookie: cookie,
                reason,
            }),
        }
    }
    Ok(report)
}

/// Removes the sandbox's paths of the wrong type (see [`integrity`]), under its lock;
/// `None` when the lock is held. A commit file that does not parse is left to detach: the
/// sandbox may be live and attached.
fn repair_wrong_types(cookie: u64) -> Result<Option<Vec<PathBuf>>> {
    let bad: Vec<_> = integrity::check(cookie)
        .into_iter()
        .filter(|b| b.damage == integrity::Damage::WrongType)
        .collect();
    if bad.is_empty() {
        return Ok(Some(Vec::new()));
    }
    // The lock "file" first, without the lock (nobody can hold a lock on a directory);
    // taking the lock then makes a new lock file there, which stays.
    let (lock_file, rest): (Vec<_>, Vec<_>) = bad
        .into_iter()
        .partition(|b| b.path == lock::lock_path(cookie));
    let mut removed = integrity::repair(&lock_file)?;
    let Some(lock) = SandboxLock::try_acquire(cookie)? else {
        return Ok(None);
    };
    let result = integrity::repair(&rest);
    lock.release();
    removed.extend(result?);
    Ok(Some(removed))
}

/// A second opinion before a sandbox whose netns was not found is removed: its pinned TCX
/// links. The kernel detaches a TCX link when its device is unregistered (the link reports
/// ifindex 0), and a device goes with its netns; a link still on a device means the netns
/// lives on without any path gc can find (held only by a socket, say), and removing the pin
/// would take the datapath away from a running sandbox.
///
/// A cls_bpf sandbox has no TCX links; its netns anchor (a link on the netns itself, see
/// [`crate::datapath::netns_anchor`]) answers instead.
fn attached_links(files: &SandboxFiles) -> Liveness {
    if let Anchor::Alive(ino) = netns_anchor::read(&files.pin_dir) {
        return Liveness::Unknown(format!(
            "no live netns has its cookie, but its netns anchor link still reports netns \
             inode {ino}: the netns is alive and unreachable by path"
        ));
    }
    let Ok(links) = pins::link_pins(&files.pin_dir) else {
        return Liveness::Dead;
    };
    for (ifname, pin) in links {
        let Ok(fd) = bpf_sys::obj_get(&pin) else {
            continue;
        };
        if let Ok(info) = bpf_sys::link_info(fd.as_fd()) {
            if info.tcx_ifindex != 0 {
                return Liveness::Unknown(format!(
                    "no live netns has its cookie, but its TCX link on {ifname} (ifindex {}) is \
                     still attached to a device: the netns is alive and unreachable by path",
                    info.tcx_ifindex
                ));
            }
        }
    }
    Liveness::Dead
}

/// Removes a dead sandbox's pin directory, state directory and lock file; `None` when its
/// lock is held.
fn remove_dead(files: &SandboxFiles) -> Result<Option<Vec<PathBuf>>> {
    let cookie = files.cookie;
    let lock_path = lock::lock_path(cookie);
    let had_lock_file = lock_path.exists();
    let Some(lock) = SandboxLock::try_acquire(cookie)? else {
        return Ok(None);
    };
    let mut removed = Vec::new();
    let pin_dir = &files.pin_dir;
    if pin_dir.exists() {
        pins::remove_sandbox_dir(pin_dir)?;
        removed.push(pin_dir.clone());
    }
    let state_dir = &files.state_dir;
    if state_dir.exists() {
        fs::remove_dir_all(state_dir).map_err(|source| pins::HostFileError::Io {
            op: "rm -r",
            path: state_dir.clone(),
            source,
        })?;
        removed.push(state_dir.clone());
    }
    lock.remove_file()?;
    if had_lock_file {
        removed.push(lock_path);
    }
    Ok(Some(removed))
}

enum HalfMade {
    Cleaned(Box<DetachReport>),
    Busy,
    No,
}

fn is_half_made(files: &SandboxFiles) -> bool {
    files.intent_file().exists() && !files.commit_file().exists()
}

/// Takes down a live sandbox that a killed run left half-made, inside its netns at `path`.
fn clean_half_made(files: &SandboxFiles, path: &Path) -> Result<HalfMade> {
    let cookie = files.cookie;
    if !is_half_made(files) {
        return Ok(HalfMade::No);
    }
    let Some(lock) = SandboxLock::try_acquire(cookie)? else {
        return Ok(HalfMade::Busy);
    };
    // Looked at again under the lock: the run may have finished in between.
    if !is_half_made(files) {
        lock.release();
        return Ok(HalfMade::No);
    }
    let result = (|| -> Result<DetachReport> {
        let netns = Netns::resolve(&path.to_string_lossy())?;
        if netns.cookie != cookie {
            return Err(Error::NetnsChanged {
                path: path.to_owned(),
                expected: cookie,
                found: netns.cookie,
            });
        }
        let n = netns.clone();
        netns.run(move |handle| async move {
            // The path was opened again by run(); make sure it is still the same netns.
            let here = netns::current_cookie().map_err(|source| netns::NetnsError::Cookie {
                path: n.path.clone(),
                source,
            })?;
            if here != cookie {
                return Err(Error::NetnsChanged {
                    path: n.path.clone(),
                    expected: cookie,
                    found: here,
                });
            }
            teardown(&handle, &super::Sandbox::of(&n)).await
        })
    })();
    lock.release();
    result.map(|r| HalfMade::Cleaned(Box::new(r)))
}

/// Finds the live netns of a sandbox when the path it recorded is gone or names another
/// netns now (a name re-created, a pid reused, a path typed relative to another directory):
/// by cookie, with gc's scan of every reachable namespace, made at most once per finder.
#[derive(Default)]
pub(crate) struct NetnsFinder {
    live: std::cell::OnceCell<Live>,
}

impl NetnsFinder {
    /// The live netns with `cookie`: at `recorded` when that path still names it, else
    /// wherever the scan finds it. `Err` says why none is: no live netns has the cookie (the
    /// sandbox is stale: gc removes it), or whether one does could not be told.
    pub fn find(&self, cookie: u64, recorded: &Path) -> std::result::Result<Netns, String> {
        let at_recorded = match Netns::resolve(&recorded.to_string_lossy()) {
            Ok(ns) if ns.cookie == cookie => return Ok(ns),
            Ok(ns) => format!("now names another namespace (cookie {})", ns.cookie),
            Err(e) => e.to_string(),
        };
        let live = self.live.get_or_init(Live::scan);
        match live.find(cookie, &Hints::of(&SandboxFiles::of(cookie))) {
            Liveness::Alive(path) => match Netns::resolve(&path.to_string_lossy()) {
                Ok(ns) if ns.cookie == cookie => Ok(ns),
                Ok(_) | Err(_) => Err(format!(
                    "its netns (cookie {cookie}) was found at {} but is gone from there now",
                    path.display()
                )),
            },
            Liveness::Dead => Err(format!(
                "no live network namespace has its cookie {cookie} (the recorded path {}: \
                 {at_recorded}): the sandbox is stale (gc removes it)",
                recorded.display()
            )),
            Liveness::Unknown(reason) => Err(reason),
        }
    }
}

/// The cookies of the sandboxes (pin or state directory) that recorded `path` as their
/// netns path.
pub(crate) fn recorded_at(path: &Path) -> Vec<u64> {
    let mut cookies: BTreeSet<u64> = pins::sandbox_cookies()
        .unwrap_or_default()
        .into_iter()
        .collect();
    cookies.extend(state::sandbox_cookies().unwrap_or_default());
    cookies
        .into_iter()
        .filter(|c| Hints::of(&SandboxFiles::of(*c)).paths.contains(path))
        .collect()
}

/// What a sandbox recorded about its netns.
#[derive(Debug, Default)]
struct Hints {
    inodes: BTreeSet<u64>,
    paths: BTreeSet<PathBuf>,
}

impl Hints {
    fn of(files: &SandboxFiles) -> Self {
        let cookie = files.cookie;
        let mut hints = Hints::default();
        let pin_dir = &files.pin_dir;
        if pin_dir.exists() {
            if let Ok(record) = ebpf::recorded_sandbox(pin_dir) {
                if record.netns_cookie == cookie {
                    hints.add(
                        record.netns_inode,
                        &String::from_utf8_lossy(netshim_common::from_fixed(&record.netns_path)),
                    );
                }
            }
        }
        for file in [files.intent_file(), files.commit_file()] {
            if let Some(v) = state::read_json::<super::NetnsRecord>(&file) {
                if v.netns_cookie == Some(cookie) {
                    hints.add(
                        v.netns_inode.unwrap_or(0),
                        v.netns_path.as_deref().unwrap_or(""),
                    );
                }
            }
        }
        hints
    }

    fn add(&mut self, inode: u64, path: &str) {
        if inode != 0 {
            self.inodes.insert(inode);
        }
        if !path.is_empty() {
            self.paths.insert(PathBuf::from(path));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Liveness {
    /// Alive, and enterable at this path.
    Alive(PathBuf),
    Dead,
    /// Could not be told: left alone.
    Unknown(String),
}

/// The cookie of a live netns, by inode.
#[derive(Debug, Clone)]
enum CookieOf {
    Cookie(u64, PathBuf),
    /// Every path to it disappeared while looking (the netns may be gone).
    Vanished,
    Unknown(String),
}

/// Every network namespace that can be reached, by inode.
struct Live {
    by_inode: BTreeMap<u64, Vec<PathBuf>>,
    cookies: RefCell<BTreeMap<u64, CookieOf>>,
}

/// Paths kept per namespace inode (more would only be retries).
const PATHS_PER_INODE: usize = 8;

impl Live {
    fn scan() -> Self {
        let mut live = Live {
            by_inode: BTreeMap::new(),
            cookies: RefCell::new(BTreeMap::new()),
        };
        // The device of nsfs: a namespace file, whatever path it reads back as.
        let nsfs_dev = fs::metadata("/proc/self/ns/net").map(|m| m.dev()).ok();
        let mut mount_namespaces = HashSet::new();
        // Our own mount table first: its mount points are the nicest paths to report.
        if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
            for (inode, mount_point) in nsfs_net_mounts(&text) {
                live.add(inode, mount_point);
            }
        }
        if let Ok(link) = fs::read_link("/proc/self/ns/mnt") {
            mount_namespaces.insert(link);
        }
        let Ok(procs) = fs::read_dir("/proc") else {
            return live;
        };
        for p in procs.filter_map(|e| e.ok()) {
            let name = p.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_err() {
                continue;
            }
            let base = p.path();
            live.add_link(base.join("ns/net"));
            if let Ok(tasks) = fs::read_dir(base.join("task")) {
                for t in tasks.filter_map(|e| e.ok()) {
                    if t.file_name() != p.file_name() {
                        live.add_link(t.path().join("ns/net"));
                    }
                }
            }
            if let Ok(fds) = fs::read_dir(base.join("fd")) {
                for fd in fds.filter_map(|e| e.ok()) {
                    live.add_fd(fd.path(), nsfs_dev);
                }
            }
            // Bind mounts in other mount namespaces, reached through the process's root.
            if let Ok(mnt) = fs::read_link(base.join("ns/mnt")) {
                if mount_namespaces.insert(mnt) {
                    if let Ok(text) = fs::read_to_string(base.join("mountinfo")) {
                        let root = base.join("root");
                        for (inode, mount_point) in nsfs_net_mounts(&text) {
                            let rel = mount_point.strip_prefix("/").unwrap_or(&mount_point);
                            live.add(inode, root.join(rel));
                        }
                    }
                }
            }
        }
        live
    }

    fn add_link(&mut self, path: PathBuf) {
        if let Some(inode) = fs::read_link(&path)
            .ok()
            .and_then(|l| parse_net_link(&l.to_string_lossy()))
        {
            self.add(inode, path);
        }
    }

    /// An open fd: `net:[<inode>]` when it was opened through /proc/*/ns; a namespace file
    /// opened through a bind mount reads back as the mount's path, and as `/` once that
    /// mount is detached (`ip netns del`): then only stat tells (other namespace types are
    /// sorted out when the cookie is read).
    fn add_fd(&mut self, path: PathBuf, nsfs_dev: Option<u64>) {
        let Ok(link) = fs::read_link(&path) else {
            return;
        };
        if let Some(inode) = parse_net_link(&link.to_string_lossy()) {
            self.add(inode, path);
        } else if link == Path::new("/") {
            if let Ok(m) = fs::metadata(&path) {
                if Some(m.dev()) == nsfs_dev {
                    self.add(m.ino(), path);
                }
            }
        }
    }

    fn add(&mut self, inode: u64, path: PathBuf) {
        let paths = self.by_inode.entry(inode).or_default();
        if paths.len() < PATHS_PER_INODE && !paths.contains(&path) {
            paths.push(path);
        }
    }

    /// The cookie of the live netns with this inode (cached).
    fn cookie_of(&self, inode: u64) -> CookieOf {
        if let Some(c) = self.cookies.borrow().get(&inode) {
            return c.clone();
        }
        let mut result = CookieOf::Vanished;
        for path in self.by_inode.get(&inode).into_iter().flatten() {
            match Netns::resolve(&path.to_string_lossy()) {
                // The path may name another namespace by now (a reused pid or name).
                Ok(ns) if ns.inode == inode => {
                    result = CookieOf::Cookie(ns.cookie, path.clone());
                    break;
                }
                Ok(_) => {}
                Err(e) if e.is_gone() => {}
                // A namespace of another type (found by stat on an nsfs fd).
                Err(netns::NetnsError::NotNetns { .. }) => {}
                Err(e) => result = CookieOf::Unknown(e.to_string()),
            }
        }
        self.cookies.borrow_mut().insert(inode, result.clone());
        result
    }

    /// Whether the netns with `cookie` is alive.
    fn find(&self, cookie: u64, hints: &Hints) -> Liveness {
        // Cheap first: the inode the sandbox recorded.
        for inode in &hints.inodes {
            if self.by_inode.contains_key(inode) {
                if let CookieOf::Cookie(c, path) = self.cookie_of(*inode) {
                    if c == cookie {
                        return Liveness::Alive(path);
                    }
                }
            }
        }
        for path in &hints.paths {
            if let Ok(ns) = Netns::resolve(&path.to_string_lossy()) {
                if ns.cookie == cookie {
                    return Liveness::Alive(path.clone());
                }
            }
        }
        // Dead only when no live netns has the cookie.
        let mut unknown = None;
        for inode in self.by_inode.keys() {
            match self.cookie_of(*inode) {
                CookieOf::Cookie(c, path) if c == cookie => return Liveness::Alive(path),
                // One we could not read matters when it may be this sandbox's.
                CookieOf::Unknown(e) if hints.inodes.is_empty() || hints.inodes.contains(inode) => {
                    unknown = Some(e)
                }
                _ => {}
            }
        }
        match unknown {
            Some(e) => Liveness::Unknown(format!(
                "could not tell whether its netns is alive (reading a live netns's cookie: {e})"
            )),
            None => Liveness::Dead,
        }
    }
}

/// The inode of a `net:[<inode>]` namespace link.
fn parse_net_link(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The net namespace bind mounts of a mountinfo table, as (namespace inode, mount point).
fn nsfs_net_mounts(mountinfo: &str) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if post.split(' ').next() != Some("nsfs") {
            continue;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if let Some(inode) = parse_net_link(root) {
            out.push((inode, PathBuf::from(unescape_mountinfo(mount_point))));
        }
    }
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_namespace_links_parse() {
        assert_eq!(parse_net_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_net_link("mnt:[4026531840]"), None);
        assert_eq!(parse_net_link("socket:[12345]"), None);
        assert_eq!(parse_net_link("/dev/null"), None);
    }

    #[test]
    fn nsfs_net_bind_mounts_are_found_in_mountinfo() {
        let text = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
611 29 0:4 net:[4026532300] /run/netns/pod1 rw shared:239 - nsfs nsfs rw
612 29 0:4 net:[4026532301] /run/netns/with\\040space rw - nsfs nsfs rw
613 29 0:4 uts:[4026532302] /run/utsns/x rw - nsfs nsfs rw
614 29 0:4 net:[4026532303] /var/run/docker/netns/abc rw shared:1 master:2 - nsfs nsfs rw
";
        assert_eq!(
            nsfs_net_mounts(text),
            vec![
                (4026532300, PathBuf::from("/run/netns/pod1")),
                (4026532301, PathBuf::from("/run/netns/with space")),
                (4026532303, PathBuf::from("/var/run/docker/netns/abc")),
            ]
        );
        assert_eq!(unescape_mountinfo("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn the_own_netns_is_found_alive_by_inode_and_cookie() {
        let own = Netns::resolve("/proc/self/ns/net").unwrap();
        let live = Live::scan();
        assert!(live.by_inode.contains_key(&own.inode), "own netns not seen");
        let hints = Hints {
            inodes: [own.inode].into(),
            paths: BTreeSet::new(),
        };
        assert!(matches!(live.find(own.cookie, &hints), Liveness::Alive(_)));
        // Without the inode, the cookie sweep finds it too.
        assert!(matches!(
            live.find(own.cookie, &Hints::default()),
            Liveness::Alive(_)
        ));
        // Cookies are never reused and never 0: no live netns has this one.
        assert_eq!(live.find(u64::MAX, &hints), Liveness::Dead);
    }
}
