//! Keeping write calls whole across a snapshot when the kernel splits them.
//!
//! Without the writeback cache every write call reaches the daemon before it returns,
//! but not always as one request: the kernel's buffered FUSE write path copies the call
//! page by page and ends a request early after a *partial page that is not cached*
//! (fs/fuse/file.c, fuse_fill_write_pages). Only the first page of a call can cause
//! that, so a split call always shows as a request that starts inside a page and ends on
//! a page boundary, followed at once (the kernel holds the inode lock throughout) by a
//! request starting where it ended. A snapshot taken between the two would hold half of
//! the call.
//!
//! So every such request is remembered until its continuation arrives, and a snapshot
//! waits (releasing the state lock) until none of the branch's is pending. A request that
//! merely happened to end on a page boundary has no continuation: it is forgotten after
//! `SETTLE`, the longest a snapshot waits for one. Calls over the FUSE request limit
//! (1 MiB) are split into requests at 1 MiB boundaries and are not covered.
//!
//! With the writeback cache (the default of mounted branches) write calls reach the
//! daemon as page write-backs instead, which start on page boundaries and never look like
//! a first part; the snapshot's write-back and cut keep calls whole there (strata-fs,
//! module `writeback`). This guard serves mounts with `writeback_cache = false` and
//! O_DIRECT writes.

use std::time::{Duration, Instant};

use crate::store::{State, Store};
use crate::types::{GenerationId, InodeNo};

/// How long a possible first part waits for its continuation before it is taken for a
/// whole call.
const SETTLE: Duration = Duration::from_millis(50);

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

/// Records a write request `[offset, end)` to `ino` of the branch `st` points at.
pub(crate) fn note_write(st: &mut State, ino: InodeNo, offset: u64, end: u64) {
    let key = (st.cur(), ino);
    if st
        .partial_writes
        .get(&key)
        .is_some_and(|(e, _)| *e == offset)
    {
        st.partial_writes.remove(&key);
    }
    let page = page_size();
    if !offset.is_multiple_of(page) && end.is_multiple_of(page) {
        st.partial_writes.insert(key, (end, Instant::now()));
    }
}

impl Store {
    /// The state lock, taken at a moment when no write call to live generation `head` is
    /// half applied (or after at most `SETTLE` plus a little when writers never pause).
    pub(crate) fn lock_between_writes(
        &self,
        head: impl Fn(&State) -> Option<GenerationId>,
    ) -> std::sync::MutexGuard<'_, State> {
        let deadline = Instant::now() + SETTLE * 4;
        loop {
            let mut st = self.lock();
            st.partial_writes.retain(|_, (_, at)| at.elapsed() < SETTLE);
            let Some(h) = head(&st) else { return st };
            if Instant::now() >= deadline || !st.partial_writes.keys().any(|(g, _)| *g == h) {
                return st;
            }
            drop(st);
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
