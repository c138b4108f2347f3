//! The bytes of an intent-log record (docs/intent-log.md): a 36-byte header, then a
//! payload of entries. All integers little-endian.
//!
//! ```text
//! header:  magic "STRLOG\0\x01" (8) | epoch u64 | seq u64 | payload_len u32 |
//!          payload_sum [4] | header_sum [4]
//! entry:   kind u8, then
//!   1 put       klen u32, key, vlen u32, value
//!   2 delete    klen u32, key
//!   3 data      gen u64, ino u64, block u64, offset u32, len u32, bytes
//!   4 drop      gen u64, ino u64, block u64
//!   5 counters  next_ino u64, next_gen u64
//! ```
//! `sum4(x)` is the first 4 bytes of blake3(x): `payload_sum = sum4(payload)`,
//! `header_sum = sum4(header[0..32])`.

use crate::types::{GenerationId, InodeNo};

pub const MAGIC: [u8; 8] = *b"STRLOG\0\x01";
pub const HEADER_LEN: usize = 36;
/// Largest payload a record may carry (the log's own size bounds it below this).
pub const MAX_PAYLOAD: usize = 1 << 30;

const PUT: u8 = 1;
const DELETE: u8 = 2;
const DATA: u8 = 3;
const DROP: u8 = 4;
const COUNTERS: u8 = 5;

/// One change a record carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A raw metadata key set to a value (the overlay's change).
    Put { key: Vec<u8>, value: Vec<u8> },
    /// A raw metadata key removed.
    Delete { key: Vec<u8> },
    /// Bytes of buffered file data: `bytes` at `offset` within block `block` of `ino` in
    /// the live generation `gen`.
    Data {
        gen: GenerationId,
        ino: InodeNo,
        block: u64,
        offset: u32,
        bytes: Vec<u8>,
    },
    /// A buffered block dropped without being committed (truncation, a hole punched, the
    /// file removed, a block copied over it).
    Drop {
        gen: GenerationId,
        ino: InodeNo,
        block: u64,
    },
    /// The store's counters of inode and generation numbers.
    Counters { next_ino: u64, next_gen: u64 },
}

fn sum4(bytes: &[u8]) -> [u8; 4] {
    let h = blake3::hash(bytes);
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.as_bytes()[..4]);
    out
}

/// Appends the encoding of `e` to `out`.
pub fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    let u32_len = |n: usize| (n as u32).to_le_bytes();
    match e {
        Entry::Put { key, value } => {
            out.push(PUT);
            out.extend_from_slice(&u32_len(key.len()));
            out.extend_from_slice(key);
            out.extend_from_slice(&u32_len(value.len()));
            out.extend_from_slice(value);
        }
        Entry::Delete { key } => {
            out.push(DELETE);
            out.extend_from_slice(&u32_len(key.len()));
            out.extend_from_slice(key);
        }
        Entry::Data {
            gen,
            ino,
            block,
            offset,
            bytes,
        } => {
            out.push(DATA);
            out.extend_from_slice(&gen.0.to_le_bytes());
            out.extend_from_slice(&ino.0.to_le_bytes());
            out.extend_from_slice(&block.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&u32_len(bytes.len()));
            out.extend_from_slice(bytes);
        }
        Entry::Drop { gen, ino, block } => {
            out.push(DROP);
            out.extend_from_slice(&gen.0.to_le_bytes());
            out.extend_from_slice(&ino.0.to_le_bytes());
            out.extend_from_slice(&block.to_le_bytes());
        }
        Entry::Counters { next_ino, next_gen } => {
            out.push(COUNTERS);
            out.extend_from_slice(&next_ino.to_le_bytes());
            out.extend_from_slice(&next_gen.to_le_bytes());
        }
    }
}

