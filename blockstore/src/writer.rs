//! The active pack: appending records, sealing a full pack, starting the next one,
//! and handing `sync` the files it must fsync. Lives behind `BlockStore::writer`.
//!
//! Invariants:
//! - `ActivePack::len` is the end of the last complete record: every byte below it was
//!   written by a successful write, and after a failed write the file is cut back to
//!   it. If that cut fails, the writer is failed (the file's tail is unknown).
//! - Only packs this writer created are appended to (ids from `next_id` up, which
//!   recovery set above every existing pack).
//! - A pack leaves `active` only sealed (footer written); it then waits in
//!   `sealed_unsynced` until a sync has fsynced it.
//! - After a failed fsync (or failed cut-back) `failure` is set for good, and every
//!   later append, seal and sync returns `Error::Io`: never pretend after a failed
//!   fsync (the kernel may have dropped the dirty pages it could not write).
//! - Writes are plain positional writes (`pwrite`), no userspace buffer, so a reader
//!   with its own descriptor sees a record as soon as `append` returns.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::layout::{encode_pack_header, Footer, FOOTER_LEN, PACK_HEADER_LEN};
use crate::sync::Arc;
use crate::{Error, PackId, Result};

pub(crate) struct PackWriter {
    dir: PathBuf,
    max_pack_size: u64,
    next_id: u32,
    active: Option<ActivePack>,
    sealed_unsynced: Vec<SyncFile>,
    /// A pack file was created since the last sync: the directory needs an fsync.
    dir_dirty: bool,
    failure: Option<Failure>,
    /// Mirrors `failure.is_some()` for lock-free checks by `BlockStore`.
    failed: Arc<AtomicBool>,
    closed: bool,
    /// Injected failures (tests); all off by default.
    pub(crate) faults: Faults,
}

struct ActivePack {
    id: PackId,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// `len` as of the last planned fsync: nothing to sync while they agree.
    synced_len: u64,
    records: u64,
}

struct Failure {
    path: PathBuf,
    what: String,
}

/// Storage faults to simulate, for tests of the error paths.
#[derive(Default)]
pub(crate) struct Faults {
    /// Bytes the "disk" still takes; a write beyond writes what fits, then ENOSPC.
    pub space_left: Option<u64>,
    /// Every fsync fails with EIO.
    pub fail_fsync: bool,
    /// `gc` stops as a kill -9 would right after making an index change durable, before
    /// deleting the pack files it made garbage.
    pub gc_crash_before_delete: bool,
}

pub(crate) struct SyncFile {
    path: PathBuf,
    file: Arc<File>,
}

/// What one `sync` must make durable, taken under the writer lock and run outside it.
pub(crate) struct SyncPlan {
    files: Vec<SyncFile>,
    dir: Option<PathBuf>,
    fail_fsync: bool,
}

impl SyncPlan {
    /// fdatasync every file, then the directory; the first failure with its path.
    pub fn run(&self) -> std::result::Result<(), (PathBuf, io::Error)> {
        for f in &self.files {
            if self.fail_fsync {
                return Err((f.path.clone(), io::Error::from_raw_os_error(libc::EIO)));
            }
            f.file.sync_data().map_err(|e| (f.path.clone(), e))?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| (dir.clone(), e))?;
        }
        Ok(())
    }
}

