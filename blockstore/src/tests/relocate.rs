//! Defragmentation: `relocate` lays records out in the order asked, every block reads
//! back the same before and after reopening, the store verifies clean, and the next gc
//! reclaims the old copies; `runs` counts contiguous runs.

use std::collections::HashSet;

use super::*;
use crate::GcPolicy;

fn commit(fx: &Fixture) -> impl FnMut() -> crate::Result<()> {
    let tree = fx.tree();
    move || {
        tree.flush()?;
        Ok(())
    }
}

#[test]
fn relocated_blocks_lie_in_the_order_asked_and_read_back() {
    let mut fx = Fixture::new();
    let store = fx.open();
    let blocks: Vec<Vec<u8>> = (0..48).map(|i| noise(500 + i, 32 << 10)).collect();
    let ids: Vec<BlockId> = blocks.iter().map(|b| store.put(b).unwrap()).collect();
    store.sync().unwrap();
    assert_eq!(store.runs(&ids).unwrap(), 1, "put order is contiguous");
    // A "file" that reads them back to front, every second one twice.
    let mut order: Vec<BlockId> = ids.iter().rev().copied().collect();
    order.extend(ids.iter().step_by(2));
    assert_eq!(store.runs(&order).unwrap(), 48);

    let mut done = Vec::new();
    let stats = store
        .relocate(&order, 256 << 10, &mut commit(&fx), &mut |n| done.push(n))
        .unwrap();
    assert_eq!(stats.blocks_moved, 48, "each block once");
    assert!(stats.problems.is_empty());
    assert_eq!(done.last(), Some(&(order.len() as u64)));
    assert_eq!(
        store.runs(&order).unwrap(),
        1,
        "laid out in the order asked"
    );
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(&store.get(id).unwrap(), b);
    }
    // Durable: a fresh index handle and a reopened store see the copies.
    drop(store);
    fx.restart_index();
    let store = fx.open();
    assert_eq!(store.runs(&order).unwrap(), 1);
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(&store.get(id).unwrap(), b);
    }
    assert!(store.verify(&mut |_, _| {}).unwrap().problems.is_empty());

    // The old copies are garbage: a gc with every block live frees their space.
    let before = store.stats().unwrap();
    let live: HashSet<BlockId> = ids.iter().copied().collect();
    let tree = fx.tree();
    let gc = store
        .gc(
            &|id| live.contains(id),
            &GcPolicy::default(),
            &mut || -> crate::Result<()> {
                tree.flush()?;
                Ok(())
            },
        )
        .unwrap();
    assert!(gc.freed_bytes() >= 48 * (32 << 10), "{gc:?}");
    let after = store.stats().unwrap();
    assert!(
        after.pack_bytes < before.pack_bytes,
        "{before:?} -> {after:?}"
    );
    for (b, id) in blocks.iter().zip(&ids) {
        assert_eq!(&store.get(id).unwrap(), b);
    }
}

#[test]
fn pending_and_unknown_blocks_are_left_alone() {
    let fx = Fixture::new();
    let store = fx.open();
    let old = store.put(&noise(1, 4096)).unwrap();
    store.sync().unwrap();
    let fresh = store.put(&noise(2, 4096)).unwrap(); // pending: not synced
    let unknown = BlockId::of(b"nobody stored this");
    let stats = store
        .relocate(
            &[fresh, unknown, old],
            1 << 20,
            &mut commit(&fx),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(stats.blocks_moved, 1);
    assert_eq!(store.get(&old).unwrap(), noise(1, 4096));
    assert_eq!(store.get(&fresh).unwrap(), noise(2, 4096));
    store.sync().unwrap();
    assert_eq!(store.get(&fresh).unwrap(), noise(2, 4096));
}
