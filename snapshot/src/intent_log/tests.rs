//! The intent log end to end in the store, without FUSE: what an fsync made durable
//! comes back after a crash (the store dropped without a commit), what was not does not.

use std::sync::Arc;

use crate::tests::{new_store, BS};
use crate::*;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn file(s: &Arc<Store>, name: &str) -> InodeNo {
    s.main()
        .mknod(
            InodeNo::ROOT,
            name.as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            CTX,
        )
        .unwrap()
        .ino
}

/// Drops the store without committing (what a kill -9 leaves), and opens it again.
fn crash(dir: &tempfile::TempDir, s: Arc<Store>) -> Arc<Store> {
    drop(s);
    Store::open(&dir.path().join("store")).unwrap()
}

fn lookup(s: &Arc<Store>, name: &str) -> Option<Attr> {
    s.main().lookup(InodeNo::ROOT, name.as_bytes()).ok()
}

fn content(s: &Arc<Store>, name: &str) -> Vec<u8> {
    let a = lookup(s, name).unwrap_or_else(|| panic!("{name} is missing"));
    s.main().read(a.ino, 0, a.size as u32 + 1).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn what_fsync_made_durable_survives_a_crash_and_nothing_later_does() {
    let (dir, s) = new_store();
    let a = file(&s, "a");
    let data = pattern(3 * BS as usize + 100, 1);
    s.main().write(a, 0, &data).unwrap();
    s.main().write(a, 10, b"overwritten").unwrap();
    s.main().fsync(a).unwrap();
    let late = file(&s, "late");
    s.main().write(late, 0, b"never synced").unwrap();
    s.main().write(a, 0, b"XX").unwrap();
    let s = crash(&dir, s);
    let mut want = data.clone();
    want[10..21].copy_from_slice(b"overwritten");
    assert_eq!(content(&s, "a"), want);
    assert!(lookup(&s, "late").is_none(), "created after the last fsync");
    // The replay was committed: a second crash keeps it, and new fsyncs still work.
    let b = file(&s, "b");
    s.main().write(b, 0, b"second").unwrap();
    s.main().fsync(b).unwrap();
    let s = crash(&dir, s);
    assert_eq!(content(&s, "a"), want);
    assert_eq!(content(&s, "b"), b"second");
}

#[test]
fn records_after_a_commit_replay_over_it() {
    let (dir, s) = new_store();
    let a = file(&s, "a");
    s.main().write(a, 0, &pattern(5000, 2)).unwrap();
    s.main().fsync(a).unwrap();
    s.sync().unwrap(); // a commit: the log starts again under the next epoch
    s.main().write(a, 4000, &pattern(2000, 3)).unwrap();
    s.main().fsync(a).unwrap();
    let s = crash(&dir, s);
    let mut want = pattern(5000, 2);
    want.truncate(4000);
    want.extend_from_slice(&pattern(2000, 3));
    assert_eq!(content(&s, "a"), want);
}

#[test]
fn truncation_holes_renames_and_unlinks_replay_in_order() {
    let (dir, s) = new_store();
    let v = s.main();
    let a = file(&s, "a");
    let b = file(&s, "b");
    v.write(a, 0, &pattern(2 * BS as usize, 4)).unwrap();
    v.write(b, 0, b"bee").unwrap();
    v.fsync(a).unwrap();
    // Truncated (a buffered block dropped), then written past a hole.
    let set = SetAttr {
        size: Some(10),
        ..Default::default()
    };
    v.setattr(a, &set).unwrap();
    v.write(a, BS as u64 + 5, b"zz").unwrap();
    v.rename(
        InodeNo::ROOT,
        b"a",
        InodeNo::ROOT,
        b"c",
        RenameFlags::default(),
    )
    .unwrap();
    v.unlink(InodeNo::ROOT, b"b").unwrap();
    v.fsync(a).unwrap();
    drop(v);
    let s = crash(&dir, s);
    let got = content(&s, "c");
    let mut want = pattern(10, 4);
    want.resize(BS as usize + 5, 0);
    want.extend_from_slice(b"zz");
    assert_eq!(got, want);
    assert!(lookup(&s, "a").is_none() && lookup(&s, "b").is_none());
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
}

#[test]
fn a_full_log_and_bulk_data_commit_instead() {
    let (dir, s) = new_store();
    s.close().unwrap();
    drop(s);
    let toml = dir.path().join("store/strata.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("intent_log_mib = 64", "intent_log_mib = 4"),
    )
    .unwrap();
    let s = Store::open(&dir.path().join("store")).unwrap();
    let a = file(&s, "a");
    let chunk = pattern(1 << 19, 5);
    // The log holds at most 4 MiB here (the smallest setting): the ninth fsync commits.
    for i in 0..12u64 {
        s.main().write(a, i << 19, &chunk).unwrap();
        s.main().fsync(a).unwrap();
    }
    assert!(s.lock().log_collected > 12, "records and a commit");
    // Over LOG_DATA_MAX at once: a commit.
    let big = file(&s, "big");
    s.main().write(big, 0, &pattern(3 << 20, 6)).unwrap();
    s.main().fsync(big).unwrap();
    let s = crash(&dir, s);
    assert_eq!(content(&s, "big"), pattern(3 << 20, 6));
    let got = content(&s, "a");
    assert_eq!(got.len(), 6 << 20);
    assert!(got.chunks(1 << 19).all(|c| c == chunk.as_slice()));
}

#[test]
fn concurrent_fsyncs_share_records() {
    let (dir, s) = new_store();
    let inos: Vec<InodeNo> = (0..4).map(|i| file(&s, &format!("f{i}"))).collect();
    std::thread::scope(|scope| {
        for (t, ino) in inos.iter().enumerate() {
            let s = s.clone();
            scope.spawn(move || {
                for n in 0..50u64 {
                    s.main().write(*ino, n * 100, &[t as u8 + 1; 100]).unwrap();
                    s.main().fsync(*ino).unwrap();
                }
            });
        }
    });
    let records = s.lock().log_collected;
    assert!(records <= 200, "{records} records for 200 fsyncs");
    let s = crash(&dir, s);
    for (t, _) in inos.iter().enumerate() {
        assert_eq!(content(&s, &format!("f{t}")), vec![t as u8 + 1; 5000]);
    }
}
