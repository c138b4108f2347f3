//! Fuzz entry points (docs/fuzzing.md): one per target of the `fuzz/` crate. Each takes
//! arbitrary bytes, runs the decoders the block store runs on bytes it reads from disk,
//! and checks what they promise; it panics only when a promise is broken (and a panic
//! inside a decoder is a bug of that decoder). The fuzz targets, the replay of the
//! checked-in corpus and the property tests call the same functions.
//!
//! - `layout`: the fixed-size layouts (pack header, record header, footer, index value):
//!   never a panic; what decodes follows the record rules and encodes to the same bytes.
//! - `record`: a record (header and payload) as `get`, recovery and verify read it: it
//!   gives exactly the block its id names, or an error; a damaged copy of a real record
//!   never gives other bytes than the block.
//! - `pack`: a whole pack file as recovery and verify walk it: verify finds a pack clean
//!   exactly when every byte of it is a valid record, header or footer; after recovery
//!   seals a pack, verify finds it clean.
//!
//! Not an API: hidden from the docs, and free to change with the fuzz targets.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use crate::layout::{
    checksum, decode_pack_header, encode_pack_header, Footer, Location, PackHeaderError,
    RecordHeader, FLAG_ZSTD, FOOTER_LEN, MAX_BLOCK_LEN, MAX_RECORD_END, PACK_HEADER_LEN,
    RECORD_HEADER_LEN,
};
use crate::recovery::{self, Unsealed};
use crate::scan::{self, PackHeader, Scanned};
use crate::verify::{self, Expect, PackToCheck};
use crate::{record, BlockId, PackId, VerifyReport};

/// A fuzz target: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The targets of this crate, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [Target; 3] = [("layout", layout), ("record", record), ("pack", pack)];

/// Byte 0 chooses the layout (bits 0–1: pack header, record header, footer, index
/// value); bit 7 set: the checksum is recomputed first, so that the fuzzer gets past it
/// to the rules behind it. The rest is the bytes to decode.
pub fn layout(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let fix = sel & 0x80 != 0;
    match sel % 4 {
        0 => pack_header(rest),
        1 => record_header(rest, fix),
        2 => footer(rest, fix),
        _ => index_value(rest),
    }
}

