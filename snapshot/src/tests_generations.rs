//! Store-level tests of generations: snapshot, rollback, clone, delete, rename, diff,
//! history and space accounting, each followed by a reopen where it matters.

use crate::*;

const CTX: Ctx = Ctx { uid: 0, gid: 0 };
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
