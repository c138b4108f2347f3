//! zstd contexts, one compressor and one decompressor per thread.
//!
//! Contexts are created lazily on first use in a thread and kept for its lifetime
//! (`thread_local`), so no lock is ever taken to compress or decompress. A compressor
//! remembers its level and is re-levelled when a store with another level uses it.
//! Compression never fails from the caller's point of view: any zstd error, or a
//! result that does not fit the caller's limit, means "store raw".

use std::cell::RefCell;
use std::io::Cursor;

use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Appends the zstd frame of `src` at `level` to `out` if it is at most `limit` bytes
/// and returns true; otherwise leaves `out` as it was and returns false.
pub(crate) fn compress_within(level: i32, src: &[u8], out: &mut Vec<u8>, limit: usize) -> bool {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fresh = match slot.take() {
            Some((l, c)) if l == level => Ok(c),
            Some((_, mut c)) => c.set_compression_level(level).map(|()| c),
            None => Compressor::new(level),
        };
        let mut compressor = match fresh {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(level, error = %e, "zstd compressor unavailable; storing raw");
                return false;
            }
        };
        let start = out.len();
        out.reserve_exact(limit);
        let mut cursor = Cursor::new(std::mem::take(out));
        cursor.set_position(start as u64);
        let written = compressor.compress_to_buffer(src, &mut cursor);
        *out = cursor.into_inner();
        *slot = Some((level, compressor));
        match written {
            Ok(n) if n <= limit => {
                debug_assert_eq!(out.len(), start + n);
                true
            }
            _ => {
                out.truncate(start);
                false
            }
        }
    })
}

/// Decompresses one zstd frame that must expand to exactly `raw_len` bytes.
pub(crate) fn decompress_exact(src: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(Decompressor::new().map_err(|e| format!("zstd: {e}"))?),
        };
        let mut out = Vec::with_capacity(raw_len);
        let n = d
            .decompress_to_buffer(src, &mut out)
            .map_err(|e| format!("zstd payload does not decompress: {e}"))?;
        if n != raw_len {
            return Err(format!(
                "payload decompresses to {n} bytes, header says {raw_len}"
            ));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_within_limit_and_appends() {
        let src = vec![b'a'; 10_000];
        let mut out = b"head".to_vec();
        assert!(compress_within(3, &src, &mut out, 1000));
        assert_eq!(&out[..4], b"head");
        assert_eq!(decompress_exact(&out[4..], src.len()).unwrap(), src);
        // Another level on the same thread works too.
        let mut out2 = Vec::new();
        assert!(compress_within(19, &src, &mut out2, 1000));
        assert_eq!(decompress_exact(&out2, src.len()).unwrap(), src);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let src: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut out = b"xy".to_vec();
        assert!(!compress_within(3, &src, &mut out, 100));
        assert_eq!(out, b"xy");
    }

    #[test]
    fn wrong_length_or_garbage_is_an_error() {
        let src = vec![1u8; 5000];
        let mut out = Vec::new();
        assert!(compress_within(1, &src, &mut out, 5000));
        assert!(decompress_exact(&out, 4999).is_err());
        assert!(decompress_exact(&out, 5001).is_err());
        assert!(decompress_exact(b"not zstd at all", 10).is_err());
    }
}
