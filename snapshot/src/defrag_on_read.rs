//! Defragmentation on read (docs/packs.md, "Defragmentation on read"): a long read of a
//! branch's live file that finds its blocks scattered over the packs queues them, in file
//! order, for relocation; the daemon's maintenance thread then copies them to the end of
//! the active pack (`Store::relocate_queued`, the same `BlockStore::relocate` that
//! `strata defrag` uses), so the next read of that range reads one run.
//!
//! Copy-on-write scatters a file that is rewritten in place: each rewritten block is
//! appended where the active pack ends, so after many small rewrites a sequential read of
//! the file reads the disk at random. Relocating what reads find scattered costs one write
//! of the bytes read, once per scattering, and nothing for files that are only written.
//!
//! Invariants: only block data moves, inside the packs — no metadata record changes (a
//! block keeps its id; its index entry points at the copy), so every tree that shares a
//! block reads the same bytes; the old records become garbage that gc reclaims. Only reads
//! of a branch's live tree queue (snapshots keep the layout they were written with), only
//! reads of at least `MIN_READ_BYTES` whose blocks lie in runs shorter than
//! `MIN_AVERAGE_RUN` on average, only of files not changed in the last `HOT_SECS`, and
//! only while the store's config has `defrag_on_read`.
//! The queue holds at most `QUEUE_BYTES` of blocks (a read that finds it full queues
//! nothing; a later read queues its range again) and each block once; it is relocated in
//! steps of `STEP_BYTES` once reads stopped queueing and writes stopped coming for a
//! moment. It lives in memory: a daemon whose last mount ends lays out what is queued
//! before it stops (so an unmount waits for at most `QUEUE_BYTES` of copies); a crash
//! forgets it. A step needs free space for its copies besides the write reserve; without
//! it the whole queue is dropped. Defragmentation of rewritten files (`defrag_rewritten`)
//! queues onto the same queue.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_blockstore::BlockId;

use crate::error::Result;
use crate::store::Store;
use crate::types::Timestamp;
use crate::volume::Volume;

/// Reads shorter than this never queue (random reads are what they are).
pub const MIN_READ_BYTES: u64 = 256 << 10;
/// A read whose blocks lie in runs shorter than this on average queues them.
pub const MIN_AVERAGE_RUN: u64 = 128 << 10;
/// A file changed (ctime) less than this long ago is not queued, by default
/// (`Store::set_defrag_hot_secs`): it is being rewritten, and laying it out would be undone
/// by the next writes (fsx's 100k operations on a 1 MiB file, rewritten and read at
/// random, had it laid out 137 times without this rule).
pub const HOT_SECS: i64 = 10;
/// Bytes of blocks the queue holds at most: what a daemon that stops lays out first.
pub const QUEUE_BYTES: u64 = 256 << 20;
/// Bytes of blocks one `Store::relocate_queued` moves at most, made durable together
/// (fsync, index move, sled flush): the daemon stops between two of them.
pub const STEP_BYTES: u64 = 16 << 20;

/// Blocks waiting to be relocated, in the order reads found them.
#[derive(Default)]
pub(crate) struct RelocationQueue {
    pub(crate) ids: Vec<BlockId>,
    pub(crate) queued: HashSet<BlockId>,
    /// When blocks were last queued.
    pub(crate) last: Option<Instant>,
    /// Ranges commits rewrote, not looked at yet (`defrag_rewritten.rs`).
    pub(crate) rewritten: crate::defrag_rewritten::Rewritten,
}

/// What one `Store::relocate_queued` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelocatedReport {
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    /// Damaged records left where they are, or why the queue was dropped.
    pub problems: Vec<String>,
}

impl Volume {
    /// Called by a read of a file last changed at `ctime` that fetched `ids` (its stored
    /// blocks in file order) from `runs` contiguous runs: queues them when they are
    /// scattered (see the module doc).
    pub(crate) fn note_layout(&self, ids: &[BlockId], runs: u64, ctime: Timestamp) {
        let bs = u64::from(self.config.block_size);
        let bytes = ids.len() as u64 * bs;
        if !self.config.defrag_on_read
            || self.is_read_only()
            || bytes < MIN_READ_BYTES
            || runs < 2
            || bytes / runs >= MIN_AVERAGE_RUN
            || Timestamp::now().secs - ctime.secs < self.hot_secs.load(Ordering::Relaxed)
        {
            return;
        }
        let mut q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
        if (q.ids.len() + ids.len()) as u64 * bs > QUEUE_BYTES {
            return;
        }
        for id in ids {
            if q.queued.insert(*id) {
                q.ids.push(*id);
            }
        }
        q.last = Some(Instant::now());
    }
}

impl Store {
    /// How long after its last change a file is left alone (default `HOT_SECS`; tests
    /// set 0).
    pub fn set_defrag_hot_secs(&self, secs: i64) {
        self.hot_secs.store(secs, Ordering::Relaxed);
    }

    /// Whether blocks are queued for relocation, and neither did a read queue more nor
    /// did a write come for `quiet`: relocating beside the reads that find scattered
    /// blocks, or beside writes, would slow them down.
    pub fn relocation_ready(&self, quiet: Duration) -> bool {
        let written = self.last_write_ms.load(Ordering::Relaxed);
        if Timestamp::now().millis() - written < quiet.as_millis() as i64 {
            return false;
        }
        let q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
        !q.ids.is_empty() && q.last.is_none_or(|t| t.elapsed() >= quiet)
    }

    /// Relocates the first `STEP_BYTES` of the blocks reads queued, in the order they
    /// were queued; says whether more are queued. A step that fails (or finds no space)
    /// drops the whole queue: nothing waits on a store that cannot take the copies.
    pub fn relocate_queued(&self) -> Result<(RelocatedReport, bool)> {
        let bs = u64::from(self.config.block_size);
        let (ids, more) = {
            let mut q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
            let n = q.ids.len().min((STEP_BYTES / bs).max(1) as usize);
            let ids: Vec<BlockId> = q.ids.drain(..n).collect();
            for id in &ids {
                q.queued.remove(id);
            }
            (ids, !q.ids.is_empty())
        };
        match self.relocate_blocks(ids) {
            Ok(report) => Ok((report, more)),
            Err(e) => {
                self.drop_relocation_queue();
                Err(e)
            }
        }
    }

    /// Empties the queue; how many blocks it held.
    fn drop_relocation_queue(&self) -> usize {
        let mut q = self.relocation.lock().unwrap_or_else(|p| p.into_inner());
        q.queued.clear();
        std::mem::take(&mut q.ids).len()
    }

    fn relocate_blocks(&self, ids: Vec<BlockId>) -> Result<RelocatedReport> {
        let mut report = RelocatedReport::default();
        if ids.is_empty() {
            return Ok(report);
        }
        let bytes = ids.len() as u64 * u64::from(self.config.block_size);
        if let Err(e) = self.check_space(&self.lock(), bytes) {
            let dropped = self.drop_relocation_queue();
            report.problems.push(format!(
                "{} blocks read scattered were not laid out again: {e}",
                ids.len() + dropped
            ));
            return Ok(report);
        }
        let mut host = crate::gc::Host::new(self, self.lock().meta.flusher());
        let relocated = self
            .blocks
            .relocate(&ids, STEP_BYTES, &mut host, &mut |_| {});
        host.poison_if_flush_failed();
        let stats = relocated?;
        report.blocks_moved = stats.blocks_moved;
        report.bytes_moved = stats.bytes_moved;
        report.problems = stats.problems;
        Ok(report)
    }
}
