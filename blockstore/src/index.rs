//! The block index: the sled tree mapping a block id (32-byte key) to its `Location`
//! (21-byte value, layout in `layout.rs`).
//!
//! Invariants: an entry is inserted by `sync`, or moved to a copy of its record by `gc`,
//! only after the pack bytes it points at were fsynced; `gc` also removes the entries of
//! dead blocks. This module never flushes sled: the caller flushes after its own
//! metadata commit (order: packs → index → metadata).

use std::path::Path;

use crate::layout::Location;
use crate::{BlockId, Error, Result};

/// The location of `id`, if indexed. A malformed value is `Error::Corrupt`.
pub(crate) fn lookup(
    tree: &sled::Tree,
    packs_dir: &Path,
    id: &BlockId,
) -> Result<Option<Location>> {
    let Some(v) = tree.get(id.0)? else {
        return Ok(None);
    };
    Location::decode(&v)
        .map(Some)
        .map_err(|detail| Error::Corrupt {
            path: packs_dir.to_path_buf(),
            offset: 0,
            detail: format!("block index entry for {id}: {detail}"),
        })
}

pub(crate) fn contains(tree: &sled::Tree, id: &BlockId) -> Result<bool> {
    Ok(tree.contains_key(id.0)?)
}

/// Inserts all entries in one atomic sled batch (not flushed).
pub(crate) fn insert_all(tree: &sled::Tree, entries: &[(BlockId, Location)]) -> Result<()> {
    let mut batch = sled::Batch::default();
    for (id, loc) in entries {
        batch.insert(&id.0, &loc.encode());
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// One index entry as stored; a key or value that does not decode is reported, not
/// skipped silently.
pub(crate) enum Entry {
    Good(BlockId, Location),
    Malformed { key: Vec<u8>, detail: String },
}

pub(crate) fn entries(tree: &sled::Tree) -> impl Iterator<Item = Result<Entry>> + '_ {
    tree.iter().map(|item| {
        let (k, v) = item?;
        let Ok(key) = <[u8; 32]>::try_from(&k[..]) else {
            return Ok(Entry::Malformed {
                key: k.to_vec(),
                detail: format!("index key of {} bytes, expected 32", k.len()),
            });
        };
        Ok(match Location::decode(&v) {
            Ok(loc) => Entry::Good(BlockId(key), loc),
            Err(detail) => Entry::Malformed {
                key: key.to_vec(),
                detail,
            },
        })
    })
}
