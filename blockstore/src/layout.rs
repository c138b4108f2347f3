//! On-disk byte layouts: the pack header, the block record header, the pack footer and
//! the index value.
//!
//! This module is the single source of truth for every offset and width the blockstore
//! writes; `docs/packs.md` describes the same bytes for humans, and the tests at the
//! bottom pin both against known bytes. Invariants:
//! - integers are fixed-width little-endian, nothing is padded or aligned;
//! - encoders never fail; decoders check everything that can be checked from the bytes
//!   they are given and say what was wrong in a human-readable `String`;
//! - a decoded `RecordHeader` always satisfies the record rules (`raw_len` ≤
//!   `MAX_BLOCK_LEN`, compressed ⇒ `payload_len < raw_len`, raw ⇒ `payload_len ==
//!   raw_len` and `payload_sum` = the id's first 4 bytes), so readers may size buffers
//!   from it.

use crate::{BlockId, PackId};

/// Largest block the store accepts (and the largest `raw_len` a reader believes).
pub const MAX_BLOCK_LEN: usize = 1 << 20;

// ---- pack header: at offset 0 of every pack --------------------------------------

pub(crate) const PACK_MAGIC: [u8; 8] = *b"STRPACK\0";
pub(crate) const PACK_FORMAT_VERSION: u32 = 1;
const PH_MAGIC: usize = 0;
const PH_VERSION: usize = 8;
const PH_RESERVED: usize = 12;
pub(crate) const PACK_HEADER_LEN: usize = 16;

// ---- block record header: before every payload ------------------------------------

/// "SBLK" read as a little-endian u32.
pub(crate) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"SBLK");
const RH_MAGIC: usize = 0;
const RH_PAYLOAD_LEN: usize = 4;
const RH_RAW_LEN: usize = 8;
const RH_FLAGS: usize = 12;
const RH_ID: usize = 13;
const RH_PAYLOAD_SUM: usize = 45;
const RH_CHECKSUM: usize = 49;
pub(crate) const RECORD_HEADER_LEN: usize = 53;

/// Record flag bit 0: the payload is one zstd frame of the block.
pub(crate) const FLAG_ZSTD: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_ZSTD;

// ---- pack footer: the last bytes of a sealed pack ----------------------------------

/// "SEAL" read as a little-endian u32.
pub(crate) const FOOTER_MAGIC: u32 = u32::from_le_bytes(*b"SEAL");
const F_MAGIC: usize = 0;
const F_RECORD_COUNT: usize = 4;
const F_PACK_LEN: usize = 12;
const F_CHECKSUM: usize = 20;
pub(crate) const FOOTER_LEN: usize = 24;

// ---- index value: sled tree "blocks", key = 32-byte id ------------------------------

const I_PACK: usize = 0;
const I_OFFSET: usize = 4;
const I_STORED_LEN: usize = 12;
const I_RAW_LEN: usize = 16;
const I_FLAGS: usize = 20;
pub(crate) const INDEX_VALUE_LEN: usize = 21;
/// No record ends past this offset: a file offset (`off_t`) is signed 64-bit.
pub(crate) const MAX_RECORD_END: u64 = i64::MAX as u64;

const CHECKSUM_LEN: usize = 4;

// Every field follows the previous one with no gap, and the lengths add up.
const _: () = {
    assert!(PH_MAGIC + 8 == PH_VERSION && PH_VERSION + 4 == PH_RESERVED);
    assert!(PH_RESERVED + 4 == PACK_HEADER_LEN);
    assert!(RH_MAGIC + 4 == RH_PAYLOAD_LEN && RH_PAYLOAD_LEN + 4 == RH_RAW_LEN);
    assert!(RH_RAW_LEN + 4 == RH_FLAGS && RH_FLAGS + 1 == RH_ID);
    assert!(RH_ID + 32 == RH_PAYLOAD_SUM && RH_PAYLOAD_SUM + CHECKSUM_LEN == RH_CHECKSUM);
    assert!(RH_CHECKSUM + CHECKSUM_LEN == RECORD_HEADER_LEN);
    assert!(F_MAGIC + 4 == F_RECORD_COUNT && F_RECORD_COUNT + 8 == F_PACK_LEN);
    assert!(F_PACK_LEN + 8 == F_CHECKSUM && F_CHECKSUM + CHECKSUM_LEN == FOOTER_LEN);
    assert!(I_PACK + 4 == I_OFFSET && I_OFFSET + 8 == I_STORED_LEN);
    assert!(I_STORED_LEN + 4 == I_RAW_LEN && I_RAW_LEN + 4 == I_FLAGS);
    assert!(I_FLAGS + 1 == INDEX_VALUE_LEN);
    assert!(MAX_BLOCK_LEN <= u32::MAX as usize);
};