/// A write error as the API reports it: a full disk is `NoSpace`, the rest `Io`.
pub(crate) fn write_error(path: &Path, e: io::Error) -> Error {
    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::WriteZero
        );
    if full {
        Error::NoSpace {
            path: path.to_path_buf(),
        }
    } else {
        Error::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn write_at(faults: &mut Faults, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    if let Some(left) = faults.space_left {
        if buf.len() as u64 > left {
            faults.space_left = Some(0);
            file.write_all_at(&buf[..left as usize], offset)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        faults.space_left = Some(left - buf.len() as u64);
    }
    file.write_all_at(buf, offset)
}

impl PackWriter {
    pub fn new(dir: &Path, max_pack_size: u64, next_id: u32) -> PackWriter {
        PackWriter {
            dir: dir.to_path_buf(),
            max_pack_size,
            next_id,
            active: None,
            sealed_unsynced: Vec::new(),
            dir_dirty: false,
            failure: None,
            failed: Arc::new(AtomicBool::new(false)),
            closed: false,
            faults: Faults::default(),
        }
    }

    /// A flag that turns true (for good) when the writer fails.
    pub fn failed_flag(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    /// Err if an earlier failure makes writing unsafe.
    pub fn check(&self) -> Result<()> {
        match &self.failure {
            None => Ok(()),
            Some(f) => Err(Error::Io {
                path: f.path.clone(),
                source: io::Error::other(format!(
                    "the block store refuses writes after an earlier failure: {}",
                    f.what
                )),
            }),
        }
    }

    /// Remembers a failure that makes every later write unsafe (the first one wins). The
    /// error reaches the caller, whose layer logs the refusal once (the snapshot layer's
    /// poisoned store); this logs it at debug level only.
    pub fn fail(&mut self, path: &Path, what: String) {
        tracing::debug!(path = %path.display(), "block store failed, refusing writes: {what}");
        if self.failure.is_none() {
            self.failure = Some(Failure {
                path: path.to_path_buf(),
                what,
            });
            self.failed.store(true, Ordering::Release);
        }
    }

    /// The pack being appended to and its length, and the first id not yet used.
    pub fn extent(&self) -> (Option<(PackId, u64)>, u32) {
        (self.active.as_ref().map(|a| (a.id, a.len)), self.next_id)
    }

    /// Appends one complete record; returns where it starts.
    pub fn append(&mut self, record: &[u8]) -> Result<(PackId, u64)> {
        self.check()?;
        let full =
            |a: &ActivePack| a.records > 0 && a.len + record.len() as u64 > self.max_pack_size;
        if self.active.as_ref().is_some_and(full) {
            self.seal_active()?;
        }
        let mut a = match self.active.take() {
            Some(a) => a,
            None => self.start_pack()?,
        };
        let offset = a.len;
        let out = match write_at(&mut self.faults, &a.file, record, offset) {
            Ok(()) => {
                a.len += record.len() as u64;
                a.records += 1;
                Ok((a.id, offset))
            }
            Err(e) => Err(self.undo_write(&a.path, &a.file, offset, e)),
        };
        self.active = Some(a);
        out
    }

    /// Cuts `file` back to `len` after a failed write and says what went wrong.
    fn undo_write(&mut self, path: &Path, file: &File, len: u64, e: io::Error) -> Error {
        tracing::warn!(path = %path.display(), offset = len, error = %e, "pack write failed");
        if let Err(te) = file.set_len(len) {
            self.fail(
                path,
                format!("cutting a failed write back to {len} bytes: {te}"),
            );
        }
        write_error(path, e)
    }

    fn start_pack(&mut self) -> Result<ActivePack> {
        let id = PackId(self.next_id);
        let path = self.dir.join(id.file_name());
        let next = self.next_id.checked_add(1).ok_or_else(|| Error::Io {
            path: path.clone(),
            source: io::Error::other("pack numbers exhausted"),
        })?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| write_error(&path, e))?;
        self.next_id = next;
        self.dir_dirty = true;
        if let Err(e) = write_at(&mut self.faults, &file, &encode_pack_header(), 0) {
            drop(file);
            // If the removal fails too, the next open seals the short file as empty.
            if let Err(re) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %re, "removing a failed new pack");
            }
            return Err(write_error(&path, e));
        }
        tracing::debug!(pack = %id, "started pack");
        Ok(ActivePack {
            id,
            path,
            file: Arc::new(file),
            len: PACK_HEADER_LEN as u64,
            synced_len: 0,
            records: 0,
        })
    }

    /// Writes the active pack's footer; the pack then waits for the next sync.
    fn seal_active(&mut self) -> Result<()> {
        let Some(a) = self.active.take() else {
            return Ok(());
        };
        let footer = Footer {
            record_count: a.records,
            pack_len: a.len + FOOTER_LEN as u64,
        };
        match write_at(&mut self.faults, &a.file, &footer.encode(), a.len) {
            Ok(()) => {
                tracing::debug!(pack = %a.id, records = a.records, bytes = footer.pack_len, "sealed pack");
                self.sealed_unsynced.push(SyncFile {
                    path: a.path,
                    file: a.file,
                });
                Ok(())
            }
            Err(e) => {
                let err = self.undo_write(&a.path, &a.file, a.len, e);
                self.active = Some(a);
                Err(err)
            }
        }
    }

    /// Everything written so far that a sync must fsync (sealed packs leave the list).
    pub fn plan_sync(&mut self) -> Result<SyncPlan> {
        self.check()?;
        let mut files = std::mem::take(&mut self.sealed_unsynced);
        if let Some(a) = &mut self.active {
            if a.len != a.synced_len {
                files.push(SyncFile {
                    path: a.path.clone(),
                    file: a.file.clone(),
                });
                a.synced_len = a.len;
            }
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(SyncPlan {
            files,
            dir,
            fail_fsync: self.faults.fail_fsync,
        })
    }

    /// Seals the active pack (the next append starts a new one) and returns what a sync
    /// must then fsync. Used by `gc`, which only rewrites sealed packs.
    pub fn seal_now(&mut self) -> Result<SyncPlan> {
        self.check()?;
        self.seal_active()?;
        self.plan_sync()
    }

    /// Seals the active pack and fsyncs what is unsynced. Only the first call acts.
    pub fn close(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.check()?;
        self.seal_active()?;
        let plan = self.plan_sync()?;
        plan.run().map_err(|(path, e)| {
            self.fail(&path, format!("fsync at close: {e}"));
            Error::Io { path, source: e }
        })
    }

    /// Forgets every open pack without writing anything more: what a kill -9 leaves.
    #[cfg(test)]
    pub fn abandon(&mut self) {
        self.active = None;
        self.sealed_unsynced.clear();
        self.closed = true;
    }
}
