//! Bringing the kernel's dirty pages of a branch into the daemon before a snapshot, and
//! keeping what is written meanwhile out of it: the cut.
//!
//! Owns: `CutSlot`, the state of a write-back in progress (which files are cut, what
//! waits for the snapshot), the deferral of requests to cut files, and `WriteBack`, the
//! guard a snapshot (or a rollback) holds while it freezes the branch.
//!
//! With FUSE_WRITEBACK_CACHE a write() returns once its bytes are in the page cache; the
//! kernel sends them later, page by page, in any order. syncfs is never sent to a FUSE
//! server, so before a snapshot `Invalidator::write_back` reopens, from a thread of its
//! own, every file of the mount that is open for writing (or mapped) and fsyncs it twice:
//!
//! 1. the first pass moves the bulk of the dirty pages into the daemon, with nothing
//!    held back;
//! 2. the second pass cuts: the kernel's fsync holds the inode lock while it writes and
//!    waits for every dirty page, sends SETATTR with the kernel's times, then FSYNC. So
//!    when the FSYNC of this thread reaches the daemon, the daemon holds exactly the
//!    write() calls that returned before the fsync began, and none after it. From then
//!    until the snapshot is frozen the file is *cut*: writes to it (the kernel writing
//!    back pages dirtied after the cut) are answered at once and their bytes kept here;
//!    every other request that changes or reads its content waits here with its reply.
//!
//! When the `WriteBack` is dropped (the snapshot exists) the kept requests run in the
//! order they arrived, each with its reply, and then requests flow again. A write that
//! fails then was already answered: its error is kept and returned by the next fsync or
//! close of the file, as the kernel does for a failed write-back.
//!
//! The contract is ZFS's: every write() that returned before the snapshot request is in
//! the snapshot; nothing issued after the request returned is. Each file is cut at one
//! point of its sequence of write() calls, so a snapshot never holds a later write of a
//! file without an earlier one. Files opened for writing while the write-back runs are
//! not cut (their writes during the request may or may not be in the snapshot). Answering
//! the deferred writes at once, rather than holding their replies, matters: the kernel
//! allows only `max_background` write-backs in flight, and held ones would stop the
//! fsync of the next file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use fuser::{Errno, INodeNo};

use crate::inodes::Place;
use crate::invalidate::Shared;

/// A request to a cut file, run once the snapshot is frozen.
pub(crate) type Deferred = Box<dyn FnOnce(&Shared) + Send>;

enum Kept {
    /// The bytes of an answered write: (FUSE inode, offset, data).
    Write(u64, u64, Vec<u8>),
    /// Any other request, with its reply.
    Op(Deferred),
}

#[derive(Default)]
struct Cut {
    /// The thread whose fsyncs are the write-back's (FUSE requests carry the thread id).
    tid: u32,
    /// Whether an FSYNC of `tid` now cuts its file (the second pass).
    marking: bool,
    /// The cut files, by FUSE inode number.
    files: HashSet<u64>,
    /// What waits for the snapshot, in arrival order.
    kept: VecDeque<Kept>,
    /// Bytes of `kept` writes.
    bytes: usize,
}

/// The write-back state of one mount.
#[derive(Default)]
pub struct CutSlot {
    /// Whether a write-back is in progress (read without the lock by every request).
    active: AtomicBool,
    /// The thread handing the kernel the sizes of a rolled-back tree, or 0.
    resync_tid: AtomicU32,
    cut: Mutex<Option<Cut>>,
    /// Signalled when a write-back ends (another may begin).
    ended: Condvar,
    /// Errors of deferred writes that were answered before they ran: returned by the
    /// next fsync or flush of the file.
    errors: Mutex<HashMap<u64, Errno>>,
}

fn gettid() -> u32 {
    (unsafe { libc::gettid() }) as u32
}

