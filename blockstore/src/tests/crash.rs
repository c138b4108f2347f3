//! Crashes and recovery: a store dropped as by kill -9 (nothing sealed), packs cut at
//! every point of their tail, a torn pack header, a failed fsync, damage below synced
//! data, and a pack of an unknown format version.

use super::*;
use crate::layout::{encode_pack_header, PACK_HEADER_LEN, RECORD_HEADER_LEN};

#[test]
fn unsynced_blocks_vanish_synced_ones_stay() {
    let mut fx = Fixture::new();
    let store = fx.open();
    let a = text(1, 30_000);
    let id_a = store.put(&a).unwrap();
    store.sync().unwrap();
    let id_b = store.put(&noise(2, 30_000)).unwrap();
    store.crash();
    assert!(
        footer_of(&fx.pack(0)).is_none(),
        "a crash leaves the pack unsealed"
    );
    fx.restart_index();
    let store = fx.open();
    // B's record is complete, so it stays in the pack, unindexed.
    let f = assert_sealed(&fx.pack(0));
    assert_eq!(f.record_count, 2);
    assert_eq!(store.get(&id_a).unwrap(), a);
    assert!(matches!(store.get(&id_b), Err(Error::NotFound(id)) if id == id_b));
    verify_clean(&store);
    // Writing goes on in a new pack, and B can be stored again.
    let b = noise(2, 30_000);
    assert_eq!(store.put(&b).unwrap(), id_b);
    assert_eq!(location(&store, &id_b).pack, PackId(1));
    store.sync().unwrap();
    assert_eq!(store.get(&id_b).unwrap(), b);
}

#[test]
fn a_plain_drop_without_sync_seals_and_keeps_only_synced_blocks() {
    let mut fx = Fixture::new();
    let store = fx.open();
    let a = text(1, 30_000);
    let id_a = store.put(&a).unwrap();
    store.sync().unwrap();
    let id_b = store.put(&noise(2, 30_000)).unwrap();
    drop(store);
    assert_eq!(assert_sealed(&fx.pack(0)).record_count, 2);
    fx.restart_index();
    let store = fx.open();
    assert_eq!(store.get(&id_a).unwrap(), a);
    assert!(matches!(store.get(&id_b), Err(Error::NotFound(_))));
    verify_clean(&store);
}

/// A pack whose tail was cut at `cut` recovers to exactly the records before `cut`.
#[test]
fn a_pack_cut_anywhere_recovers_to_its_complete_records() {
    // Layout: A (synced), B, C (unsynced); cut points across B and C and the ends.
    let probe = Fixture::new();
    let (a, b, c) = (text(1, 3000), noise(2, 200), text(3, 300));
    let ends = {
        let store = probe.open();
        let ends: Vec<u64> = [&a, &b, &c]
            .iter()
            .map(|d| {
                let id = store.put(d).unwrap();
                location(&store, &id).record_end()
            })
            .collect();
        store.crash();
        ends
    };
    let full = ends[2];
    let mut cuts: Vec<u64> = (ends[0]..=full).step_by(13).collect();
    for e in [ends[0], ends[1], full] {
        cuts.extend([
            e,
            e + 1,
            e + RECORD_HEADER_LEN as u64 - 1,
            e + RECORD_HEADER_LEN as u64,
        ]);
    }
    cuts.retain(|&c| c <= full);
    for cut in cuts {
        let fx = Fixture::new();
        let store = fx.open();
        let id_a = store.put(&a).unwrap();
        store.sync().unwrap();
        store.put(&b).unwrap();
        store.put(&c).unwrap();
        store.crash();
        let pack = fx.pack(0);
        OpenOptions::new()
            .write(true)
            .open(&pack)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let store = fx.open();
        let kept = ends.iter().filter(|&&e| e <= cut).count();
        let f = assert_sealed(&pack);
        assert_eq!(f.record_count, kept as u64, "cut at {cut}");
        assert_eq!(
            f.pack_len,
            ends[kept - 1] + FOOTER_LEN as u64,
            "cut at {cut}"
        );
        assert_eq!(store.get(&id_a).unwrap(), a, "cut at {cut}");
        let report = verify_clean(&store);
        assert_eq!(report.records_checked, kept as u64);
    }
}

#[test]
fn garbage_after_the_last_record_is_cut_off() {
    let fx = Fixture::new();
    let store = fx.open();
    let id = store.put(&text(1, 5000)).unwrap();
    store.sync().unwrap();
    let end = location(&store, &id).record_end();
    store.crash();
    let pack = fx.pack(0);
    for tail in [vec![0u8; 4096], noise(9, 100), b"SBLK".to_vec()] {
        let f = OpenOptions::new().write(true).open(&pack).unwrap();
        f.set_len(end).unwrap();
        f.write_all_at(&tail, end).unwrap();
        drop(fx.open());
        assert_eq!(assert_sealed(&pack).pack_len, end + FOOTER_LEN as u64);
        // Unseal again for the next round.
        f.set_len(end).unwrap();
    }
}

