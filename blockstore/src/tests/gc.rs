//! Space reclamation: rewritten packs keep every live block readable and verified, dead
//! blocks leave the index, packs with nothing live are deleted, a crash between the index
//! commit and the pack deletion leaves a store that opens and verifies clean (and whose
//! next gc deletes the leftover), damaged records are never copied, a full disk still
//! frees what needs no copy, reads running beside a gc follow the moved blocks, and a
//! block put or deduplicated during the sweep is kept whatever the mark said.

use std::collections::HashSet;

use super::*;
use crate::layout::{FOOTER_LEN, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::{GcHost, GcPolicy, GcStats};

/// Block `i` of the tests: alternately compressible and not, of varied sizes.
fn block(i: u64) -> Vec<u8> {
    let len = 3000 + (i as usize * 997) % 9000;
    if i.is_multiple_of(2) {
        text(i, len)
    } else {
        noise(i, len)
    }
}

fn record_len(store: &BlockStore, id: &BlockId) -> u64 {
    RECORD_HEADER_LEN as u64 + u64::from(location(store, id).stored_len)
}

/// Runs a gc with the default policy; the index is made durable by flushing sled.
fn gc(store: &BlockStore, fx: &Fixture, live: &HashSet<BlockId>) -> crate::Result<GcStats> {
    let tree = fx.tree();
    store.gc(
        &|id| live.contains(id),
        &GcPolicy::default(),
        &mut || -> crate::Result<()> {
            tree.flush()?;
            Ok(())
        },
    )
}

fn index_ids(fx: &Fixture) -> HashSet<BlockId> {
    fx.tree()
        .iter()
        .keys()
        .map(|k| BlockId(<[u8; 32]>::try_from(&k.unwrap()[..]).unwrap()))
        .collect()
}

/// Puts blocks `range`, syncs; returns their ids.
fn put_blocks(store: &BlockStore, range: std::ops::Range<u64>) -> Vec<BlockId> {
    let ids = range.map(|i| store.put(&block(i)).unwrap()).collect();
    store.sync().unwrap();
    ids
}

#[test]
fn a_rewritten_pack_keeps_every_live_block() {
    let mut fx = Fixture::new();
    let store = fx.open();
    let ids = put_blocks(&store, 0..60);
    // A third live: pack 0 is rewritten.
    let live: HashSet<BlockId> = ids.iter().step_by(3).copied().collect();
    let dead_bytes: u64 = ids
        .iter()
        .filter(|id| !live.contains(id))
        .map(|id| record_len(&store, id))
        .sum();
    let stats = gc(&store, &fx, &live).unwrap();
    assert_eq!(
        (
            stats.packs_examined,
            stats.packs_rewritten,
            stats.packs_deleted
        ),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.blocks_live, live.len() as u64);
    assert_eq!(stats.blocks_dropped, (ids.len() - live.len()) as u64);
    assert_eq!(stats.blocks_moved, live.len() as u64);
    assert!(stats.problems.is_empty());
    // Before: pack 0 unsealed (header + records). After: the new pack 1, unsealed, with
    // the live records only. Exactly the dead records are gone.
    assert_eq!(stats.freed_bytes(), dead_bytes);
    assert!(!fx.pack(0).exists(), "the old pack is deleted");
    assert_eq!(fx.pack_files(), vec![fx.pack(1)]);
    assert_eq!(index_ids(&fx), live);
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
            assert_eq!(location(&store, id).pack, PackId(1));
        } else {
            assert!(matches!(store.get(id), Err(Error::NotFound(_))), "{i}");
            assert!(!store.contains(id).unwrap());
        }
    }
    verify_clean(&store);
    // Writing goes on (a dead block can be stored again), and all of it survives a
    // restart.
    let again = store.put(&block(1)).unwrap();
    assert_eq!(again, ids[1]);
    store.sync().unwrap();
    drop(store);
    fx.restart_index();
    let store = fx.open();
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) || i == 1 {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
        }
    }
    verify_clean(&store);
    // A second gc with the same live set finds nothing more to do but the re-put block.
    let mut live2 = live.clone();
    live2.insert(ids[1]);
    let stats = gc(&store, &fx, &live2).unwrap();
    assert_eq!(
        (
            stats.packs_rewritten,
            stats.packs_deleted,
            stats.blocks_dropped
        ),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn dead_packs_are_deleted_and_live_ones_left_alone() {
    let fx = Fixture::new();
    let store = fx.open_with(Config {
        compression_level: 3,
        max_pack_size: 64 << 10,
        ..Config::default()
    });
    let ids = put_blocks(&store, 0..40);
    let packs: Vec<PackId> = {
        let mut v: Vec<PackId> = ids.iter().map(|id| location(&store, id).pack).collect();
        v.dedup();
        v
    };
    assert!(packs.len() >= 3, "{packs:?}");
    // Everything in the first pack dead, the rest live.
    let live: HashSet<BlockId> = ids
        .iter()
        .filter(|id| location(&store, id).pack != packs[0])
        .copied()
        .collect();
    let second = fx.pack(packs[1].0);
    let before = std::fs::read(&second).unwrap();
    let stats = gc(&store, &fx, &live).unwrap();
    assert_eq!(
        (stats.packs_deleted, stats.packs_rewritten),
        (1, 0),
        "{stats:?}"
    );
    assert!(!fx.pack(packs[0].0).exists());
    assert_eq!(std::fs::read(&second).unwrap(), before, "untouched");
    // The active pack was sealed (its footer is all it gained).
    let last = fx.pack(packs[packs.len() - 1].0);
    assert_sealed(&last);
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
        }
    }
    assert_eq!(index_ids(&fx), live);
    verify_clean(&store);
    // Nothing live at all: every pack goes.
    let stats = gc(&store, &fx, &HashSet::new()).unwrap();
    assert_eq!(stats.packs_deleted as usize, packs.len() - 1);
    assert!(fx.pack_files().is_empty());
    assert_eq!(stats.pack_bytes_after, 0);
    assert!(fx.tree().is_empty());
    verify_clean(&store);
}

