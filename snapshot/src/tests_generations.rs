//! Store-level tests of generations: snapshot, rollback, clone, delete, rename, diff,
//! history and space accounting, each followed by a reopen where it matters.

use std::sync::Arc;

use crate::*;

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    umask: 0,
};
use crate::tests::{new_store, reopen, BS};

fn put(v: &Volume, path: &str, data: &[u8]) -> InodeNo {
    let mut dir = InodeNo::ROOT;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for d in &parts[..parts.len() - 1] {
        dir = match v.lookup(dir, d.as_bytes()) {
            Ok(a) => a.ino,
            Err(_) => v.mkdir(dir, d.as_bytes(), 0o755, CTX).unwrap().ino,
        };
    }
    let name = parts.last().unwrap().as_bytes();
    let ino = match v.lookup(dir, name) {
        Ok(a) => a.ino,
        Err(_) => {
            v.mknod(dir, name, libc::S_IFREG | 0o644, 0, CTX)
                .unwrap()
                .ino
        }
    };
    v.setattr(
        ino,
        &SetAttr {
            size: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    v.write(ino, 0, data).unwrap();
    ino
}

fn get(v: &Volume, path: &str) -> Option<Vec<u8>> {
    let mut ino = InodeNo::ROOT;
    for p in path.split('/').filter(|p| !p.is_empty()) {
        ino = v.lookup(ino, p.as_bytes()).ok()?.ino;
    }
    let size = v.getattr(ino).ok()?.size;
    Some(v.read(ino, 0, size as u32).unwrap())
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 10) as u8)
        .collect()
}

#[test]
fn a_snapshot_keeps_its_content_while_the_live_tree_moves_on() {
    let (dir, s) = new_store();
    let live = s.main();
    put(&live, "a/f", b"one");
    let info = s.snapshot_create(MAIN_BRANCH, "s1").unwrap();
    assert_eq!(info.name, "s1");
    put(&live, "a/f", b"two, longer");
    put(&live, "g", b"new");
    let snap = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s1").unwrap()))
        .unwrap();
    assert_eq!(get(&snap, "a/f").unwrap(), b"one");
    assert_eq!(get(&snap, "g"), None);
    assert!(matches!(
        snap.write(snap.lookup(InodeNo::ROOT, b"a").unwrap().ino, 0, b"x"),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        snap.mkdir(InodeNo::ROOT, b"d", 0o755, CTX),
        Err(Error::ReadOnly)
    ));
    drop((live, snap));
    let s = reopen(&dir, s);
    let snap = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s1").unwrap()))
        .unwrap();
    assert_eq!(get(&snap, "a/f").unwrap(), b"one");
    assert_eq!(get(&s.main(), "a/f").unwrap(), b"two, longer");
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
    s.close().unwrap();
}

#[test]
fn names_are_unique_and_validated_and_rename_works() {
    let (_dir, s) = new_store();
    s.snapshot_create(MAIN_BRANCH, "x").unwrap();
    let e = s.snapshot_create(MAIN_BRANCH, "x").unwrap_err().to_string();
    assert!(e.contains("exists already"), "{e}");
    for bad in ["", ".", "..", "a/b"] {
        assert!(s.snapshot_create(MAIN_BRANCH, bad).is_err());
    }
    let e = s.snapshot_create("nobranch", "y").unwrap_err().to_string();
    assert!(e.contains("no branch named"), "{e}");
    s.snapshot_create(MAIN_BRANCH, "y").unwrap();
    assert!(s.snapshot_rename("x", "y").is_err());
    s.snapshot_rename("x", "z").unwrap();
    let names: Vec<String> = s.snapshots().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["z", "y"]);
    assert_eq!(s.snapshots()[1].parent_name.as_deref(), Some("z"));
    s.close().unwrap();
}

