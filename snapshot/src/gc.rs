//! `Store::gc`: space reclamation, mark and sweep (docs/generations.md, "Space
//! reclamation"; the sweep and its crash argument are in docs/packs.md).
//!
//! 1. Everything buffered is committed (an ordinary commit, lock held as for any commit).
//! 2. `BlockStore::gc_begin`: from here on every block put or deduplicated is pinned, and
//!    the sweep keeps it whatever the mark says.
//! 3. Mark, under `gc_fence` (for writing) and the state lock: commit what was buffered
//!    since step 1, then the live set is every block named by a block-map record visible
//!    from a kept tree (each branch head and each snapshot; `snapshots::visible_blocks`,
//!    the pass space accounting uses too). Both locks are then released.
//! 4. Sweep, beside file operations: the blockstore drops the index entries of blocks
//!    neither marked nor pinned, in bounded steps, and rewrites or deletes the packs that
//!    held them; each index change is made durable (sled flushed and `meta/` fsynced
//!    through a `Flusher`, no state lock) before a pack file is deleted, and each
//!    deletion runs under `gc_fence` (for writing).
//!
//! Why no file operation can name a block the sweep drops. Every block-map record
//! committed after the mark names a block that was either put after step 2 (pinned:
//! writes commit their blocks through `put_many`) or visible from a kept tree at the mark
//! (a copy_file_range shares a committed block of the same writable tree; a snapshot, a
//! clone or a rollback starts from a tree that is kept or was created after the mark
//! from such blocks). Puts and the records naming them happen in one hold of the state
//! lock, so a put before step 2 is committed before the mark and counted by it (a
//! commit that put blocks outside the state lock, e.g. a two-phase commit, would have
//! to keep a gc from beginning between its puts and the commit recording them). A read
//! looks blocks up under the state lock and fetches them after, holding `gc_fence` for
//! reading throughout: one that looked up before the mark finished before the mark began
//! (the gc waits for the fence), one that looks up after it only finds blocks the sweep
//! keeps; and no pack is deleted under a fetch (before each deletion the gc takes the
//! fence for writing and lets it go at once, see `Host::delete_packs`; a fetch that
//! finds a block moved follows it in `BlockStore::get`).
//! Known limit: a file of a snapshot deleted before the mark, still open through
//! `.snapshots/`, reads EIO once its blocks are dropped.
//!
//! What file operations wait for: the state lock during the mark (one pass over the
//! block-map records of all generations, plus the commit of what was buffered since
//! step 1); `gc_fence` while the reads in flight before a pack deletion finish (reads
//! only); and the blockstore's own
//! short steps (a batch of index removals, a batch of fsynced copies), which a commit
//! holding the state lock may wait for. The longest of these holds is `max_lock_ms`.
//! A failed index flush poisons the store, as a failed commit does.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_blockstore::{self as blockstore, BlockId, GcHost, GcPolicy};

use crate::error::Result;
use crate::keys;
use crate::meta::{Flusher, META_DIR};
use crate::snapshots::{kept_trees, visible_blocks};
use crate::store::Store;

/// What `Store::gc` did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcReport {
    /// Pack files that existed when the gc started.
    pub packs_examined: u64,
    /// Packs whose live blocks were copied into new packs, then deleted.
    pub packs_rewritten: u64,
    /// Packs deleted because no live block was left in them.
    pub packs_deleted: u64,
    /// Blocks some branch or snapshot references (or written while the gc ran).
    pub blocks_live: u64,
    /// Blocks nobody references any more, dropped from the index.
    pub blocks_freed: u64,
    /// Blocks nobody referenced at the mark but written again while the gc ran: kept
    /// (counted in `blocks_live`).
    #[serde(default)]
    pub blocks_revived: u64,
    /// Live blocks copied out of rewritten packs, and their bytes.
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    /// Total size of the pack files before and after (data written while the gc ran
    /// counts in `after`).
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// `pack_bytes_before - pack_bytes_after`.
    pub freed_bytes: u64,
    /// Damaged blocks met while copying (left in place), each naming pack and offset.
    pub problems: Vec<String>,
    /// How long the gc took, in milliseconds (file operations went on meanwhile).
    pub took_ms: u64,
    /// How long the gc held the store's state lock (its mark), in milliseconds.
    #[serde(default)]
    pub state_lock_ms: f64,
    /// The longest time the gc held any lock file operations wait for (the state lock,
    /// `gc_fence`, or a blockstore lock), in milliseconds.
    #[serde(default)]
    pub max_lock_ms: f64,
    /// What `meta/` takes on disk, and the bytes of the keys and values it holds.
    #[serde(default)]
    pub meta_bytes: u64,
    #[serde(default)]
    pub meta_content_bytes: u64,
    /// `meta/` is much larger than its content: the next open of the store (the next
    /// mount, or the end of an unmounted `strata gc`) rewrites it compactly.
    #[serde(default)]
    pub meta_compaction_pending: bool,
}

/// The snapshot layer's side of the sweep (and of a defrag's relocation).
pub(crate) struct Host<'a> {
    store: &'a Store,
    flusher: Flusher,
    meta_dir: PathBuf,
    /// The first failed flush (it poisons the store).
    flush_failed: Option<String>,
    /// Longest hold of `gc_fence`, from asking for it (new reads wait from then on).
    max_fence: Duration,
}

impl<'a> Host<'a> {
    pub(crate) fn new(store: &'a Store, flusher: Flusher) -> Self {
        Host {
            store,
            flusher,
            meta_dir: store.path.join(META_DIR),
            flush_failed: None,
            max_fence: Duration::ZERO,
        }
    }

