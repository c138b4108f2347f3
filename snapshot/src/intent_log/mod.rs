//! The intent log: how an fsync becomes durable with one sequential write and one
//! fdatasync, without a commit (docs/intent-log.md).
//!
//! `STORE/intent.log` holds records back to back from offset 0 (`record`). A record
//! carries what changed in memory since the previous record — overlay keys, buffered
//! file data, dropped buffers, the counters — so the records of the current *epoch*,
//! replayed in order over the last commit, give the state as of the last record. Every
//! commit (a checkpoint) writes the next epoch into sled in its batch; once that commit
//! is durable the log starts again at offset 0 under the new epoch, and the older
//! records, wherever they still lie, no longer count.
//!
//! Invariants:
//! - A record is written only after the previous one is durable, at the offset where it
//!   ended (one writer at a time: `sync`'s leader, or a checkpoint).
//! - Replay takes the records of the epoch sled names, in order, with consecutive
//!   sequence numbers from 0, stopping at the first record that is incomplete, damaged,
//!   of another epoch or out of sequence (a torn tail, or the old records after it).
//! - The file only grows, in zero-filled steps, so a record's fdatasync writes data into
//!   allocated blocks and never has to commit a change of the file's extents.
//!
//! Layout: `record` (the bytes), this file (the file), `sync` (group commit, the
//! checkpoint's part, replay into the store's state).

pub(crate) mod record;
pub(crate) mod sync;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use record::{Entry, HEADER_LEN};

/// The file name of the log in the store directory.
pub const LOG_FILE: &str = "intent.log";
/// The log grows by this much at a time (zero-filled).
const GROW: u64 = 4 << 20;

/// The open log file and where the next record goes.
pub(crate) struct IntentLog {
    file: File,
    path: PathBuf,
    /// Bytes the file holds (zero-filled up to here).
    len: u64,
    /// Where the next record goes.
    offset: u64,
    epoch: u64,
    /// Sequence number of the next record of this epoch.
    seq: u64,
    /// The file grows to at most this; a record that does not fit asks for a checkpoint.
    max_len: u64,
}

/// What an append did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// The record is durable.
    Durable,
    /// It does not fit: a checkpoint must empty the log first.
    Full,
}

impl IntentLog {
    /// Opens (or creates) the log of the store at `store` and reads the records of
    /// `epoch`: the entries of each, in order. The next record goes after them.
    pub fn open(store: &Path, epoch: u64, max_len: u64) -> Result<(IntentLog, Vec<Vec<Entry>>)> {
        let path = store.join(LOG_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !existed {
            crate::durable::fsync_dir(store)?;
        }
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut log = IntentLog {
            file,
            path,
            len,
            offset: 0,
            epoch,
            seq: 0,
            max_len: max_len.max(GROW),
        };
        let records = log.read_records()?;
        Ok((log, records))
    }

    /// The valid records of the current epoch from offset 0; sets `offset` and `seq`
    /// after the last.
    fn read_records(&mut self) -> Result<Vec<Vec<Entry>>> {
        let mut bytes = vec![0u8; self.len as usize];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io(&self.path, e))?;
        let (records, end) =
            parse_records(&bytes, self.epoch).map_err(|(at, detail)| Error::BadRecord {
                key: format!("{} record at offset {at}", self.path.display()),
                detail,
            })?;
        self.offset = end;
        self.seq = records.len() as u64;
        Ok(records)
    }

    /// Appends a record of `entries` and makes it durable (one fdatasync), or says the
    /// log is full.
    pub fn append(&mut self, payload: &[u8]) -> Result<Appended> {
        let total = HEADER_LEN as u64 + payload.len() as u64;
        let end = self.offset + total;
        if end > self.max_len || payload.len() > record::MAX_PAYLOAD {
            return Ok(Appended::Full);
        }
        if end > self.len {
            self.grow(end)?;
        }
        let mut buf = Vec::with_capacity(total as usize);
        buf.extend_from_slice(&record::header(self.epoch, self.seq, payload));
        buf.extend_from_slice(payload);
        self.file
            .write_all_at(&buf, self.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))?;
        self.offset = end;
        self.seq += 1;
        Ok(Appended::Durable)
    }

    /// Zero-fills the file up to at least `need` (in `GROW` steps) and makes its size
    /// durable.
    fn grow(&mut self, need: u64) -> Result<()> {
        let target = need.div_ceil(GROW) * GROW;
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.len;
        while at < target {
            let n = ((target - at) as usize).min(zeros.len());
            self.file
                .write_all_at(&zeros[..n], at)
                .map_err(|e| Error::io(&self.path, e))?;
            at += n as u64;
        }
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        self.len = target;
        Ok(())
    }

    /// Starts again at offset 0 under `epoch` (after a checkpoint made every record so
    /// far durable in sled).
    pub fn reset(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.offset = 0;
        self.seq = 0;
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes of records in the log.
    pub fn used(&self) -> u64 {
        self.offset
    }

    pub fn max_len(&self) -> u64 {
        self.max_len
    }
}

