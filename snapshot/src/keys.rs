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
//! | `K`  | K gen ino chunk (unversioned) | empty: gen stores a checkpoint of that chunk |
//! | `Q`  | Q ino chunk gen (unversioned) | empty: flattening removed a checkpoint; gen's walk to be bounded again |
//! | `R`  | R ino chunk !gen slot (read index) | the `B` twin's value    |
//! | `P`  | P ino chunk !gen (read index) | checkpoint of the chunk       |
//!
//! `R` is the read index of the block map (docs/metadata.md, "Read index"): every `B`
//! version has a twin under `R`, ordered chunk by chunk ([`CHUNK_BLOCKS`] blocks) and,
//! inside a chunk, newest generation first (`!gen` = bitwise not, big-endian), so a read
//! at G starts at G and walks down; checkpoints (`P`, same order, kept apart so the
//! small twins share pages) end the walk.

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
pub const READ: u8 = b'R';
pub const RECHECK: u8 = b'Q';
pub const CHECKPOINT_REF: u8 = b'K';

pub const CHECKPOINT: u8 = b'P';

/// Blocks per chunk of the read index.
pub const CHUNK_BLOCKS: u64 = 64;

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

/// Splits a versioned key read from the tree into its base and generation, checking
/// that the base has the shape this module builds for its kind: `I`/`O` ino, `B` ino
/// index, `D`/`X` ino name NUL (a name of at least one byte, without NUL). The
/// accessors above (`key_ino`, `block_index`, `dirent_name`, `xattr_name`) may then be
/// used on the base; on a key of another shape they would panic. Such a key is damage
/// (sled checksums its pages, so rather a bug than the disk): the caller reports it.
pub fn check_versioned(key: &[u8]) -> Result<(&[u8], GenerationId), String> {
    if key.len() <= GEN_SUFFIX_LEN {
        return Err(format!(
            "{} bytes, too short for a versioned key",
            key.len()
        ));
    }
    let (base, gen) = split_versioned(key);
    check_base(base)?;
    Ok((base, gen))
}

/// The shape check of `check_versioned`, for a base alone.
pub fn check_base(base: &[u8]) -> Result<(), String> {
    let len = base.len();
    let want = |n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!(
                "a base of kind {:?} is {n} bytes, not {len}",
                base[0] as char
            ))
        }
    };
    match base.first() {
        None => Err("empty base".into()),
        Some(&INODE) | Some(&ORPHAN) => want(9),
        Some(&BLOCK) => want(17),
        Some(&DIRENT) | Some(&XATTR) => {
            if len < 11 || base[len - 1] != 0 {
                Err("a name base does not end with a name and a NUL byte".into())
            } else if base[9..len - 1].contains(&0) {
                Err("a name holds a NUL byte".into())
            } else {
                Ok(())
            }
        }
        Some(&k) => Err(format!("{:?} is not a kind of versioned record", k as char)),
    }
}

