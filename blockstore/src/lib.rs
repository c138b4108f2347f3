//! strata-blockstore: immutable blocks by content.
//!
//! CONTRACT (filled in by the blockstore implementation; signatures are fixed,
//! additions are fine):
//!
//! - A block is up to `block_size` bytes; its id is blake3(plaintext).
//! - `put` dedups (pending + index), compresses with zstd (raw if it does not pay),
//!   appends a self-describing record to the active pack. Data is readable at once
//!   through `get`, durable only after `sync`.
//! - `sync` fsyncs pack data, and only then inserts the pending index entries into the
//!   index tree. It does not flush sled: the caller flushes sled after its own commit, so
//!   the index entries (and whatever metadata points at the blocks) reach disk after the
//!   pack data they describe.
//! - `get` verifies every block against its id: a mismatch is `Error::Corrupt` naming the
//!   pack file and offset, never wrong bytes.

use std::path::{Path, PathBuf};

/// Content id of a block: blake3 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub [u8; 32]);

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
    #[error("block index: {0}")]
    Index(#[from] sled::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Debug)]
pub struct Config {
    /// zstd level, 1..=19 (0 = store uncompressed).
    pub compression_level: i32,
    /// A pack is sealed and a new one started past this size.
    pub max_pack_size: u64,
}

pub struct BlockStore {/* implementation */}

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

impl BlockStore {
    pub fn open(_packs_dir: &Path, _index: sled::Tree, _cfg: Config) -> Result<Self> {
        todo!()
    }
    pub fn put(&self, _data: &[u8]) -> Result<BlockId> {
        todo!()
    }
    pub fn put_many(&self, _blocks: &[&[u8]]) -> Result<Vec<BlockId>> {
        todo!()
    }
    pub fn get(&self, _id: &BlockId) -> Result<Vec<u8>> {
        todo!()
    }
    pub fn contains(&self, _id: &BlockId) -> Result<bool> {
        todo!()
    }
    pub fn sync(&self) -> Result<()> {
        todo!()
    }
    pub fn stats(&self) -> Result<Stats> {
        todo!()
    }
    pub fn verify(&self, _progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        todo!()
    }
}

pub fn is_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}
