//! The overlay: every change of the metadata since the last commit, as raw key → value
//! (`None`: remove the key), and which of them the intent log does not hold yet.
//!
//! Invariant: `unlogged` names every key whose value here differs from what the last
//! intent-log record left it at (every insertion adds its key); `take_unlogged` hands
//! those keys with their current values to the log and forgets them. A commit clears both.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;

#[derive(Default)]
pub struct Overlay {
    map: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    unlogged: BTreeSet<Vec<u8>>,
}

impl Overlay {
    pub fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.unlogged.insert(key.clone());
        self.map.insert(key, value);
    }

    /// Sets `key` to an empty value unless the overlay holds it already.
    pub fn insert_empty_if_absent(&mut self, key: Vec<u8>) {
        if !self.map.contains_key(&key) {
            self.insert(key, Some(Vec::new()));
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.map.get(key)
    }

    pub fn range<R: RangeBounds<Vec<u8>>>(
        &self,
        range: R,
    ) -> std::collections::btree_map::Range<'_, Vec<u8>, Option<Vec<u8>>> {
        self.map.range(range)
    }

    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, Vec<u8>, Option<Vec<u8>>> {
        self.map.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.unlogged.clear();
    }

    /// Whether some change is not in the intent log yet.
    pub fn has_unlogged(&self) -> bool {
        !self.unlogged.is_empty()
    }

    /// The changes the intent log does not hold yet, in key order, with their current
    /// values; from now on they count as logged.
    pub fn take_unlogged(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let keys = std::mem::take(&mut self.unlogged);
        keys.into_iter()
            .map(|k| {
                let v = self.map.get(&k).cloned().flatten();
                (k, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_is_unlogged_until_taken() {
        let mut o = Overlay::default();
        o.insert(b"a".to_vec(), Some(b"1".to_vec()));
        o.insert(b"b".to_vec(), None);
        o.insert_empty_if_absent(b"a".to_vec());
        assert!(o.has_unlogged());
        let taken = o.take_unlogged();
        assert_eq!(
            taken,
            vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)]
        );
        assert!(!o.has_unlogged());
        o.insert(b"a".to_vec(), Some(b"2".to_vec()));
        assert_eq!(
            o.take_unlogged(),
            vec![(b"a".to_vec(), Some(b"2".to_vec()))]
        );
        o.clear();
        assert!(o.is_empty() && !o.has_unlogged());
    }
}
