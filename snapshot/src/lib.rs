//! strata-snapshot: the versioned filesystem model. No FUSE types here.
//!
//! Owns: inodes, directory entries, xattrs, block maps, generations, write buffering and
//! the commit protocol. Every POSIX operation is implemented once here (on `Store`, for
//! the live generation) and translated by `fs`.
//!
//! Invariants:
//! - Every metadata record is stored under the generation that wrote it (`keys`), and
//!   reads see the newest version visible from the live generation (`meta`).
//! - A crash recovers exactly the state of the last commit: a commit is one atomic sled
//!   batch, applied only after the pack data it references is fsynced (`store`), plus
//!   the intent-log records written after it (`intent_log`: what fsync made durable).
//! - sled is reached only through `meta` (and `meta_compact`, which rewrites the database
//!   at open when gc asked for it); packs only through the blockstore.

mod acl;
mod attrs;
mod codec;
mod config;
mod data;
mod defrag;
mod defrag_on_read;
mod defrag_rewritten;
mod diff;
mod durable;
mod error;
mod flatten;
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod generation;
mod inode;
mod intent_log;
mod keys;
pub mod lock;
mod meta;
mod meta_compact;
mod namespace;
mod retention;
mod snapshots;
mod split_writes;
mod store;
mod types;
mod verify;
mod verify_blocks;
mod volume;

pub use attrs::XattrFlags;
pub use config::{StoreConfig, FORMAT_VERSION};
pub use defrag::{
    DefragReport, DEFAULT_GROUP_BYTES as DEFRAG_GROUP_BYTES,
    MIN_AVERAGE_RUN as DEFRAG_MIN_AVERAGE_RUN,
};
pub use defrag_on_read::{RelocatedReport, HOT_SECS as DEFRAG_HOT_SECS};
pub use diff::{DiffEntry, HistoryEntry};
pub use durable::dir_bytes as disk_bytes;
pub use error::{Error, Result};
pub use flatten::{FlattenProgress, FlattenReport, DEFAULT_BATCH_RECORDS};
pub use gc::GcReport;
pub use generation::MAIN_BRANCH;
pub use retention::{Candidate, Decision, KeepPolicy};
pub use snapshots::{
    check_name, utc_stamp, BranchInfo, RollbackInfo, SnapshotInfo, SnapshotUsage, AUTO_PREFIX,
};
pub use store::{Activity, InitOptions, Store};
pub use strata_blockstore::CacheStats as BlockCacheStats;
pub use types::*;
pub use verify::{Stats, VerifyReport};
pub use volume::{Volume, VolumeKind};
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_defrag;
#[cfg(test)]
mod tests_flatten;
#[cfg(test)]
mod tests_generations;
#[cfg(test)]
mod tests_read_index;
#[cfg(test)]
mod tests_verify;
