//! `strata verify`'s check of the block map, once per stored record version.
//!
//! A block record (`B ino idx gen`) is seen by every tree descending from `gen` until a
//! newer version hides it, so checking each tree's visible block map costs the number
//! of trees times the size of a tree: 94 s for one 256 MiB file after 1000 snapshots.
//! Each version is checked once instead, and only the versions found wrong are looked
//! up in the trees (to name the files and generations they damage):
//!
//! 1. every version names a block that is stored and sound (not in the scrub's bad
//!    list), and its inode exists at the version's own generation;
//! 2. where an inode is deleted (a tombstone of its inode record at generation `h`),
//!    none of its block records is still visible at `h`.
//!
//! Together, 1 and 2 give what the per-tree check gave: every block record a tree sees
//! belongs to an inode of that tree. (A tree `t` sees version `v` of generation `g`, an
//! ancestor; the inode exists at `g` by 1; if it is gone at `t`, it was deleted at some
//! `h` between them, and by 2 something newer than `g` hides `v` at `h`, and so at `t`.)
//!
//! Both hold for generations that are trees (live or frozen). A deleted generation that
//! flattening has not finished removing is half folded into its heirs (each step keeps
//! what the trees see, not what the removed generation held), so its versions are only
//! checked for their blocks, and the inodes they touch are checked the old way, tree by
//! tree (`BlockVersions::unsettled`): rare, and only until the flatten run ends.
//!
//! The pass takes the state lock in steps of `STEP` versions, so a mounted store keeps
//! serving during it.

use std::collections::{HashMap, HashSet};

use strata_blockstore::BlockId;

use crate::codec;
use crate::error::Result;
use crate::generation::View;
use crate::keys;
use crate::meta::Version;
use crate::store::{State, Store};
use crate::types::{GenerationId, InodeNo};

/// Versions read per hold of the state lock.
const STEP: usize = 4096;
/// Views kept between lookups (each holds its generation's ancestors).
const VIEW_CACHE: usize = 256;

/// What is wrong with a block record version whose block the trees may still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Damaged,
    NotStored,
}

/// A block record version naming a block that cannot be read back.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    pub ino: InodeNo,
    pub idx: u64,
    pub gen: GenerationId,
    pub id: BlockId,
    pub fault: Fault,
}

#[derive(Debug, Default)]
pub(crate) struct BlockVersions {
    /// Problems of the versions themselves, with the label of their generation.
    pub problems: Vec<String>,
    /// Versions naming a damaged or missing block: each tree that sees one reports it
    /// under the file's path there (`Suspect::report_in`).
    pub suspects: Vec<Suspect>,
    /// Inodes with records in a generation being removed, and their highest block
    /// index: each tree checks that it reads no block of those it does not have.
    pub unsettled: HashMap<InodeNo, u64>,
}

impl Suspect {
    /// The problem line for the tree `st` points at, if it reads this version.
    pub(crate) fn report_in(&self, st: &State, name: &str, bs: u64) -> Result<Option<String>> {
        if !st.meta.view().sees(self.gen) {
            return Ok(None);
        }
        let seen = st.meta.block_map(self.ino, self.idx, self.idx)?;
        let reads_it = match seen.first() {
            Some((_, v)) => codec::decode_block(v).is_ok_and(|id| id == self.id),
            None => false,
        };
        if !reads_it {
            return Ok(None);
        }
        let (off, id) = (self.idx * bs, self.id);
        Ok(Some(match self.fault {
            Fault::Damaged => format!("{name}: data at offset {off} is damaged (block {id})"),
            Fault::NotStored => {
                format!("{name}: data at offset {off} names block {id}, which is not stored")
            }
        }))
    }
}

/// Views of generations, computed on demand and kept for a while.
struct Views(HashMap<GenerationId, View>);

impl Views {
    fn get(&mut self, st: &State, g: GenerationId) -> Option<View> {
        if let Some(v) = self.0.get(&g) {
            return Some(v.clone());
        }
        let v = st.gens.view(g).ok()?; // gone: its records are strays, reported apart
        if self.0.len() >= VIEW_CACHE {
            self.0.clear();
        }
        self.0.insert(g, v.clone());
        Some(v)
    }
}

