//! `BlockStore::verify`: every record of every pack, then every index entry.
//!
//! Packs are scanned without the index (header, records, footer); each record is
//! decompressed and hashed. Index and pending entries, sorted by (pack, offset), are
//! merged with the scan, so an entry is fine only if a valid record with its id and
//! lengths starts exactly where it points. Where a record header is unreadable the
//! scan resumes at the next offset the index knows in that pack. Every problem is one
//! line naming the pack file and offset; damaged or unreachable blocks go to
//! `bad_blocks` (sorted, without duplicates). Verify only reads; a problem is a finding,
//! not an error — `Err` is for a failing index or an unlistable packs directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::index::{self, Entry};
use crate::layout::{Location, FOOTER_LEN, PACK_HEADER_LEN};
use crate::recovery::list_packs;
use crate::scan::{self, PackHeader, Scanned};
use crate::store::BlockStore;
use crate::sync::{lock, read};
use crate::{BlockId, PackId, Result, VerifyReport};

/// Progress is reported at least every this many bytes.
const PROGRESS_STEP: u64 = 4 << 20;

/// An index (or pending) entry: a valid record of `id` must start at `loc`.
pub(crate) struct Expect {
    pub id: BlockId,
    pub loc: Location,
}

pub(crate) struct PackToCheck {
    pub id: PackId,
    pub path: PathBuf,
    /// Bytes to check: the file length, or for the active pack what was written.
    pub len: u64,
    pub active: bool,
}

/// Verifies again when a gc moved entries or deleted packs meanwhile (a scrub of a
/// mounted store may run beside one): its findings could be entries that were just
/// moved. After `ATTEMPTS` the last report stands.
pub(crate) fn run(store: &BlockStore, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        let before = store.gc_epoch.load(Ordering::SeqCst);
        let report = run_once(store, progress)?;
        let quiet = before.is_multiple_of(2) && store.gc_epoch.load(Ordering::SeqCst) == before;
        if quiet || attempt == ATTEMPTS {
            return Ok(report);
        }
        tracing::info!(attempt, "a gc ran during verify; verifying again");
        attempt += 1;
    }
}

fn run_once(store: &BlockStore, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // Index first, then pending, then the writer's extent: every entry then points
    // below the extent, whatever is appended or synced meanwhile.
    let mut expects = Vec::new();
    for entry in index::entries(&store.index) {
        match entry? {
            Entry::Good(id, loc) => expects.push(Expect { id, loc }),
            Entry::Malformed { key, detail } => {
                let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                report
                    .problems
                    .push(format!("index entry {key_hex}: {detail}"));
                if let Ok(k) = <[u8; 32]>::try_from(&key[..]) {
                    report.bad_blocks.push(BlockId(k));
                }
            }
        }
    }
    expects.extend(
        read(&store.pending)
            .iter()
            .map(|(id, loc)| Expect { id: *id, loc: *loc }),
    );
    let (active, next_id) = lock(&store.writer).extent();
    expects.sort_by_key(|e| (e.loc.pack, e.loc.offset, e.id));
    expects.dedup_by(|a, b| a.id == b.id && a.loc == b.loc);

    let mut packs = Vec::new();
    for (id, path) in list_packs(&store.dir)? {
        if id.0 >= next_id {
            continue; // created after this verify started
        }
        let pack = match active {
            Some((a, len)) if a == id => PackToCheck {
                id,
                path,
                len,
                active: true,
            },
            _ => match std::fs::metadata(&path) {
                Ok(m) => PackToCheck {
                    id,
                    path,
                    len: m.len(),
                    active: false,
                },
                Err(e) => {
                    report.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            },
        };
        packs.push(pack);
    }
    let total: u64 = packs.iter().map(|p| p.len).sum();
    progress(0, total);

    let mut done = 0;
    let mut rest = &expects[..];
    for pack in &packs {
        let before = rest.partition_point(|e| e.loc.pack < pack.id);
        for e in &rest[..before] {
            dangling(&mut report, store, e, "the pack file does not exist");
        }
        let mine = rest[before..].partition_point(|e| e.loc.pack == pack.id);
        let (mine, tail) = rest[before..].split_at(mine);
        rest = tail;
        check_pack(pack, mine, &mut report, &mut |pos| {
            progress(done + pos, total)
        });
        done += pack.len;
        progress(done, total);
    }
    for e in rest {
        dangling(&mut report, store, e, "the pack file does not exist");
    }
    report.bad_blocks.sort();
    report.bad_blocks.dedup();
    Ok(report)
}

fn dangling(report: &mut VerifyReport, store: &BlockStore, e: &Expect, why: &str) {
    let path = store.pack_path(e.loc.pack);
    report.problems.push(format!(
        "index entry for block {} points at {} offset {}: {why}",
        e.id,
        path.display(),
        e.loc.offset
    ));
    report.bad_blocks.push(e.id);
}

pub(crate) fn check_pack(
    pack: &PackToCheck,
    mine: &[Expect],
    report: &mut VerifyReport,
    progress: &mut dyn FnMut(u64),
) {
    let path = &pack.path;
    let lost = |report: &mut VerifyReport, why: String| {
        report.problems.push(format!("{}: {why}", path.display()));
        report.bad_blocks.extend(mine.iter().map(|e| e.id));
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return lost(report, format!("cannot open: {e}")),
    };
    match scan::pack_header(&file, pack.len) {
        Ok(PackHeader::Good) => {}
        Ok(PackHeader::TooShort) => return lost(report, "too short for a pack header".into()),
        Ok(PackHeader::Bad(e)) => return lost(report, format!("offset 0: {e}")),
        Err(e) => return lost(report, format!("offset 0: read error: {e}")),
    }
    let (end, footer_count) = if pack.active {
        (pack.len, None)
    } else {
        match scan::footer(&file, pack.len) {
            Ok(Some(f)) => (pack.len - FOOTER_LEN as u64, Some(f.record_count)),
            Ok(None) => {
                report.problems.push(format!(
                    "{}: no valid footer (the pack was never sealed or its end is damaged)",
                    path.display()
                ));
                (pack.len, None)
            }
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: reading the footer: {e}", path.display()));
                (pack.len, None)
            }
        }
    };
    let mut walk = Walk {
        path,
        mine,
        next: 0,
        pos: PACK_HEADER_LEN as u64,
        records: 0,
        lost_track: false,
    };
    let mut reported = 0;
    while walk.pos < end {
        if !walk.step(&file, end, report) {
            break;
        }
        if walk.pos - reported >= PROGRESS_STEP {
            reported = walk.pos;
            progress(walk.pos.min(end));
        }
    }
    for e in &mine[walk.next..] {
        report.problems.push(format!(
            "index entry for block {} points at {} offset {}: no record starts there",
            e.id,
            path.display(),
            e.loc.offset
        ));
        report.bad_blocks.push(e.id);
    }
    if let Some(count) = footer_count.filter(|&c| !walk.lost_track && c != walk.records) {
        report.problems.push(format!(
            "{}: the footer counts {count} records, the pack holds {}",
            path.display(),
            walk.records
        ));
    }
}

