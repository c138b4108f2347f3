//! Defragmentation of rewritten files (docs/packs.md, "Defragmentation of rewritten
//! files"): the ranges of a branch's live files that commits rewrote are looked at once
//! the file has cooled (no commit wrote it for `HOT_SECS`), or when the daemon's last
//! mount ends; a range whose blocks copy-on-write scattered is queued for relocation, on
//! the queue of defragmentation on read (`defrag_on_read.rs`), so that the first
//! sequential read after a burst of rewrites already reads runs.
//!
//! Defragmentation on read lays out what a read found scattered, so that read itself pays
//! the random reads. This module pays for the layout before anyone reads, so it is
//! bounded by what was written: the blocks it queues never exceed `WRITE_BUDGET` times
//! the bytes commits wrote, since the store was opened, to files of at least
//! `MIN_READ_BYTES` (smaller ones have no range worth laying out and are not noted).
//!
//! Invariants: only what commits wrote is looked at, range by range (`WINDOW_BYTES` of
//! the file each), so a file appended to or rewritten in one place costs one lookup per
//! block written, not one per block of the file; a range is queued only when it holds at
//! least `MIN_READ_BYTES` of stored blocks lying in runs shorter than `MIN_AVERAGE_RUN` on
//! average (the rule reads use); at most `MAX_WINDOWS` ranges wait to be looked at (more
//! are forgotten, as a crash forgets them all). Everything else — the queue's bound, its
//! relocation, crash safety — is defragmentation on read's.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_blockstore::BlockId;

use crate::codec;
use crate::defrag_on_read::{MIN_AVERAGE_RUN, MIN_READ_BYTES, QUEUE_BYTES};
use crate::error::Result;
use crate::store::Store;
use crate::types::InodeNo;

/// The ranges rewrites are tracked and judged by: what a sequential reader asks for at
/// once.
pub const WINDOW_BYTES: u64 = 1 << 20;
/// Blocks queued by this module stay under this many times the bytes commits wrote.
pub const WRITE_BUDGET: u64 = 1;
/// Ranges waiting to be looked at, at most (256 GiB of files; a few MiB of memory).
pub const MAX_WINDOWS: usize = 1 << 18;

/// The ranges commits rewrote that have not been looked at yet.
#[derive(Default)]
pub(crate) struct Rewritten {
    files: HashMap<(String, InodeNo), Touched>,
    windows: usize,
    /// Bytes of blocks commits wrote, and of blocks this module queued.
    written: u64,
    queued: u64,
}

struct Touched {
    windows: BTreeSet<u64>,
    /// When a commit last wrote the file (none: ranges put back, already cool).
    last: Option<Instant>,
}

impl Rewritten {
    /// A commit wrote blocks `idxs` of `ino` in `branch`.
    fn note(&mut self, branch: &str, ino: InodeNo, window_blocks: u64, idxs: &[u64]) {
        let t = self
            .files
            .entry((branch.to_string(), ino))
            .or_insert_with(|| Touched {
                windows: BTreeSet::new(),
                last: None,
            });
        t.last = Some(Instant::now());
        for idx in idxs {
            if self.windows >= MAX_WINDOWS {
                break;
            }
            if t.windows.insert(idx / window_blocks) {
                self.windows += 1;
            }
        }
    }

    /// Takes the files no commit wrote for `cool` (all with `None`).
    fn take_cooled(&mut self, cool: Option<Duration>) -> Vec<(String, InodeNo, Vec<u64>)> {
        let keys: Vec<(String, InodeNo)> = self
            .files
            .iter()
            .filter(|(_, t)| match (cool, t.last) {
                (Some(c), Some(last)) => last.elapsed() >= c,
                _ => true,
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let t = self.files.remove(&k)?;
                self.windows -= t.windows.len();
                Some((k.0, k.1, t.windows.into_iter().collect()))
            })
            .collect()
    }

