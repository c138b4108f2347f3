//! strata-blockstore: immutable blocks by content.
//!
//! CONTRACT (the public signatures are fixed; the on-disk format is described in
//! `docs/packs.md` and pinned by the tests in `layout.rs`):
//!
//! - A block is at most [`MAX_BLOCK_LEN`] (1 MiB) bytes; its id is blake3(plaintext).
//! - `put` dedups (pending + index), compresses with zstd (raw if it does not save at
//!   least 1/16), and appends a self-describing record to the active pack with a plain
//!   write. Data is readable at once through `get`, durable only after `sync`.
//! - `sync` fsyncs pack data (and the packs directory if a pack was created), and only
//!   then inserts the pending index entries into the index tree. It does not flush sled:
//!   the caller flushes sled after its own commit, so the index entries (and whatever
//!   metadata points at the blocks) reach disk after the pack data they describe.
//!   After a failed fsync every later `put`/`put_many`/`sync` fails with `Error::Io`.
//! - `get` verifies every block against its id: a mismatch is `Error::Corrupt` naming the
//!   pack file and offset (and an error log line), never wrong bytes.
//! - A full disk while appending is `Error::NoSpace`; the pack is cut back to its last
//!   complete record and the store stays usable once space is freed.
//! - `open` seals every pack left without a footer (cut after its last valid record);
//!   the store never appends to a pack that existed before `open`.
//! - `BlockStore` is `Send + Sync`; every method takes `&self`.
//!
//! - `gc` drops the index entries of blocks the caller's mark says are dead, deletes packs
//!   with nothing live left, and rewrites packs whose live fraction fell low; an entry is
//!   only ever pointed at fsynced bytes, and a pack is deleted only after the index change
//!   that emptied it is durable (docs/packs.md, "Space reclamation"). Puts, syncs and
//!   reads run beside it: `gc_begin` (before the caller's mark) pins every block put or
//!   deduplicated from then on, and the sweep never drops a pinned block; it works in
//!   bounded steps (`GcPolicy::batch_entries`, `batch_bytes`).
//!
//! - `relocate` copies given blocks' records, in that order, to the end of the active pack
//!   and moves their entries there (defragmentation); same copy protocol as gc, never
//!   deletes anything.
//!
//! Modules: `layout` (byte layouts), `codec` (per-thread zstd), `record` (block ⇄
//! record bytes), `pread` (a record read in one call), `index` (sled tree), `writer`
//! (active pack), `scan` (reading packs without the index), `recovery` (open), `store`
//! (the API), `verify`, `gc` (space reclamation), `relocate` (defragmentation), `sync`
//! (locks).

mod cache;
mod codec;
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod index;
mod layout;
mod pread;
mod record;
mod recovery;
mod relocate;
mod scan;
mod store;
mod sync;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use cache::CacheStats;
pub use gc::{GcHost, GcSession};
pub use layout::MAX_BLOCK_LEN;
pub use relocate::RelocateStats;
pub use store::BlockStore;

/// Content id of a block: blake3 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub [u8; 32]);

impl BlockId {
    /// The id of `data`: its blake3 hash.
    pub fn of(data: &[u8]) -> BlockId {
        BlockId(*blake3::hash(data).as_bytes())
    }

    /// 64 lowercase hex digits (the same text as `Display`).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(s: &str) -> Option<BlockId> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let mut id = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            id[i] = (hi * 16 + lo) as u8;
        }
        Some(BlockId(id))
    }
}

impl std::fmt::Display for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for BlockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockId({self})")
    }
}

/// Number of a pack file (`packs/{:08x}.pack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub u32);

impl PackId {
    /// The pack's file name inside the packs directory: `{:08x}.pack`.
    pub fn file_name(&self) -> String {
        format!("{:08x}.pack", self.0)
    }

