//! The block cache seen through the store: a block read recently is served
//! from memory (hits counted), the cached copy is the block (an id names its content,
//! so a gc moving it changes nothing), and `verify` still reads the disk: damage under
//! a cached block is reported by `verify` and by the next read of a store opened anew.

use super::*;
use crate::layout::RECORD_HEADER_LEN;

#[test]
fn a_read_again_comes_from_the_cache() {
    let fx = Fixture::new();
    let store = fx.cached();
    let a = store.put(&text(1, 20_000)).unwrap();
    store.sync().unwrap();
    assert_eq!(store.get(&a).unwrap(), text(1, 20_000));
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses, s.blocks), (0, 1, 1), "{s:?}");
    assert_eq!(s.capacity_bytes, Config::default().cache_bytes);

    // A store opened anew starts empty: the first read misses, the second hits.
    drop(store);
    let store = fx.cached();
    assert_eq!(store.get(&a).unwrap(), text(1, 20_000));
    assert_eq!(store.get_many(&[a, a]).len(), 2);
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses), (2, 1), "{s:?}");
}

#[test]
fn verify_reads_the_disk_under_a_cached_block() {
    let fx = Fixture::new();
    let store = fx.cached();
    let a = store.put(&noise(2, 8000)).unwrap();
    store.sync().unwrap();
    store.get(&a).unwrap();
    let loc = location(&store, &a);
    flip(&fx.pack(0), loc.offset + RECORD_HEADER_LEN as u64 + 10);
    // The cached copy is the block as written.
    assert_eq!(store.get(&a).unwrap(), noise(2, 8000));
    let report = store.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.bad_blocks, vec![a], "{:?}", report.problems);
    drop(store);
    let store = fx.cached();
    assert!(matches!(store.get(&a), Err(Error::Corrupt { .. })));
}

#[test]
fn a_zero_capacity_turns_it_off() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = store.put(&text(3, 5000)).unwrap();
    store.sync().unwrap();
    store.get(&a).unwrap();
    store.get(&a).unwrap();
    let s = store.cache_stats();
    assert_eq!((s.hits, s.misses, s.blocks, s.capacity_bytes), (0, 0, 0, 0));
}