#[test]
fn rollback_keeps_the_previous_state_and_can_itself_be_undone() {
    let (dir, s) = new_store();
    let live = s.main();
    put(&live, "f", b"v1");
    s.snapshot_create(MAIN_BRANCH, "v1").unwrap();
    put(&live, "f", b"v2");
    put(&live, "only-in-v2", b"x");
    s.snapshot_create(MAIN_BRANCH, "v2").unwrap();
    put(&live, "f", b"v3 unsaved");
    let r = s.rollback(MAIN_BRANCH, "v1", false).unwrap();
    assert!(r.saved_as.starts_with("pre-rollback-"), "{}", r.saved_as);
    assert_eq!(get(&live, "f").unwrap(), b"v1");
    assert_eq!(get(&live, "only-in-v2"), None);
    // Later generations stay browsable.
    let v2 = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("v2").unwrap()))
        .unwrap();
    assert_eq!(get(&v2, "f").unwrap(), b"v2");
    // The live tree after the rollback is writable and independent.
    put(&live, "f", b"after");
    drop((live, v2));
    let s = reopen(&dir, s);
    let live = s.main();
    assert_eq!(get(&live, "f").unwrap(), b"after");
    s.rollback(MAIN_BRANCH, &r.saved_as, false).unwrap();
    assert_eq!(get(&live, "f").unwrap(), b"v3 unsaved");
    assert_eq!(get(&live, "only-in-v2").unwrap(), b"x");
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
    s.close().unwrap();
}

#[test]
fn rollback_refuses_while_files_are_open_unless_forced() {
    let (_dir, s) = new_store();
    let live = s.main();
    let f = put(&live, "f", b"old");
    s.snapshot_create(MAIN_BRANCH, "s").unwrap();
    put(&live, "f", b"new!");
    live.open_file(f).unwrap();
    let e = s.rollback(MAIN_BRANCH, "s", false).unwrap_err().to_string();
    assert!(e.contains("/f") && e.contains("--force"), "{e}");
    let r = s.rollback(MAIN_BRANCH, "s", true).unwrap();
    assert_eq!(r.open_files, ["/f"]);
    // The open handle now reads the rolled-back version of the same inode.
    assert_eq!(live.read(f, 0, 100).unwrap(), b"old");
    live.release_file(f).unwrap();
    s.close().unwrap();
}

#[test]
fn clones_are_independent_writable_branches() {
    let (dir, s) = new_store();
    let main = s.main();
    put(&main, "f", b"base");
    s.snapshot_create(MAIN_BRANCH, "base").unwrap();
    s.clone_branch("base", "exp").unwrap();
    let exp = s.volume(VolumeKind::Branch("exp".into())).unwrap();
    put(&exp, "f", b"branch write");
    put(&exp, "new", b"n");
    put(&main, "f", b"main write");
    assert_eq!(get(&exp, "f").unwrap(), b"branch write");
    assert_eq!(get(&main, "f").unwrap(), b"main write");
    assert_eq!(get(&main, "new"), None);
    s.snapshot_create("exp", "exp-1").unwrap();
    put(&exp, "f", b"later");
    assert!(s.clone_branch("base", "exp").is_err());
    assert!(s.branch_delete(MAIN_BRANCH).is_err());
    drop((main, exp));
    let s = reopen(&dir, s);
    let exp = s.volume(VolumeKind::Branch("exp".into())).unwrap();
    assert_eq!(get(&exp, "f").unwrap(), b"later");
    let e1 = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("exp-1").unwrap()))
        .unwrap();
    assert_eq!(get(&e1, "f").unwrap(), b"branch write");
    let names: Vec<String> = s.branches().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["main", "exp"]);
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
    s.branch_delete("exp").unwrap();
    assert!(s.volume(VolumeKind::Branch("exp".into())).is_err());
    // The snapshot taken on the deleted branch stays.
    assert_eq!(get(&e1, "f").unwrap(), b"branch write");
    s.close().unwrap();
}

#[test]
fn diff_reports_added_removed_modified_and_renamed_paths() {
    let (_dir, s) = new_store();
    let v = s.main();
    put(&v, "keep", b"k");
    put(&v, "mod", b"m1");
    put(&v, "gone", b"g");
    put(&v, "d/old-name", b"r");
    s.snapshot_create(MAIN_BRANCH, "a").unwrap();
    put(&v, "mod", b"m2");
    put(&v, "added", b"+");
    let d = v.lookup(InodeNo::ROOT, b"d").unwrap().ino;
    v.unlink(InodeNo::ROOT, b"gone").unwrap();
    v.rename(
        d,
        b"old-name",
        InodeNo::ROOT,
        b"new-name",
        RenameFlags::default(),
    )
    .unwrap();
    let a = VolumeKind::Snapshot(s.snapshot_gen("a").unwrap());
    let live = VolumeKind::Branch(MAIN_BRANCH.into());
    let got: Vec<(char, String, Option<String>)> = s
        .diff(&a, &live)
        .unwrap()
        .into_iter()
        .map(|e| (e.change, e.path, e.new_path))
        .collect();
    let want = vec![
        ('M', "/".to_string(), None),
        ('+', "/added".into(), None),
        ('M', "/d".into(), None),
        ('R', "/d/old-name".into(), Some("/new-name".to_string())),
        ('-', "/gone".into(), None),
        ('M', "/mod".into(), None),
    ];
    assert_eq!(got, want);
    // Nothing changed between a tree and itself, and the reverse diff mirrors.
    assert!(s.diff(&a, &a).unwrap().is_empty());
    let back = s.diff(&live, &a).unwrap();
    assert!(back.iter().any(|e| e.change == '-' && e.path == "/added"));
    assert!(back.iter().any(|e| e.change == '+' && e.path == "/gone"));
    s.close().unwrap();
}

