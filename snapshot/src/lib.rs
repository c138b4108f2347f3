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
//!   batch, applied only after the pack data it references is fsynced (`store`).
//! - sled is reached only through `meta`; packs only through the blockstore.

mod attrs;
mod codec;
mod config;
mod data;
mod durable;
mod error;
mod generation;
mod inode;
mod keys;
pub mod lock;
mod meta;
mod namespace;
mod store;
mod types;
mod verify;

pub use attrs::XattrFlags;
pub use config::{StoreConfig, FORMAT_VERSION};
pub use error::{Error, Result};
pub use store::{InitOptions, Store};
pub use types::*;
pub use verify::{Stats, VerifyReport};
#[cfg(test)]
mod tests;