    /// The inverse of [`PackId::file_name`]; `None` for any other name.
    pub fn from_file_name(name: &str) -> Option<PackId> {
        let hex = name.strip_suffix(".pack")?;
        let id = u32::from_str_radix(hex, 16).ok()?;
        let id = PackId(id);
        (id.file_name() == name).then_some(id)
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no space left on the disk under the store ({path})")]
    NoSpace { path: PathBuf },
    #[error("corrupt block in {path} at offset {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("block {0} is not in the store")]
    NotFound(BlockId),
    #[error("block index: {}", sled_message(.0))]
    Index(sled::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Index(e)
    }
}

/// sled's error as a message: an I/O error as the system names it (sled turns an I/O
/// error it clones into the text of its Debug form, `Os { code: 5, ... }`: the code is
/// read back from it).
pub fn sled_message(e: &sled::Error) -> String {
    match (e, sled_os_error(e)) {
        (sled::Error::Io(_), Some(code)) => std::io::Error::from_raw_os_error(code).to_string(),
        (sled::Error::Io(io), None) => io.to_string(),
        (other, _) => other.to_string(),
    }
}

/// The system error code of an I/O error of sled's, if it has one.
pub fn sled_os_error(e: &sled::Error) -> Option<i32> {
    let sled::Error::Io(io) = e else {
        return None;
    };
    io.raw_os_error().or_else(|| {
        io.to_string()
            .split("code: ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<i32>().ok())
    })
}

#[derive(Clone, Debug)]
pub struct Config {
    /// zstd level, 1..=19 (0 = store uncompressed).
    pub compression_level: i32,
    /// A pack is sealed and a new one started past this size.
    pub max_pack_size: u64,
    /// Bytes of decompressed blocks kept in memory for reads (`cache.rs`; 0: none).
    pub cache_bytes: u64,
}

impl Default for Config {
    /// zstd level 3 (zstd's own default), 64 MiB packs, a 32 MiB block cache.
    fn default() -> Self {
        Config {
            compression_level: 3,
            max_pack_size: 64 << 20,
            cache_bytes: 32 << 20,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub blocks: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub pack_files: u64,
    pub pack_bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// One line per problem, each naming the pack file and offset (or the index entry).
    pub problems: Vec<String>,
    /// Ids of blocks found damaged or missing (so the caller can name affected files).
    pub bad_blocks: Vec<BlockId>,
}

/// How eagerly `gc` rewrites packs that still hold live blocks (packs with nothing live
/// are always deleted).
#[derive(Clone, Debug)]
pub struct GcPolicy {
    /// A pack whose live records are less than this fraction of its records (live and
    /// dead, header and footer not counted) is rewritten.
    pub min_live_fraction: f64,
    /// Then, while the dead bytes left in the packs kept exceed this fraction of the
    /// bytes of all packs after the gc, the least live pack is rewritten too (restic's
    /// `--max-unused`). Keeps the store within this fraction of its live size.
    pub max_unused_fraction: f64,
    /// The sweep's steps: at most this many index entries dropped under one hold of the
    /// lock puts take, and at most this many records copied between two commits of
    /// moved entries...
    pub batch_entries: usize,
    /// ... and at most this many bytes copied between two commits (each commit fsyncs
    /// the copies under the lock `sync` takes, so this bounds how long a sync waits).
    pub batch_bytes: u64,
}

impl Default for GcPolicy {
    /// Rewrite packs less than half live; then keep the dead bytes within 5%. Steps of
    /// 4096 entries or 8 MiB.
    fn default() -> Self {
        GcPolicy {
            min_live_fraction: 0.5,
            max_unused_fraction: 0.05,
            batch_entries: 4096,
            batch_bytes: 8 << 20,
        }
    }
}

/// What one `gc` did.
#[derive(Clone, Debug, Default)]
pub struct GcStats {
    /// Sealed packs looked at (every pack that existed when the gc started).
    pub packs_examined: u64,
    /// Packs whose live records were copied into new packs, then deleted.
    pub packs_rewritten: u64,
    /// Packs deleted because nothing live was left in them.
    pub packs_deleted: u64,
    /// Index entries of live blocks.
    pub blocks_live: u64,
    /// Index entries of dead blocks, removed.
    pub blocks_dropped: u64,
    /// Blocks dead by the mark but put (or deduplicated) while the gc ran: kept, and
    /// counted in `blocks_live`.
    pub blocks_revived: u64,
    /// Live records copied, and their bytes (headers included).
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    /// Total size of the pack files before and after (blocks put while the gc ran count
    /// in `after`).
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// Damaged records found while copying (not copied; their packs are kept), one line
    /// each naming the pack file and offset.
    pub problems: Vec<String>,
    /// The longest single hold by the gc of a lock that `put` or `sync` wait for (`pins`
    /// while dropping a batch of entries, `sync_lock` while fsyncing a batch of copies).
    pub max_lock_hold: std::time::Duration,
}

impl GcStats {
    /// How much the pack files shrank.
    pub fn freed_bytes(&self) -> u64 {
        self.pack_bytes_before.saturating_sub(self.pack_bytes_after)
    }
}

/// True when every byte of `data` is zero (such blocks are holes, not stored).
pub fn is_zero(data: &[u8]) -> bool {
    // Word-wide OR per chunk: vectorises, unlike a byte loop that exits early.
    data.chunks(256)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}
