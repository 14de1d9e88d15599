//! The record arrays a follower polls at each refresh: the sandboxes' `errors` arrays
//! ([`Errors`]) and `guard_last` arrays ([`LastRefusals`]), one [`Polled`] each.
//!
//! A sandbox's maps are opened once, when it is first seen, and kept while the pin of
//! [`PolledRecords::MAP`] stays the same file: a refresh costs one `stat` of that pin per
//! sandbox (plus the reads of the records), not the two to four `BPF_OBJ_GET` and info
//! calls that opening takes. A pin that is gone drops the sandbox; one that is another
//! file (the sandbox detached and attached again in between, or an `upgrade` that created
//! the map) opens it again.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::errors::{self, Errors};
use crate::guard::events::LastRefusals;

/// Records a sandbox keeps in pinned arrays, read at each refresh.
pub(super) trait PolledRecords: Sized {
    /// The map whose pin stands for the records (present: the datapath writes them).
    const MAP: &'static str;
    /// The INFO event when a sandbox's records are first followed, if any.
    const FOLLOWING: Option<&'static str>;
    type Error: Display;

    /// Opens the maps of the sandbox pinned at `dir`; `None` when its datapath has none.
    /// Records written before `since` (monotonic ns), where a record has a time, were
    /// there before the follower started.
    fn open(dir: &Path, since: u64) -> Result<Option<Self>, Self::Error>;

    /// Emits the records written since the last call as `tracing` events of `netns`; how
    /// many.
    fn report(&mut self, netns: &str) -> Result<usize, aya::maps::MapError>;
}

impl PolledRecords for Errors {
    const MAP: &'static str = netshim_common::map_names::ERRORS;
    // Said per program ("following the datapath's log records (its sandbox's errors map)").
    const FOLLOWING: Option<&'static str> = None;
    type Error = std::io::Error;

    fn open(dir: &Path, since: u64) -> Result<Option<Self>, Self::Error> {
        Ok(errors::pinned(dir)?.map(|array| Errors::new(array, since)))
    }

    fn report(&mut self, netns: &str) -> Result<usize, aya::maps::MapError> {
        Errors::report(self, netns)
    }
}

impl PolledRecords for LastRefusals {
    const MAP: &'static str = netshim_common::map_names::GUARD_LAST;
    const FOLLOWING: Option<&'static str> = Some("following the source guard's records");
    type Error = aya::maps::MapError;

    fn open(dir: &Path, _since: u64) -> Result<Option<Self>, Self::Error> {
        LastRefusals::pinned(dir)
    }

    fn report(&mut self, netns: &str) -> Result<usize, aya::maps::MapError> {
        LastRefusals::report(self, netns)
    }
}

/// One sandbox's opened records and the identity of the pin they were opened from.
struct Followed<T> {
    /// The pin's (device, inode).
    pin: (u64, u64),
    records: T,
}

/// The records of type `T` of the sandboxes followed, by pin directory.
pub(super) struct Polled<T> {
    followed: BTreeMap<PathBuf, Followed<T>>,
    since: u64,
    /// How many times a sandbox's maps were opened (a sandbox followed already is not).
    opened: u64,
}

impl<T: PolledRecords> Polled<T> {
    pub(super) fn new(since: u64) -> Self {
        Self {
            followed: BTreeMap::new(),
            since,
            opened: 0,
        }
    }

    /// How many sandboxes' records are followed.
    pub(super) fn len(&self) -> usize {
        self.followed.len()
    }

    /// How many times maps were opened since [`Self::new`].
    #[cfg(test)]
    pub(super) fn opened(&self) -> u64 {
        self.opened
    }

    /// Reports the records written since the last call into the maps of `sandboxes` (pin
    /// directory and netns label), opening those of the sandboxes not followed yet and
    /// dropping those of the sandboxes no longer among them or whose pin went away; how
    /// many records.
    pub(super) fn poll<'a>(
        &mut self,
        sandboxes: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> usize {
        let mut present = BTreeSet::new();
        let mut reported = 0;
        for (dir, netns) in sandboxes {
            let pin = match std::fs::metadata(dir.join(T::MAP)) {
                Ok(m) => (m.dev(), m.ino()),
                // A datapath without them (or taken down in between).
                Err(_) => continue,
            };
            let same = self.followed.get(dir).is_some_and(|f| f.pin == pin);
            if !same {
                self.followed.remove(dir);
                self.opened += 1;
                match T::open(dir, self.since) {
                    Ok(Some(records)) => {
                        if let Some(following) = T::FOLLOWING {
                            tracing::info!(netns, map = T::MAP, "{following}");
                        }
                        self.followed
                            .insert(dir.to_owned(), Followed { pin, records });
                    }
                    // Taken down in between.
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(netns, "not reading its {} map: {e}", T::MAP);
                        continue;
                    }
                }
            }
            present.insert(dir);
            let Some(f) = self.followed.get_mut(dir) else {
                continue;
            };
            match f.records.report(netns) {
                Ok(n) => reported += n,
                Err(e) => tracing::debug!(netns, "reading its {} map: {e}", T::MAP),
            }
        }
        self.followed
            .retain(|dir, _| present.contains(dir.as_path()));
        reported
    }
}

#[cfg(test)]
mod tests {
    use aya::{maps::MapData, Pod};
    use netshim_common::{map_names, DatapathEvent, GuardEvent, DATAPATH_EVENT_REDIRECT};

    use super::*;

    /// Throwaway sandbox directories in bpffs (outside `/sys/fs/bpf/netshim`), removed on
    /// drop.
    struct BpffsDir(PathBuf);

