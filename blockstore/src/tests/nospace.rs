//! A full disk: simulated (a write that stops short, then ENOSPC) at each kind of
//! write — a record, a new pack's header, a footer — and real, on a 2 MiB tmpfs.
//! Each time: `NoSpace`, the pack cut back to its last complete record, and the store
//! usable again once there is room.

use std::process::Command;

use super::*;
use crate::layout::{PACK_HEADER_LEN, RECORD_HEADER_LEN};

#[test]
fn a_short_record_write_is_cut_back() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = noise(1, 10_000);
    let id_a = store.put(&a).unwrap();
    let pack = fx.pack(0);
    let end = file_len(&pack);
    store.with_faults(|f| f.space_left = Some(3000));
    let b = noise(2, 10_000);
    assert!(matches!(store.put(&b), Err(Error::NoSpace { path }) if path == pack));
    assert!(matches!(store.put_many(&[&b]), Err(Error::NoSpace { .. })));
    assert_eq!(file_len(&pack), end, "partial record removed");
    assert!(!store.contains(&BlockId::of(&b)).unwrap());
    assert_eq!(store.get(&id_a).unwrap(), a);
    store.sync().unwrap(); // what was stored can still be made durable
    store.with_faults(|f| f.space_left = None);
    let id_b = store.put(&b).unwrap();
    store.sync().unwrap();
    assert_eq!(store.get(&id_b).unwrap(), b);
    drop(store);
    let store = fx.open();
    assert_eq!(store.get(&id_a).unwrap(), a);
    assert_eq!(store.get(&id_b).unwrap(), b);
    verify_clean(&store);
}

#[test]
fn no_room_for_a_new_pack_leaves_no_file() {
    let fx = Fixture::new();
    let store = fx.open();
    store.with_faults(|f| f.space_left = Some(5));
    assert!(matches!(store.put(b"first"), Err(Error::NoSpace { .. })));
    assert!(fx.pack_files().is_empty());
    store.with_faults(|f| f.space_left = None);
    let id = store.put(b"first").unwrap();
    store.sync().unwrap();
    assert_eq!(store.get(&id).unwrap(), b"first");
    // The failed attempt used up pack 0's number; nothing appends to it later.
    assert_eq!(fx.pack_files(), vec![fx.pack(1)]);
    drop(store);
    verify_clean(&fx.open());
}

#[test]
fn no_room_for_a_footer_keeps_the_pack_open() {
    let fx = Fixture::new();
    let cfg = Config {
        compression_level: 0,
        max_pack_size: 3000,
        ..Config::default()
    };
    let store = fx.open_with(cfg.clone());
    let a = noise(1, 2000);
    store.put(&a).unwrap();
    let end = file_len(&fx.pack(0));
    // The next put must seal pack 0 first; its footer does not fit.
    store.with_faults(|f| f.space_left = Some(10));
    assert!(matches!(
        store.put(&noise(2, 2000)),
        Err(Error::NoSpace { .. })
    ));
    assert_eq!(file_len(&fx.pack(0)), end);
    assert_eq!(fx.pack_files().len(), 1);
    store.with_faults(|f| f.space_left = None);
    let b = noise(2, 2000);
    let id_b = store.put(&b).unwrap();
    assert_sealed(&fx.pack(0));
    assert_eq!(location(&store, &id_b).pack, PackId(1));
    store.sync().unwrap();
    drop(store);
    let store = fx.open_with(cfg);
    assert_eq!(store.get(&id_b).unwrap(), b);
    assert_eq!(store.get(&BlockId::of(&a)).unwrap(), a);
    verify_clean(&store);
}

/// A tmpfs mounted for one test; unmounted on drop, even when the test fails.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn mount(size: &str) -> Option<TmpfsMount> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(TmpfsMount { dir }),
            Ok(o) => {
                println!(
                    "skipped: cannot mount tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn a_real_full_disk_is_survived() {
    let Some(mnt) = TmpfsMount::mount("2m") else {
        return;
    };
    let fx = Fixture::new(); // the index lives on the ordinary disk
    let packs = mnt.dir.path().join("packs");
    let open = || BlockStore::open(&packs, fx.tree(), Config::default()).unwrap();
    // Fill most of the disk with something else.
    let filler = mnt.dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 1500 << 10]).unwrap();
    let store = open();
    let mut stored = Vec::new();
    let full = loop {
        let data = noise(stored.len() as u64, 64 << 10);
        match store.put(&data) {
            Ok(id) => stored.push((id, data)),
            Err(e) => break e,
        }
        assert!(stored.len() < 64, "the 2 MiB disk never filled");
    };
    assert!(matches!(&full, Error::NoSpace { .. }), "{full:?}");
    assert!(!stored.is_empty());
    let pack = packs.join(PackId(0).file_name());
    let expected =
        PACK_HEADER_LEN as u64 + stored.len() as u64 * (RECORD_HEADER_LEN as u64 + (64 << 10));
    assert_eq!(
        file_len(&pack),
        expected,
        "cut back to the last complete record"
    );
    for (id, data) in &stored {
        assert_eq!(&store.get(id).unwrap(), data);
    }
    // Still full: still NoSpace, still consistent.
    let more = noise(999, 64 << 10);
    assert!(matches!(store.put(&more), Err(Error::NoSpace { .. })));
    assert_eq!(file_len(&pack), expected);
    store.sync().unwrap();
    // Free space: writing works again.
    std::fs::remove_file(&filler).unwrap();
    let id = store.put(&more).unwrap();
    store.sync().unwrap();
    assert_eq!(store.get(&id).unwrap(), more);
    drop(store);
    let store = open();
    for (id, data) in &stored {
        assert_eq!(&store.get(id).unwrap(), data);
    }
    assert_eq!(store.get(&id).unwrap(), more);
    verify_clean(&store);
}