/// Reads the entries of a payload; the error names the first thing that is wrong.
pub fn decode_entries(mut p: &[u8]) -> Result<Vec<Entry>, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if p.len() < n {
            return Err(format!("{what}: {n} bytes needed, {} left", p.len()));
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    fn u32_of(p: &mut &[u8], what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(take(p, 4, what)?.try_into().unwrap()))
    }
    fn u64_of(p: &mut &[u8], what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(take(p, 8, what)?.try_into().unwrap()))
    }
    fn bytes_of(p: &mut &[u8], what: &str) -> Result<Vec<u8>, String> {
        let n = u32_of(p, what)? as usize;
        Ok(take(p, n, what)?.to_vec())
    }
    let mut out = Vec::new();
    while let Some((&kind, rest)) = p.split_first() {
        p = rest;
        let at = out.len();
        let e = match kind {
            PUT => Entry::Put {
                key: bytes_of(&mut p, "put key")?,
                value: bytes_of(&mut p, "put value")?,
            },
            DELETE => Entry::Delete {
                key: bytes_of(&mut p, "delete key")?,
            },
            DATA => Entry::Data {
                gen: GenerationId(u64_of(&mut p, "data generation")?),
                ino: InodeNo(u64_of(&mut p, "data inode")?),
                block: u64_of(&mut p, "data block")?,
                offset: u32_of(&mut p, "data offset")?,
                bytes: bytes_of(&mut p, "data bytes")?,
            },
            DROP => Entry::Drop {
                gen: GenerationId(u64_of(&mut p, "drop generation")?),
                ino: InodeNo(u64_of(&mut p, "drop inode")?),
                block: u64_of(&mut p, "drop block")?,
            },
            COUNTERS => Entry::Counters {
                next_ino: u64_of(&mut p, "counters")?,
                next_gen: u64_of(&mut p, "counters")?,
            },
            other => return Err(format!("entry {at}: unknown kind {other}")),
        };
        out.push(e);
    }
    Ok(out)
}

/// The header of a record of `payload`.
pub fn header(epoch: u64, seq: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&epoch.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[28..32].copy_from_slice(&sum4(payload));
    let hs = sum4(&h[0..32]);
    h[32..36].copy_from_slice(&hs);
    h
}

/// A header read back: (epoch, seq, payload_len, payload_sum), or why it is not one.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(u64, u64, usize, [u8; 4]), String> {
    if h[0..8] != MAGIC {
        return Err("no record magic".into());
    }
    if h[32..36] != sum4(&h[0..32]) {
        return Err("header checksum mismatch".into());
    }
    let epoch = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let seq = u64::from_le_bytes(h[16..24].try_into().unwrap());
    let len = u32::from_le_bytes(h[24..28].try_into().unwrap()) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("payload length {len} over the limit"));
    }
    let mut ps = [0u8; 4];
    ps.copy_from_slice(&h[28..32]);
    Ok((epoch, seq, len, ps))
}

/// Whether `payload` is the one a header with `sum` describes.
pub fn payload_matches(payload: &[u8], sum: [u8; 4]) -> bool {
    sum4(payload) == sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Counters {
                next_ino: 7,
                next_gen: 3,
            },
            Entry::Put {
                key: b"I\0\0\0\0\0\0\0\x02".to_vec(),
                value: vec![1, 2, 3],
            },
            Entry::Delete {
                key: b"Dxyz".to_vec(),
            },
            Entry::Drop {
                gen: GenerationId(2),
                ino: InodeNo(9),
                block: 4,
            },
            Entry::Data {
                gen: GenerationId(2),
                ino: InodeNo(9),
                block: 4,
                offset: 100,
                bytes: vec![0xab; 4096],
            },
        ]
    }

    #[test]
    fn entries_round_trip_and_damage_is_named() {
        let mut p = Vec::new();
        for e in sample() {
            encode_entry(&e, &mut p);
        }
        assert_eq!(decode_entries(&p).unwrap(), sample());
        let err = decode_entries(&p[..p.len() - 1]).unwrap_err();
        assert!(err.contains("data bytes"), "{err}");
        let mut bad = p.clone();
        bad[0] = 99;
        assert!(decode_entries(&bad)
            .unwrap_err()
            .contains("unknown kind 99"));
        assert_eq!(decode_entries(&[]).unwrap(), vec![]);
    }

    #[test]
    fn headers_check_themselves() {
        let h = header(5, 9, b"payload");
        let (epoch, seq, len, sum) = parse_header(&h).unwrap();
        assert_eq!((epoch, seq, len), (5, 9, 7));
        assert!(payload_matches(b"payload", sum));
        assert!(!payload_matches(b"paylaod", sum));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(parse_header(&bad).unwrap_err(), "header checksum mismatch");
        assert_eq!(
            parse_header(&[0; HEADER_LEN]).unwrap_err(),
            "no record magic"
        );
    }
}
