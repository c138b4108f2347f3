//! Flattening against a model: random histories of writes, snapshots, clones, rollbacks
//! and deletions; every kept tree is read in full before and after flattening (with the
//! pass cut into tiny batches, interrupted by reopens, and live writes in between), and
//! must read the same; the deleted generations must be gone and `verify` clean.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::*;

use crate::tests::{new_store, reopen};

const CTX: Ctx = Ctx {
    uid: 0,
    gid: 0,
    umask: 0,
};

/// A small deterministic generator (xorshift), so failures replay from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Everything a tree holds, by path: kind, content (files), target (symlinks), xattrs.
fn contents(v: &Volume) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(InodeNo::ROOT, String::new())];
    while let Some((dir, path)) = stack.pop() {
        for e in v.readdir(dir).unwrap() {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            let attr = v.getattr(e.ino).unwrap();
            let mut desc = format!("{:?} size {} nlink {}", e.kind, attr.size, attr.nlink);
            match e.kind {
                FileKind::Dir => stack.push((e.ino, p.clone())),
                FileKind::File => {
                    let data = v.read(e.ino, 0, attr.size as u32).unwrap();
                    desc += &format!(" {}", blake3::hash(&data).to_hex());
                }
                FileKind::Symlink => {
                    desc += &format!(" -> {:?}", v.readlink(e.ino).unwrap());
                }
                _ => {}
            }
            for name in v.listxattr(e.ino).unwrap() {
                let val = v.getxattr(e.ino, &name).unwrap();
                desc += &format!(" x:{:?}={:?}", name, val);
            }
            out.insert(p, desc);
        }
    }
    out
}

/// Every kept tree: branch heads and snapshots, by label.
fn all_trees(s: &Arc<Store>) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for b in s.branches() {
        let v = s.volume(VolumeKind::Branch(b.name.clone())).unwrap();
        out.insert(format!("branch {}", b.name), contents(&v));
    }
    for snap in s.snapshots() {
        let v = s
            .volume(VolumeKind::Snapshot(GenerationId(snap.generation)))
            .unwrap();
        out.insert(format!("snapshot {}", snap.name), contents(&v));
    }
    out
}

/// One random change to a writable tree.
fn mutate(v: &Volume, rng: &mut Rng) {
    let dirs = ["", "d1", "d2", "d1/e"];
    let dir = dirs[rng.below(dirs.len() as u64) as usize];
    let mut parent = InodeNo::ROOT;
    for d in dir.split('/').filter(|d| !d.is_empty()) {
        parent = match v.lookup(parent, d.as_bytes()) {
            Ok(a) => a.ino,
            Err(_) => v.mkdir(parent, d.as_bytes(), 0o755, CTX).unwrap().ino,
        };
    }
    let name = format!("f{}", rng.below(6));
    let existing = v.lookup(parent, name.as_bytes()).ok();
    match rng.below(10) {
        0..=4 => {
            let ino = match existing {
                Some(a) if a.kind == FileKind::File => a.ino,
                Some(_) => return,
                None => {
                    v.mknod(parent, name.as_bytes(), libc::S_IFREG | 0o644, 0, CTX)
                        .unwrap()
                        .ino
                }
            };
            let bs = u64::from(v.block_size());
            let off = rng.below(6 * bs);
            let len = 1 + rng.below(3 * bs) as usize;
            let byte = rng.next() as u8;
            let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8 / 7)).collect();
            v.write(ino, off, &data).unwrap();
        }
        5 => {
            if let Some(a) = existing {
                if a.kind == FileKind::Dir {
                    let _ = v.rmdir(parent, name.as_bytes());
                } else {
                    v.unlink(parent, name.as_bytes()).unwrap();
                }
            }
        }
        6 => {
            if existing.is_some() {
                let to = format!("f{}", rng.below(6));
                let _ = v.rename(
                    parent,
                    name.as_bytes(),
                    InodeNo::ROOT,
                    to.as_bytes(),
                    RenameFlags::default(),
                );
            }
        }
        7 => {
            if let Some(a) = existing {
                if a.kind == FileKind::File {
                    let size = rng.below(5 * u64::from(v.block_size()));
                    v.setattr(
                        a.ino,
                        &SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                }
            }
        }
        8 => {
            if let Some(a) = existing {
                let val = format!("v{}", rng.below(100));
                v.setxattr(a.ino, b"user.k", val.as_bytes(), XattrFlags::default())
                    .unwrap();
            }
        }
        _ => {
            if existing.is_none() {
                let t = format!("target-{}", rng.below(100));
                v.symlink(parent, name.as_bytes(), t.as_bytes(), CTX)
                    .unwrap();
            }
        }
    }
}

