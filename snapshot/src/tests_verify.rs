//! `verify`'s block-map checks (`verify_blocks`): each record version is checked once,
//! and a bad one is reported in exactly the trees that read it, under the file's path
//! there; records of missing or deleted inodes are found.

use std::sync::Arc;

use strata_blockstore::BlockId;

use crate::tests::{new_store, reopen, BS};
use crate::*;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn file(v: &Volume, name: &str, blocks: u64, seed: u8) -> InodeNo {
    let ino = v
        .mknod(
            InodeNo::ROOT,
            name.as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            CTX,
        )
        .unwrap()
        .ino;
    let data: Vec<u8> = (0..blocks as usize * BS as usize)
        .map(|i| (i / 511) as u8 ^ seed)
        .collect();
    v.write(ino, 0, &data).unwrap();
    ino
}

fn problems(s: &Arc<Store>) -> Vec<String> {
    s.verify(&mut |_, _| {}).unwrap().problems
}

/// Stages `payload` as the live generation's version of block `idx` of `ino` and
/// commits it, as a bug or a damaged database could leave it.
fn put_block_record(s: &Arc<Store>, ino: InodeNo, idx: u64, payload: &[u8]) {
    let live = s.main();
    let mut st = live.lock();
    st.meta.put(&crate::keys::block(ino, idx), payload);
    s.commit_locked(&mut st).unwrap();
}

#[test]
fn a_record_naming_a_missing_block_is_reported_in_the_trees_that_read_it() {
    let (dir, s) = new_store();
    let live = s.main();
    let f = file(&live, "f", 4, 1);
    s.sync().unwrap();
    s.snapshot_create(MAIN_BRANCH, "before").unwrap();
    // After the snapshot: block 2 of the live file names a block never stored.
    let ghost = BlockId([7; 32]);
    put_block_record(&s, f, 2, &ghost.0);
    s.snapshot_create(MAIN_BRANCH, "after").unwrap();
    let off = 2 * BS;
    let want = format!("/f: data at offset {off} names block {ghost}, which is not stored");
    let check = |s: &Arc<Store>| {
        let p = problems(s);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p.contains(&want), "{p:#?}");
        assert!(p.contains(&format!("snapshot after: {want}")), "{p:#?}");
        // The snapshot taken before reads the old block: clean.
        assert!(!p.iter().any(|l| l.contains("before")), "{p:#?}");
    };
    check(&s);
    drop(live);
    check(&reopen(&dir, s));
}

#[test]
fn a_record_rewritten_by_a_later_generation_is_reported_only_where_still_read() {
    let (_dir, s) = new_store();
    let live = s.main();
    let f = file(&live, "f", 4, 1);
    s.sync().unwrap();
    let ghost = BlockId([9; 32]);
    put_block_record(&s, f, 1, &ghost.0);
    s.snapshot_create(MAIN_BRANCH, "bad").unwrap();
    // The live tree rewrites block 1: only the snapshot still reads the missing block.
    live.write(f, BS as u64, &vec![5u8; BS as usize]).unwrap();
    s.sync().unwrap();
    let p = problems(&s);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("snapshot bad: /f: data at offset"),
        "{p:#?}"
    );
}

#[test]
fn block_records_of_a_missing_inode_are_found() {
    let (_dir, s) = new_store();
    let live = s.main();
    file(&live, "f", 2, 1);
    s.sync().unwrap();
    // A record for an inode no generation has.
    put_block_record(&s, InodeNo(999), 0, &[3; 32]);
    let p = problems(&s);
    assert!(
        p.iter()
            .any(|l| l.contains("inode 999: block record at offset 0 for a missing inode")),
        "{p:#?}"
    );
}

