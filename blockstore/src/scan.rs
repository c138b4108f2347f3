//! Reading a pack without its index: its header, its footer, and its records one at a
//! time from a given offset. Used by recovery at open and by verify.
//!
//! Nothing here trusts anything but the bytes: a record is `Valid` only when its header
//! checks out, it lies wholly below `end`, and its payload decodes to the id in its
//! header. I/O errors are returned as such; damage is a `Scanned` value.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::layout::{
    decode_pack_header, Footer, PackHeaderError, RecordHeader, FOOTER_LEN, PACK_HEADER_LEN,
    RECORD_HEADER_LEN,
};
use crate::record;

pub(crate) enum PackHeader {
    Good,
    /// The file is shorter than a pack header.
    TooShort,
    Bad(PackHeaderError),
}

pub(crate) fn pack_header(file: &File, len: u64) -> io::Result<PackHeader> {
    if len < PACK_HEADER_LEN as u64 {
        return Ok(PackHeader::TooShort);
    }
    let mut b = [0u8; PACK_HEADER_LEN];
    file.read_exact_at(&mut b, 0)?;
    Ok(match decode_pack_header(&b) {
        Ok(()) => PackHeader::Good,
        Err(e) => PackHeader::Bad(e),
    })
}

/// The footer of a pack `len` bytes long, if it has a valid one that says so.
pub(crate) fn footer(file: &File, len: u64) -> io::Result<Option<Footer>> {
    if len < (PACK_HEADER_LEN + FOOTER_LEN) as u64 {
        return Ok(None);
    }
    let mut b = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut b, len - FOOTER_LEN as u64)?;
    Ok(Footer::decode(&b).ok().filter(|f| f.pack_len == len))
}

pub(crate) enum Scanned {
    /// A complete record that decodes to its id.
    Valid(RecordHeader),
    /// The header checks out (so the next record starts after this one), the payload
    /// does not: wrong hash, bad zstd, or cut off by `end`.
    BadPayload {
        header: RecordHeader,
        detail: String,
    },
    /// No usable header here: where the next record starts is unknown.
    BadHeader(String),
}

/// Checks the record starting at `offset` of a pack whose records end at `end`.
pub(crate) fn record_at(file: &File, offset: u64, end: u64) -> io::Result<Scanned> {
    let left = end.saturating_sub(offset);
    if left < RECORD_HEADER_LEN as u64 {
        return Ok(Scanned::BadHeader(format!(
            "{left} bytes left, too few for a record header"
        )));
    }
    let mut hb = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut hb, offset)?;
    let header = match RecordHeader::decode(&hb) {
        Ok(h) => h,
        Err(detail) => return Ok(Scanned::BadHeader(detail)),
    };
    if header.record_len() > left {
        let detail = format!(
            "record of {} bytes cut off after {left} bytes",
            header.record_len()
        );
        return Ok(Scanned::BadPayload { header, detail });
    }
    let mut payload = vec![0u8; header.payload_len as usize];
    file.read_exact_at(&mut payload, offset + RECORD_HEADER_LEN as u64)?;
    Ok(match record::open_payload(&header, payload) {
        Ok(_) => Scanned::Valid(header),
        Err(detail) => Scanned::BadPayload { header, detail },
    })
}