/// A key as text for messages: printable ASCII as is, other bytes escaped.
pub fn describe(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// The inode of a change-index key (`C gen ino`), if `key` is one.
pub fn split_change(key: &[u8]) -> Option<(GenerationId, InodeNo)> {
    if key.len() != 17 || key[0] != CHANGE {
        return None;
    }
    let u = |r: std::ops::Range<usize>| u64::from_be_bytes(key[r].try_into().unwrap());
    Some((GenerationId(u(1..9)), InodeNo(u(9..17))))
}

/// `kind ino chunk` (kind `R` or `P`): every read-index entry of one chunk.
fn chunk_prefix(kind: u8, ino: InodeNo, chunk: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(26);
    k.push(kind);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// `kind ino chunk !gen`: where a walk at `gen` starts (entries of `gen` and older follow).
fn chunk_at(kind: u8, ino: InodeNo, chunk: u64, gen: GenerationId) -> Vec<u8> {
    let mut k = chunk_prefix(kind, ino, chunk);
    k.extend_from_slice(&(!gen.0).to_be_bytes());
    k
}

/// Every `R` twin of one chunk.
pub fn rchunk(ino: InodeNo, chunk: u64) -> Vec<u8> {
    chunk_prefix(READ, ino, chunk)
}

/// The `R` twins of one chunk from generation `gen` down.
pub fn rchunk_at(ino: InodeNo, chunk: u64, gen: GenerationId) -> Vec<u8> {
    chunk_at(READ, ino, chunk, gen)
}

/// Every checkpoint of one chunk.
pub fn pchunk(ino: InodeNo, chunk: u64) -> Vec<u8> {
    chunk_prefix(CHECKPOINT, ino, chunk)
}

/// The checkpoint of `chunk` stored under `gen`; also where a search for the newest
/// checkpoint at or below `gen` starts.
pub fn rcheckpoint(ino: InodeNo, chunk: u64, gen: GenerationId) -> Vec<u8> {
    chunk_at(CHECKPOINT, ino, chunk, gen)
}

/// (ino, chunk) of an `R` or `P` key.
pub fn split_chunk(key: &[u8]) -> (InodeNo, u64) {
    (
        key_ino(key),
        u64::from_be_bytes(key[9..17].try_into().unwrap()),
    )
}

/// (generation, slot) of an `R` key.
pub fn split_rkey(key: &[u8]) -> Option<(GenerationId, u8)> {
    if key.len() != 26 || key[0] != READ {
        return None;
    }
    let gen = GenerationId(!u64::from_be_bytes(key[17..25].try_into().unwrap()));
    Some((gen, key[25]))
}

/// The generation of a `P` key.
pub fn split_pkey(key: &[u8]) -> Option<GenerationId> {
    if key.len() != 25 || key[0] != CHECKPOINT {
        return None;
    }
    Some(GenerationId(!u64::from_be_bytes(
        key[17..25].try_into().unwrap(),
    )))
}

/// `K gen`: the checkpoints stored under `gen` (flattening finds them here).
pub fn checkpoint_refs(gen: GenerationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(CHECKPOINT_REF);
    k.extend_from_slice(&gen.0.to_be_bytes());
    k
}

/// `K gen ino chunk`: `gen` stores a checkpoint of `chunk` of `ino`.
pub fn checkpoint_ref(gen: GenerationId, ino: InodeNo, chunk: u64) -> Vec<u8> {
    let mut k = checkpoint_refs(gen);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// (ino, chunk) of a `checkpoint_ref` key.
pub fn split_checkpoint_ref(key: &[u8]) -> Option<(InodeNo, u64)> {
    if key.len() != 25 || key[0] != CHECKPOINT_REF {
        return None;
    }
    let u = |r: std::ops::Range<usize>| u64::from_be_bytes(key[r].try_into().unwrap());
    Some((InodeNo(u(9..17)), u(17..25)))
}

/// `Q ino chunk gen`: the walk of `chunk` at `gen` is to be bounded again.
pub fn recheck(ino: InodeNo, chunk: u64, gen: GenerationId) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(RECHECK);
    k.extend_from_slice(&ino.0.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k.extend_from_slice(&gen.0.to_be_bytes());
    k
}

/// (ino, chunk, gen) of a `recheck` key.
pub fn split_recheck(key: &[u8]) -> Option<(InodeNo, u64, GenerationId)> {
    if key.len() != 25 || key[0] != RECHECK {
        return None;
    }
    let u = |r: std::ops::Range<usize>| u64::from_be_bytes(key[r].try_into().unwrap());
    Some((InodeNo(u(1..9)), u(9..17), GenerationId(u(17..25))))
}

/// The read-index twin of a versioned `B` key (`B ino index gen`), if `key` is one.
pub fn rtwin(key: &[u8]) -> Option<Vec<u8>> {
    if key.len() != 25 || key[0] != BLOCK {
        return None;
    }
    let index = u64::from_be_bytes(key[9..17].try_into().unwrap());
    let gen = GenerationId(u64::from_be_bytes(key[17..25].try_into().unwrap()));
    let mut k = rchunk_at(key_ino(key), index / CHUNK_BLOCKS, gen);
    k.push((index % CHUNK_BLOCKS) as u8);
    Some(k)
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

    #[test]
    fn read_index_twins_sort_by_chunk_then_newest_first() {
        let twin = |idx, g| rtwin(&versioned(&block(InodeNo(5), idx), GenerationId(g))).unwrap();
        assert_eq!(twin(70, 3)[..17], rchunk(InodeNo(5), 1)[..]);
        assert_eq!(split_rkey(&twin(70, 3)), Some((GenerationId(3), 6)));
        assert_eq!(split_chunk(&twin(70, 3)), (InodeNo(5), 1));
        // Newer generations first; a walk at 3 starts after everything of 4.
        assert!(twin(70, 4) < twin(64, 3));
        assert!(rchunk_at(InodeNo(5), 1, GenerationId(3)) > twin(127, 4));
        assert!(rchunk_at(InodeNo(5), 1, GenerationId(3)) <= twin(64, 3));
        let cp = rcheckpoint(InodeNo(5), 1, GenerationId(3));
        assert_eq!(split_pkey(&cp), Some(GenerationId(3)));
        assert!(rcheckpoint(InodeNo(5), 1, GenerationId(4)) < cp);
        assert_eq!(split_chunk(&cp), (InodeNo(5), 1));
        assert_eq!(rtwin(&block(InodeNo(5), 70)), None);
        let r = recheck(InodeNo(5), 1, GenerationId(3));
        assert_eq!(split_recheck(&r), Some((InodeNo(5), 1, GenerationId(3))));
        let k = checkpoint_ref(GenerationId(3), InodeNo(5), 1);
        assert_eq!(split_checkpoint_ref(&k), Some((InodeNo(5), 1)));
    }
}