impl Store {
    /// Calls `f` on every stored version of the records of `kind` (`B`, `I`, ...), in
    /// key order, under the state lock in steps of `STEP` (the mount serves between
    /// them); `f` may point the metadata at any view, it is put back after each step.
    fn each_version(
        &self,
        kind: u8,
        f: &mut dyn FnMut(&mut State, Version) -> Result<()>,
    ) -> Result<()> {
        let hi = [kind + 1];
        let mut cursor = vec![kind];
        loop {
            let mut st = self.lock();
            let step = st.meta.versions_range(&cursor, Some(&hi), STEP)?;
            let Some((base, gen, _)) = step.last() else {
                return Ok(());
            };
            cursor = keys::versioned(base, *gen);
            cursor.push(0);
            let restore = st.meta.view().clone();
            let done = step.into_iter().try_for_each(|v| f(&mut st, v));
            st.meta.set_view(&restore);
            done?;
        }
    }

    /// Checks every block record version once (see the module doc). `trees` are the
    /// live and frozen generations; `label` names one in problem lines ("snapshot NAME:
    /// ", "" for the main tree).
    pub(crate) fn verify_block_versions(
        &self,
        bad: &HashSet<BlockId>,
        trees: &HashSet<GenerationId>,
        label: &dyn Fn(GenerationId) -> String,
    ) -> Result<BlockVersions> {
        let bs = self.config.block_size as u64;
        let mut out = BlockVersions::default();
        let mut views = Views(HashMap::new());
        // The highest block index of each inode with block records (for check 2 and the
        // unsettled inodes), the inodes with records in a generation being removed, and
        // whether an inode exists at a generation (for check 1; for the current inode).
        let mut last_idx: HashMap<InodeNo, u64> = HashMap::new();
        let mut unsettled: HashSet<InodeNo> = HashSet::new();
        let mut exists: HashMap<GenerationId, bool> = HashMap::new();
        let mut exists_of = InodeNo(0);
        self.each_version(keys::BLOCK, &mut |st, (base, gen, payload)| {
            let (ino, idx) = (keys::key_ino(&base), keys::block_index(&base));
            let top = last_idx.entry(ino).or_default();
            *top = (*top).max(idx);
            let settled = trees.contains(&gen);
            if !settled {
                unsettled.insert(ino);
            }
            let Some(payload) = payload else {
                return Ok(()); // a tombstone
            };
            let (off, at) = (idx * bs, label(gen));
            if exists_of != ino {
                exists.clear();
                exists_of = ino;
            }
            let inode_there = match exists.get(&gen) {
                _ if !settled => true,
                Some(e) => *e,
                None => {
                    let Some(view) = views.get(st, gen) else {
                        return Ok(()); // gone: a stray record, reported apart
                    };
                    st.meta.set_view(&view);
                    let e = st.meta.get(&keys::inode(ino))?.is_some();
                    exists.insert(gen, e);
                    e
                }
            };
            if !inode_there {
                out.problems.push(format!(
                    "{at}inode {}: block record at offset {off} for a missing inode",
                    ino.0
                ));
            }
            let id = match codec::decode_block(&payload) {
                Ok(id) => id,
                Err(e) => {
                    out.problems.push(format!(
                        "{at}inode {}: block record at offset {off}: {e}",
                        ino.0
                    ));
                    return Ok(());
                }
            };
            let fault = if bad.contains(&id) {
                Fault::Damaged
            } else if !self.blocks.contains(&id)? {
                Fault::NotStored
            } else {
                return Ok(());
            };
            out.suspects.push(Suspect {
                ino,
                idx,
                gen,
                id,
                fault,
            });
            Ok(())
        })?;
        // Check 2: at each deletion of an inode, none of its blocks is still visible.
        self.each_version(keys::INODE, &mut |st, (base, gen, payload)| {
            let ino = keys::key_ino(&base);
            let Some(&last) = last_idx.get(&ino) else {
                return Ok(());
            };
            if !trees.contains(&gen) {
                unsettled.insert(ino);
                return Ok(());
            }
            if payload.is_some() {
                return Ok(());
            }
            let Some(view) = views.get(st, gen) else {
                return Ok(());
            };
            st.meta.set_view(&view);
            let left = st.meta.block_map(ino, 0, last)?;
            if let Some((idx, _)) = left.first() {
                out.problems.push(format!(
                    "{}inode {}: deleted, but {} block record{} still visible (first at \
                     offset {})",
                    label(gen),
                    ino.0,
                    left.len(),
                    if left.len() == 1 { " is" } else { "s are" },
                    idx * bs
                ));
            }
            Ok(())
        })?;
        // With the highest index over all their versions (known only now).
        out.unsettled = unsettled
            .into_iter()
            .filter_map(|ino| last_idx.get(&ino).map(|last| (ino, *last)))
            .collect();
        Ok(out)
    }
}