/// What `parse_records` found: each record's entries, and the offset after the last.
pub type Parsed = (Vec<Vec<Entry>>, u64);

/// The records of `epoch` at the start of a log's bytes (docs/intent-log.md, "Replay").
/// A record whose checksums hold but whose entries do not parse is an error: its offset
/// and what is wrong.
pub fn parse_records(bytes: &[u8], epoch: u64) -> std::result::Result<Parsed, (u64, String)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(h) = bytes.get(at..at + HEADER_LEN) {
        let h: &[u8; HEADER_LEN] = h.try_into().expect("a header's length");
        let Ok((e, seq, len, sum)) = record::parse_header(h) else {
            break;
        };
        if e != epoch || seq != out.len() as u64 {
            break;
        }
        let start = at + HEADER_LEN;
        let Some(payload) = bytes.get(start..start.saturating_add(len)) else {
            break;
        };
        if !record::payload_matches(payload, sum) {
            break;
        }
        let entries = record::decode_entries(payload).map_err(|d| (at as u64, d))?;
        out.push(entries);
        at = start + len;
    }
    Ok((out, at as u64))
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn payload(n: u8) -> Vec<u8> {
        let mut p = Vec::new();
        record::encode_entry(
            &Entry::Put {
                key: vec![n],
                value: vec![n; 100],
            },
            &mut p,
        );
        p
    }

    #[test]
    fn records_of_the_epoch_come_back_in_order_and_a_torn_tail_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, got) = IntentLog::open(dir.path(), 1, 64 << 20).unwrap();
        assert!(got.is_empty());
        for n in 0..3 {
            assert_eq!(log.append(&payload(n)).unwrap(), Appended::Durable);
        }
        let third_at = log.used() - (HEADER_LEN + payload(2).len()) as u64;
        drop(log);
        let (log, got) = IntentLog::open(dir.path(), 1, 64 << 20).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            log.used(),
            third_at + (HEADER_LEN + payload(2).len()) as u64
        );
        drop(log);
        // A torn third record: the first two remain.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(LOG_FILE))
            .unwrap();
        f.write_all_at(&[0xff], third_at + HEADER_LEN as u64 + 5)
            .unwrap();
        let (log, got) = IntentLog::open(dir.path(), 1, 64 << 20).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            log.used(),
            third_at,
            "the next record overwrites the torn one"
        );
        // Another epoch: nothing counts; after a reset, new records overwrite the old.
        drop(log);
        let (mut log, got) = IntentLog::open(dir.path(), 2, 64 << 20).unwrap();
        assert!(got.is_empty());
        log.reset(2);
        log.append(&payload(9)).unwrap();
        drop(log);
        let (_, got) = IntentLog::open(dir.path(), 2, 64 << 20).unwrap();
        assert_eq!(got.len(), 1, "old epoch records after it are not taken");
        assert_eq!(
            got[0],
            vec![Entry::Put {
                key: vec![9],
                value: vec![9; 100]
            }]
        );
    }

    #[test]
    fn a_full_log_asks_for_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = IntentLog::open(dir.path(), 0, GROW).unwrap();
        let big = vec![0u8; (GROW as usize) - HEADER_LEN - 10];
        assert_eq!(log.append(&big).unwrap(), Appended::Durable);
        assert_eq!(log.append(&payload(1)).unwrap(), Appended::Full);
        log.reset(1);
        assert_eq!(log.append(&payload(1)).unwrap(), Appended::Durable);
        assert_eq!(
            std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            GROW
        );
    }
}
