//! Defragmentation: a file scattered by rewrites across snapshots is laid out in one run,
//! the live tree and every snapshot read exactly what they read before (also after a
//! reopen), the store verifies clean, a second run finds nothing to do, and gc then
//! frees the old copies.

use std::sync::Arc;

use crate::tests::{new_store, reopen, BS};
use crate::*;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    umask: 0,
};
const BLOCKS: u64 = 96;

fn block(i: u64, round: u64) -> Vec<u8> {
    // Incompressible enough that every block is its own record of about BS bytes.
    let mut x = (i << 32 | round).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..BS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_all(v: &Volume, ino: InodeNo) -> Vec<u8> {
    v.read(ino, 0, (BLOCKS * BS as u64) as u32).unwrap()
}

fn contents(s: &Arc<Store>, ino: InodeNo, snaps: &[String]) -> Vec<Vec<u8>> {
    let mut out = vec![read_all(&s.main(), ino)];
    for name in snaps {
        let v = s
            .volume(VolumeKind::Snapshot(s.snapshot_gen(name).unwrap()))
            .unwrap();
        out.push(read_all(&v, ino));
    }
    out
}

#[test]
fn a_scattered_file_is_laid_out_in_one_run_and_every_tree_reads_the_same() {
    let (dir, s) = new_store();
    let (ino, snaps) = scattered(&s);
    let main = s.main();
    let small = main
        .mknod(InodeNo::ROOT, b"small", libc::S_IFREG | 0o644, 0, CTX)
        .unwrap()
        .ino;
    main.write(small, 0, b"one block only").unwrap();
    let before = contents(&s, ino, &snaps);

    let mut seen = Vec::new();
    let report = s
        .defrag(256 << 10, &mut |done, total| seen.push((done, total)))
        .unwrap();
    // Progress in bytes of files: never back, ends at the total of both files' sizes.
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    let want = BLOCKS * BS as u64 + b"one block only".len() as u64;
    assert_eq!(seen.last(), Some(&(want, want)), "{seen:?}");
    assert_eq!(report.files_examined, 1, "{report:?}"); // `small` has one block
    assert_eq!(report.files_defragmented, 1, "{report:?}");
    assert!(report.runs_before > 10, "{report:?}");
    assert_eq!(report.runs_after, 1, "{report:?}");
    assert_eq!(report.blocks_moved, BLOCKS, "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(contents(&s, ino, &snaps), before);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());

    drop(main);
    let s = reopen(&dir, s);
    assert_eq!(contents(&s, ino, &snaps), before);
    let again = s.defrag(DEFRAG_GROUP_BYTES, &mut |_, _| {}).unwrap();
    assert_eq!(
        (again.files_examined, again.files_defragmented),
        (1, 0),
        "{again:?}"
    );

    let gc = s.gc().unwrap();
    assert!(gc.freed_bytes >= BLOCKS * BS as u64 / 2, "{gc:?}");
    assert_eq!(contents(&s, ino, &snaps), before);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

/// A file of `BLOCKS` blocks scattered by rewrites over 6 snapshots; its inode and the
/// snapshot names.
fn scattered(s: &Arc<Store>) -> (InodeNo, Vec<String>) {
    let main = s.main();
    let ino = main
        .mknod(InodeNo::ROOT, b"f", libc::S_IFREG | 0o644, 0, CTX)
        .unwrap()
        .ino;
    for i in 0..BLOCKS {
        main.write(ino, i * BS as u64, &block(i, 0)).unwrap();
    }
    s.sync().unwrap();
    let mut snaps = Vec::new();
    for round in 1..=6u64 {
        snaps.push(format!("s{round}"));
        s.snapshot_create(MAIN_BRANCH, snaps.last().unwrap())
            .unwrap();
        for i in (round % 3..BLOCKS).step_by(2 + round as usize) {
            main.write(ino, i * BS as u64, &block(i, round)).unwrap();
        }
        s.sync().unwrap();
    }
    (ino, snaps)
}

fn runs(s: &Store, ino: InodeNo) -> u64 {
    s.blocks
        .runs(&s.block_ids(MAIN_BRANCH, ino).unwrap())
        .unwrap()
}

#[test]
fn a_long_read_of_a_scattered_live_file_queues_it_and_relocation_lays_it_out() {
    use std::time::Duration;
    let (dir, s) = new_store();
    let (ino, snaps) = scattered(&s);
    assert!(runs(&s, ino) > 10, "{}", runs(&s, ino));
    let main = s.main();
    // Just written, the file is hot: a whole read leaves it alone.
    read_all(&main, ino);
    assert!(!s.relocation_ready(Duration::ZERO));
    s.set_defrag_hot_secs(0);
    // Short reads of the live file, and whole reads of the snapshots, queue nothing.
    for at in 0..BLOCKS / 8 {
        main.read(ino, at * 8 * BS as u64, 8 * BS).unwrap();
    }
    for name in &snaps {
        let v = s
            .volume(VolumeKind::Snapshot(s.snapshot_gen(name).unwrap()))
            .unwrap();
        read_all(&v, ino);
    }
    assert!(!s.relocation_ready(Duration::ZERO));

    let before = contents(&s, ino, &snaps); // the live file first, whole
    assert!(s.relocation_ready(Duration::ZERO));
    assert!(
        !s.relocation_ready(Duration::from_secs(3600)),
        "just queued"
    );
    let (report, more) = s.relocate_queued().unwrap();
    assert!(!more, "{report:?}");
    assert_eq!(report.blocks_moved, BLOCKS, "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(runs(&s, ino), 1);
    assert_eq!(contents(&s, ino, &snaps), before);
    // Laid out, the file queues nothing when read again.
    assert_eq!(read_all(&main, ino), before[0]);
    assert!(!s.relocation_ready(Duration::ZERO));
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());

    drop(main);
    let s = reopen(&dir, s);
    assert_eq!(contents(&s, ino, &snaps), before);
    let gc = s.gc().unwrap();
    assert!(gc.freed_bytes >= BLOCKS * BS as u64 / 2, "{gc:?}");
    assert_eq!(contents(&s, ino, &snaps), before);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

/// A new store whose strata.toml has `key` (on by default) switched off, opened with no
/// wait for files to cool.
fn store_with_off(key: &str) -> (tempfile::TempDir, Arc<Store>) {
    let (dir, s) = new_store();
    s.close().unwrap();
    drop(s);
    let toml = dir.path().join("store/strata.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let (on, off) = (format!("{key} = true"), format!("{key} = false"));
    assert!(text.contains(&on), "{text}");
    std::fs::write(&toml, text.replace(&on, &off)).unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap();
    s.set_defrag_hot_secs(0);
    (dir, s)
}

#[test]
fn with_defrag_on_read_off_a_scattered_file_is_not_queued() {
    use std::time::Duration;
    let (_dir, s) = store_with_off("defrag_on_read");
    let (ino, _) = scattered(&s);
    read_all(&s.main(), ino);
    assert!(!s.relocation_ready(Duration::ZERO));
    assert!(runs(&s, ino) > 10);
}

#[test]
fn rewritten_ranges_found_scattered_are_queued_once_the_file_cooled() {
    use std::time::Duration;
    let (dir, s) = new_store();
    let (ino, snaps) = scattered(&s);
    let before = contents(&s, ino, &snaps);
    // Just rewritten, the file is hot: nothing is queued yet.
    assert_eq!(s.queue_rewritten(false).unwrap(), 0);
    assert!(!s.relocation_ready(Duration::ZERO));
    // Cooled (no wait in this test): both ranges the commits wrote (1 MiB and 512 KiB)
    // are found scattered and queued, once.
    s.set_defrag_hot_secs(0);
    assert_eq!(s.queue_rewritten(false).unwrap(), BLOCKS);
    assert_eq!(s.queue_rewritten(true).unwrap(), 0);
    // Relocation waits for a pause in the writes too.
    std::thread::sleep(Duration::from_millis(150));
    assert!(s.relocation_ready(Duration::from_millis(100)));
    let main = s.main();
    let h = main
        .mknod(InodeNo::ROOT, b"h", libc::S_IFREG | 0o644, 0, CTX)
        .unwrap()
        .ino;
    main.write(h, 0, b"a write").unwrap();
    assert!(!s.relocation_ready(Duration::from_millis(100)));
    let (report, more) = s.relocate_queued().unwrap();
    assert!(!more, "{report:?}");
    assert_eq!(report.blocks_moved, BLOCKS, "{report:?}");
    assert_eq!(runs(&s, ino), 1);
    assert_eq!(contents(&s, ino, &snaps), before);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
    // A file written whole by one commit lies in one run: looked at, left alone.
    let g = main
        .mknod(InodeNo::ROOT, b"g", libc::S_IFREG | 0o644, 0, CTX)
        .unwrap()
        .ino;
    for i in 0..BLOCKS {
        main.write(g, i * BS as u64, &block(i, 9)).unwrap();
    }
    s.sync().unwrap();
    assert_eq!(s.queue_rewritten(true).unwrap(), 0);
    assert!(!s.relocation_ready(Duration::ZERO));
    drop(main);
    let s = reopen(&dir, s);
    assert_eq!(contents(&s, ino, &snaps), before);
}

#[test]
fn the_blocks_queued_for_rewritten_files_stay_within_what_commits_wrote() {
    let (dir, s) = new_store();
    let (ino, snaps) = scattered(&s);
    // Opened again, the store has written nothing yet.
    let s = reopen(&dir, s);
    let main = s.main();
    let live = read_all(&main, ino); // hot: the read queues nothing
    s.set_defrag_hot_secs(0);
    assert!(!s.relocation_ready(std::time::Duration::ZERO));
    let rewrite = |i: u64| {
        let at = (i * BS as u64) as usize;
        main.write(ino, i * BS as u64, &live[at..at + BS as usize])
            .unwrap();
    };
    // One block of each range, with the bytes it holds: 2 blocks written, so 2 blocks of
    // budget, less than a range; nothing is queued, the ranges wait.
    rewrite(0);
    rewrite(BLOCKS - 1);
    s.sync().unwrap();
    assert_eq!(s.queue_rewritten(true).unwrap(), 0);
    // Every block rewritten the same way: now the budget covers both ranges.
    for i in 0..BLOCKS {
        rewrite(i);
    }
    s.sync().unwrap();
    assert_eq!(s.queue_rewritten(true).unwrap(), BLOCKS);
    s.relocate_queued().unwrap();
    assert_eq!(runs(&s, ino), 1);
    assert_eq!(read_all(&main, ino), live);
    let snap = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen(&snaps[0]).unwrap()))
        .unwrap();
    assert_eq!(read_all(&snap, ino).len(), live.len());
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn with_defrag_rewritten_off_rewrites_are_not_looked_at() {
    let (_dir, s) = store_with_off("defrag_rewritten");
    let (ino, _) = scattered(&s);
    assert_eq!(s.queue_rewritten(true).unwrap(), 0);
    assert!(runs(&s, ino) > 10);
}
