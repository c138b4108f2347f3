//! Byte encodings of the metadata records stored in sled. Fixed-width little-endian
//! integers; the layout constants below are the single source of truth and are pinned
//! by tests against known bytes. Described in docs/metadata.md.
//!
//! Every versioned value starts with a one-byte envelope: `TOMBSTONE` (the key was
//! removed in this generation) or `PRESENT` followed by the record.

use crate::error::{Error, Result};
use crate::types::{FileKind, InodeNo, Timestamp};
use strata_blockstore::BlockId;

pub const TOMBSTONE: u8 = 0;
pub const PRESENT: u8 = 1;

/// Inode record layout (version 1).
pub mod inode_layout {
    pub const KIND: usize = 0; // u8
    pub const PERM: usize = 1; // u16
    pub const UID: usize = 3; // u32
    pub const GID: usize = 7; // u32
    pub const NLINK: usize = 11; // u32
    pub const SIZE: usize = 15; // u64
    pub const BLOCKS: usize = 23; // u64
    pub const ATIME: usize = 31; // i64 secs + u32 nsecs
    pub const MTIME: usize = 43;
    pub const CTIME: usize = 55;
    pub const CRTIME: usize = 67;
    pub const RDEV: usize = 79; // u32
    pub const PARENT: usize = 83; // u64
    /// Fixed part; a symlink's target follows it.
    pub const FIXED_LEN: usize = 91;
}

/// An inode as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord {
    pub kind: FileKind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    pub rdev: u32,
    /// For directories: the parent directory (the root is its own parent). For other
    /// kinds a hint: the directory of its latest name (diff and history name paths by it).
    pub parent: InodeNo,
    /// For symlinks: the target.
    pub target: Vec<u8>,
}

fn put_ts(buf: &mut [u8], at: usize, t: Timestamp) {
    buf[at..at + 8].copy_from_slice(&t.secs.to_le_bytes());
    buf[at + 8..at + 12].copy_from_slice(&t.nsecs.to_le_bytes());
}

fn get_ts(buf: &[u8], at: usize) -> Timestamp {
    Timestamp {
        secs: i64::from_le_bytes(buf[at..at + 8].try_into().unwrap()),
        nsecs: u32::from_le_bytes(buf[at + 8..at + 12].try_into().unwrap()),
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().unwrap())
}

impl InodeRecord {
    pub fn encode(&self) -> Vec<u8> {
        use inode_layout::*;
        let mut b = vec![0u8; FIXED_LEN + self.target.len()];
        b[KIND] = self.kind as u8;
        b[PERM..PERM + 2].copy_from_slice(&self.perm.to_le_bytes());
        b[UID..UID + 4].copy_from_slice(&self.uid.to_le_bytes());
        b[GID..GID + 4].copy_from_slice(&self.gid.to_le_bytes());
        b[NLINK..NLINK + 4].copy_from_slice(&self.nlink.to_le_bytes());
        b[SIZE..SIZE + 8].copy_from_slice(&self.size.to_le_bytes());
        b[BLOCKS..BLOCKS + 8].copy_from_slice(&self.blocks.to_le_bytes());
        put_ts(&mut b, ATIME, self.atime);
        put_ts(&mut b, MTIME, self.mtime);
        put_ts(&mut b, CTIME, self.ctime);
        put_ts(&mut b, CRTIME, self.crtime);
        b[RDEV..RDEV + 4].copy_from_slice(&self.rdev.to_le_bytes());
        b[PARENT..PARENT + 8].copy_from_slice(&self.parent.0.to_le_bytes());
        b[FIXED_LEN..].copy_from_slice(&self.target);
        b
    }

    pub fn decode(b: &[u8]) -> Result<InodeRecord> {
        use inode_layout::*;
        if b.len() < FIXED_LEN {
            return Err(bad("inode", format!("{} bytes, need {FIXED_LEN}", b.len())));
        }
        let kind = FileKind::from_u8(b[KIND])
            .ok_or_else(|| bad("inode", format!("unknown kind {}", b[KIND])))?;
        Ok(InodeRecord {
            kind,
            perm: u16::from_le_bytes([b[PERM], b[PERM + 1]]),
            uid: u32_at(b, UID),
            gid: u32_at(b, GID),
            nlink: u32_at(b, NLINK),
            size: u64_at(b, SIZE),
            blocks: u64_at(b, BLOCKS),
            atime: get_ts(b, ATIME),
            mtime: get_ts(b, MTIME),
            ctime: get_ts(b, CTIME),
            crtime: get_ts(b, CRTIME),
            rdev: u32_at(b, RDEV),
            parent: InodeNo(u64_at(b, PARENT)),
            target: b[FIXED_LEN..].to_vec(),
        })
    }
}