impl CutSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Cut>> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a write-back run by the calling thread; waits for one in progress to end.
    pub(crate) fn begin(&self) {
        let mut c = self.lock();
        while c.is_some() {
            c = self.ended.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        *c = Some(Cut {
            tid: gettid(),
            ..Cut::default()
        });
        self.active.store(true, Ordering::SeqCst);
    }

    /// Whether a write-back is in progress: only then can a request have to wait.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// From now on an FSYNC of the write-back's thread cuts its file.
    pub(crate) fn start_marking(&self) {
        if let Some(c) = self.lock().as_mut() {
            c.marking = true;
        }
    }

    /// Cuts `ino` now (a file the write-back could not reopen, after its pages were
    /// written back through the notifier).
    pub(crate) fn mark(&self, ino: u64) {
        if let Some(c) = self.lock().as_mut() {
            c.files.insert(ino);
        }
    }

    /// An FSYNC of `ino` from thread `tid`: whether it is the write-back's own (it then
    /// needs no durability: the snapshot commits). In the second pass it cuts the file.
    pub(crate) fn own_fsync(&self, ino: u64, tid: u32) -> bool {
        if !self.active() {
            return false;
        }
        let mut c = self.lock();
        match c.as_mut() {
            Some(c) if c.tid == tid => {
                if c.marking {
                    c.files.insert(ino);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether one of `inos` is cut.
    pub(crate) fn is_cut(&self, inos: &[u64]) -> bool {
        self.active()
            && self
                .lock()
                .as_ref()
                .is_some_and(|c| inos.iter().any(|i| c.files.contains(i)))
    }

    /// Whether a SETATTR of thread `tid` hands the kernel a rolled-back file's size
    /// (`WriteBack::tree_replaced`): answered with the store's attributes, nothing changed.
    pub(crate) fn is_resync(&self, tid: u32) -> bool {
        let r = self.resync_tid.load(Ordering::SeqCst);
        r != 0 && r == tid
    }

    /// Keeps a write to a cut file (the caller answers it); false if `ino` is not cut.
    pub(crate) fn keep_write(&self, ino: u64, offset: u64, data: &[u8]) -> bool {
        if !self.active() {
            return false;
        }
        let mut c = self.lock();
        match c.as_mut() {
            Some(c) if c.files.contains(&ino) => {
                c.bytes += data.len();
                c.kept.push_back(Kept::Write(ino, offset, data.to_vec()));
                true
            }
            _ => false,
        }
    }

    /// Keeps `op` if one of `inos` is cut; otherwise hands it back to run now.
    pub(crate) fn keep_op(&self, inos: &[u64], op: Deferred) -> Option<Deferred> {
        if !self.active() {
            return Some(op);
        }
        let mut c = self.lock();
        match c.as_mut() {
            Some(c) if inos.iter().any(|i| c.files.contains(i)) => {
                c.kept.push_back(Kept::Op(op));
                None
            }
            _ => Some(op),
        }
    }

    /// The error of a deferred write to `ino` not yet reported, taken.
    pub(crate) fn take_error(&self, ino: u64) -> Option<Errno> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino)
    }

    /// Ends the write-back: runs what was kept, in order (`discard`: drops the kept
    /// writes instead, for a rollback that replaced the tree they were written to), then
    /// lets requests flow. Requests that arrive meanwhile for cut files queue behind.
    pub(crate) fn end(&self, shared: &Shared, discard: bool) {
        let (mut writes, mut bytes, mut ops) = (0usize, 0usize, 0usize);
        loop {
            let next = {
                let mut c = self.lock();
                match c.as_mut().and_then(|c| c.kept.pop_front()) {
                    Some(k) => k,
                    None => {
                        *c = None;
                        self.active.store(false, Ordering::SeqCst);
                        break;
                    }
                }
            };
            match next {
                Kept::Write(ino, offset, data) => {
                    writes += 1;
                    bytes += data.len();
                    if !discard {
                        self.apply_write(shared, ino, offset, &data);
                    }
                }
                Kept::Op(op) => {
                    ops += 1;
                    shared.contain("deferred request", || op(shared));
                }
            }
        }
        self.ended.notify_all();
        if writes + ops > 0 {
            tracing::debug!(
                writes,
                bytes,
                ops,
                discard,
                "write-back ended: kept requests ran"
            );
        }
    }

    fn apply_write(&self, shared: &Shared, ino: u64, offset: u64, data: &[u8]) {
        let mut result = Err(Errno::EIO); // what a panic leaves
        shared.contain("deferred write", || {
            result = shared
                .writable(fuser::INodeNo(ino))
                .and_then(|o| {
                    o.vol
                        .write(o.ino, offset, data)
                        .map_err(|e| crate::errno::fail("write", &e))
                })
                .map(drop);
        });
        if let Err(e) = result {
            tracing::warn!(
                ino,
                offset,
                error = ?e,
                "a write kept across a snapshot failed; the next fsync or close of the file reports it"
            );
            self.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ino, e);
        }
    }

    /// Bytes of writes kept now.
    fn kept_bytes(&self) -> usize {
        self.lock().as_ref().map_or(0, |c| c.bytes)
    }
}

/// A write-back in progress: every file of the mount that was open for writing is cut.
/// Dropping it runs what was kept (see the module doc); `discard` drops the kept writes.
#[must_use = "dropping the write-back ends the cut at once"]
pub struct WriteBack {
    shared: Option<Arc<Shared>>,
    discard: bool,
    /// The files reopened for the fsyncs, closed after the kept requests ran (a close
    /// flushes: its write-back must not reach a cut file's state early).
    files: Vec<File>,
}

impl WriteBack {
    /// A write-back of nothing (the mount ended, or nothing could be done).
    pub fn none() -> WriteBack {
        WriteBack {
            shared: None,
            discard: false,
            files: Vec::new(),
        }
    }

    /// Runs the write-back of `shared`'s mount from the calling thread (not a FUSE
    /// request handler).
    pub(crate) fn run(shared: Arc<Shared>) -> WriteBack {
        let started = Instant::now();
        let Some(root) = shared.mount_point.get().cloned() else {
            return WriteBack::none();
        };
        let map = shared.views.map();
        let writers: Vec<u64> = shared
            .handles
            .writers()
            .into_iter()
            .filter(|i| matches!(map.place(*i), Some(Place::Own(_))))
            .collect();
        shared.cut.begin();
        let mut files = Vec::new();
        let mut unnamed = Vec::new();
        for ino in writers {
            match reopen(&shared, &root, ino, false) {
                Some(f) => files.push(f),
                None => unnamed.push(ino),
            }
        }
        // Pass 1: the bulk, nothing held back. Pass 2: the cut.
        for pass in [1, 2] {
            if pass == 2 {
                shared.cut.start_marking();
            }
            for f in &files {
                if let Err(e) = f.sync_all() {
                    tracing::warn!(error = %e, pass, "write-back: fsync of an open file failed");
                }
            }
        }
        // Files the kernel knows no name of: written back (and their pages dropped)
        // through the notifier, then cut.
        if let Some(notifier) = shared.notifier.get() {
            for &ino in &unnamed {
                if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                    tracing::warn!(error = %e, ino, "write-back: cannot write back an unnamed file");
                }
                shared.cut.mark(ino);
            }
        }
        tracing::debug!(
            files = files.len(),
            unnamed = unnamed.len(),
            took_us = started.elapsed().as_micros() as u64,
            kept_bytes = shared.cut.kept_bytes(),
            "write-back: files cut"
        );
        WriteBack {
            shared: Some(shared),
            discard: false,
            files,
        }
    }

    /// The branch's tree was replaced (a rollback) while the files were cut; call after
    /// the kernel's caches of the mount were dropped. The writes kept meanwhile belonged
    /// to the replaced tree and are dropped; the other kept requests run. Then, as the
    /// kernel keeps its own size of a file it holds open (it owns sizes under the
    /// writeback cache), each open file is truncated through the mount by this thread,
    /// whose SETATTR the daemon answers with the file's size in the new tree, changing
    /// nothing; the kernel takes that size. (After the cut ended: a kept request, e.g.
    /// an application's fsync, may hold the inode lock a truncate needs.)
    pub fn tree_replaced(mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        shared.cut.end(&shared, true);
        shared.cut.resync_tid.store(gettid(), Ordering::SeqCst);
        shared.resync_open_sizes(&mut self.files);
        shared.cut.resync_tid.store(0, Ordering::SeqCst);
    }

    /// How many files were reopened and cut.
    pub fn files(&self) -> usize {
        self.files.len()
    }
}