#[test]
fn a_crash_between_the_index_commit_and_the_pack_deletion() {
    let mut fx = Fixture::new();
    let store = fx.open();
    let ids = put_blocks(&store, 0..30);
    let live: HashSet<BlockId> = ids.iter().step_by(4).copied().collect();
    store.with_faults(|f| f.gc_crash_before_delete = true);
    let err = gc(&store, &fx, &live).unwrap_err().to_string();
    assert!(err.contains("simulated crash"), "{err}");
    store.crash();
    fx.restart_index();
    // The old pack is still there, but nothing points into it: the moved entries'
    // change reached the disk before the deletion would have.
    assert!(fx.pack(0).exists());
    let store = fx.open();
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
            assert_eq!(location(&store, id).pack, PackId(1));
        } else {
            assert!(matches!(store.get(id), Err(Error::NotFound(_))));
        }
    }
    assert_eq!(index_ids(&fx), live);
    // The new pack was left unsealed by the crash; open sealed it.
    assert_eq!(assert_sealed(&fx.pack(1)).record_count, live.len() as u64);
    verify_clean(&store);
    // The stale copies in pack 0 are never served, and a block whose only valid record
    // is there is stored anew on a put (not found by dedup).
    let dead = ids[1];
    assert!(!store.contains(&dead).unwrap());
    // The next gc deletes the leftover.
    let stats = gc(&store, &fx, &live).unwrap();
    assert_eq!(
        (stats.packs_deleted, stats.packs_rewritten),
        (1, 0),
        "{stats:?}"
    );
    assert!(!fx.pack(0).exists());
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
        }
    }
    verify_clean(&store);
}

#[test]
fn a_failed_index_commit_deletes_nothing() {
    // Whether or not the batch reached the disk, every entry points at valid data: the
    // old packs stay until the index change is known durable.
    let mut fx = Fixture::new();
    let store = fx.open();
    let ids = put_blocks(&store, 0..30);
    let live: HashSet<BlockId> = ids.iter().step_by(4).copied().collect();
    let mut calls = 0;
    let r = store.gc(
        &|id| live.contains(id),
        &GcPolicy::default(),
        &mut || -> crate::Result<()> {
            calls += 1;
            Err(Error::Io {
                path: "meta".into(),
                source: std::io::Error::other("simulated flush failure"),
            })
        },
    );
    assert!(r.is_err() && calls == 1);
    assert!(fx.pack(0).exists());
    store.crash();
    fx.restart_index();
    let store = fx.open();
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
        }
    }
    verify_clean(&store);
    let stats = gc(&store, &fx, &live).unwrap();
    assert_eq!(stats.packs_rewritten, 1, "{stats:?}");
    verify_clean(&store);
}