#[test]
fn a_torn_payload_of_an_unsynced_record_is_cut_off() {
    // The header made it to disk, the payload did not (zeros): the record is dropped,
    // so verify stays clean after the crash.
    let fx = Fixture::new();
    let store = fx.open();
    let id_a = store.put(&text(1, 5000)).unwrap();
    store.sync().unwrap();
    let id_b = store.put(&noise(2, 5000)).unwrap();
    let lb = location(&store, &id_b);
    store.crash();
    let pack = fx.pack(0);
    let f = OpenOptions::new().write(true).open(&pack).unwrap();
    f.write_all_at(&[0u8; 100], lb.offset + RECORD_HEADER_LEN as u64 + 1000)
        .unwrap();
    let store = fx.open();
    assert_eq!(assert_sealed(&pack).pack_len, lb.offset + FOOTER_LEN as u64);
    assert!(store.get(&id_a).is_ok());
    verify_clean(&store);
}

#[test]
fn a_torn_pack_header_becomes_an_empty_sealed_pack() {
    let fx = Fixture::new();
    drop(fx.open());
    std::fs::write(fx.pack(0), &encode_pack_header()[..5]).unwrap();
    std::fs::write(fx.pack(1), [0u8; 300]).unwrap(); // size made it, data did not
    let store = fx.open();
    for p in [fx.pack(0), fx.pack(1)] {
        let f = assert_sealed(&p);
        assert_eq!(
            (f.record_count, f.pack_len),
            (0, (PACK_HEADER_LEN + FOOTER_LEN) as u64)
        );
    }
    let id = store.put(b"after").unwrap();
    assert_eq!(location(&store, &id).pack, PackId(2));
    verify_clean(&store);
}

#[test]
fn after_a_failed_fsync_writes_are_refused() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = text(1, 5000);
    let id_a = store.put(&a).unwrap();
    store.with_faults(|f| f.fail_fsync = true);
    assert!(matches!(store.sync(), Err(Error::Io { .. })));
    store.with_faults(|f| f.fail_fsync = false);
    // Even a sync that would now work, and a put that would only dedup, fail.
    assert!(matches!(store.sync(), Err(Error::Io { .. })));
    assert!(matches!(store.put(&a), Err(Error::Io { .. })));
    assert!(matches!(store.put(b"new"), Err(Error::Io { .. })));
    assert!(matches!(store.put_many(&[b"new"]), Err(Error::Io { .. })));
    let err = store.close().unwrap_err().to_string();
    assert!(err.contains("refuses writes"), "{err}");
    // Nothing reached the index.
    assert!(fx.tree().is_empty());
    let store = fx.open();
    assert!(matches!(store.get(&id_a), Err(Error::NotFound(_))));
}

#[test]
fn damage_below_indexed_data_is_not_cut_away() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = text(1, 5000);
    let b = noise(2, 5000);
    let (id_a, id_b) = (store.put(&a).unwrap(), store.put(&b).unwrap());
    store.sync().unwrap();
    store.put(&text(3, 5000)).unwrap();
    let la = location(&store, &id_a);
    store.crash();
    let pack = fx.pack(0);
    let len = file_len(&pack);
    flip(&pack, la.offset + RECORD_HEADER_LEN as u64 + 3);
    let store = fx.open();
    assert_eq!(file_len(&pack), len, "the pack is left as it was");
    assert_corrupt(store.get(&id_a), &pack, la.offset);
    assert_eq!(store.get(&id_b).unwrap(), b);
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.bad_blocks, vec![id_a]);
    assert!(report
        .problems
        .iter()
        .any(|p| p.contains("no valid footer")));
}

#[test]
fn a_pack_of_an_unknown_version_is_refused() {
    let fx = Fixture::new();
    let store = fx.open();
    store.put(b"x").unwrap();
    drop(store);
    let f = OpenOptions::new().write(true).open(fx.pack(0)).unwrap();
    f.write_all_at(&9u32.to_le_bytes(), 8).unwrap();
    let Err(err) = BlockStore::open(&fx.packs(), fx.tree(), Config::default()) else {
        panic!("opened a store with a version 9 pack");
    };
    assert!(matches!(&err, Error::Corrupt { offset: 0, .. }));
    assert!(err.to_string().contains("version 9"), "{err}");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Whatever a crash leaves after the synced records (cut, garbage, a stale
        /// copy of a real header), recovery keeps the synced blocks and seals the pack
        /// so that verify is clean.
        #[test]
        fn any_tail_after_synced_data_recovers(
            cut in 0u64..6000,
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            at in 0u64..6000,
            copy_header in any::<bool>(),
        ) {
            let fx = Fixture::new();
            let store = fx.open();
            let a = text(1, 4000);
            let id_a = store.put(&a).unwrap();
            store.sync().unwrap();
            let synced_end = location(&store, &id_a).record_end();
            let id_b = store.put(&noise(2, 2000)).unwrap();
            let lb = location(&store, &id_b);
            store.put(&text(3, 2000)).unwrap();
            store.crash();
            let pack = fx.pack(0);
            let f = OpenOptions::new().read(true).write(true).open(&pack).unwrap();
            let len = f.metadata().unwrap().len();
            // Read before the cut, which may remove it.
            let mut h = [0u8; RECORD_HEADER_LEN];
            f.read_exact_at(&mut h, lb.offset).unwrap();
            f.set_len(synced_end + cut.min(len - synced_end)).unwrap();
            let mut junk = garbage.clone();
            if copy_header {
                // A real record header whose payload is not what follows it.
                junk.splice(0..0, h);
            }
            f.write_all_at(&junk, synced_end + at).unwrap();
            let store = fx.open();
            assert_sealed(&pack);
            prop_assert_eq!(store.get(&id_a).unwrap(), a);
            let report = store.verify(&mut |_, _| {}).unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
    }
}