/// Directory entry value: child inode (u64) and kind (u8).
pub const DIRENT_LEN: usize = 9;

pub fn encode_dirent(ino: InodeNo, kind: FileKind) -> Vec<u8> {
    let mut b = Vec::with_capacity(DIRENT_LEN);
    b.extend_from_slice(&ino.0.to_le_bytes());
    b.push(kind as u8);
    b
}

pub fn decode_dirent(b: &[u8]) -> Result<(InodeNo, FileKind)> {
    if b.len() != DIRENT_LEN {
        return Err(bad(
            "dirent",
            format!("{} bytes, need {DIRENT_LEN}", b.len()),
        ));
    }
    let kind =
        FileKind::from_u8(b[8]).ok_or_else(|| bad("dirent", format!("unknown kind {}", b[8])))?;
    Ok((InodeNo(u64_at(b, 0)), kind))
}

/// Block map value: the 32-byte block id (a hole has no value at all).
pub fn decode_block(b: &[u8]) -> Result<BlockId> {
    let id: [u8; 32] = b
        .try_into()
        .map_err(|_| bad("block map", format!("{} bytes, need 32", b.len())))?;
    Ok(BlockId(id))
}

/// A read-index checkpoint (docs/metadata.md, "Read index"): the present blocks of a
/// chunk as (slot, 32-byte block id), slots ascending. Layout: a u64 LE bitmap of the
/// present slots, then the ids of the present slots in slot order.
pub fn encode_checkpoint(present: &[(u8, [u8; 32])]) -> Vec<u8> {
    let mut bits = 0u64;
    let mut b = Vec::with_capacity(8 + 32 * present.len());
    b.extend_from_slice(&[0; 8]);
    for (slot, id) in present {
        bits |= 1 << slot;
        b.extend_from_slice(id);
    }
    b[..8].copy_from_slice(&bits.to_le_bytes());
    b
}

/// The inverse of `encode_checkpoint`.
pub fn decode_checkpoint(b: &[u8]) -> Result<Vec<(u8, [u8; 32])>> {
    let bits = u64::from_le_bytes(
        b.get(..8)
            .ok_or_else(|| bad("checkpoint", format!("{} bytes", b.len())))?
            .try_into()
            .unwrap(),
    );
    if b.len() != 8 + 32 * bits.count_ones() as usize {
        return Err(bad(
            "checkpoint",
            format!("{} bytes for {} blocks", b.len(), bits.count_ones()),
        ));
    }
    Ok((0..64u8)
        .filter(|s| bits & (1 << s) != 0)
        .zip(b[8..].chunks_exact(32))
        .map(|(s, id)| (s, id.try_into().unwrap()))
        .collect())
}

fn bad(what: &str, detail: String) -> Error {
    Error::BadRecord {
        key: what.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InodeRecord {
        InodeRecord {
            kind: FileKind::Symlink,
            perm: 0o4755,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 3,
            blocks: 8,
            atime: Timestamp { secs: 1, nsecs: 2 },
            mtime: Timestamp { secs: -3, nsecs: 4 },
            ctime: Timestamp { secs: 5, nsecs: 6 },
            crtime: Timestamp { secs: 7, nsecs: 8 },
            rdev: 0x0102,
            parent: InodeNo(9),
            target: b"abc".to_vec(),
        }
    }

    #[test]
    fn inode_round_trip() {
        let r = sample();
        assert_eq!(InodeRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn inode_layout_pinned() {
        let b = sample().encode();
        assert_eq!(b.len(), 94);
        assert_eq!(b[0], 3);
        assert_eq!(&b[1..3], &[0xed, 0x09]); // 0o4755 = 0x09ed
        assert_eq!(&b[3..7], &1000u32.to_le_bytes());
        assert_eq!(&b[43..51], &(-3i64).to_le_bytes());
        assert_eq!(&b[79..83], &[0x02, 0x01, 0, 0]);
        assert_eq!(&b[83..91], &9u64.to_le_bytes());
        assert_eq!(&b[91..], b"abc");
    }

    #[test]
    fn short_and_bad_records_are_errors() {
        assert!(InodeRecord::decode(&[1, 2, 3]).is_err());
        let mut b = sample().encode();
        b[0] = 99;
        assert!(InodeRecord::decode(&b).is_err());
        assert!(decode_dirent(&[0; 8]).is_err());
        assert!(decode_block(&[0; 31]).is_err());
    }

    #[test]
    fn dirent_round_trip() {
        let b = encode_dirent(InodeNo(42), FileKind::Dir);
        assert_eq!(b, vec![42, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(decode_dirent(&b).unwrap(), (InodeNo(42), FileKind::Dir));
    }
}