#[test]
fn a_damaged_record_is_reported_and_not_copied() {
    let fx = Fixture::new();
    let store = fx.open();
    let ids = put_blocks(&store, 0..20);
    let live: HashSet<BlockId> = ids.iter().step_by(3).copied().collect();
    let victim = ids[3];
    let loc = location(&store, &victim);
    flip(&fx.pack(0), loc.offset + RECORD_HEADER_LEN as u64 + 7);
    let stats = gc(&store, &fx, &live).unwrap();
    assert_eq!(stats.problems.len(), 1, "{stats:?}");
    let p = &stats.problems[0];
    assert!(
        p.contains(&fx.pack(0).display().to_string())
            && p.contains(&format!("offset {}", loc.offset)),
        "{p}"
    );
    // The pack is kept for the damaged record; the others moved.
    assert!(fx.pack(0).exists());
    assert_eq!(stats.packs_rewritten, 0);
    assert_eq!(location(&store, &victim).pack, PackId(0));
    assert_corrupt(store.get(&victim), &fx.pack(0), loc.offset);
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) && *id != victim {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
            assert_eq!(location(&store, id).pack, PackId(1));
        }
    }
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.bad_blocks, vec![victim]);
}

#[test]
fn a_full_disk_still_frees_dead_packs_and_loses_nothing() {
    let fx = Fixture::new();
    let store = fx.open_with(Config {
        compression_level: 3,
        max_pack_size: 64 << 10,
        ..Config::default()
    });
    let ids = put_blocks(&store, 0..40);
    let first = location(&store, &ids[0]).pack;
    // First pack all dead; every other pack a third live (to be rewritten).
    let live: HashSet<BlockId> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| location(&store, id).pack != first && i % 3 == 0)
        .map(|(_, id)| *id)
        .collect();
    store.with_faults(|f| f.space_left = Some(20_000));
    let err = gc(&store, &fx, &live).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(!fx.pack(first.0).exists(), "round A needs no space");
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
        }
    }
    verify_clean(&store);
    // With space again, the gc completes.
    store.with_faults(|f| f.space_left = None);
    let stats = gc(&store, &fx, &live).unwrap();
    assert!(stats.packs_rewritten > 0, "{stats:?}");
    for (i, id) in ids.iter().enumerate() {
        if live.contains(id) {
            assert_eq!(store.get(id).unwrap(), block(i as u64));
        }
    }
    let live_bytes: u64 = live.iter().map(|id| record_len(&store, id)).sum();
    let packs = fx.pack_files().len() as u64;
    assert!(
        stats.pack_bytes_after <= live_bytes + packs * (PACK_HEADER_LEN + FOOTER_LEN) as u64,
        "{stats:?}"
    );
    verify_clean(&store);
}

#[test]
fn reads_beside_a_gc_follow_moved_blocks() {
    let fx = Fixture::new();
    let store = std::sync::Arc::new(fx.open_with(Config {
        compression_level: 3,
        max_pack_size: 64 << 10,
        ..Config::default()
    }));
    let ids = put_blocks(&store, 0..30);
    let live: HashSet<BlockId> = ids.iter().copied().collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop, ids) = (store.clone(), stop.clone(), ids.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, id) in ids.iter().enumerate() {
                    assert_eq!(store.get(id).unwrap(), block(i as u64), "block {i}");
                    reads += 1;
                }
            }
            reads
        })
    };
    // Each round adds blocks nobody keeps next to the live ones, so every pack is
    // rewritten and the live blocks move every time.
    for round in 0..20u64 {
        put_blocks(&store, 1000 + round * 50..1000 + round * 50 + 40);
        let stats = gc(&store, &fx, &live).unwrap();
        assert!(
            stats.blocks_moved > 0 || stats.packs_deleted > 0,
            "{stats:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    verify_clean(&store);
}

/// A host that flushes sled and calls `step` with the step's number between the sweep's
/// steps (no lock of the store held there).
struct Stepped<'a> {
    tree: sled::Tree,
    steps: usize,
    step: &'a mut dyn FnMut(usize),
}

impl GcHost for Stepped<'_> {
    fn commit_index(&mut self) -> crate::Result<()> {
        self.tree.flush()?;
        Ok(())
    }

    fn between_steps(&mut self) {
        (self.step)(self.steps);
        self.steps += 1;
    }
}