/// First 4 bytes of blake3 over `bytes`: the header, payload and footer checksums.
pub(crate) fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = blake3::hash(bytes);
    let mut c = [0u8; CHECKSUM_LEN];
    c.copy_from_slice(&h.as_bytes()[..CHECKSUM_LEN]);
    c
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

// ---- pack header -------------------------------------------------------------------

pub(crate) fn encode_pack_header() -> [u8; PACK_HEADER_LEN] {
    let mut b = [0u8; PACK_HEADER_LEN];
    b[PH_MAGIC..PH_VERSION].copy_from_slice(&PACK_MAGIC);
    b[PH_VERSION..PH_RESERVED].copy_from_slice(&PACK_FORMAT_VERSION.to_le_bytes());
    // PH_RESERVED..: written as zero, ignored on read.
    b
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PackHeaderError {
    /// Not a strata pack (or its first bytes are damaged).
    BadMagic,
    /// A strata pack of a format this build does not read.
    UnsupportedVersion(u32),
}

impl std::fmt::Display for PackHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackHeaderError::BadMagic => write!(f, "bad pack header magic (not a strata pack)"),
            PackHeaderError::UnsupportedVersion(v) => write!(
                f,
                "pack format version {v} is not supported (this build reads version \
                 {PACK_FORMAT_VERSION})"
            ),
        }
    }
}

pub(crate) fn decode_pack_header(b: &[u8; PACK_HEADER_LEN]) -> Result<(), PackHeaderError> {
    if b[PH_MAGIC..PH_VERSION] != PACK_MAGIC {
        return Err(PackHeaderError::BadMagic);
    }
    match u32_at(b, PH_VERSION) {
        PACK_FORMAT_VERSION => Ok(()),
        v => Err(PackHeaderError::UnsupportedVersion(v)),
    }
}

// ---- record header -----------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// Bytes of payload after the header (what is stored).
    pub payload_len: u32,
    /// Bytes of the block itself (what `get` returns).
    pub raw_len: u32,
    pub flags: u8,
    pub id: BlockId,
    /// `checksum(payload)`: catches damage zstd would decode to the same block. For a
    /// raw payload (= the block) it is the id's first 4 bytes, and costs nothing.
    pub payload_sum: [u8; 4],
}

impl RecordHeader {
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }

    /// Header plus payload: how far the next record starts after this one.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.payload_len)
    }

    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[RH_MAGIC..RH_PAYLOAD_LEN].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        b[RH_PAYLOAD_LEN..RH_RAW_LEN].copy_from_slice(&self.payload_len.to_le_bytes());
        b[RH_RAW_LEN..RH_FLAGS].copy_from_slice(&self.raw_len.to_le_bytes());
        b[RH_FLAGS] = self.flags;
        b[RH_ID..RH_PAYLOAD_SUM].copy_from_slice(&self.id.0);
        b[RH_PAYLOAD_SUM..RH_CHECKSUM].copy_from_slice(&self.payload_sum);
        let sum = checksum(&b[..RH_CHECKSUM]);
        b[RH_CHECKSUM..].copy_from_slice(&sum);
        b
    }

    pub fn decode(b: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, String> {
        match u32_at(b, RH_MAGIC) {
            RECORD_MAGIC => {}
            FOOTER_MAGIC => return Err("a pack footer where a record was expected".into()),
            m => return Err(format!("bad record magic {m:#010x}")),
        }
        if b[RH_CHECKSUM..] != checksum(&b[..RH_CHECKSUM]) {
            return Err("record header checksum mismatch".into());
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[RH_ID..RH_PAYLOAD_SUM]);
        let mut payload_sum = [0u8; CHECKSUM_LEN];
        payload_sum.copy_from_slice(&b[RH_PAYLOAD_SUM..RH_CHECKSUM]);
        let h = RecordHeader {
            payload_len: u32_at(b, RH_PAYLOAD_LEN),
            raw_len: u32_at(b, RH_RAW_LEN),
            flags: b[RH_FLAGS],
            id: BlockId(id),
            payload_sum,
        };
        h.check_rules()?;
        Ok(h)
    }

    /// The rules every record header must follow.
    pub fn check_rules(&self) -> Result<(), String> {
        check_lengths(self.payload_len, self.raw_len, self.flags)?;
        if !self.is_compressed() && self.payload_sum[..] != self.id.0[..CHECKSUM_LEN] {
            return Err("raw payload checksum differs from its id".into());
        }
        Ok(())
    }
}