#[test]
fn history_lists_the_generations_where_a_path_changed() {
    let (_dir, s) = new_store();
    let v = s.main();
    put(&v, "other", b"o");
    s.snapshot_create(MAIN_BRANCH, "before").unwrap();
    put(&v, "f", b"1");
    s.snapshot_create(MAIN_BRANCH, "one").unwrap();
    put(&v, "other", b"o2");
    s.snapshot_create(MAIN_BRANCH, "unrelated").unwrap();
    put(&v, "f", b"22");
    s.snapshot_create(MAIN_BRANCH, "two").unwrap();
    v.unlink(InodeNo::ROOT, b"f").unwrap();
    let h = s.history(MAIN_BRANCH, "/f").unwrap();
    let got: Vec<(Option<String>, &str, Option<u64>)> = h
        .iter()
        .map(|e| (e.snapshot.clone(), e.change, e.size))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("one".to_string()), "created", Some(1)),
            (Some("two".to_string()), "modified", Some(2)),
            (None, "deleted", None),
        ]
    );
    assert!(s.history(MAIN_BRANCH, "/never").is_err());
    s.close().unwrap();
}

#[test]
fn exclusive_bytes_count_only_blocks_no_other_tree_references() {
    let (_dir, s) = new_store();
    let v = s.main();
    let bs = BS as usize;
    put(&v, "shared", &data(4 * bs, 3));
    put(&v, "f", &data(4 * bs, 5));
    s.snapshot_create(MAIN_BRANCH, "s1").unwrap();
    // Rewrite f entirely: its old blocks are now only in s1.
    put(&v, "f", &data(4 * bs, 7));
    s.snapshot_create(MAIN_BRANCH, "s2").unwrap();
    let usage = s.snapshot_usage().unwrap();
    let (i1, u1) = &usage[0];
    let (_, u2) = &usage[1];
    assert_eq!(i1.name, "s1");
    assert!(u1.exclusive_bytes > 0);
    // s2 shares everything with the live tree.
    assert_eq!(u2.exclusive_bytes, 0);
    assert!(u1.referenced_bytes >= u1.exclusive_bytes && u1.referenced_bytes > 0);
    assert_eq!(u1.files, 3); // root, shared, f
    assert_eq!(s.snapshot_delete("s1", true).unwrap(), u1.exclusive_bytes);
    assert!(s.snapshot_gen("s1").is_ok());
    assert_eq!(s.snapshot_delete("s1", false).unwrap(), u1.exclusive_bytes);
    assert!(s.snapshot_gen("s1").is_err());
    // s2's tree still reads (it saw s1's records as its ancestor).
    let s2 = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s2").unwrap()))
        .unwrap();
    assert_eq!(get(&s2, "shared").unwrap(), data(4 * bs, 3));
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
    s.close().unwrap();
}

#[test]
fn snapshot_of_buffered_writes_includes_them() {
    let (dir, s) = new_store();
    let v = s.main();
    // Not synced: the snapshot commits what is buffered first.
    put(&v, "f", &data(3 * BS as usize + 17, 9));
    s.snapshot_create(MAIN_BRANCH, "s").unwrap();
    put(&v, "f", b"changed");
    drop(v);
    let s = reopen(&dir, s);
    let snap = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s").unwrap()))
        .unwrap();
    assert_eq!(get(&snap, "f").unwrap(), data(3 * BS as usize + 17, 9));
    s.close().unwrap();
}

