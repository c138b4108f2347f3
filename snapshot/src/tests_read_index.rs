//! The read index (docs/metadata.md, "Read index"): after hundreds of generations a read
//! at every generation visits a bounded number of entries per chunk and reads what the
//! `B` records say; rollback and clones jump over other branches; deleting and
//! flattening keeps it exact; a store without the index gets it at open.

use std::sync::Arc;

use crate::keys::CHUNK_BLOCKS;
use crate::meta::MAX_WALK;
use crate::tests::{new_store, reopen, BS};
use crate::*;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    umask: 0,
};
/// Three chunks, the last one partly a hole.
const BLOCKS: u64 = 2 * CHUNK_BLOCKS + 20;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn block(i: u64, round: u64) -> Vec<u8> {
    let b = (i * 31 + round * 7) as u8;
    (0..BS).map(|j| b ^ (j >> 9) as u8).collect()
}

/// Longest walk allowed: `MAX_WALK` entries, one generation's deltas, its checkpoint,
/// plus `jumps` entries of other branches (one per re-seek).
fn bound(jumps: usize) -> usize {
    MAX_WALK + CHUNK_BLOCKS as usize + 1 + jumps
}

/// Every generation: each chunk's walk is within `bound(jumps)` and reads as `B` says.
fn check_walks(s: &Arc<Store>, ino: InodeNo, jumps: usize) -> usize {
    let st = s.lock();
    let mut longest = 0;
    for g in st.gens.all.keys() {
        let view = st.gens.view(*g).unwrap();
        for chunk in 0..BLOCKS.div_ceil(CHUNK_BLOCKS) {
            let last = CHUNK_BLOCKS as usize - 1;
            let walk = st
                .meta
                .walk_chunk(ino, chunk, &view, (0, last), false)
                .unwrap();
            assert!(
                walk.visited <= bound(jumps),
                "generation {} chunk {chunk}: {} entries visited",
                g.0,
                walk.visited
            );
            longest = longest.max(walk.visited);
            let walked: Vec<Option<Vec<u8>>> =
                walk.slots.into_iter().map(Option::flatten).collect();
            assert_eq!(
                walked,
                st.meta.chunk_from_block_map(ino, chunk, &view).unwrap(),
                "generation {} chunk {chunk}",
                g.0
            );
        }
    }
    longest
}

/// A file of `BLOCKS` blocks, then `gens` snapshots each rewriting (or punching, one
/// time in eight) three random blocks.
fn history(gens: u64) -> (tempfile::TempDir, Arc<Store>, InodeNo) {
    let (dir, s) = new_store();
    let v = s.main();
    let ino = v
        .mknod(InodeNo::ROOT, b"f", libc::S_IFREG | 0o644, 0, CTX)
        .unwrap()
        .ino;
    for i in 0..BLOCKS - 20 {
        v.write(ino, i * BS as u64, &block(i, 0)).unwrap();
    }
    s.snapshot_create(MAIN_BRANCH, "s0").unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 1..=gens {
        for _ in 0..3 {
            let i = rng.below(BLOCKS);
            if rng.below(8) == 0 {
                let punch = FallocateMode {
                    keep_size: true,
                    punch_hole: true,
                    zero_range: false,
                };
                v.fallocate(ino, i * BS as u64, BS as u64, punch).unwrap();
            } else {
                v.write(ino, i * BS as u64, &block(i, round)).unwrap();
            }
        }
        s.snapshot_create(MAIN_BRANCH, &format!("s{round}"))
            .unwrap();
    }
    (dir, s, ino)
}

#[test]
fn walks_stay_bounded_over_hundreds_of_generations() {
    let (dir, s, ino) = history(300);
    let longest = check_walks(&s, ino, 0);
    // Without checkpoints the first chunk alone would hold over 64 + 300 entries.
    assert!(
        longest > MAX_WALK,
        "checkpoints were never needed: {longest}"
    );
    let s = reopen(&dir, s);
    check_walks(&s, ino, 0);
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    s.close().unwrap();
}

#[test]
fn rollback_and_clone_jump_over_the_other_branch() {
    let (dir, s, ino) = history(120);
    s.rollback(MAIN_BRANCH, "s0", true).unwrap();
    s.clone_branch("s60", "side").unwrap();
    let side = s.volume(VolumeKind::Branch("side".into())).unwrap();
    let main = s.main();
    // Both branches write and snapshot in turns, so every commit holds both heads'
    // versions; each head's walks must be bounded.
    let mut rng = Rng(7);
    for round in 0..80 {
        for v in [&side, &main] {
            let i = rng.below(BLOCKS);
            v.write(ino, i * BS as u64, &block(i, 1000 + round))
                .unwrap();
        }
        if round % 2 == 0 {
            s.snapshot_create("side", &format!("side{round}")).unwrap();
        } else {
            s.snapshot_create(MAIN_BRANCH, &format!("main{round}"))
                .unwrap();
        }
    }
    side.write(ino, 5 * BS as u64, &block(5, 999)).unwrap();
    main.write(ino, 7 * BS as u64, &block(7, 999)).unwrap();
    s.sync().unwrap();
    drop(main);
    // A walk jumps over another branch's versions once per run of them between its
    // generation and its ancestors: here the branches alternate up to 80 times.
    check_walks(&s, ino, 82);
    let main = s.main().read(ino, 0, (BLOCKS * BS as u64) as u32).unwrap();
    assert_eq!(&main[7 * BS as usize..8 * BS as usize], &block(7, 999)[..]);
    drop(side);
    let s = reopen(&dir, s);
    check_walks(&s, ino, 82);
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    s.close().unwrap();
}

