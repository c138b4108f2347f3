//! Attributes that change in the daemon without the kernel knowing, brought back into
//! the kernel's view.
//!
//! The mount lets the kernel cache entries and attributes for long (module `adapter`,
//! `TTL`): every change comes through this daemon and the kernel drops what its own
//! requests change. One does not: under the writeback cache the kernel sends a file's
//! pages later and, trusting its own size and times, keeps its cached attributes, while
//! the WRITE allocated blocks (`st_blocks`). So every WRITE marks its inode, and a thread
//! of the mount (not a request thread: the kernel may wait for one while it takes a
//! notification) tells the kernel to drop the cached attributes of the marked inodes at
//! most `REFRESH_EVERY` later. The kernel keeps its own size and times of open files
//! across that (it owns them under the writeback cache) and asks for the rest.

use std::collections::HashSet;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use fuser::INodeNo;

use crate::invalidate::Shared;

/// How stale `st_blocks` of a file being written can be.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// The inodes whose cached attributes the kernel should drop.
#[derive(Default)]
pub struct StaleAttrs {
    inodes: Mutex<HashSet<u64>>,
}

impl StaleAttrs {
    pub(crate) fn mark(&self, ino: u64) {
        self.inodes.lock().unwrap().insert(ino);
    }

    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.inodes.lock().unwrap())
            .into_iter()
            .collect()
    }
}

/// Starts the thread that sends the invalidations; it ends with the mount (once `shared`
/// is gone).
pub(crate) fn spawn_refresher(shared: Weak<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("strata-attrs".into())
        .spawn(move || loop {
            std::thread::sleep(REFRESH_EVERY);
            let Some(s) = shared.upgrade() else { return };
            let inodes = s.stale.take();
            let Some(notifier) = s.notifier.get().cloned() else {
                continue;
            };
            drop(s);
            for ino in inodes {
                // Offset -1: the attributes only, no page. ENOENT: the kernel no longer
                // holds the inode, nothing to drop.
                if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        tracing::debug!(error = %e, ino, "cannot invalidate cached attributes");
                    }
                }
            }
        })
        .map(|_| ())
}
