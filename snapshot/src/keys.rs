//! Key layout of the metadata tree. Versioned keys are `base ++ generation (u64 BE)`, so
//! all versions of one record sit together in key order and "the newest version visible
//! from generation G" is one reverse seek from `base ++ G`. Bases are prefix-free: fixed
//! length, or (names) terminated by a NUL byte, which no name may contain.
//!
//! | kind | base                          | value                        |
//! |------|-------------------------------|------------------------------|
//! | `I`  | I ino(u64 BE)                 | inode record                 |
//! | `D`  | D dir(u64 BE) name 0x00       | dirent (ino, kind)           |
//! | `X`  | X ino(u64 BE) name 0x00       | xattr value                  |
//! | `B`  | B ino(u64 BE) index(u64 BE)   | block id (32 bytes)          |
//! | `O`  | O ino(u64 BE)                 | empty: unlinked while open   |
//! | `G`  | G gen(u64 BE) (unversioned)   | generation record            |
//! | `S`  | S name (unversioned)          | store state (counters)       |
//! | `C`  | C gen(u64 BE) ino(u64 BE) (unversioned) | empty: gen changed ino (change index) |
//! | `H`  | H gen(u64 BE) (unversioned)   | empty: snapshot gen is held  |

use crate::types::{GenerationId, InodeNo};

pub const INODE: u8 = b'I';
pub const DIRENT: u8 = b'D';
pub const XATTR: u8 = b'X';
pub const BLOCK: u8 = b'B';
pub const ORPHAN: u8 = b'O';
pub const GENERATION: u8 = b'G';
pub const STATE: u8 = b'S';
pub const CHANGE: u8 = b'C';
pub const HOLD: u8 = b'H';

pub const GEN_SUFFIX_LEN: usize = 8;

pub fn inode(ino: InodeNo) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(INODE);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

pub fn orphan(ino: InodeNo) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(ORPHAN);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

/// Prefix of every dirent of `dir`.
pub fn dir_prefix(dir: InodeNo) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(DIRENT);
    k.extend_from_slice(&dir.0.to_be_bytes());
    k
}

pub fn dirent(dir: InodeNo, name: &[u8]) -> Vec<u8> {
    let mut k = dir_prefix(dir);
    k.extend_from_slice(name);
    k.push(0);
    k
}

/// The name inside a dirent base key.
pub fn dirent_name(base: &[u8]) -> &[u8] {
    &base[9..base.len() - 1]
}

pub fn xattr_prefix(ino: InodeNo) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(XATTR);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

pub fn xattr(ino: InodeNo, name: &[u8]) -> Vec<u8> {
    let mut k = xattr_prefix(ino);
    k.extend_from_slice(name);
    k.push(0);
    k
}

pub fn xattr_name(base: &[u8]) -> &[u8] {
    &base[9..base.len() - 1]
}

pub fn block_prefix(ino: InodeNo) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(BLOCK);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

pub fn block(ino: InodeNo, index: u64) -> Vec<u8> {
    let mut k = block_prefix(ino);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The block index inside a block base key.
pub fn block_index(base: &[u8]) -> u64 {
    u64::from_be_bytes(base[9..17].try_into().unwrap())
}

/// The inode number inside an `I`, `O`, `D`, `X` or `B` key.
pub fn key_ino(base: &[u8]) -> InodeNo {
    InodeNo(u64::from_be_bytes(base[1..9].try_into().unwrap()))
}

pub fn generation(gen: GenerationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(GENERATION);
    k.extend_from_slice(&gen.0.to_be_bytes());
    k
}

pub fn change_prefix(gen: GenerationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(CHANGE);
    k.extend_from_slice(&gen.0.to_be_bytes());
    k
}

pub fn change(gen: GenerationId, ino: InodeNo) -> Vec<u8> {
    let mut k = change_prefix(gen);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k
}

/// Present while the snapshot `gen` is held (no deletion, no pruning).
pub fn hold(gen: GenerationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(HOLD);
    k.extend_from_slice(&gen.0.to_be_bytes());
    k
}

pub fn state(name: &str) -> Vec<u8> {
    let mut k = vec![STATE];
    k.extend_from_slice(name.as_bytes());
    k
}

/// `base ++ gen`.
pub fn versioned(base: &[u8], gen: GenerationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(base.len() + GEN_SUFFIX_LEN);
    k.extend_from_slice(base);
    k.extend_from_slice(&gen.0.to_be_bytes());
    k
}

/// Splits a versioned key into its base and generation.
pub fn split_versioned(key: &[u8]) -> (&[u8], GenerationId) {
    let (base, g) = key.split_at(key.len() - GEN_SUFFIX_LEN);
    (
        base,
        GenerationId(u64::from_be_bytes(g.try_into().unwrap())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_a_name_sort_together_and_names_are_prefix_free() {
        let a1 = versioned(&dirent(InodeNo(1), b"a"), GenerationId(1));
        let a9 = versioned(&dirent(InodeNo(1), b"a"), GenerationId(9));
        let ab = versioned(&dirent(InodeNo(1), b"a\x01"), GenerationId(0));
        assert!(a1 < a9 && a9 < ab);
        let (base, g) = split_versioned(&a9);
        assert_eq!(dirent_name(base), b"a");
        assert_eq!(g, GenerationId(9));
    }

    #[test]
    fn key_bytes_pinned() {
        assert_eq!(inode(InodeNo(0x0102)), b"I\0\0\0\0\0\0\x01\x02".to_vec());
        assert_eq!(block_index(&block(InodeNo(5), 7)), 7);
        assert_eq!(key_ino(&block(InodeNo(5), 7)), InodeNo(5));
        assert_eq!(dirent(InodeNo(2), b"x")[9..], *b"x\0");
    }
}