#[test]
fn a_snapshot_never_holds_half_of_a_write_the_kernel_split() {
    // The kernel sends a write call whose first page is partial and uncached as two
    // requests: [3500, 4096) then [4096, 4500). A snapshot requested between them waits
    // for the second.
    let (_dir, s) = new_store();
    let v = s.main();
    let f = put(&v, "f", &[1u8; 3500]);
    let writer = {
        let v = v.clone();
        std::thread::spawn(move || {
            v.write(f, 3500, &[2u8; 596]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
            v.write(f, 4096, &[3u8; 404]).unwrap();
        })
    };
    while v.getattr(f).unwrap().size < 4096 {
        std::thread::yield_now();
    }
    s.snapshot_create(MAIN_BRANCH, "mid").unwrap();
    writer.join().unwrap();
    let snap = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("mid").unwrap()))
        .unwrap();
    let len = get(&snap, "f").unwrap().len();
    assert_eq!(
        len, 4500,
        "the snapshot must wait for the rest of the split write"
    );
    s.close().unwrap();
}

#[test]
fn held_snapshots_survive_delete_and_prune() {
    let (dir, s) = new_store();
    let v = s.main();
    put(&v, "f", b"x");
    let a = s.snapshot_auto(MAIN_BRANCH).unwrap().name;
    assert!(a.starts_with(AUTO_PREFIX), "{a}");
    // Same second: the second automatic name gets a suffix.
    let b = s.snapshot_auto(MAIN_BRANCH).unwrap().name;
    assert_ne!(a, b);
    s.snapshot_create(MAIN_BRANCH, "manual").unwrap();
    s.snapshot_hold(&a, true).unwrap();
    let e = s.snapshot_delete(&a, false).unwrap_err().to_string();
    assert!(e.contains("held"), "{e}");
    // last=0 is refused by the parser; last=1 keeps the newest auto snapshot (b) and the
    // held one (a); manual snapshots are not considered.
    let policy = KeepPolicy::parse("last=1").unwrap();
    let plan = s.snapshot_prune(&policy, false, true).unwrap();
    assert_eq!(plan.len(), 2);
    assert!(plan.iter().all(|d| d.keep));
    s.snapshot_hold(&a, false).unwrap();
    drop(v);
    let s = reopen(&dir, s);
    assert!(!s.snapshots().iter().any(|i| i.held));
    let plan = s.snapshot_prune(&policy, false, false).unwrap();
    let gone: Vec<&str> = plan
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(gone.len(), 1);
    let names: Vec<String> = s.snapshots().into_iter().map(|i| i.name).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"manual".to_string()));
    assert!(s.verify(&mut |_, _| {}).unwrap().problems.is_empty());
    s.close().unwrap();
}

// ---- space reclamation (gc) ----

/// Incompressible bytes (xorshift64*), so stored sizes are predictable.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn pack_bytes(s: &Store) -> u64 {
    s.stats().unwrap().pack_bytes
}

#[test]
fn gc_frees_what_a_deleted_snapshot_held() {
    let (dir, s) = new_store();
    let v = s.main();
    let bs = BS as usize;
    put(&v, "shared", &noise(4 * bs, 1));
    for i in 0..4 {
        put(
            &v,
            &format!("d/f{i}"),
            &noise(6 * bs + 100 * i, 10 + i as u64),
        );
    }
    s.snapshot_create(MAIN_BRANCH, "old").unwrap();
    // Overwrite everything but `shared`: the old versions are only in `old`.
    for i in 0..4 {
        put(
            &v,
            &format!("d/f{i}"),
            &noise(6 * bs + 100 * i, 20 + i as u64),
        );
    }
    let exclusive = s.snapshot_usage().unwrap()[0].1.exclusive_bytes;
    assert!(exclusive > 24 * BS as u64, "{exclusive}");
    assert_eq!(s.snapshot_delete("old", false).unwrap(), exclusive);
    let before = pack_bytes(&s);
    let report = s.gc().unwrap();
    let after = pack_bytes(&s);
    assert_eq!(
        (report.pack_bytes_before, report.pack_bytes_after),
        (before, after)
    );
    assert_eq!(report.freed_bytes, before - after);
    // One pack (never sealed) before, its live records in one new pack after: exactly
    // the exclusive records are gone; allow a pack header and footer either way.
    assert!(
        report.freed_bytes >= exclusive && report.freed_bytes <= exclusive + 40,
        "freed {} vs exclusive {exclusive}: {report:?}",
        report.freed_bytes
    );
    assert_eq!(report.packs_rewritten, 1, "{report:?}");
    assert!(report.problems.is_empty());
    let check = |s: &Arc<Store>| {
        let v = s.main();
        assert_eq!(get(&v, "shared").unwrap(), noise(4 * bs, 1));
        for i in 0..4 {
            assert_eq!(
                get(&v, &format!("d/f{i}")).unwrap(),
                noise(6 * bs + 100 * i, 20 + i as u64)
            );
        }
        let r = s.verify(&mut |_, _| {}).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    };
    check(&s);
    drop(v);
    let s = reopen(&dir, s);
    check(&s);
    // Nothing more to free.
    let again = s.gc().unwrap();
    assert_eq!((again.blocks_freed, again.freed_bytes), (0, 0), "{again:?}");
    s.close().unwrap();
}