    /// Puts back ranges not looked at (the queue was full, or the budget spent).
    fn put_back(&mut self, branch: String, ino: InodeNo, windows: &[u64]) {
        let t = self.files.entry((branch, ino)).or_insert_with(|| Touched {
            windows: BTreeSet::new(),
            last: None,
        });
        for w in windows {
            if t.windows.insert(*w) {
                self.windows += 1;
            }
        }
    }
}

impl Store {
    /// Records, for defragmentation of rewritten files, that a commit wrote blocks `idxs`
    /// of `ino` in `branch`'s live tree (called by the commit with the state lock held;
    /// the relocation queue is a leaf under it).
    pub(crate) fn note_rewritten(&self, branch: &str, ino: InodeNo, idxs: &[u64]) {
        if !self.config.defrag_rewritten || idxs.is_empty() {
            return;
        }
        let window_blocks = self.window_blocks();
        let mut q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
        q.rewritten.note(branch, ino, window_blocks, idxs);
        q.rewritten.written += idxs.len() as u64 * u64::from(self.config.block_size);
    }

    fn window_blocks(&self) -> u64 {
        (WINDOW_BYTES / u64::from(self.config.block_size)).max(1)
    }

    /// Looks at the ranges commits rewrote in the files that cooled (no commit wrote them
    /// for the store's hot seconds; with `all`, every file: the daemon's last mount
    /// ended, so no write follows) and queues those found scattered for relocation, as
    /// far as the queue's bound and the write budget allow (what does not fit waits for
    /// the next call). Returns the blocks queued.
    pub fn queue_rewritten(&self, all: bool) -> Result<u64> {
        if !self.config.defrag_rewritten {
            return Ok(0);
        }
        let cool = Duration::from_secs(self.hot_secs.load(Ordering::Relaxed).max(0) as u64);
        let files = {
            let mut q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
            let r = &mut q.rewritten;
            if r.queued + MIN_READ_BYTES > r.written * WRITE_BUDGET {
                return Ok(0); // no range fits the budget: nothing to look at yet
            }
            r.take_cooled((!all).then_some(cool))
        };
        let bs = u64::from(self.config.block_size);
        let mut queued = 0u64;
        let mut files = files.into_iter();
        while let Some((branch, ino, windows)) = files.next() {
            for (i, w) in windows.iter().enumerate() {
                let ids = self.window_ids(&branch, ino, *w)?;
                let bytes = ids.len() as u64 * bs;
                if bytes < MIN_READ_BYTES {
                    continue;
                }
                let runs = self.blocks.runs(&ids)?;
                if runs < 2 || bytes / runs >= MIN_AVERAGE_RUN {
                    continue;
                }
                let mut q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
                let full = (q.ids.len() as u64 * bs) + bytes > QUEUE_BYTES;
                let spent = q.rewritten.queued + bytes > q.rewritten.written * WRITE_BUDGET;
                if full || spent {
                    q.rewritten.put_back(branch, ino, &windows[i..]);
                    for (b, ino, w) in files {
                        q.rewritten.put_back(b, ino, &w);
                    }
                    return Ok(queued);
                }
                let mut n = 0;
                for id in ids {
                    if q.queued.insert(id) {
                        q.ids.push(id);
                        n += 1;
                    }
                }
                q.rewritten.queued += n * bs;
                q.last = Some(Instant::now());
                queued += n;
            }
        }
        Ok(queued)
    }

    /// The stored blocks of range `w` of `ino` in `branch`'s live tree, in file order
    /// (none if the branch or the file is gone).
    fn window_ids(&self, branch: &str, ino: InodeNo, w: u64) -> Result<Vec<BlockId>> {
        let wb = self.window_blocks();
        let mut st = self.lock();
        let Some(view) = st.heads.get(branch).cloned() else {
            return Ok(Vec::new());
        };
        st.meta.set_view(&view);
        st.meta
            .block_map(ino, w * wb, w * wb + wb - 1)?
            .iter()
            .map(|(_, v)| codec::decode_block(v))
            .collect()
    }
}
