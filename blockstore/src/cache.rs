//! A cache of decompressed blocks, by id: what a read of a block that was read recently
//! costs instead of a pread and a zstd decompression. It serves blocks shared by dedup,
//! snapshots and clones (each of which the kernel caches apart, per inode), random reads
//! that land in one block (the kernel asks for pages, a block holds several), and the
//! read-modify-write of a partial overwrite. Blocks are cached when read, not when
//! written: inserting every sealed block cost the write path a copy of each (measured:
//! 4 KiB random writes 11% slower) for hits a write-back cache rarely brings.
//!
//! Invariants:
//! - An id names its content (blake3), so an entry never goes stale: no invalidation is
//!   needed when a gc or defrag moves a block, and a block read from the cache is the
//!   block. Damage on disk is found by `verify`, which never reads through here.
//! - At most `capacity` bytes of block data are held; the least recently used block
//!   goes first. A capacity of 0 turns the cache off (every call is a no-op).
//! - One mutex, held only for the map operations, never while reading or copying.

use std::collections::{BTreeMap, HashMap};

use crate::sync::{lock, Arc, Mutex};
use crate::BlockId;

pub(crate) struct BlockCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// id → (data, the tick of its last use).
    map: HashMap<BlockId, (Arc<Vec<u8>>, u64)>,
    /// tick → id, oldest first.
    order: BTreeMap<u64, BlockId>,
    tick: u64,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// Counters for `strata status` and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub capacity_bytes: u64,
    pub bytes: u64,
    pub blocks: u64,
    pub hits: u64,
    pub misses: u64,
}

impl BlockCache {
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The block, if cached (it becomes the most recently used).
    pub fn get(&self, id: &BlockId) -> Option<Arc<Vec<u8>>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = lock(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        match inner.map.get_mut(id) {
            Some((data, used)) => {
                let (data, old) = (data.clone(), std::mem::replace(used, tick));
                inner.order.remove(&old);
                inner.order.insert(tick, *id);
                inner.hits += 1;
                Some(data)
            }
            None => {
                inner.misses += 1;
                None
            }
        }
    }

    /// Keeps block `id` (shared, not copied), evicting the least recently used past the
    /// capacity. A block larger than an eighth of the capacity is not kept.
    pub fn insert(&self, id: &BlockId, data: &Arc<Vec<u8>>) {
        if self.capacity == 0 || data.len() > self.capacity / 8 {
            return;
        }
        let data = data.clone();
        let mut inner = lock(&self.inner);
        if inner.map.contains_key(id) {
            return;
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.bytes += data.len();
        inner.map.insert(*id, (data, tick));
        inner.order.insert(tick, *id);
        while inner.bytes > self.capacity {
            let Some((_, old)) = inner.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = inner.map.remove(&old) {
                inner.bytes -= d.len();
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = lock(&self.inner);
        CacheStats {
            capacity_bytes: self.capacity as u64,
            bytes: inner.bytes as u64,
            blocks: inner.map.len() as u64,
            hits: inner.hits,
            misses: inner.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlockId {
        BlockId([n; 32])
    }

    #[test]
    fn keeps_the_most_recently_used_within_the_capacity() {
        let c = BlockCache::new(8 * 100);
        for n in 0..8 {
            c.insert(&id(n), &Arc::new(vec![n; 100]));
        }
        assert_eq!(c.stats().bytes, 800);
        // 0 is used again, so 1 is the oldest when 8 comes in.
        assert_eq!(&c.get(&id(0)).unwrap()[..], &[0u8; 100][..]);
        c.insert(&id(8), &Arc::new(vec![8; 100]));
        assert!(c.get(&id(1)).is_none());
        assert!(c.get(&id(0)).is_some() && c.get(&id(8)).is_some());
        let s = c.stats();
        assert_eq!((s.blocks, s.bytes), (8, 800));
        assert_eq!((s.hits, s.misses), (3, 1));
    }

    #[test]
    fn off_at_zero_and_large_blocks_are_not_kept() {
        let off = BlockCache::new(0);
        off.insert(&id(1), &Arc::new(vec![1; 10]));
        assert!(off.get(&id(1)).is_none());
        assert_eq!(off.stats(), CacheStats::default());
        let c = BlockCache::new(800);
        c.insert(&id(1), &Arc::new(vec![1; 101]));
        assert!(c.get(&id(1)).is_none());
        c.insert(&id(2), &Arc::new(vec![2; 100]));
        assert!(c.get(&id(2)).is_some());
    }
}