#[test]
fn gc_keeps_every_tree_and_frees_what_none_references() {
    let (dir, s) = new_store();
    let v = s.main();
    let bs = BS as usize;
    put(&v, "f", &noise(3 * bs, 1));
    s.snapshot_create(MAIN_BRANCH, "s1").unwrap();
    s.clone_branch("s1", "b").unwrap();
    let b = s.volume(VolumeKind::Branch("b".into())).unwrap();
    put(&b, "g", &noise(5 * bs, 2));
    put(&v, "f", &noise(3 * bs, 3));
    s.snapshot_create(MAIN_BRANCH, "s2").unwrap();
    // Every version is in some tree: nothing to free.
    let r = s.gc().unwrap();
    assert_eq!(r.blocks_freed, 0, "{r:?}");
    assert_eq!(get(&b, "g").unwrap(), noise(5 * bs, 2));
    drop(b);
    // A deleted branch: its own blocks go, the snapshot it started from stays.
    s.branch_delete("b").unwrap();
    let r = s.gc().unwrap();
    assert_eq!(r.blocks_freed, 5, "{r:?}");
    let s1 = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s1").unwrap()))
        .unwrap();
    assert_eq!(get(&s1, "f").unwrap(), noise(3 * bs, 1));
    drop(s1);
    // s1 deleted: its version of f goes; s2 (a descendant of s1) and main keep theirs.
    s.snapshot_delete("s1", false).unwrap();
    let r = s.gc().unwrap();
    assert_eq!(r.blocks_freed, 3, "{r:?}");
    let s2 = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s2").unwrap()))
        .unwrap();
    assert_eq!(get(&s2, "f").unwrap(), noise(3 * bs, 3));
    drop(s2);
    // A freed block written again is stored anew (dedup does not find the old one).
    put(&v, "again", &noise(3 * bs, 1));
    drop(v);
    let s = reopen(&dir, s);
    let v = s.main();
    assert_eq!(get(&v, "again").unwrap(), noise(3 * bs, 1));
    assert_eq!(get(&v, "f").unwrap(), noise(3 * bs, 3));
    let r = s.verify(&mut |_, _| {}).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    drop(v);
    s.close().unwrap();
}

#[test]
fn reads_beside_a_gc_never_fail() {
    // A read looks blocks up under the state lock and fetches them after: a version
    // overwritten, committed and collected in between must not turn into EIO.
    let (_dir, s) = new_store();
    let v = s.main();
    let bs = BS as usize;
    let versions: Vec<Vec<u8>> = (0..2).map(|i| noise(8 * bs, 100 + i)).collect();
    let ino = put(&v, "f", &versions[0]);
    s.sync().unwrap();
    // Widen the window between lookup and fetch (without the fence, this fails at once).
    s.read_pause_us
        .store(20_000, std::sync::atomic::Ordering::Relaxed);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (v, stop, versions) = (v.clone(), stop.clone(), versions.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = v.read(ino, 0, (8 * bs) as u32).unwrap();
                assert!(got == versions[0] || got == versions[1], "a torn read");
                reads += 1;
            }
            reads
        })
    };
    for round in 0..30 {
        v.write(ino, 0, &versions[(round + 1) % 2]).unwrap();
        s.sync().unwrap();
        // Drops the other version's blocks (no snapshot holds them).
        s.gc().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    s.close().unwrap();
}