/// A random history on `s`: returns the number of snapshots deleted.
fn history(s: &Arc<Store>, rng: &mut Rng, steps: usize) -> usize {
    let mut deleted = 0;
    let mut n = 0;
    for _ in 0..steps {
        n += 1;
        let branches: Vec<String> = s.branches().into_iter().map(|b| b.name).collect();
        let snaps: Vec<String> = s.snapshots().into_iter().map(|x| x.name).collect();
        let branch = branches[rng.below(branches.len() as u64) as usize].clone();
        match rng.below(20) {
            0..=10 => {
                let v = s.volume(VolumeKind::Branch(branch)).unwrap();
                for _ in 0..1 + rng.below(4) {
                    mutate(&v, rng);
                }
            }
            11..=14 => {
                s.snapshot_create(&branch, &format!("s{n}")).unwrap();
            }
            15..=16 if !snaps.is_empty() => {
                let name = &snaps[rng.below(snaps.len() as u64) as usize];
                s.snapshot_delete(name, false).unwrap();
                deleted += 1;
            }
            17 if !snaps.is_empty() && branches.len() < 4 => {
                let name = &snaps[rng.below(snaps.len() as u64) as usize];
                s.clone_branch(name, &format!("b{n}")).unwrap();
            }
            18 if branches.len() > 1 => {
                let b = branches.iter().find(|b| *b != MAIN_BRANCH).unwrap();
                s.branch_delete(b).unwrap();
            }
            19 if !snaps.is_empty() => {
                let name = &snaps[rng.below(snaps.len() as u64) as usize];
                s.rollback(&branch, name, true).unwrap();
            }
            _ => {}
        }
    }
    deleted
}

/// The read index answers every kept tree's block map exactly as the `B` records do.
fn assert_read_index(s: &Store, what: &str) {
    let mut st = s.lock();
    // Kept generations (a deleted one under a pass may read partly folded).
    let gens: Vec<GenerationId> = st
        .gens
        .all
        .iter()
        .filter(|(_, r)| r.state != crate::generation::STATE_DELETED)
        .map(|(g, _)| *g)
        .collect();
    // Every inode with a block map version anywhere, with its highest block index.
    let mut inodes: BTreeMap<InodeNo, u64> = BTreeMap::new();
    for (base, _, _) in st.meta.all_versions(&[crate::keys::BLOCK]).unwrap() {
        let top = inodes.entry(crate::keys::key_ino(&base)).or_default();
        *top = (*top).max(crate::keys::block_index(&base));
    }
    for g in gens {
        let view = st.gens.view(g).unwrap();
        st.meta.set_view(&view);
        let mut by_ino: BTreeMap<InodeNo, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for (base, v) in st.meta.scan(&[crate::keys::BLOCK]).unwrap() {
            by_ino
                .entry(crate::keys::key_ino(&base))
                .or_default()
                .push((crate::keys::block_index(&base), v));
        }
        for (ino, top) in &inodes {
            assert_eq!(
                st.meta.block_map(*ino, 0, top + 70).unwrap(),
                by_ino.remove(ino).unwrap_or_default(),
                "{what}: generation {} inode {}",
                g.0,
                ino.0
            );
        }
    }
    let head = st.gens.view(st.gens.head(MAIN_BRANCH).unwrap()).unwrap();
    st.meta.set_view(&head);
}

fn generation_count(s: &Store) -> usize {
    s.lock().gens.all.len()
}

fn check_seed(seed: u64) {
    let (dir, s) = new_store();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    history(&s, &mut rng, 160);
    // Delete about half of what is left, so there is something to fold.
    for snap in s.snapshots() {
        if rng.below(2) == 0 {
            s.snapshot_delete(&snap.name, false).unwrap();
        }
    }
    let before = all_trees(&s);
    assert_read_index(&s, &format!("seed {seed} before flattening"));
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(
        report.problems.is_empty(),
        "seed {seed} before flattening: {:?}",
        report.problems
    );

    // A few tiny batches, then a reopen in the middle of the pass.
    let nothing = &mut |_: &FlattenProgress| true;
    s.flatten_batches(3, Duration::ZERO, nothing, 4).unwrap();
    let s = reopen(&dir, s);
    assert_eq!(
        all_trees(&s),
        before,
        "seed {seed}: after a reopen mid-pass"
    );
    // Live writes between batches land in main (whose content we then re-read).
    let main = s.main();
    let mut expected = before.clone();
    for _ in 0..3 {
        s.flatten_batches(40, Duration::ZERO, nothing, 3).unwrap();
        mutate(&main, &mut rng);
        assert_read_index(&s, &format!("seed {seed} mid-pass"));
        // Half-folded deleted generations are no problem to verify.
        let report = s.verify(&mut |_, _| {}).unwrap();
        assert!(
            report.problems.is_empty(),
            "seed {seed} mid-pass: {:?}",
            report.problems
        );
        expected.insert("branch main".into(), contents(&main));
    }
    s.flatten(100, Duration::ZERO, nothing).unwrap();
    assert_read_index(&s, &format!("seed {seed} after flatten"));
    assert!(!s.flatten_pending().unwrap(), "seed {seed}");
    assert_eq!(all_trees(&s), expected, "seed {seed}: after flattening");
    assert_read_index(&s, &format!("seed {seed} after flattening"));
    assert!(s.stray_records().unwrap().is_empty(), "seed {seed}");
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(
        report.problems.is_empty(),
        "seed {seed}: {:?}",
        report.problems
    );
    drop(main);
    let s = reopen(&dir, s);
    assert_eq!(all_trees(&s), expected, "seed {seed}: after reopen");
    s.close().unwrap();
}