#[test]
fn flattening_keeps_walks_exact_and_bounded() {
    let (dir, s, ino) = history(200);
    let mut rng = Rng(99);
    for snap in s.snapshots() {
        if rng.below(4) != 0 {
            s.snapshot_delete(&snap.name, false).unwrap();
        }
    }
    s.flatten(500, std::time::Duration::ZERO, &mut |_| true)
        .unwrap();
    assert!(!s.flatten_pending().unwrap());
    check_walks(&s, ino, 0);
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let s = reopen(&dir, s);
    check_walks(&s, ino, 0);
    s.close().unwrap();
}

#[test]
fn a_store_without_the_index_gets_it_at_open() {
    let (dir, s, ino) = history(40);
    let before = s.main().read(ino, 0, (BLOCKS * BS as u64) as u32).unwrap();
    {
        // Make it a store from before the index: no R, K, Q, no state key.
        let st = s.lock();
        let db = st.meta.db();
        let tree = db.open_tree(crate::meta::TREE).unwrap();
        for kind in [
            crate::keys::READ,
            crate::keys::CHECKPOINT,
            crate::keys::CHECKPOINT_REF,
        ] {
            for item in tree.range(vec![kind]..vec![kind + 1]) {
                tree.remove(item.unwrap().0).unwrap();
            }
        }
        tree.remove(crate::keys::state("read_index")).unwrap();
        tree.flush().unwrap();
    }
    let s = reopen(&dir, s);
    assert_eq!(
        s.main().read(ino, 0, (BLOCKS * BS as u64) as u32).unwrap(),
        before
    );
    // The next flatten run checkpoints the old history.
    assert!(s.flatten_pending().unwrap());
    s.flatten(64, std::time::Duration::ZERO, &mut |_| true)
        .unwrap();
    assert!(!s.flatten_pending().unwrap());
    check_walks(&s, ino, 0);
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    s.close().unwrap();
}

#[test]
fn small_reads_find_each_block_by_itself_or_fall_back_to_the_walk() {
    let (_dir, s, ino) = history(40);
    s.clone_branch("s20", "side").unwrap();
    let side = s.volume(VolumeKind::Branch("side".into())).unwrap();
    let main = s.main();
    // The side branch rewrites block 3 in 30 generations; main then writes block 4 and
    // snapshots, so below main's head lie 30 versions of block 3 that main does not see
    // (more than a point lookup steps over: its read falls back to the walk).
    for round in 0..30 {
        side.write(ino, 3 * BS as u64, &block(3, 500 + round))
            .unwrap();
        s.snapshot_create("side", &format!("side{round}")).unwrap();
    }
    main.write(ino, 4 * BS as u64, &block(4, 777)).unwrap();
    s.snapshot_create(MAIN_BRANCH, "after").unwrap();
    for v in [&main, &side] {
        let size = v.getattr(ino).unwrap().size;
        let all = v.read(ino, 0, size as u32).unwrap();
        let blocks = size / BS as u64;
        // Every read of one to three blocks (point lookups) agrees with the whole read
        // (chunk walks), on both branches, at block 3 (30 foreign versions below main)
        // and elsewhere.
        for first in [0, 2, 3, 4, CHUNK_BLOCKS - 1, blocks - 3] {
            for n in 1..=3u64 {
                let at = first * BS as u64;
                let got = v.read(ino, at, (n * BS as u64) as u32).unwrap();
                let end = at as usize + got.len();
                assert_eq!(
                    &got[..],
                    &all[at as usize..end],
                    "block {first}, {n} blocks"
                );
            }
        }
    }
    let one = |v: &Volume, i: u64| v.read(ino, i * BS as u64, BS).unwrap();
    assert_eq!(one(&side, 3), block(3, 529));
    assert_eq!(one(&main, 4), block(4, 777));
    assert_ne!(one(&main, 3), block(3, 529));
    // The same through the block map itself: a point lookup gives up past 16 foreign
    // versions, and the walk then answers.
    let st = main.lock();
    let walked = st.meta.block_map(ino, 0, CHUNK_BLOCKS - 1).unwrap();
    let at3 = walked.iter().find(|(i, _)| *i == 3).cloned();
    assert_eq!(
        st.meta.block_map(ino, 3, 3).unwrap(),
        at3.into_iter().collect::<Vec<_>>()
    );
    assert!(st
        .meta
        .get_within(&crate::keys::block(ino, 3), 16)
        .unwrap()
        .is_none());
}

/// A read-index key of the wrong length used to panic verify (`split_chunk` read the
/// chunk before `split_rkey` checked the length); it is reported as a bad key.
#[test]
fn verify_reports_a_short_read_index_key() {
    let (_dir, s, ino) = history(3);
    {
        let st = s.lock();
        let tree = st.meta.db().open_tree(crate::meta::TREE).unwrap();
        let mut short = crate::keys::rchunk(ino, 0);
        short.truncate(12);
        tree.insert(&short, &[1u8][..]).unwrap();
        let mut p_short = crate::keys::pchunk(ino, 0);
        p_short.truncate(11);
        tree.insert(&p_short, &[0u8; 8][..]).unwrap();
    }
    let report = s.verify(&mut |_, _| {}).unwrap();
    let bad: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.contains("read index: bad key"))
        .collect();
    assert_eq!(bad.len(), 2, "{:?}", report.problems);
    s.close().unwrap();
}