    /// After a failed flush the store refuses writes, as after a failed commit: what
    /// sled holds in memory may not be on disk.
    pub(crate) fn poison_if_flush_failed(&mut self) {
        if let Some(why) = self.flush_failed.take() {
            self.store.lock().poison(why);
        }
    }
}

impl GcHost for Host<'_> {
    fn commit_index(&mut self) -> blockstore::Result<()> {
        self.flusher.flush().map_err(|e| {
            self.flush_failed.get_or_insert_with(|| e.to_string());
            blockstore::Error::Io {
                path: self.meta_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    /// `gc_fence` as a barrier: the index change that left nothing pointing into the
    /// packs is applied (and durable) before this is called, so once every read that
    /// holds the fence now has finished, no read can still fetch from the packs (a read
    /// looks a block's location up after taking the fence). The unlinking itself then
    /// runs with the fence free: it can take a while for a large pack, and reads that
    /// start meanwhile find the blocks elsewhere.
    fn delete_packs(
        &mut self,
        delete: &mut dyn FnMut() -> blockstore::Result<()>,
    ) -> blockstore::Result<()> {
        let asked = Instant::now();
        drop(
            self.store
                .gc_fence
                .write()
                .unwrap_or_else(|p| p.into_inner()),
        );
        self.max_fence = self.max_fence.max(asked.elapsed());
        delete()
    }

    #[cfg(test)]
    fn between_steps(&mut self) {
        if let Some(hook) = self.store.gc_step_hook.lock().unwrap().as_mut() {
            hook();
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Store {
    /// sled's file keeps the size the history gave it: when `meta/` is much larger than
    /// what it holds, asks the next open of the store to compact it (`meta_compact`).
    /// Returns the bytes on disk, the bytes held, and whether a compaction is pending.
    /// Reads the database without the state lock (one pass over every tree).
    pub fn check_meta_size(&self) -> Result<(u64, u64, bool)> {
        let probe = self.lock().meta.size_probe();
        let content = probe.content_bytes()?;
        drop(probe);
        let disk = crate::durable::dir_bytes(&self.path.join(META_DIR));
        let compact = crate::meta_compact::wants_compaction(disk, content);
        if compact {
            let mut st = self.lock();
            st.meta
                .put_raw(keys::state(crate::meta_compact::COMPACT_KEY), Vec::new());
            self.commit_locked(&mut st)?;
            tracing::info!(
                disk,
                content,
                "meta/ is to be compacted at the next open of the store"
            );
        }
        Ok((disk, content, compact))
    }

    /// Frees the blocks no branch and no snapshot references any more, and gives the
    /// disk space of mostly-dead packs back by rewriting them. File operations go on
    /// meanwhile; they wait only for the mark (see the module doc).
    pub fn gc(&self) -> Result<GcReport> {
        let started = Instant::now();
        // Most of what is buffered, committed before the mark (in a hold of its own).
        self.sync()?;
        let session = self.blocks.gc_begin();

        // Mark.
        let asked = Instant::now();
        let (live, flusher, state_held) = {
            let _fence = self.gc_fence.write().unwrap_or_else(|p| p.into_inner());
            let mut st = self.lock();
            let since = Instant::now();
            self.commit_locked(&mut st)?;
            let views: Vec<_> = kept_trees(&st)?.into_iter().map(|(_, v, _)| v).collect();
            let versions = st.meta.all_versions(&[keys::BLOCK])?;
            let mut live: HashSet<BlockId> = HashSet::new();
            visible_blocks(&versions, &views, |_, id| {
                live.insert(id);
                Ok(())
            })?;
            drop(versions);
            tracing::info!(trees = views.len(), live = live.len(), "gc: mark done");
            (live, st.meta.flusher(), since.elapsed())
        };
        let fence_held = asked.elapsed();

        // Sweep.
        let mut host = Host::new(self, flusher);
        #[allow(unused_mut)]
        let mut policy = GcPolicy::default();
        #[cfg(test)]
        match self
            .gc_batch_entries
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => {}
            n => policy.batch_entries = n,
        }
        let swept = session.sweep(&|id| live.contains(id), &policy, &mut host);
        host.poison_if_flush_failed();
        let s = swept?;

        let (meta_bytes, meta_content_bytes, compact) = self.check_meta_size()?;
        let max_lock = state_held
            .max(fence_held)
            .max(host.max_fence)
            .max(s.max_lock_hold);
        let report = GcReport {
            packs_examined: s.packs_examined,
            packs_rewritten: s.packs_rewritten,
            packs_deleted: s.packs_deleted,
            blocks_live: s.blocks_live,
            blocks_freed: s.blocks_dropped,
            blocks_revived: s.blocks_revived,
            blocks_moved: s.blocks_moved,
            bytes_moved: s.bytes_moved,
            pack_bytes_before: s.pack_bytes_before,
            pack_bytes_after: s.pack_bytes_after,
            freed_bytes: s.freed_bytes(),
            problems: s.problems,
            took_ms: started.elapsed().as_millis() as u64,
            state_lock_ms: ms(state_held),
            max_lock_ms: ms(max_lock),
            meta_bytes,
            meta_content_bytes,
            meta_compaction_pending: compact,
        };
        tracing::info!(
            took_ms = report.took_ms,
            state_lock_ms = report.state_lock_ms,
            fence_ms = ms(fence_held.max(host.max_fence)),
            blockstore_lock_ms = ms(s.max_lock_hold),
            max_lock_ms = report.max_lock_ms,
            "gc: longest lock holds"
        );
        Ok(report)
    }
}