/// A walk over the records of one pack, merged with the entries that point into it.
struct Walk<'a> {
    path: &'a Path,
    mine: &'a [Expect],
    /// First entry of `mine` not yet matched against a record start.
    next: usize,
    pos: u64,
    records: u64,
    /// A header was unreadable: records were skipped, the count is not comparable.
    lost_track: bool,
}

impl Walk<'_> {
    /// Checks the record at `pos`; false when nothing further can be read.
    fn step(&mut self, file: &File, end: u64, report: &mut VerifyReport) -> bool {
        let (path, pos) = (self.path.display(), self.pos);
        while self.mine.get(self.next).is_some_and(|e| e.loc.offset < pos) {
            let e = &self.mine[self.next];
            report.problems.push(format!(
                "index entry for block {} points at {path} offset {}: inside another record",
                e.id, e.loc.offset
            ));
            report.bad_blocks.push(e.id);
            self.next += 1;
        }
        let first = self.next;
        while self
            .mine
            .get(self.next)
            .is_some_and(|e| e.loc.offset == pos)
        {
            self.next += 1;
        }
        let here = &self.mine[first..self.next];
        let scanned = scan::record_at(file, pos, end)
            .unwrap_or_else(|e| Scanned::BadHeader(format!("read error: {e}")));
        match scanned {
            Scanned::Valid(h) => {
                self.count(report, h.record_len());
                for e in here.iter().filter(|e| e.id != h.id || !e.loc.matches(&h)) {
                    report.problems.push(format!(
                        "index entry for block {} points at {path} offset {pos}: the record \
                         there is block {} ({} stored, {} raw bytes, flags {:#04x})",
                        e.id, h.id, h.payload_len, h.raw_len, h.flags
                    ));
                    report.bad_blocks.push(e.id);
                }
                self.pos += h.record_len();
                true
            }
            Scanned::BadPayload { header, detail } => {
                self.count(report, header.record_len());
                report.problems.push(format!(
                    "{path} offset {pos}: damaged record of block {}: {detail}",
                    header.id
                ));
                report.bad_blocks.push(header.id);
                report.bad_blocks.extend(here.iter().map(|e| e.id));
                self.pos += header.record_len();
                true
            }
            Scanned::BadHeader(detail) => {
                self.lost_track = true;
                let ids: Vec<String> = here.iter().map(|e| e.id.to_string()).collect();
                let of = if ids.is_empty() {
                    String::new()
                } else {
                    format!(" (record of block {})", ids.join(", "))
                };
                report.bad_blocks.extend(here.iter().map(|e| e.id));
                let resume = self.mine.get(self.next).map(|e| e.loc.offset);
                match resume.filter(|&r| r < end) {
                    Some(r) => {
                        report.problems.push(format!(
                            "{path} offset {pos}: unreadable record header{of}: {detail}; \
                             resuming at offset {r}, the next record the index knows"
                        ));
                        self.pos = r;
                        true
                    }
                    None => {
                        report.problems.push(format!(
                            "{path} offset {pos}: unreadable record header{of}: {detail}; \
                             the last {} bytes of the pack cannot be read",
                            end - pos
                        ));
                        false
                    }
                }
            }
        }
    }

    fn count(&mut self, report: &mut VerifyReport, bytes: u64) {
        self.records += 1;
        report.records_checked += 1;
        report.bytes_checked += bytes;
    }
}
