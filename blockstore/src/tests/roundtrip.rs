//! Round trips (all sizes, compressible or not, before and after sync and reopen),
//! dedup, put_many against put, pack rollover, stats and concurrency.

use std::collections::HashSet;

use super::*;
use crate::layout::{PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::{is_zero, MAX_BLOCK_LEN};

const SIZES: [usize; 17] = [
    0,
    1,
    2,
    15,
    16,
    17,
    63,
    64,
    100,
    4095,
    4096,
    4097,
    65535,
    65536,
    65537,
    1 << 19,
    MAX_BLOCK_LEN,
];

#[test]
fn every_size_and_kind_round_trips_before_sync_and_after_reopen() {
    let mut fx = Fixture::new();
    let mut blocks = Vec::new();
    for (i, &len) in SIZES.iter().enumerate() {
        blocks.push(noise(i as u64, len));
        blocks.push(text(i as u64, len));
        blocks.push(vec![0u8; len]);
    }
    let store = fx.open();
    let ids: Vec<BlockId> = blocks.iter().map(|b| store.put(b).unwrap()).collect();
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(*id, BlockId::of(b));
        assert_eq!(&store.get(id).unwrap(), b, "before sync, {} bytes", b.len());
    }
    store.sync().unwrap();
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(&store.get(id).unwrap(), b, "after sync, {} bytes", b.len());
    }
    // Compressible blocks are stored compressed, incompressible ones raw.
    let big_text = location(&store, &BlockId::of(&text(13, 65536)));
    assert!(big_text.flags & 1 == 1 && big_text.stored_len < 65536 / 2);
    let big_noise = location(&store, &BlockId::of(&noise(13, 65536)));
    assert_eq!((big_noise.flags, big_noise.stored_len), (0, 65536));
    drop(store);
    fx.restart_index();
    let store = fx.open();
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(
            &store.get(id).unwrap(),
            b,
            "after reopen, {} bytes",
            b.len()
        );
    }
    let distinct: HashSet<_> = ids.iter().collect();
    let report = verify_clean(&store);
    assert_eq!(report.records_checked, distinct.len() as u64);
}

#[test]
fn same_data_twice_is_stored_once() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = text(1, 50_000);
    let id = store.put(&a).unwrap();
    let pack = fx.pack(0);
    let len = file_len(&pack);
    assert_eq!(store.put(&a).unwrap(), id);
    assert_eq!(file_len(&pack), len, "dedup against pending");
    store.sync().unwrap();
    assert_eq!(store.put(&a).unwrap(), id);
    assert_eq!(store.put_many(&[&a, &a]).unwrap(), vec![id, id]);
    assert_eq!(file_len(&pack), len, "dedup against the index");
    // Duplicates inside one batch are written once too.
    let b = noise(2, 70_000);
    let ids = store.put_many(&[&b, &a, &b, &b]).unwrap();
    assert_eq!(ids[0], ids[2]);
    assert_eq!(file_len(&pack), len + (RECORD_HEADER_LEN + b.len()) as u64);
    let stats = store.stats().unwrap();
    assert_eq!(stats.blocks, 2);
    assert_eq!(stats.raw_bytes, (a.len() + b.len()) as u64);
    assert_eq!(verify_clean(&store).records_checked, 2);
}

#[test]
fn put_many_matches_put_byte_for_byte() {
    let blocks: Vec<Vec<u8>> = (0..40)
        .map(|i| match i % 3 {
            0 => noise(i, 30_000 + i as usize),
            1 => text(i, 64 << 10),
            _ => text(i % 5, 1000), // repeats: dedup inside the batch
        })
        .collect();
    let refs: Vec<&[u8]> = blocks.iter().map(|b| b.as_slice()).collect();
    let (fx1, fx2) = (Fixture::new(), Fixture::new());
    let (one, many) = (fx1.open(), fx2.open());
    let by_put: Vec<BlockId> = refs.iter().map(|b| one.put(b).unwrap()).collect();
    let by_many = many.put_many(&refs).unwrap();
    assert_eq!(by_put, by_many);
    for (b, id) in blocks.iter().zip(&by_many) {
        assert_eq!(&many.get(id).unwrap(), b);
    }
    one.sync().unwrap();
    many.sync().unwrap();
    drop((one, many));
    // Same records in the same order: identical packs.
    let (p1, p2) = (fx1.pack_files(), fx2.pack_files());
    assert_eq!(p1.len(), 1);
    assert_eq!(
        std::fs::read(&p1[0]).unwrap(),
        std::fs::read(&p2[0]).unwrap()
    );
}