#[test]
fn an_inode_deleted_without_its_blocks_is_found() {
    let (_dir, s) = new_store();
    let live = s.main();
    let f = file(&live, "f", 3, 1);
    s.sync().unwrap();
    s.snapshot_create(MAIN_BRANCH, "with-f").unwrap();
    assert!(problems(&s).is_empty());
    // The live generation drops the inode record and its entry, not its blocks.
    {
        let mut st = live.lock();
        st.meta.delete(&crate::keys::inode(f)).unwrap();
        st.meta
            .delete(&crate::keys::dirent(InodeNo::ROOT, b"f"))
            .unwrap();
        s.commit_locked(&mut st).unwrap();
    }
    let p = problems(&s);
    assert!(
        p.iter().any(|l| l.contains(&format!(
            "inode {}: deleted, but 3 block records are still visible",
            f.0
        ))),
        "{p:#?}"
    );
    // The same while the snapshot holding the inode's records is deleted and not yet
    // flattened (its versions are checked tree by tree).
    s.snapshot_delete("with-f", false).unwrap();
    assert!(s.flatten_pending().unwrap());
    let p = problems(&s);
    assert!(
        p.iter().any(|l| l.contains(&format!(
            "inode {}: block record at offset 0 for a missing inode",
            f.0
        ))),
        "{p:#?}"
    );
    // Deleted properly, nothing is left to report.
    let (_dir, s) = new_store();
    let live = s.main();
    file(&live, "f", 3, 1);
    s.sync().unwrap();
    s.snapshot_create(MAIN_BRANCH, "with-f").unwrap();
    live.unlink(InodeNo::ROOT, b"f").unwrap();
    s.sync().unwrap();
    assert!(problems(&s).is_empty(), "{:#?}", problems(&s));
    s.snapshot_delete("with-f", false).unwrap();
    assert!(problems(&s).is_empty(), "{:#?}", problems(&s));
}

#[test]
fn the_read_index_check_finds_a_wrong_twin_and_an_unlisted_checkpoint_across_steps() {
    use crate::keys::{self, CHUNK_BLOCKS};
    let (_dir, s) = new_store();
    let live = s.main();
    let f = file(&live, "f", 3 * CHUNK_BLOCKS, 1);
    s.sync().unwrap();
    // Rewrites in every chunk and snapshots: enough entries for checkpoints (unit tests
    // bound walks at a few entries) and for many steps of the check (a few records each).
    for round in 0..6u64 {
        for chunk in 0..3 {
            let idx = chunk * CHUNK_BLOCKS + (round * 7) % CHUNK_BLOCKS;
            live.write(f, idx * BS as u64, &vec![round as u8 + 9; BS as usize])
                .unwrap();
        }
        s.sync().unwrap();
        s.snapshot_create(MAIN_BRANCH, &format!("s{round}"))
            .unwrap();
    }
    assert!(problems(&s).is_empty(), "{:#?}", problems(&s));
    let first = |lo: Vec<u8>, hi: Vec<u8>| {
        let st = s.lock();
        let found = st.meta.committed_range(&lo, Some(&hi)).next();
        found.expect("an entry").unwrap().0
    };
    let twin = first(keys::rchunk(f, 1), keys::rchunk(f, 2));
    // The same envelope, another block id.
    let mut other = s.lock().meta.get_raw(&twin).unwrap().unwrap();
    *other.last_mut().unwrap() ^= 0xff;
    let listing = first(vec![keys::CHECKPOINT_REF], vec![keys::CHECKPOINT_REF + 1]);
    {
        let mut st = live.lock();
        st.meta.put_raw(twin.clone(), other);
        st.meta.remove_raw(listing);
        s.commit_locked(&mut st).unwrap();
    }
    let p = problems(&s);
    let slot = u64::from(twin[25]);
    let wrong = format!(
        "read index: inode {} block {} differs from the block map",
        f.0,
        CHUNK_BLOCKS + slot
    );
    assert!(p.contains(&wrong), "{p:#?}");
    assert!(p.iter().any(|l| l.ends_with("is not listed")), "{p:#?}");
}
