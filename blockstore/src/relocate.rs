//! `BlockStore::relocate` and `BlockStore::runs`: defragmentation (docs/packs.md,
//! "Defragmentation").
//!
//! Copy-on-write scatters a file that is rewritten in place: every rewritten block is
//! appended where the active pack ends, so after many generations its blocks lie all
//! over the packs and reading it in order is a random read of the disk. `relocate` copies
//! the records of the blocks it is given, in that order, to the end of the active pack,
//! and points their index entries at the copies; the old records become garbage that
//! gc reclaims with the rest of their pack.
//!
//! The copy protocol is gc's round B (`gc.rs`): each record is read and checked in full
//! (header, payload checksum, decompression, id) and appended unchanged through the
//! writer; at the end of a group the new pack data is fsynced under `sync_lock`, then
//! one sled batch moves the group's entries, then the caller's `GcHost::commit_index` makes that
//! durable. An entry therefore only ever points at fsynced bytes, and nothing is deleted:
//! a crash leaves every entry on intact data (old or new copy) and at most copies nobody
//! points at, which the next gc removes like any garbage.
//!
//! Concurrency: `gc_serial` is held for the whole run, so no gc changes entries or
//! deletes packs meanwhile. A block in the index when it is looked up here is never
//! appended again (a put finds it stored), so nothing else moves its entry; blocks only
//! in `pending` (put since the last sync) are skipped: they were just appended, and their
//! entry is sync's to insert. Reads go on throughout: a read that looked up the old
//! location reads the old record, which stays until a later gc.

use crate::gc::read_record;
use crate::index;
use crate::layout::Location;
use crate::store::BlockStore;
use crate::sync::{lock, read};
use crate::{BlockId, GcHost, Result};

/// What a relocation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelocateStats {
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    /// Records that failed their check (left where they are, reported here).
    pub problems: Vec<String>,
}

impl BlockStore {
    /// How many contiguous runs the records of `ids` form in that order: 1 when each
    /// record starts where the previous one ends in the same pack. Blocks not stored
    /// (or only pending) do not count; a repeated id counts where it first appears.
    pub fn runs(&self, ids: &[BlockId]) -> Result<u64> {
        let mut runs = 0;
        let mut prev: Option<Location> = None;
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            let Some(loc) = index::lookup(&self.index, &self.dir, id)? else {
                continue;
            };
            if !prev.is_some_and(|p| p.is_followed_by(&loc)) {
                runs += 1;
            }
            prev = Some(loc);
        }
        Ok(runs)
    }

    /// Copies the records of `ids` (each once, in this order) to the end of the active
    /// pack and moves their index entries there, in groups of about `group_bytes`;
    /// `host.commit_index` must make the index tree durable (flush sled and fsync it) and
    /// is called after each group's move, as in a gc. `progress` hears how many ids were
    /// handled.
    pub fn relocate(
        &self,
        ids: &[BlockId],
        group_bytes: u64,
        host: &mut dyn GcHost,
        progress: &mut dyn FnMut(u64),
    ) -> Result<RelocateStats> {
        let _serial = lock(&self.gc_serial);
        let mut stats = RelocateStats::default();
        let mut seen = std::collections::HashSet::new();
        let mut moves: Vec<(BlockId, Location)> = Vec::new();
        let mut group = 0u64;
        for (done, id) in ids.iter().enumerate() {
            if done % 256 == 0 {
                progress(done as u64);
            }
            if !seen.insert(*id) || read(&self.pending).contains_key(id) {
                continue;
            }
            let Some(loc) = index::lookup(&self.index, &self.dir, id)? else {
                continue; // no longer stored: nothing to move
            };
            let path = self.pack_path(loc.pack);
            let bytes = match self
                .reader(loc.pack, &path)
                .map_err(|e| format!("cannot open the pack: {e}"))
                .and_then(|file| read_record(&file, id, &loc))
            {
                Ok(bytes) => bytes,
                Err(detail) => {
                    tracing::error!(path = %path.display(), offset = loc.offset, block = %id,
                        "defrag: damaged record not moved: {detail}");
                    stats.problems.push(format!(
                        "{} offset {}: block {id} is damaged ({detail}); not moved (run strata \
                         verify)",
                        path.display(),
                        loc.offset
                    ));
                    continue;
                }
            };
            let (pack, offset) = lock(&self.writer).append(&bytes)?;
            moves.push((
                *id,
                Location {
                    pack,
                    offset,
                    ..loc
                },
            ));
            stats.blocks_moved += 1;
            stats.bytes_moved += bytes.len() as u64;
            group += bytes.len() as u64;
            if group >= group_bytes {
                self.commit_moves(&mut moves, host)?;
                group = 0;
            }
        }
        self.commit_moves(&mut moves, host)?;
        progress(ids.len() as u64);
        Ok(stats)
    }

    /// Fsyncs what the writer appended, then points the moved entries at their copies
    /// and has the caller make that durable.
    fn commit_moves(
        &self,
        moves: &mut Vec<(BlockId, Location)>,
        host: &mut dyn GcHost,
    ) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        {
            let _serial = lock(&self.sync_lock);
            let plan = lock(&self.writer).plan_sync()?;
            self.run_sync_plan(plan)?;
        }
        index::insert_all(&self.index, moves)?;
        host.commit_index()?;
        tracing::info!(moved = moves.len(), "defrag: moves committed");
        moves.clear();
        Ok(())
    }
}