fn pack_header(b: &[u8]) {
    let Some(b) = b.get(..PACK_HEADER_LEN) else {
        return;
    };
    let b: [u8; PACK_HEADER_LEN] = b.try_into().unwrap();
    match decode_pack_header(&b) {
        // The reserved word is ignored; everything before it is the only good header.
        Ok(()) => assert_eq!(b[..12], encode_pack_header()[..12]),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn record_header(b: &[u8], fix: bool) {
    let Some(b) = b.get(..RECORD_HEADER_LEN) else {
        return;
    };
    let mut b: [u8; RECORD_HEADER_LEN] = b.try_into().unwrap();
    if fix {
        let sum = checksum(&b[..RECORD_HEADER_LEN - 4]);
        b[RECORD_HEADER_LEN - 4..].copy_from_slice(&sum);
    }
    match RecordHeader::decode(&b) {
        Ok(h) => {
            assert_eq!(h.encode(), b, "a decoded header encodes to its own bytes");
            assert_eq!(h.check_rules(), Ok(()));
            assert!(h.payload_len <= h.raw_len && h.raw_len as usize <= MAX_BLOCK_LEN);
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn footer(b: &[u8], fix: bool) {
    let Some(b) = b.get(..FOOTER_LEN) else {
        return;
    };
    let mut b: [u8; FOOTER_LEN] = b.try_into().unwrap();
    if fix {
        let sum = checksum(&b[..FOOTER_LEN - 4]);
        b[FOOTER_LEN - 4..].copy_from_slice(&sum);
    }
    match Footer::decode(&b) {
        Ok(f) => assert_eq!(f.encode(), b, "a decoded footer encodes to its own bytes"),
        Err(e) => assert!(!e.is_empty()),
    }
}

fn index_value(b: &[u8]) {
    match Location::decode(b) {
        Ok(loc) => {
            assert_eq!(
                loc.encode()[..],
                *b,
                "a decoded index value encodes to its bytes"
            );
            assert!(loc.stored_len <= loc.raw_len && loc.raw_len as usize <= MAX_BLOCK_LEN);
            assert!(loc.offset >= PACK_HEADER_LEN as u64);
            assert!(loc.record_end() <= MAX_RECORD_END);
            let _ = loc.is_followed_by(&loc);
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// Byte 0, bit 0 clear: the rest is a record (header, then payload) read as `get` reads
/// one (bit 1 set: the checksums, and a raw record's id, are made right first, so that
/// the fuzzer reaches zstd and the id check). Bit 0 set: the rest is `level, position
/// (u16 LE), xor, cut, block...`: the block is encoded as the writer does (level 0–3),
/// one byte of the record is damaged (xor, if not 0) and the record is cut at the
/// position (if `cut` is odd); reading it back must give the block or an error.
pub fn record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut bytes = rest.to_vec();
        if mode & 2 != 0 {
            make_checksums_right(&mut bytes);
        }
        if let Ok(block) = open_record(&bytes) {
            let header = header_of(&bytes).unwrap();
            assert_eq!(block.len(), header.raw_len as usize);
            assert_eq!(
                BlockId::of(&block),
                header.id,
                "a record gave other bytes than its id"
            );
        }
    } else {
        damaged_copy(rest);
    }
}

fn header_of(bytes: &[u8]) -> Result<RecordHeader, String> {
    let hb: [u8; RECORD_HEADER_LEN] = bytes
        .get(..RECORD_HEADER_LEN)
        .ok_or_else(|| format!("{} bytes, too few for a record header", bytes.len()))?
        .try_into()
        .unwrap();
    RecordHeader::decode(&hb)
}

/// A record as a reader opens it: the header, then exactly `payload_len` bytes after it.
fn open_record(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let header = header_of(bytes)?;
    let payload = bytes
        .get(RECORD_HEADER_LEN..)
        .and_then(|p| p.get(..header.payload_len as usize))
        .ok_or_else(|| "the record is cut off".to_string())?;
    let block = record::open_payload(&header, payload.to_vec())?;
    // What a reader does not check itself, `open_payload` promises.
    assert_eq!(block.len(), header.raw_len as usize);
    assert_eq!(BlockId::of(&block), header.id);
    Ok(block)
}

/// Sets the header's lengths, payload checksum (and a raw record's id) from the bytes
/// after it, then the header checksum.
fn make_checksums_right(bytes: &mut Vec<u8>) {
    if bytes.len() < RECORD_HEADER_LEN {
        return;
    }
    bytes.truncate(RECORD_HEADER_LEN + MAX_BLOCK_LEN);
    let payload_len = (bytes.len() - RECORD_HEADER_LEN) as u32;
    let (head, payload) = bytes.split_at_mut(RECORD_HEADER_LEN);
    head[4..8].copy_from_slice(&payload_len.to_le_bytes());
    if head[12] & FLAG_ZSTD == 0 {
        head[8..12].copy_from_slice(&payload_len.to_le_bytes());
        let id = BlockId::of(payload);
        head[13..45].copy_from_slice(&id.0);
        head[45..49].copy_from_slice(&id.0[..4]);
    } else {
        head[45..49].copy_from_slice(&checksum(payload));
    }
    let sum = checksum(&head[..49]);
    head[49..53].copy_from_slice(&sum);
}

fn damaged_copy(rest: &[u8]) {
    if rest.len() < 5 {
        return;
    }
    let (params, block) = rest.split_at(5);
    let block = &block[..block.len().min(MAX_BLOCK_LEN)];
    let level = i32::from(params[0] % 4);
    let rec = record::encode_with_id(BlockId::of(block), block, level);
    assert_eq!(
        open_record(&rec.bytes).as_deref(),
        Ok(block),
        "an intact record reads back"
    );
    let mut bytes = rec.bytes;
    let at = usize::from(u16::from_le_bytes([params[1], params[2]])) % bytes.len();
    bytes[at] ^= params[3];
    if params[4] % 2 == 1 {
        bytes.truncate(at);
    }
    if let Ok(got) = open_record(&bytes) {
        assert!(
            got == block,
            "a damaged record gave other bytes than its block"
        );
    }
}

/// The bytes are a whole pack file (in memory: a memfd). Its header, footer and records
/// are walked as recovery and verify walk them; an unsealed pack is then repaired as
/// recovery does and verified again.
pub fn pack(data: &[u8]) {
    let file = memfd(data);
    let len = data.len() as u64;
    let header = scan::pack_header(&file, len).expect("reading a memfd");
    let footer = scan::footer(&file, len).expect("reading a memfd");
    if let Some(f) = footer {
        assert_eq!(f.pack_len, len);
    }
    let good_header = matches!(header, PackHeader::Good);
    // The records recovery's walk finds valid, and where it stops.
    let (cut, records) = if good_header {
        recovery::valid_prefix(&file, len).expect("reading a memfd")
    } else {
        (PACK_HEADER_LEN as u64, 0)
    };
    let mut expects = Vec::new();
    let mut pos = PACK_HEADER_LEN as u64;
    while good_header && pos < cut {
        let Ok(Scanned::Valid(h)) = scan::record_at(&file, pos, cut) else {
            panic!("recovery found a valid record at {pos} that a second walk does not");
        };
        expects.push(Expect {
            id: h.id,
            loc: Location {
                pack: PackId(0),
                offset: pos,
                stored_len: h.payload_len,
                raw_len: h.raw_len,
                flags: h.flags,
            },
        });
        pos += h.record_len();
    }
    assert_eq!((pos, expects.len() as u64), (cut, records));
    let report = verify_pack(&file, len, &expects);
    let clean = good_header
        && footer.is_some_and(|f| f.record_count == records && cut == len - FOOTER_LEN as u64);
    assert_eq!(
        report.problems.is_empty(),
        clean,
        "verify and recovery disagree about a pack: {:?}",
        report.problems
    );
    for problem in &report.problems {
        assert!(
            problem.contains("/proc/self/fd/"),
            "a problem names the pack: {problem}"
        );
    }
    if (good_header && footer.is_some())
        || matches!(
            header,
            PackHeader::Bad(PackHeaderError::UnsupportedVersion(_))
        )
    {
        return; // sealed, or refused: recovery does not touch it
    }
    let unsealed = Unsealed {
        id: PackId(0),
        path: fd_path(&file).into(),
        file,
        len,
        header,
    };
    recovery::repair(&unsealed, None).expect("repairing a memfd");
    let file = unsealed.file;
    let len = file.metadata().unwrap().len();
    assert!(matches!(
        scan::pack_header(&file, len),
        Ok(PackHeader::Good)
    ));
    let sealed = scan::footer(&file, len)
        .unwrap()
        .expect("recovery seals the pack");
    assert_eq!(sealed.record_count, if good_header { records } else { 0 });
    let report = verify_pack(&file, len, &[]);
    assert!(
        report.problems.is_empty(),
        "a pack recovery sealed is not clean: {:?}",
        report.problems
    );
}

fn verify_pack(file: &File, len: u64, expects: &[Expect]) -> VerifyReport {
    let mut report = VerifyReport::default();
    let pack = PackToCheck {
        id: PackId(0),
        path: fd_path(file).into(),
        len,
        active: false,
    };
    verify::check_pack(&pack, expects, &mut report, &mut |_| {});
    report
}

fn fd_path(file: &File) -> String {
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

fn memfd(data: &[u8]) -> File {
    // SAFETY: the name is a NUL-terminated string; the call has no other precondition.
    let fd = unsafe { libc::memfd_create(c"strata-fuzz-pack".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.write_all_at(data, 0).expect("writing a memfd");
    file
}

/// Corpus seeds cut from a real pack file: its header, footer, record headers and small
/// records for `layout` and `record`, the pack itself for `pack` (if small), and damaged
/// copies of its small blocks for `record`. (target, seed) pairs.
pub fn seeds_from_pack(pack: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let with = |sel: u8, bytes: &[u8]| [&[sel][..], bytes].concat();
    if pack.len() >= PACK_HEADER_LEN {
        seeds.push(("layout", with(0, &pack[..PACK_HEADER_LEN])));
    }
    if pack.len() >= PACK_HEADER_LEN + FOOTER_LEN {
        seeds.push(("layout", with(2, &pack[pack.len() - FOOTER_LEN..])));
    }
    if pack.len() <= 64 << 10 {
        seeds.push(("pack", pack.to_vec()));
        // As recovery finds it after a crash: unsealed, and torn inside a record.
        if pack.len() > PACK_HEADER_LEN + FOOTER_LEN {
            let unsealed = &pack[..pack.len() - FOOTER_LEN];
            seeds.push(("pack", unsealed.to_vec()));
            seeds.push(("pack", unsealed[..unsealed.len() - 10].to_vec()));
        }
    }
    let mut pos = PACK_HEADER_LEN;
    while let Some(Ok(h)) = pack.get(pos..).map(header_of) {
        let end = pos + h.record_len() as usize;
        let Some(rec) = pack.get(pos..end) else {
            break;
        };
        seeds.push(("layout", with(1, &rec[..RECORD_HEADER_LEN])));
        if rec.len() <= 4096 {
            seeds.push(("record", with(0, rec)));
            if let Ok(block) = open_record(rec) {
                let at = (rec.len() / 2) as u16;
                let [lo, hi] = at.to_le_bytes();
                let level = if h.is_compressed() { 1 } else { 0 };
                seeds.push((
                    "record",
                    with(1, &[&[level, lo, hi, 0x01, 0][..], &block].concat()),
                ));
            }
        }
        pos = end;
    }
    seeds
}

/// A corpus seed for `layout` from a real index value.
pub fn seed_from_index_value(value: &[u8]) -> (&'static str, Vec<u8>) {
    ("layout", [&[3u8][..], value].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealed pack of three records, as the writer lays it out.
    fn real_pack() -> Vec<u8> {
        let mut pack = encode_pack_header().to_vec();
        let blocks: [&[u8]; 3] = [b"hello", &[7u8; 3000], &crate::tests::noise(3, 700)];
        for (i, block) in blocks.iter().enumerate() {
            pack.extend(record::encode_with_id(BlockId::of(block), block, i as i32).bytes);
        }
        let footer = Footer {
            record_count: 3,
            pack_len: (pack.len() + FOOTER_LEN) as u64,
        };
        pack.extend(footer.encode());
        pack
    }

    #[test]
    fn real_records_pass_every_target() {
        let pack = real_pack();
        pack_fn(&pack);
        let seeds = seeds_from_pack(&pack);
        assert!(seeds.len() >= 10, "{}", seeds.len());
        for (target, seed) in seeds {
            let f = TARGETS.iter().find(|(t, _)| *t == target).unwrap().1;
            f(&seed);
        }
        let loc = Location {
            pack: PackId(3),
            offset: 16,
            stored_len: 5,
            raw_len: 5,
            flags: 0,
        };
        layout(&seed_from_index_value(&loc.encode()).1);
    }

    fn corpus(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        files.sort();
        files
    }

    /// Every file of each target's checked-in corpus (real records and what the fuzzer
    /// found) passes its target.
    #[test]
    fn the_corpus_replays() {
        for (target, run) in TARGETS {
            let files = corpus(target);
            assert!(!files.is_empty(), "no corpus for {target}");
            for (path, bytes) in files {
                let outcome = std::panic::catch_unwind(|| run(&bytes));
                assert!(outcome.is_ok(), "{} fails its target", path.display());
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// A real input of the corpus, damaged: a byte changed (and cut there), or with
        /// random bytes appended.
        #[test]
        fn damaged_real_inputs_hold(
            target in 0usize..3,
            pick in proptest::num::usize::ANY,
            at in proptest::num::usize::ANY,
            byte in proptest::num::u8::ANY,
            cut in proptest::bool::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let (name, run) = TARGETS[target];
            let files = corpus(name);
            let mut bytes = files[pick % files.len()].1.clone();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
                if cut {
                    bytes.truncate(i);
                }
            }
            bytes.extend(tail);
            run(&bytes);
        }
    }

    fn pack_fn(bytes: &[u8]) {
        pack(bytes);
        // Torn at every length, and with a byte damaged anywhere: recovery and verify
        // agree, and what recovery seals is clean.
        for cut in 0..bytes.len() {
            pack(&bytes[..cut]);
        }
        for at in (0..bytes.len()).step_by(7) {
            let mut b = bytes.to_vec();
            b[at] ^= 0x20;
            pack(&b);
        }
    }
}