#[test]
fn a_put_during_the_sweep_keeps_a_block_that_was_dead_at_the_mark() {
    let mut fx = Fixture::new();
    let store = fx.open();
    let ids = put_blocks(&store, 0..20);
    // The walk lists dead entries in key order; round A drops them 4 per step.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    let (first, last) = (order[0], order[ids.len() - 1]);
    let policy = GcPolicy {
        batch_entries: 4,
        ..GcPolicy::default()
    };
    let session = store.gc_begin();
    let mut step = |n: usize| {
        if n != 0 {
            return;
        }
        // After the first step: `first` is dropped, `last` still indexed.
        assert!(!store.contains(&ids[first]).unwrap());
        assert!(store.contains(&ids[last]).unwrap());
        // A put deduplicating against `last` (dead at the mark, not dropped yet) ...
        assert_eq!(store.put(&block(last as u64)).unwrap(), ids[last]);
        assert_eq!(location(&store, &ids[last]).pack, PackId(0), "deduplicated");
        // ... and one of `first`, which was dropped: stored anew.
        assert_eq!(store.put(&block(first as u64)).unwrap(), ids[first]);
        assert_ne!(location(&store, &ids[first]).pack, PackId(0));
    };
    // Nothing is live by the mark: without the puts, pack 0 would be deleted whole.
    let stats = session
        .sweep(
            &|_| false,
            &policy,
            &mut Stepped {
                tree: fx.tree(),
                steps: 0,
                step: &mut step,
            },
        )
        .unwrap();
    assert_eq!(stats.blocks_dropped, ids.len() as u64 - 1, "{stats:?}");
    assert_eq!(stats.blocks_revived, 1, "{stats:?}");
    // The pack of the kept block is rewritten, not deleted.
    assert_eq!(
        (
            stats.packs_deleted,
            stats.packs_rewritten,
            stats.blocks_moved
        ),
        (0, 1, 1),
        "{stats:?}"
    );
    assert!(!fx.pack(0).exists());
    for i in [first, last] {
        assert_eq!(store.get(&ids[i]).unwrap(), block(i as u64));
        assert_ne!(location(&store, &ids[i]).pack, PackId(0));
    }
    for (i, id) in ids.iter().enumerate() {
        if i != first && i != last {
            assert!(matches!(store.get(id), Err(Error::NotFound(_))), "{i}");
        }
    }
    verify_clean(&store);
    store.sync().unwrap();
    drop(store);
    fx.restart_index();
    let store = fx.open();
    for i in [first, last] {
        assert_eq!(store.get(&ids[i]).unwrap(), block(i as u64));
    }
    verify_clean(&store);
}

#[test]
fn puts_and_reads_beside_a_sweep_never_lose_a_block() {
    // A writer puts (and syncs) blocks of a pool, most of them dead by the mark, while
    // sweeps in small steps drop and move entries: every block it was given stays
    // readable, during the sweep and after it.
    let fx = Fixture::new();
    let store = fx.open_with(Config {
        compression_level: 3,
        max_pack_size: 64 << 10,
        ..Config::default()
    });
    let policy = GcPolicy {
        batch_entries: 3,
        batch_bytes: 16 << 10,
        ..GcPolicy::default()
    };
    const POOL: u64 = 90;
    for round in 0..8u64 {
        put_blocks(&store, 0..POOL);
        let session = store.gc_begin();
        let live: HashSet<BlockId> = (0..POOL)
            .filter(|i| i % 4 == round % 4)
            .map(|i| BlockId::of(&block(i)))
            .collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let put = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut put = Vec::new();
                let mut k = round;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    k = (k * 31 + 7) % POOL;
                    let id = store.put(&block(k)).unwrap();
                    assert_eq!(store.get(&id).unwrap(), block(k), "block {k}");
                    put.push(k);
                    if put.len().is_multiple_of(5) {
                        store.sync().unwrap();
                    }
                }
                put
            });
            let tree = fx.tree();
            let stats = session
                .sweep(
                    &|id| live.contains(id),
                    &policy,
                    &mut || -> crate::Result<()> {
                        tree.flush()?;
                        Ok(())
                    },
                )
                .unwrap();
            assert!(stats.problems.is_empty(), "{stats:?}");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            writer.join().unwrap()
        });
        for k in (0..POOL).filter(|i| i % 4 == round % 4).chain(put) {
            assert_eq!(
                store.get(&BlockId::of(&block(k))).unwrap(),
                block(k),
                "round {round}, block {k}"
            );
        }
        store.sync().unwrap();
        verify_clean(&store);
    }
}