#[test]
fn flattening_random_histories_keeps_every_kept_tree() {
    let seeds: u64 = std::env::var("STRATA_FLATTEN_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    for seed in 1..=seeds {
        check_seed(seed);
    }
}

#[test]
fn deleting_every_snapshot_leaves_one_generation_per_branch() {
    let (dir, s) = new_store();
    let main = s.main();
    let mut rng = Rng(77);
    for i in 0..30 {
        for _ in 0..5 {
            mutate(&main, &mut rng);
        }
        s.snapshot_create(MAIN_BRANCH, &format!("s{i}")).unwrap();
    }
    let live = contents(&main);
    for snap in s.snapshots() {
        s.snapshot_delete(&snap.name, false).unwrap();
    }
    let r = s.flatten(1000, Duration::ZERO, &mut |_| true).unwrap();
    assert_eq!(r.generations_removed, 30);
    assert_eq!(generation_count(&s), 1);
    assert_eq!(contents(&main), live);
    // No record of any other generation is left, and no tombstone without a reason.
    let head = main.generation();
    let st = s.lock();
    for item in st.meta.committed_range(&[], None) {
        let (k, v) = item.unwrap();
        if [b'I', b'D', b'X', b'B', b'O'].contains(&k[0]) {
            let (_, g) = crate::keys::split_versioned(&k);
            assert_eq!(g, head);
            assert_ne!(v.first(), Some(&crate::codec::TOMBSTONE), "{k:?}");
        }
    }
    drop(st);
    drop(main);
    let s = reopen(&dir, s);
    assert_eq!(contents(&s.main()), live);
    s.close().unwrap();
}

#[test]
fn a_deleted_snapshot_with_an_open_file_is_flattened_only_once_it_is_closed() {
    let (_dir, s) = new_store();
    let main = s.main();
    let ctx = Ctx {
        uid: 0,
        gid: 0,
        umask: 0,
    };
    let f = main
        .mknod(InodeNo::ROOT, b"f", libc::S_IFREG | 0o644, 0, ctx)
        .unwrap()
        .ino;
    let data = |b: u8| vec![b; 3 * crate::tests::BS as usize];
    let len = data(0).len() as u32;
    for (round, name) in [(1u8, "s1"), (2, "s2")] {
        main.write(f, 0, &data(round)).unwrap();
        s.snapshot_create(MAIN_BRANCH, name).unwrap();
    }
    main.write(f, 0, &data(3)).unwrap();
    s.sync().unwrap();
    let snap = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s2").unwrap()))
        .unwrap();
    snap.open_file(f).unwrap();
    s.snapshot_delete("s2", false).unwrap();
    // Nothing new is opened or looked up in the deleted snapshot.
    assert!(matches!(snap.open_file(f), Err(Error::Stale)));
    assert!(matches!(
        snap.lookup(InodeNo::ROOT, b"f"),
        Err(Error::Stale)
    ));
    // While the file is open its generation is left alone: it reads what s2 held (the
    // live tree rewrote every block, so a fold would have dropped them).
    assert!(!s.flatten_pending().unwrap());
    let r = s.flatten(1000, Duration::ZERO, &mut |_| true).unwrap();
    assert_eq!(r.generations_removed, 0);
    // Nor does gc free its blocks (no other tree reads them).
    s.gc().unwrap();
    assert_eq!(snap.read(f, 0, len).unwrap(), data(2));
    assert!(!s.take_flatten_wanted());
    // Closed: the daemon is told, and the next run removes it.
    snap.release_file(f).unwrap();
    assert!(s.take_flatten_wanted());
    assert!(s.flatten_pending().unwrap());
    let before = generation_count(&s);
    let r = s.flatten(1000, Duration::ZERO, &mut |_| true).unwrap();
    assert_eq!(r.generations_removed, 1);
    assert_eq!(generation_count(&s), before - 1);
    let s1 = s
        .volume(VolumeKind::Snapshot(s.snapshot_gen("s1").unwrap()))
        .unwrap();
    assert_eq!(s1.read(f, 0, len).unwrap(), data(1));
    assert_eq!(main.read(f, 0, len).unwrap(), data(3));
    let report = s.verify(&mut |_, _| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