impl Shared {
    /// See `WriteBack::tree_replaced`; the files opened are pushed to `files`.
    fn resync_open_sizes(&self, files: &mut Vec<File>) {
        let shared = self;
        let Some(root) = shared.mount_point.get().cloned() else {
            return;
        };
        let map = shared.views.map();
        for ino in shared.handles.files(false) {
            let Some(Place::Own(model)) = map.place(ino) else {
                continue;
            };
            let size = match shared.views.root().getattr(model) {
                Ok(a) if a.kind == strata_snapshot::FileKind::File => a.size,
                _ => continue,
            };
            let Some(f) = reopen(shared, &root, ino, true) else {
                continue;
            };
            if let Err(e) = f.set_len(size) {
                tracing::warn!(error = %e, ino, "cannot give the kernel the size of a rolled-back file");
            }
            files.push(f);
        }
    }
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.cut.end(&shared, self.discard);
        }
    }
}

/// Opens the file numbered `ino` through the mount (`write`: for writing), by a name the
/// kernel holds; `None` if it has none, or the name now leads elsewhere.
fn reopen(shared: &Shared, root: &std::path::Path, ino: u64, write: bool) -> Option<File> {
    let path = root.join(shared.kernel.path_of(ino)?);
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | flags)
            .open(&path)
    };
    // O_NOATIME is refused on files of other owners without CAP_FOWNER.
    let f = open(libc::O_NOATIME).or_else(|_| open(0)).ok()?;
    (f.metadata().ok()?.ino() == ino).then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_write_backs_second_pass_cuts_and_cut_files_keep_requests() {
        let slot = CutSlot::default();
        assert!(!slot.keep_write(5, 0, b"x"), "no write-back: nothing kept");
        assert!(!slot.own_fsync(5, gettid()));
        slot.begin();
        let other = gettid().wrapping_add(1);
        assert!(
            !slot.own_fsync(5, other),
            "another thread's fsync is an application's"
        );
        assert!(slot.own_fsync(5, gettid()), "pass 1: the write-back's own");
        assert!(!slot.keep_write(5, 0, b"x"), "pass 1 cuts nothing");
        slot.start_marking();
        assert!(slot.own_fsync(5, gettid()));
        assert!(slot.is_cut(&[5]) && !slot.is_cut(&[6]));
        assert!(!slot.is_resync(gettid()), "a write-back is not a resync");
        assert!(slot.keep_write(5, 10, b"abc"));
        assert!(!slot.keep_write(6, 0, b"y"), "file 6 is not cut");
        assert!(slot.keep_op(&[6], Box::new(|_| {})).is_some());
        assert!(slot.keep_op(&[6, 5], Box::new(|_| {})).is_none());
        slot.mark(6);
        assert!(slot.keep_write(6, 0, b"yy"));
        assert_eq!(slot.kept_bytes(), 5);
        let c = slot.lock();
        let order: Vec<&str> = c
            .as_ref()
            .unwrap()
            .kept
            .iter()
            .map(|k| match k {
                Kept::Write(..) => "write",
                Kept::Op(_) => "op",
            })
            .collect();
        assert_eq!(order, ["write", "op", "write"]);
    }
}