#[test]
fn file_operations_go_on_during_a_gc_and_lose_nothing() {
    // 64 MiB in 16 files, snapshotted, then a new version of each (odd files only half
    // rewritten), and the snapshot deleted: the gc drops the old versions' blocks and
    // rewrites the pack, in small steps. Meanwhile another thread reads the files the gc
    // moves, writes files, some with the old (dead at the mark) contents, so that their
    // commits deduplicate against entries the sweep is dropping, and commits each time.
    // No timing is asserted: only that every file reads back what was last written.
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use strata_blockstore::BlockId;

    const FILES: usize = 16;
    let len = 4 << 20;
    let sum = |d: &[u8]| BlockId::of(d);
    let (dir, s) = new_store();
    s.gc_batch_entries.store(256, Ordering::Relaxed);
    let v = s.main();
    let old: Vec<Vec<u8>> = (0..FILES).map(|i| noise(len, 1000 + i as u64)).collect();
    let inos: Vec<InodeNo> = (0..FILES)
        .map(|i| put(&v, &format!("f{i}"), &old[i]))
        .collect();
    s.snapshot_create(MAIN_BRANCH, "old").unwrap();
    let mut expected: BTreeMap<String, BlockId> = BTreeMap::new();
    for i in 0..FILES {
        let new = noise(len, 2000 + i as u64);
        let mut cur = old[i].clone();
        if i % 2 == 0 {
            cur = new;
        } else {
            cur[..len / 2].copy_from_slice(&new[..len / 2]);
        }
        v.write(inos[i], 0, &cur).unwrap();
        expected.insert(format!("f{i}"), sum(&cur));
    }
    s.sync().unwrap();
    s.snapshot_delete("old", false).unwrap();

    // The first step of the sweep waits for one round of the worker, which rewrites f0
    // with its old contents: a commit deduplicating against entries the sweep has
    // partly dropped and partly still to drop. The other rounds run freely.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut first = true;
    *s.gc_step_hook.lock().unwrap() = Some(Box::new(move || {
        if std::mem::take(&mut first) {
            go_tx.send(()).unwrap();
            let _ = done_rx.recv();
        }
    }));
    let expected = std::sync::Mutex::new(expected);
    let stop = AtomicBool::new(false);
    let (report, rounds) = std::thread::scope(|scope| {
        let (expected, stop, old, s) = (&expected, &stop, &old, &s);
        let worker = scope.spawn(move || {
            let v = s.main();
            let mut n = 0usize;
            // Err when the gc had no step (then the hook is gone): run anyway.
            let _ = go_rx.recv();
            // A few rounds at least, whatever the gc's pace.
            while n < 4 || !stop.load(Ordering::Relaxed) {
                let i = n % FILES;
                let name = format!("f{i}");
                let want = expected.lock().unwrap()[&name];
                assert_eq!(sum(&get(&v, &name).unwrap()), want, "round {n}: {name}");
                let (name, data) = if n.is_multiple_of(2) {
                    // The contents the snapshot had: blocks dead at the mark.
                    (name, old[i].clone())
                } else {
                    (format!("w{}", n % 5), noise(1 << 20, 5000 + n as u64))
                };
                put(&v, &name, &data);
                s.sync().unwrap();
                assert_eq!(
                    sum(&get(&v, &name).unwrap()),
                    sum(&data),
                    "round {n}: {name}"
                );
                expected.lock().unwrap().insert(name, sum(&data));
                if n == 0 {
                    done_tx.send(()).unwrap();
                }
                n += 1;
            }
            n
        });
        let report = s.gc().unwrap();
        s.gc_step_hook.lock().unwrap().take();
        stop.store(true, Ordering::Relaxed);
        (report, worker.join().unwrap())
    });
    assert!(
        report.blocks_freed > 0 && report.problems.is_empty(),
        "{report:?}"
    );
    // Some of f0's old blocks were deduplicated before the sweep reached them.
    assert!(report.blocks_revived > 0, "{report:?}");
    let expected = expected.into_inner().unwrap();
    let check = |s: &Arc<Store>| {
        let v = s.main();
        for (name, want) in &expected {
            assert_eq!(sum(&get(&v, name).unwrap()), *want, "{name} after the gc");
        }
        let r = s.verify(&mut |_, _| {}).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    };
    check(&s);
    // Again once nothing runs beside it, and after a reopen.
    let again = s.gc().unwrap();
    check(&s);
    drop(v);
    let s = reopen(&dir, s);
    check(&s);
    eprintln!("gc beside {rounds} rounds of file operations: {report:?}; the next gc: {again:?}");
    s.close().unwrap();
}
