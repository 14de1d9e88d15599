//! "Something changed in this directory": an inotify watch on one directory (not its
//! subdirectories), read without blocking. A directory that cannot be watched (absent,
//! or inotify refused) is polled instead: the callers also act on a timer.

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::Path,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

pub struct DirWatch {
    inotify: Option<Inotify>,
}

impl DirWatch {
    /// Watches `dir` for files made, written, renamed, removed or changed in mode.
    pub fn new(dir: &Path) -> DirWatch {
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| i.add_watch(dir, flags).map(|_| i));
        match inotify {
            Ok(i) => DirWatch { inotify: Some(i) },
            Err(e) => {
                tracing::debug!(
                    "agent: no inotify watch on {}: {e}; polling it",
                    dir.display()
                );
                DirWatch { inotify: None }
            }
        }
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// Reads the pending events; whether there were any.
    pub fn changed(&self) -> bool {
        let Some(i) = &self.inotify else {
            return false;
        };
        let mut any = false;
        while let Ok(events) = i.read_events() {
            if events.is_empty() {
                break;
            }
            any = true;
        }
        any
    }
}