#[test]
fn oversize_blocks_are_refused() {
    let fx = Fixture::new();
    let store = fx.open();
    let big = vec![1u8; MAX_BLOCK_LEN + 1];
    assert!(matches!(store.put(&big), Err(Error::Io { .. })));
    assert!(matches!(
        store.put_many(&[b"ok", &big]),
        Err(Error::Io { .. })
    ));
    assert!(!store.contains(&BlockId::of(b"ok")).unwrap());
    assert!(fx.pack_files().is_empty(), "nothing was written");
}

#[test]
fn full_packs_are_sealed_and_a_new_one_started() {
    let mut fx = Fixture::new();
    let max = 100_000;
    let cfg = Config {
        compression_level: 1,
        max_pack_size: max,
        ..Config::default()
    };
    let store = fx.open_with(cfg.clone());
    let blocks: Vec<Vec<u8>> = (0..30).map(|i| noise(i, 16_384)).collect();
    let ids: Vec<BlockId> = blocks.iter().map(|b| store.put(b).unwrap()).collect();
    let packs = fx.pack_files();
    assert!(packs.len() >= 5, "{packs:?}");
    for p in &packs[..packs.len() - 1] {
        let f = assert_sealed(p);
        assert!(f.pack_len <= max + FOOTER_LEN as u64);
        assert!(f.record_count >= 1);
    }
    assert!(
        footer_of(packs.last().unwrap()).is_none(),
        "the active pack is open"
    );
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(&store.get(id).unwrap(), b);
    }
    store.sync().unwrap();
    drop(store);
    for p in &fx.pack_files() {
        assert_sealed(p);
    }
    fx.restart_index();
    let store = fx.open_with(cfg);
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(&store.get(id).unwrap(), b);
    }
    assert_eq!(verify_clean(&store).records_checked, 30);
}

#[test]
fn open_never_appends_to_an_existing_pack() {
    let fx = Fixture::new();
    let store = fx.open();
    let a = store.put(&text(1, 10_000)).unwrap();
    store.sync().unwrap();
    drop(store);
    let before = std::fs::read(fx.pack(0)).unwrap();
    let store = fx.open();
    assert!(fx.pack_files().len() == 1, "open alone creates no pack");
    let b = store.put(&text(2, 10_000)).unwrap();
    store.sync().unwrap();
    drop(store);
    assert_eq!(std::fs::read(fx.pack(0)).unwrap(), before);
    assert_eq!(fx.pack_files().len(), 2);
    let store = fx.open();
    assert_eq!(location(&store, &a).pack, PackId(0));
    assert_eq!(location(&store, &b).pack, PackId(1));
    verify_clean(&store);
}

#[test]
fn stats_add_up() {
    let fx = Fixture::new();
    let store = fx.open();
    assert_eq!(store.stats().unwrap().pack_files, 0);
    let a = text(1, 20_000);
    let b = noise(2, 20_000);
    store.put(&a).unwrap();
    store.sync().unwrap();
    store.put(&b).unwrap(); // pending only
    let s = store.stats().unwrap();
    assert_eq!(s.blocks, 2);
    assert_eq!(s.raw_bytes, 40_000);
    let la = location(&store, &BlockId::of(&a));
    assert_eq!(s.stored_bytes, u64::from(la.stored_len) + 20_000);
    assert_eq!(s.pack_files, 1);
    let expected = PACK_HEADER_LEN as u64 + 2 * RECORD_HEADER_LEN as u64 + s.stored_bytes;
    assert_eq!(s.pack_bytes, expected);
    assert_eq!(s.pack_bytes, file_len(&fx.pack(0)));
}

