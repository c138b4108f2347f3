//! `Store::gc`: space reclamation, mark and sweep (docs/generations.md, "Space
//! reclamation"; the sweep and its crash argument are in docs/packs.md).
//!
//! Mark: under the state lock, everything buffered is committed, then the live set is
//! every block named by a block-map record visible from a kept tree (each branch head and
//! each snapshot; `snapshots::visible_blocks`, the pass space accounting uses too).
//! Sweep: the blockstore drops the index entries of every other block and rewrites or
//! deletes the packs that held them; each index change is made durable (sled flushed and
//! fsynced, `Meta::flush`) before a pack file is deleted.
//!
//! The state lock is held from the mark to the end of the sweep: a block written
//! meanwhile could deduplicate against an entry the sweep is removing. So every file
//! operation (reads too: they look up block maps under the lock) waits while gc runs;
//! its length follows the bytes copied. `gc_fence` (taken for writing here, for reading
//! by `Volume::read` from its block-map lookup to the end of its block fetches) makes sure
//! no read that looked a block up before the mark fetches it after the sweep dropped it.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use strata_blockstore::{self as blockstore, BlockId, GcPolicy};

use crate::error::Result;
use crate::keys;
use crate::meta::META_DIR;
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
    /// Blocks some branch or snapshot references.
    pub blocks_live: u64,
    /// Blocks nobody references any more, dropped from the index.
    pub blocks_freed: u64,
    /// Live blocks copied out of rewritten packs, and their bytes.
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    /// Total size of the pack files before and after.
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// `pack_bytes_before - pack_bytes_after`.
    pub freed_bytes: u64,
    /// Damaged blocks met while copying (left in place), each naming pack and offset.
    pub problems: Vec<String>,
    /// How long the gc held the store, in milliseconds.
    pub took_ms: u64,
}

impl Store {
    /// Frees the blocks no branch and no snapshot references any more, and gives the
    /// disk space of mostly-dead packs back by rewriting them. Holds the store (every
    /// file operation waits) until done.
    pub fn gc(&self) -> Result<GcReport> {
        let _fence = self.gc_fence.write().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        let started = Instant::now();
        self.commit_locked(&mut st)?;

        // Mark.
        let views: Vec<_> = kept_trees(&st)?.into_iter().map(|(_, v, _)| v).collect();
        let versions = st.meta.all_versions(&[keys::BLOCK])?;
        let mut live: HashSet<BlockId> = HashSet::new();
        visible_blocks(&versions, &views, |_, id| {
            live.insert(id);
            Ok(())
        })?;
        drop(versions);
        tracing::info!(trees = views.len(), live = live.len(), "gc: mark done");

        // Sweep.
        let meta_dir = self.path.join(META_DIR);
        let mut flush_failed = None;
        let swept = self
            .blocks
            .gc(&|id| live.contains(id), &GcPolicy::default(), &mut || {
                st.meta.flush().map_err(|e| {
                    flush_failed = Some(e.to_string());
                    blockstore::Error::Io {
                        path: meta_dir.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })
            });
        if let Some(why) = flush_failed {
            // As after a failed commit: what sled holds in memory may not be on disk.
            st.poisoned.get_or_insert(why);
        }
        let s = swept?;
        Ok(GcReport {
            packs_examined: s.packs_examined,
            packs_rewritten: s.packs_rewritten,
            packs_deleted: s.packs_deleted,
            blocks_live: s.blocks_live,
            blocks_freed: s.blocks_dropped,
            blocks_moved: s.blocks_moved,
            bytes_moved: s.bytes_moved,
            pack_bytes_before: s.pack_bytes_before,
            pack_bytes_after: s.pack_bytes_after,
            freed_bytes: s.freed_bytes(),
            problems: s.problems,
            took_ms: started.elapsed().as_millis() as u64,
        })
    }
}
