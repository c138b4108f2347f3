//! Open file and directory handles. A directory handle holds the listing taken at
//! opendir, so readdir offsets stay stable while the directory changes (entries added
//! or removed meanwhile may or may not show, as POSIX allows). Inode numbers here are
//! FUSE numbers (see `inodes`), not model numbers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_snapshot::DirEntry;

pub enum Handle {
    /// An open file, by FUSE inode number; `writes`: opened for writing.
    File { ino: u64, writes: bool },
    /// A directory listing, `.` and `..` first; `DirEntry::ino` holds FUSE numbers.
    Dir(Arc<Vec<DirEntry>>),
}

#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Handle>>,
}

impl Handles {
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.lock().unwrap().insert(fh, h);
        fh
    }

    pub fn remove(&self, fh: u64) -> Option<Handle> {
        self.map.lock().unwrap().remove(&fh)
    }

    /// The FUSE inode numbers of the files open for writing (or mapped shared: the
    /// mapping keeps its handle until it ends).
    pub fn writers(&self) -> Vec<u64> {
        self.files(true)
    }

    /// The FUSE inode numbers of the open files (`writers`: only those open for writing).
    pub fn files(&self, writers: bool) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .map
            .lock()
            .unwrap()
            .values()
            .filter_map(|h| match h {
                Handle::File { ino, writes } if *writes || !writers => Some(*ino),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<DirEntry>>> {
        match self.map.lock().unwrap().get(&fh) {
            Some(Handle::Dir(d)) => Some(d.clone()),
            _ => None,
        }
    }
}