/// The record rules on lengths and flags, shared by record headers and index values
/// (an index value breaking them cannot point at a valid record). They bound every
/// length a reader sizes a buffer from: `payload_len <= raw_len <= MAX_BLOCK_LEN`.
fn check_lengths(payload: u32, raw: u32, flags: u8) -> Result<(), String> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown record flags {flags:#04x}"));
    }
    if raw as usize > MAX_BLOCK_LEN {
        return Err(format!(
            "raw length {raw} exceeds the {MAX_BLOCK_LEN}-byte limit"
        ));
    }
    let compressed = flags & FLAG_ZSTD != 0;
    if compressed && payload >= raw {
        return Err(format!(
            "compressed payload of {payload} bytes for {raw} raw bytes"
        ));
    }
    if !compressed && payload != raw {
        return Err(format!(
            "raw payload of {payload} bytes for {raw} raw bytes"
        ));
    }
    Ok(())
}

// ---- footer ------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    /// Records between the pack header and the footer.
    pub record_count: u64,
    /// Length of the whole pack file, footer included.
    pub pack_len: u64,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[F_MAGIC..F_RECORD_COUNT].copy_from_slice(&FOOTER_MAGIC.to_le_bytes());
        b[F_RECORD_COUNT..F_PACK_LEN].copy_from_slice(&self.record_count.to_le_bytes());
        b[F_PACK_LEN..F_CHECKSUM].copy_from_slice(&self.pack_len.to_le_bytes());
        let sum = checksum(&b[..F_CHECKSUM]);
        b[F_CHECKSUM..].copy_from_slice(&sum);
        b
    }

    pub fn decode(b: &[u8; FOOTER_LEN]) -> Result<Footer, String> {
        if u32_at(b, F_MAGIC) != FOOTER_MAGIC {
            return Err("no footer magic".into());
        }
        if b[F_CHECKSUM..] != checksum(&b[..F_CHECKSUM]) {
            return Err("footer checksum mismatch".into());
        }
        Ok(Footer {
            record_count: u64_at(b, F_RECORD_COUNT),
            pack_len: u64_at(b, F_PACK_LEN),
        })
    }
}

// ---- index value -------------------------------------------------------------------

/// Where a block's record lives; the value of its index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub pack: PackId,
    /// Offset of the record header in the pack file.
    pub offset: u64,
    /// Payload bytes (the record is `RECORD_HEADER_LEN` longer).
    pub stored_len: u32,
    pub raw_len: u32,
    pub flags: u8,
}

impl Location {
    pub fn encode(&self) -> [u8; INDEX_VALUE_LEN] {
        let mut b = [0u8; INDEX_VALUE_LEN];
        b[I_PACK..I_OFFSET].copy_from_slice(&self.pack.0.to_le_bytes());
        b[I_OFFSET..I_STORED_LEN].copy_from_slice(&self.offset.to_le_bytes());
        b[I_STORED_LEN..I_RAW_LEN].copy_from_slice(&self.stored_len.to_le_bytes());
        b[I_RAW_LEN..I_FLAGS].copy_from_slice(&self.raw_len.to_le_bytes());
        b[I_FLAGS] = self.flags;
        b
    }

    /// Decodes an index value. Refused: a value whose lengths and flags break the
    /// record rules (no valid record matches it; and readers size their buffer from
    /// `stored_len`, so an unchecked one could ask for 4 GiB), and one whose record
    /// would start inside the pack header or end past `MAX_RECORD_END`. So the offset
    /// arithmetic of a decoded location never overflows.
    pub fn decode(b: &[u8]) -> Result<Location, String> {
        if b.len() != INDEX_VALUE_LEN {
            return Err(format!(
                "index value of {} bytes, expected {INDEX_VALUE_LEN}",
                b.len()
            ));
        }
        let loc = Location {
            pack: PackId(u32_at(b, I_PACK)),
            offset: u64_at(b, I_OFFSET),
            stored_len: u32_at(b, I_STORED_LEN),
            raw_len: u32_at(b, I_RAW_LEN),
            flags: b[I_FLAGS],
        };
        check_lengths(loc.stored_len, loc.raw_len, loc.flags)
            .map_err(|e| format!("index value: {e}"))?;
        if loc.offset < PACK_HEADER_LEN as u64 {
            return Err(format!(
                "index value: offset {} lies inside the pack header",
                loc.offset
            ));
        }
        if loc.offset > MAX_RECORD_END - RECORD_HEADER_LEN as u64 - u64::from(loc.stored_len) {
            return Err(format!(
                "index value: offset {} is beyond any pack file",
                loc.offset
            ));
        }
        Ok(loc)
    }

