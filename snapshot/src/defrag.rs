//! `Store::defrag`: lays the files of every branch's live tree out contiguously again
//! (docs/packs.md, "Defragmentation").
//!
//! A file rewritten in place under copy-on-write ends up with its blocks spread over
//! the packs (each rewrite is appended where the active pack ends), so reading it in
//! order becomes a random read of the disk. For each regular file of each branch's live
//! tree, defrag looks up where its blocks lie; when they form short runs (on average
//! under `MIN_AVERAGE_RUN` bytes), it has the block store copy them, in file order, to
//! the end of the active pack (`BlockStore::relocate`). Only block data moves, and only
//! inside the packs: no metadata record changes (a block keeps its id; its index entry
//! points at the copy), so snapshots that share the blocks read the same bytes, now
//! from the copies. The old records become garbage that `gc` reclaims.
//!
//! Invariants: buffered writes are committed first, so every block of a file has a
//! record; a block is moved at most once per run (files that share blocks, such as
//! clones, do not pull them back and forth); the state lock is held only to list one
//! branch's files and to read one file's block map; a run needs free space for the
//! copies (checked per file, leaving the write reserve) and stops cleanly without it.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use strata_blockstore::BlockId;

use crate::codec::{self, InodeRecord};
use crate::error::Result;
use crate::keys;
use crate::store::Store;
use crate::types::{FileKind, InodeNo};

/// A file whose blocks lie in runs shorter than this on average is defragmented.
pub const MIN_AVERAGE_RUN: u64 = 4 << 20;
/// Copies made durable (fsync, index move, sled flush) per group, by default.
pub const DEFAULT_GROUP_BYTES: u64 = 32 << 20;

/// What `Store::defrag` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefragReport {
    /// Regular files of the live trees with at least two stored blocks.
    pub files_examined: u64,
    /// Of those, the files whose blocks were laid out again.
    pub files_defragmented: u64,
    /// Contiguous runs of the defragmented files' blocks before and after.
    pub runs_before: u64,
    pub runs_after: u64,
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    /// Damaged records left where they are, and a run stopped for lack of space.
    pub problems: Vec<String>,
    pub took_ms: u64,
}

impl Store {
    /// Defragments the live tree of every branch, making copies durable every
    /// `group_bytes`; `progress` hears (bytes of files done, bytes of all files).
    pub fn defrag(
        &self,
        group_bytes: u64,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<DefragReport> {
        let started = Instant::now();
        let mut report = DefragReport::default();
        self.sync()?;
        let files = self.live_files()?;
        let total: u64 = files.iter().map(|(_, _, size)| size).sum();
        let mut done = 0u64;
        let mut moved: HashSet<BlockId> = HashSet::new();
        let mut host = crate::gc::Host::new(self, self.lock().meta.flusher());
        let bs = u64::from(self.config.block_size);
        for (branch, ino, size) in files {
            progress(done, total);
            let file_done = done;
            done += size;
            let ids = self.block_ids(&branch, ino)?;
            if ids.len() < 2 {
                continue;
            }
            report.files_examined += 1;
            let runs = self.blocks.runs(&ids)?;
            let bytes = ids.len() as u64 * bs;
            if runs < 2 || bytes / runs >= MIN_AVERAGE_RUN {
                continue;
            }
            if let Err(e) = self.check_space(&self.lock(), bytes) {
                report.problems.push(format!(
                    "stopped before inode {} of branch {branch}: {e}; {} bytes of copies need \
                     that much free space besides the reserve",
                    ino.0, bytes
                ));
                break;
            }
            let todo: Vec<BlockId> = ids
                .iter()
                .filter(|id| !moved.contains(id))
                .copied()
                .collect();
            let relocated = self
                .blocks
                .relocate(&todo, group_bytes, &mut host, &mut |n| {
                    progress((file_done + n * bs).min(done), total)
                });
            host.poison_if_flush_failed();
            let stats = relocated?;
            tracing::info!(
                ino = ino.0,
                blocks = stats.blocks_moved,
                "defrag: file laid out again"
            );
            moved.extend(todo);
            report.files_defragmented += 1;
            report.runs_before += runs;
            report.runs_after += self.blocks.runs(&ids)?;
            report.blocks_moved += stats.blocks_moved;
            report.bytes_moved += stats.bytes_moved;
            report.problems.extend(stats.problems);
        }
        progress(total, total);
        report.took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            files = report.files_defragmented,
            blocks = report.blocks_moved,
            bytes = report.bytes_moved,
            took_ms = report.took_ms,
            "defragmented"
        );
        Ok(report)
    }

    /// (branch, inode, size) of every regular file of every branch's live tree.
    fn live_files(&self) -> Result<Vec<(String, InodeNo, u64)>> {
        let mut st = self.lock();
        let heads: Vec<(String, crate::generation::View)> = st
            .heads
            .iter()
            .map(|(b, v)| (b.clone(), v.clone()))
            .collect();
        let mut files = Vec::new();
        for (branch, view) in heads {
            st.meta.set_view(&view);
            for (base, value) in st.meta.scan(&[keys::INODE])? {
                let rec = InodeRecord::decode(&value)?;
                if rec.kind == FileKind::File {
                    files.push((branch.clone(), keys::key_ino(&base), rec.size));
                }
            }
        }
        Ok(files)
    }

    /// The block ids of `ino`'s committed block map in `branch`'s live tree, in file
    /// order (holes left out). Empty if the branch or the file is gone meanwhile.
    pub(crate) fn block_ids(&self, branch: &str, ino: InodeNo) -> Result<Vec<BlockId>> {
        let mut st = self.lock();
        let Some(view) = st.heads.get(branch).cloned() else {
            return Ok(Vec::new());
        };
        st.meta.set_view(&view);
        st.meta
            .scan(&keys::block_prefix(ino))?
            .iter()
            .map(|(_, v)| codec::decode_block(v))
            .collect()
    }
}
