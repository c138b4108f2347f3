//! Damage found: a flipped byte anywhere in a record makes `get` return `Corrupt`
//! naming the pack and offset, and `verify` report it; index entries that point at
//! nothing are reported with their id.

use super::*;
use crate::layout::{Location, RECORD_HEADER_LEN};

/// Three synced records; the middle one is the victim.
fn three_records(fx: &Fixture, middle: &[u8]) -> (BlockStore, [BlockId; 3]) {
    let store = fx.open();
    let ids = [
        store.put(&text(1, 2000)).unwrap(),
        store.put(middle).unwrap(),
        store.put(&noise(3, 2000)).unwrap(),
    ];
    store.sync().unwrap();
    (store, ids)
}

/// Flips every byte of the middle record in turn: `get` and `verify` must catch each.
fn every_byte_is_checked(middle: &[u8]) {
    let fx = Fixture::new();
    let (store, ids) = three_records(&fx, middle);
    let loc = location(&store, &ids[1]);
    let pack = fx.pack(0);
    for at in loc.offset..loc.record_end() {
        flip(&pack, at);
        assert_corrupt(store.get(&ids[1]), &pack, loc.offset);
        let report = store.verify(&mut |_, _| {}).unwrap();
        assert_eq!(report.bad_blocks, vec![ids[1]], "byte {at}");
        assert!(!report.problems.is_empty());
        let offset = format!("offset {}", loc.offset);
        for p in &report.problems {
            assert!(p.contains(&pack.display().to_string()), "{p}");
        }
        assert!(
            report.problems.iter().any(|p| p.contains(&offset)),
            "{:?}",
            report.problems
        );
        // The neighbours are still checked, and fine.
        assert!(report.records_checked >= 2, "byte {at}");
        assert_eq!(store.get(&ids[0]).unwrap(), text(1, 2000));
        assert_eq!(store.get(&ids[2]).unwrap(), noise(3, 2000));
        flip(&pack, at);
        assert_eq!(store.get(&ids[1]).unwrap(), middle, "byte {at} restored");
    }
    verify_clean(&store);
}

#[test]
fn every_byte_of_a_compressed_record_is_checked() {
    let data = text(2, 3000);
    every_byte_is_checked(&data);
}

#[test]
fn every_byte_of_a_raw_record_is_checked() {
    every_byte_is_checked(&noise(2, 300));
}

#[test]
fn damage_is_found_after_reopen_and_named_in_the_error() {
    let mut fx = Fixture::new();
    let (store, ids) = three_records(&fx, &text(2, 100_000));
    let loc = location(&store, &ids[1]);
    drop(store);
    fx.restart_index();
    let pack = fx.pack(0);
    flip(
        &pack,
        loc.offset + RECORD_HEADER_LEN as u64 + u64::from(loc.stored_len) / 2,
    );
    let store = fx.open();
    let err = store.get(&ids[1]).unwrap_err().to_string();
    assert!(err.contains(&pack.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {}", loc.offset)), "{err}");
    let mut calls = Vec::new();
    let report = store
        .verify(&mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(report.bad_blocks, vec![ids[1]]);
    assert_eq!(report.records_checked, 3);
    let total = file_len(&pack);
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[test]
fn dangling_index_entries_are_reported_with_their_id() {
    let fx = Fixture::new();
    let (store, ids) = three_records(&fx, &text(2, 2000));
    let good = location(&store, &ids[1]);
    let bogus = [
        // Into the middle of a record.
        (
            BlockId([1; 32]),
            Location {
                offset: good.offset + 5,
                ..good
            },
        ),
        // At a record of another block.
        (BlockId([2; 32]), good),
        // In a pack that does not exist.
        (
            BlockId([3; 32]),
            Location {
                pack: PackId(7),
                ..good
            },
        ),
        // Past the end of the pack.
        (
            BlockId([4; 32]),
            Location {
                offset: 1 << 30,
                ..good
            },
        ),
        // Right id and place, wrong lengths.
        (
            ids[2],
            Location {
                raw_len: 1,
                ..location(&store, &ids[2])
            },
        ),
    ];
    crate::index::insert_all(&store.index, &bogus).unwrap();
    fx.tree().insert([5u8; 32], &b"short"[..]).unwrap();
    for (id, _) in &bogus {
        assert!(matches!(store.get(id), Err(Error::Corrupt { .. })), "{id}");
    }
    let report = store.verify(&mut |_, _| {}).unwrap();
    let mut expected: Vec<BlockId> = bogus.iter().map(|(id, _)| *id).collect();
    expected.push(BlockId([5; 32]));
    expected.sort();
    assert_eq!(report.bad_blocks, expected);
    for id in &expected {
        let hex = id.to_hex();
        assert!(
            report.problems.iter().any(|p| p.contains(&hex)),
            "{hex}: {:#?}",
            report.problems
        );
    }
    assert_eq!(report.records_checked, 3);
    assert_eq!(store.get(&ids[1]).unwrap(), text(2, 2000));
}

#[test]
fn a_damaged_footer_or_pack_header_is_reported() {
    let fx = Fixture::new();
    let (store, ids) = three_records(&fx, &text(2, 2000));
    drop(store);
    // Damage the footer of a sealed pack under an open store (open would repair it).
    let store = fx.open();
    let pack = fx.pack(0);
    let len = file_len(&pack);
    flip(&pack, len - 10);
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("no valid footer")),
        "{:?}",
        report.problems
    );
    assert!(report.bad_blocks.is_empty());
    drop(store);
    // Opening repairs the footer (all records valid, nothing lost).
    let store = fx.open();
    assert_eq!(assert_sealed(&pack).pack_len, len);
    verify_clean(&store);
    drop(store);
    flip(&pack, 2);
    let store = fx.open();
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert!(report
        .problems
        .iter()
        .any(|p| p.contains("bad pack header magic")));
    assert_eq!(report.bad_blocks.len(), 3);
    assert!(ids.iter().all(|id| report.bad_blocks.contains(id)));
}