    /// Whether `next`'s record starts where this one ends, in the same pack.
    pub fn is_followed_by(&self, next: &Location) -> bool {
        self.pack == next.pack
            && self.offset + RECORD_HEADER_LEN as u64 + u64::from(self.stored_len) == next.offset
    }

    /// The record header this location promises (everything but the id).
    pub fn matches(&self, h: &RecordHeader) -> bool {
        h.payload_len == self.stored_len && h.raw_len == self.raw_len && h.flags == self.flags
    }

    pub fn record_end(&self) -> u64 {
        self.offset + RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn pack_header_bytes_are_pinned() {
        assert_eq!(
            hex(&encode_pack_header()),
            "5354525041434b00_01000000_00000000".replace('_', "")
        );
        assert_eq!(decode_pack_header(&encode_pack_header()), Ok(()));
        let mut b = encode_pack_header();
        b[8] = 2;
        assert_eq!(
            decode_pack_header(&b),
            Err(PackHeaderError::UnsupportedVersion(2))
        );
        b[0] = b'X';
        assert_eq!(decode_pack_header(&b), Err(PackHeaderError::BadMagic));
        // The reserved word is ignored by readers.
        let mut b = encode_pack_header();
        b[12] = 7;
        assert_eq!(decode_pack_header(&b), Ok(()));
    }

    #[test]
    fn record_header_bytes_are_pinned() {
        let mut id = [0u8; 32];
        for (i, b) in id.iter_mut().enumerate() {
            *b = i as u8;
        }
        let h = RecordHeader {
            payload_len: 0x0102_0304,
            raw_len: 0x0506_0708,
            flags: FLAG_ZSTD,
            id: BlockId(id),
            payload_sum: checksum(b"payload"),
        };
        let b = h.encode();
        let expected = concat!(
            "53424c4b",                                                         // magic "SBLK"
            "04030201",                                                         // payload_len
            "08070605",                                                         // raw_len
            "01",                                                               // flags: zstd
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", // id
        );
        assert_eq!(hex(&b[..RH_PAYLOAD_SUM]), expected);
        assert_eq!(hex(&b[RH_PAYLOAD_SUM..RH_CHECKSUM]), PINNED_PAYLOAD_SUM);
        assert_eq!(
            hex(&b[RH_CHECKSUM..]),
            hex(&blake3::hash(&b[..49]).as_bytes()[..4])
        );
        assert_eq!(hex(&b[RH_CHECKSUM..]), PINNED_RECORD_CHECKSUM);
        assert_eq!(b.len(), 53);
    }

    /// First 4 bytes of blake3(b"payload"): pins the checksum algorithm.
    const PINNED_PAYLOAD_SUM: &str = "ec90915f";
    /// First 4 bytes of blake3 over the 49 header bytes above.
    const PINNED_RECORD_CHECKSUM: &str = "2cb9740c";

    #[test]
    fn footer_bytes_are_pinned() {
        let f = Footer {
            record_count: 3,
            pack_len: 0x1122_3344_5566,
        };
        let b = f.encode();
        assert_eq!(
            hex(&b[..F_CHECKSUM]),
            concat!("5345414c", "0300000000000000", "6655443322110000")
        );
        assert_eq!(hex(&b[F_CHECKSUM..]), PINNED_FOOTER_CHECKSUM);
        assert_eq!(Footer::decode(&b), Ok(f));
        assert_eq!(b.len(), 24);
    }

    const PINNED_FOOTER_CHECKSUM: &str = "0c03ca65";

    #[test]
    fn index_value_bytes_are_pinned() {
        let l = Location {
            pack: PackId(0x0a0b_0c0d),
            offset: 0x0102_0304_0506_0708,
            stored_len: 0x1000,
            raw_len: 0x2000,
            flags: 1,
        };
        let b = l.encode();
        assert_eq!(
            hex(&b),
            concat!("0d0c0b0a", "0807060504030201", "00100000", "00200000", "01")
        );
        assert_eq!(Location::decode(&b), Ok(l));
        assert!(Location::decode(&b[..20]).is_err());
    }

    /// A damaged index value used to be believed as it was: its `stored_len` sized the
    /// read buffer (`u32::MAX`: a 4 GiB allocation for one block), and an offset near
    /// `u64::MAX` overflowed `record_end` (a panic in a debug build, a wrapped offset in
    /// a release one).
    #[test]
    fn index_value_breaking_the_record_rules_is_refused() {
        let good = Location {
            pack: PackId(1),
            offset: 16,
            stored_len: 10,
            raw_len: 100,
            flags: FLAG_ZSTD,
        };
        assert_eq!(Location::decode(&good.encode()), Ok(good));
        let cases = [
            (
                Location {
                    stored_len: u32::MAX,
                    raw_len: u32::MAX,
                    flags: 0,
                    ..good
                },
                "exceeds the 1048576-byte limit",
            ),
            (
                Location {
                    stored_len: 100,
                    ..good
                },
                "compressed payload of 100 bytes for 100 raw bytes",
            ),
            (Location { flags: 0, ..good }, "raw payload of 10 bytes"),
            (
                Location {
                    flags: 0x80,
                    ..good
                },
                "unknown record flags 0x80",
            ),
            (Location { offset: 3, ..good }, "inside the pack header"),
            (
                Location {
                    offset: u64::MAX - 20,
                    ..good
                },
                "beyond any pack file",
            ),
        ];
        for (loc, why) in cases {
            let err = Location::decode(&loc.encode()).unwrap_err();
            assert!(err.contains(why), "{loc:?}: {err}");
        }
        // The largest offset accepted still has its record end representable.
        let last = Location {
            offset: MAX_RECORD_END - RECORD_HEADER_LEN as u64 - 10,
            ..good
        };
        assert_eq!(
            Location::decode(&last.encode()).unwrap().record_end(),
            MAX_RECORD_END
        );
    }

    #[test]
    fn header_decode_checks_every_rule() {
        let good = RecordHeader {
            payload_len: 10,
            raw_len: 100,
            flags: FLAG_ZSTD,
            id: BlockId([7; 32]),
            payload_sum: [1, 2, 3, 4],
        };
        assert_eq!(RecordHeader::decode(&good.encode()), Ok(good));
        let raw = RecordHeader {
            payload_len: 100,
            flags: 0,
            payload_sum: [7; 4],
            ..good
        };
        assert_eq!(RecordHeader::decode(&raw.encode()), Ok(raw));
        let bad = [
            RecordHeader {
                flags: 0x02,
                ..good
            },
            RecordHeader {
                payload_len: 100,
                ..good
            },
            RecordHeader { flags: 0, ..good },
            RecordHeader {
                payload_sum: [7, 7, 7, 8],
                ..raw
            },
            RecordHeader {
                raw_len: MAX_BLOCK_LEN as u32 + 1,
                payload_len: 5,
                ..good
            },
        ];
        for h in bad {
            assert!(RecordHeader::decode(&h.encode()).is_err(), "{h:?}");
        }
        // Every single flipped bit is caught (magic, checksum or the checksum itself).
        let bytes = good.encode();
        for i in 0..RECORD_HEADER_LEN * 8 {
            let mut b = bytes;
            b[i / 8] ^= 1 << (i % 8);
            assert!(RecordHeader::decode(&b).is_err(), "bit {i}");
        }
        let f = Footer {
            record_count: 1,
            pack_len: 99,
        }
        .encode();
        let mut as_header = [0u8; RECORD_HEADER_LEN];
        as_header[..FOOTER_LEN].copy_from_slice(&f);
        assert!(RecordHeader::decode(&as_header)
            .unwrap_err()
            .contains("footer"));
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, RECORD_HEADER_LEN)) {
            let mut h = [0u8; RECORD_HEADER_LEN];
            h.copy_from_slice(&bytes);
            let _ = RecordHeader::decode(&h);
            let mut f = [0u8; FOOTER_LEN];
            f.copy_from_slice(&bytes[..FOOTER_LEN]);
            let _ = Footer::decode(&f);
            let _ = Location::decode(&bytes[..INDEX_VALUE_LEN]);
            let mut p = [0u8; PACK_HEADER_LEN];
            p.copy_from_slice(&bytes[..PACK_HEADER_LEN]);
            let _ = decode_pack_header(&p);
        }
    }
}
