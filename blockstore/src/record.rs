//! Block records: a block turned into the bytes of one record (id, compression choice,
//! header), and a record read back turned into the block's bytes.
//!
//! Invariants: an encoded record's payload is zstd only when that saves at least 1/16
//! of the block (and at least one byte); `open_payload` returns bytes only when they
//! hash to the id in the header — never wrong bytes.

use crate::codec;
use crate::layout::{checksum, RecordHeader, FLAG_ZSTD, RECORD_HEADER_LEN};
use crate::BlockId;

/// A block ready to append: `bytes` is the header followed by the payload.
pub(crate) struct EncodedRecord {
    pub header: RecordHeader,
    pub bytes: Vec<u8>,
}

/// Encodes `data` (at most `MAX_BLOCK_LEN` bytes; the caller checks) whose id the
/// caller already computed.
pub(crate) fn encode_with_id(id: BlockId, data: &[u8], level: i32) -> EncodedRecord {
    let raw_len = data.len();
    // Compression must save at least 1/16, and at least one byte.
    let limit = (raw_len - raw_len / 16).min(raw_len.saturating_sub(1));
    let mut bytes = Vec::with_capacity(RECORD_HEADER_LEN + raw_len);
    bytes.resize(RECORD_HEADER_LEN, 0);
    let compressed = level != 0 && codec::compress_within(level, data, &mut bytes, limit);
    let payload_sum = if compressed {
        checksum(&bytes[RECORD_HEADER_LEN..])
    } else {
        bytes.extend_from_slice(data);
        // blake3(payload) = blake3(block) = the id: no second hash needed.
        let mut sum = [0u8; 4];
        sum.copy_from_slice(&id.0[..4]);
        sum
    };
    let header = RecordHeader {
        payload_len: (bytes.len() - RECORD_HEADER_LEN) as u32,
        raw_len: raw_len as u32,
        flags: if compressed { FLAG_ZSTD } else { 0 },
        id,
        payload_sum,
    };
    bytes[..RECORD_HEADER_LEN].copy_from_slice(&header.encode());
    EncodedRecord { header, bytes }
}

/// The block inside a record whose header already decoded: checks the payload
/// checksum, decompresses if needed and checks the result against the header's id.
/// (A raw payload's checksum is its id's prefix, so the id check covers it.)
pub(crate) fn open_payload(header: &RecordHeader, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    if payload.len() != header.payload_len as usize {
        return Err(format!(
            "payload is {} bytes, header says {}",
            payload.len(),
            header.payload_len
        ));
    }
    let data = if header.is_compressed() {
        // zstd ignores some bits of a frame: damage there decodes to the right block,
        // so the stored bytes carry their own checksum.
        if checksum(&payload) != header.payload_sum {
            return Err("payload checksum mismatch".into());
        }
        codec::decompress_exact(&payload, header.raw_len as usize)?
    } else {
        payload
    };
    let actual = BlockId::of(&data);
    if actual != header.id {
        return Err(format!(
            "content hashes to {actual}, not to its id {}",
            header.id
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(data: &[u8], level: i32) -> EncodedRecord {
        encode_with_id(BlockId::of(data), data, level)
    }

    fn split(rec: &EncodedRecord) -> (RecordHeader, Vec<u8>) {
        let mut h = [0u8; RECORD_HEADER_LEN];
        h.copy_from_slice(&rec.bytes[..RECORD_HEADER_LEN]);
        (
            RecordHeader::decode(&h).unwrap(),
            rec.bytes[RECORD_HEADER_LEN..].to_vec(),
        )
    }

    #[test]
    fn compressible_is_compressed_and_opens() {
        let data = vec![42u8; 65536];
        let rec = encode(&data, 3);
        let (h, payload) = split(&rec);
        assert_eq!(h, rec.header);
        assert!(h.is_compressed());
        assert!(payload.len() < 1000);
        assert_eq!(open_payload(&h, payload).unwrap(), data);
    }

    #[test]
    fn level_zero_and_tiny_blocks_are_raw() {
        let data = vec![42u8; 65536];
        let (h, payload) = split(&encode(&data, 0));
        assert!(!h.is_compressed());
        assert_eq!(payload, data);
        for len in 0..20 {
            let data = vec![0u8; len];
            let (h, payload) = split(&encode(&data, 3));
            assert_eq!(open_payload(&h, payload).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn savings_below_one_sixteenth_stay_raw() {
        // Random bytes with a compressible tail worth less than 1/16 ...
        let mut data = crate::tests::noise(1, 65536);
        data[65536 - 2048..].fill(0);
        let (h, _) = split(&encode(&data, 3));
        assert!(!h.is_compressed());
        // ... and worth more.
        data[65536 - 8192..].fill(0);
        let (h, _) = split(&encode(&data, 3));
        assert!(h.is_compressed());
    }

    #[test]
    fn wrong_content_is_refused() {
        let data = vec![1u8; 4096];
        let (h, mut payload) = split(&encode(&data, 0));
        payload[100] ^= 1;
        assert!(open_payload(&h, payload).unwrap_err().contains("hashes to"));
    }

    #[test]
    fn every_bit_of_a_zstd_payload_is_covered() {
        // Some of these flips decode to the very same block (zstd ignores those bits);
        // the payload checksum must catch them all the same.
        let data = crate::tests::text(2, 3000);
        let (h, payload) = split(&encode(&data, 3));
        assert!(h.is_compressed());
        let mut same_block = 0;
        for bit in 0..payload.len() * 8 {
            let mut p = payload.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            if codec::decompress_exact(&p, data.len()).is_ok_and(|d| d == data) {
                same_block += 1;
            }
            assert!(open_payload(&h, p).is_err(), "bit {bit}");
        }
        assert!(
            same_block > 0,
            "the checksum is needed: zstd alone misses flips"
        );
    }
}