    impl BpffsDir {
        /// `None` (the test is skipped) without root: bpffs and BPF_MAP_CREATE need it.
        fn new(what: &str) -> Option<Self> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: needs root (bpffs, BPF_MAP_CREATE)");
                return None;
            }
            let nanos = errors::monotonic_ns();
            let dir = PathBuf::from(format!(
                "/sys/fs/bpf/netshim-unit-{what}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Some(Self(dir))
        }

        fn sandbox(&self, name: &str) -> PathBuf {
            let dir = self.0.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }
    }

    impl Drop for BpffsDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A new array of `len` entries pinned at `path` (replacing what is pinned there), and a
    /// handle to write it.
    fn pin_array<V: Pod>(path: &Path, len: u32) -> aya::maps::Array<MapData, V> {
        let _ = std::fs::remove_file(path);
        aya::maps::Array::<MapData, V>::create(len, 0)
            .unwrap()
            .pin(path)
            .unwrap();
        aya::maps::Array::try_from(aya::maps::Map::Array(MapData::from_pin(path).unwrap())).unwrap()
    }

    fn record(slot_time: u64) -> DatapathEvent {
        DatapathEvent {
            kind: DATAPATH_EVENT_REDIRECT,
            ifindex: 2,
            peer_ifindex: 3,
            time_ns: slot_time,
            ..DatapathEvent::default()
        }
    }

    fn both<'a>(a: &'a Path, b: &'a Path) -> [(&'a Path, &'a str); 2] {
        [(a, "pod-a"), (b, "pod-b")]
    }

    #[test]
    fn errors_are_opened_once_per_sandbox_and_followed_until_their_pin_goes() {
        let Some(root) = BpffsDir::new("errors") else {
            return;
        };
        let (a, b) = (root.sandbox("a"), root.sandbox("b"));
        let mut errors_a = pin_array::<DatapathEvent>(&a.join(map_names::ERRORS), 4);
        let mut errors_b = pin_array::<DatapathEvent>(&b.join(map_names::ERRORS), 4);
        // Written before the follower started: someone else's to report.
        errors_a.set(0, record(errors::monotonic_ns()), 0).unwrap();

        let mut polled = Polled::<Errors>::new(errors::monotonic_ns());
        assert_eq!(polled.poll(both(&a, &b)), 0);
        assert_eq!((polled.len(), polled.opened()), (2, 2));

        // Records written after the start, in sandboxes followed already: reported once
        // each, without opening anything again.
        errors_a.set(3, record(errors::monotonic_ns()), 0).unwrap();
        errors_b.set(1, record(errors::monotonic_ns()), 0).unwrap();
        assert_eq!(polled.poll(both(&a, &b)), 2);
        assert_eq!(polled.poll(both(&a, &b)), 0);
        errors_a.set(3, record(errors::monotonic_ns()), 0).unwrap();
        assert_eq!(polled.poll(both(&a, &b)), 1);
        assert_eq!((polled.len(), polled.opened()), (2, 2));

        // b's pin goes (taken down): dropped, whether or not its directory is still listed.
        std::fs::remove_file(b.join(map_names::ERRORS)).unwrap();
        assert_eq!(polled.poll(both(&a, &b)), 0);
        assert_eq!((polled.len(), polled.opened()), (1, 2));
        // A sandbox no longer in scope is dropped too.
        assert_eq!(polled.poll([]), 0);
        assert_eq!(polled.len(), 0);
        // Back in scope: opened again, its records since the start read as new.
        assert_eq!(polled.poll([(a.as_path(), "pod-a")]), 1);
        assert_eq!((polled.len(), polled.opened()), (1, 3));

        // a attached again in between (another map at the same pin): the new one is read.
        let mut errors_a = pin_array::<DatapathEvent>(&a.join(map_names::ERRORS), 4);
        errors_a.set(2, record(errors::monotonic_ns()), 0).unwrap();
        assert_eq!(polled.poll([(a.as_path(), "pod-a")]), 1);
        assert_eq!((polled.len(), polled.opened()), (1, 4));
    }

    #[test]
    fn guard_last_is_opened_once_and_reports_each_new_refusal() {
        let Some(root) = BpffsDir::new("guard-last") else {
            return;
        };
        let a = root.sandbox("a");
        let mut last = pin_array::<GuardEvent>(&a.join(map_names::GUARD_LAST), 4);
        let mut times = pin_array::<u64>(&a.join(map_names::GUARD_LOG), 4);
        // Written before the start: reported at the first poll (as a ring gave its unread
        // records to its first reader).
        last.set(0, GuardEvent::default(), 0).unwrap();
        times.set(0, 5, 0).unwrap();

        let mut polled = Polled::<LastRefusals>::new(errors::monotonic_ns());
        let sandbox = [(a.as_path(), "pod-a")];
        assert_eq!(polled.poll(sandbox), 1);
        assert_eq!(polled.poll(sandbox), 0);
        times.set(0, 6, 0).unwrap();
        last.set(
            2,
            GuardEvent {
                index: 1,
                ..GuardEvent::default()
            },
            0,
        )
        .unwrap();
        times.set(2, 6, 0).unwrap();
        assert_eq!(polled.poll(sandbox), 2);
        assert_eq!(polled.poll(sandbox), 0);
        assert_eq!((polled.len(), polled.opened()), (1, 1));

        std::fs::remove_file(a.join(map_names::GUARD_LAST)).unwrap();
        assert_eq!(polled.poll(sandbox), 0);
        assert_eq!((polled.len(), polled.opened()), (0, 1));
    }
}