#[test]
fn many_threads_put_get_and_sync_at_once() {
    let fx = Fixture::new();
    let store = fx.open_with(Config {
        compression_level: 1,
        max_pack_size: 256 << 10,
        ..Config::default()
    });
    // Threads overlap in what they store, so dedup races are exercised.
    let block = |i: u64| {
        if i & 1 == 0 {
            text(i, 8192)
        } else {
            noise(i, 8192)
        }
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                for i in 0..60u64 {
                    let n = (i * 3 + t) % 100;
                    let data = block(n);
                    let id = if i % 5 == 0 {
                        store.put_many(&[&data, &block(n + 1)]).unwrap()[0]
                    } else {
                        store.put(&data).unwrap()
                    };
                    assert_eq!(store.get(&id).unwrap(), data);
                    if i % 7 == t {
                        store.sync().unwrap();
                    }
                }
            });
        }
    });
    store.sync().unwrap();
    let distinct: HashSet<u64> = (0..4u64)
        .flat_map(|t| (0..60u64).flat_map(move |i| [(i * 3 + t) % 100, (i * 3 + t) % 100 + 1]))
        .collect();
    // put_many stored n+1 only when i % 5 == 0; count what is really there.
    let stored = distinct
        .iter()
        .filter(|&&n| store.contains(&BlockId::of(&block(n))).unwrap())
        .count();
    let report = verify_clean(&store);
    assert_eq!(
        report.records_checked, stored as u64,
        "each block written once"
    );
    assert_eq!(store.stats().unwrap().blocks, stored as u64);
}

#[test]
fn helpers_for_ids_and_zero_blocks() {
    let id = BlockId::of(b"strata");
    assert_eq!(BlockId::from_hex(&id.to_hex()), Some(id));
    assert_eq!(BlockId::from_hex(&id.to_hex().to_uppercase()), Some(id));
    assert_eq!(BlockId::from_hex("00"), None);
    assert_eq!(BlockId::from_hex(&"g".repeat(64)), None);
    assert_eq!(PackId(0x1f).file_name(), "0000001f.pack");
    assert_eq!(PackId::from_file_name("0000001f.pack"), Some(PackId(0x1f)));
    assert_eq!(PackId::from_file_name("0000001F.pack"), None);
    assert_eq!(PackId::from_file_name("1f.pack"), None);
    assert!(is_zero(&[]) && is_zero(&[0; 5000]));
    let mut z = vec![0u8; 5000];
    z[4999] = 1;
    assert!(!is_zero(&z));
    z[4999] = 0;
    z[0] = 1;
    assert!(!is_zero(&z));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn block() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..5000),
            (any::<u64>(), 0usize..200_000).prop_map(|(s, n)| text(s, n)),
            (any::<u64>(), 0usize..200_000).prop_map(|(s, n)| noise(s, n)),
            (0usize..100_000).prop_map(|n| vec![7u8; n]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_blocks_round_trip(blocks in proptest::collection::vec(block(), 1..12),
                                    level in 0i32..4) {
            let mut fx = Fixture::new();
            let cfg = Config { compression_level: level, max_pack_size: 300_000, ..Config::default() };
            let store = fx.open_with(cfg.clone());
            let ids: Vec<BlockId> = blocks.iter().map(|b| store.put(b).unwrap()).collect();
            for (b, id) in blocks.iter().zip(&ids) {
                prop_assert_eq!(&store.get(id).unwrap(), b);
            }
            store.sync().unwrap();
            drop(store);
            fx.restart_index();
            let store = fx.open_with(cfg);
            for (b, id) in blocks.iter().zip(&ids) {
                prop_assert_eq!(&store.get(id).unwrap(), b);
            }
            let report = store.verify(&mut |_, _| {}).unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
    }
}

#[test]
fn get_many_reads_scattered_contiguous_and_missing_blocks_in_order() {
    let fx = Fixture::new();
    let store = fx.open();
    let blocks: Vec<Vec<u8>> = (0..24).map(|i| noise(100 + i, 32 << 10)).collect();
    let ids: Vec<BlockId> = blocks.iter().map(|b| store.put(b).unwrap()).collect();
    store.sync().unwrap();
    // Contiguous (put order), scattered (reversed, strided), repeated, and one unknown.
    let missing = BlockId::of(b"never stored");
    let mut order: Vec<usize> = (0..24).collect();
    order.extend((0..24).rev().step_by(5));
    order.extend([3, 3, 17]);
    let mut asked: Vec<BlockId> = order.iter().map(|&i| ids[i]).collect();
    asked.insert(7, missing);
    let got = store.get_many(&asked);
    assert_eq!(got.len(), asked.len());
    for (k, (id, r)) in asked.iter().zip(got).enumerate() {
        if *id == missing {
            assert!(
                matches!(r, Err(Error::NotFound(x)) if x == missing),
                "entry {k}"
            );
        } else {
            let i = ids.iter().position(|x| x == id).unwrap();
            assert_eq!(r.unwrap(), blocks[i], "entry {k}");
        }
    }
    assert!(store.get_many(&[]).is_empty());
}
