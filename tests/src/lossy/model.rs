//! What the disk under the lossy filesystem holds durably, beside what its cache holds.
//!
//! The directory underneath (the *backing* directory) always holds the live state, what
//! a reader of the mount sees: every operation is applied to it at once, as to a page
//! cache. This model records what a disk with a volatile write cache would still hold
//! after a power cut:
//!
//! - a file's data as of its last successful fsync/fdatasync: for every page changed since
//!   then, the page's durable bytes (`pre`, captured before the first change), and the
//!   size at that fsync (`durable_size`);
//! - pages whose write-back failed (an fsync that returned an error) keep their old bytes
//!   even after a later fsync succeeds (`lost`): Linux marks such pages clean, so the next
//!   fsync has nothing to write and returns success — the data is gone;
//! - a directory's entries as of its last fsync (`durable`), and the operations on it
//!   since, in order (`pending`); an operation is one atomic change of one directory (a
//!   rename within a directory is one operation, across two directories one in each).
//!
//! A file's data is read back through a descriptor the model keeps open, so it survives
//! an unlink while the durable state still names the file. Objects are identified by the
//! backing file's inode number.
//!
//! Invariant: for a page not in `pre` or `lost` and below `durable_size`, the backing
//! file holds the durable bytes (every change captures the page first).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The unit in which the disk writes file data back.
pub const PAGE: u64 = 4096;

/// An object of the disk: the inode number of its backing file.
pub type Obj = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
}

impl Kind {
    pub fn of(ft: std::fs::FileType) -> Option<Kind> {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_file() {
            Some(Kind::File)
        } else if ft.is_dir() {
            Some(Kind::Dir)
        } else if ft.is_symlink() {
            Some(Kind::Symlink)
        } else if ft.is_fifo() {
            Some(Kind::Fifo)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub obj: Obj,
    pub kind: Kind,
}

/// One name of a directory set (`Some`) or removed (`None`).
pub type Change = (OsString, Option<Entry>);

pub struct DirState {
    pub durable: BTreeMap<OsString, Entry>,
    /// Operations since the last fsync of the directory, oldest first.
    pub pending: Vec<Vec<Change>>,
    pub mode: u32,
}

pub struct FileState {
    /// Read access to the backing inode, kept open.
    pub data: File,
    pub durable_size: u64,
    /// Page index → the page's durable bytes (up to `durable_size`), for pages changed
    /// since the last fsync.
    pub pre: BTreeMap<u64, Vec<u8>>,
    /// Page index → durable bytes of pages whose write-back failed.
    pub lost: BTreeMap<u64, Vec<u8>>,
    pub mode: u32,
}

impl FileState {
    pub fn live_size(&self) -> io::Result<u64> {
        Ok(self.data.metadata()?.len())
    }

    /// True if the durable content is the live content.
    pub fn is_clean(&self) -> io::Result<bool> {
        Ok(self.pre.is_empty() && self.lost.is_empty() && self.durable_size == self.live_size()?)
    }
}

/// Objects without data of their own: created durable (their name is what may be lost).
pub enum Special {
    Symlink(PathBuf),
    Fifo(u32),
}

#[derive(Default)]
pub struct Model {
    pub root: Obj,
    pub dirs: HashMap<Obj, DirState>,
    pub files: HashMap<Obj, FileState>,
    pub specials: HashMap<Obj, Special>,
    /// Inconsistencies between this model and the backing directory (a harness bug):
    /// the tests assert there are none.
    pub errors: Vec<String>,
}

impl Model {
    /// The model of a disk that holds `root` durably, as it is now (after a boot).
    pub fn scan(root: &Path) -> io::Result<Model> {
        let meta = std::fs::symlink_metadata(root)?;
        let mut model = Model {
            root: meta.ino(),
            ..Default::default()
        };
        model.scan_dir(root, meta.ino(), meta.mode())?;
        Ok(model)
    }

    fn scan_dir(&mut self, path: &Path, obj: Obj, mode: u32) -> io::Result<()> {
        let mut durable = BTreeMap::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let child = entry.path();
            let meta = std::fs::symlink_metadata(&child)?;
            let Some(kind) = Kind::of(meta.file_type()) else {
                continue; // sockets, devices: the disk does not keep them
            };
            let obj_child = meta.ino();
            durable.insert(
                entry.file_name(),
                Entry {
                    obj: obj_child,
                    kind,
                },
            );
            match kind {
                Kind::Dir => self.scan_dir(&child, obj_child, meta.mode())?,
                Kind::File if !self.files.contains_key(&obj_child) => {
                    let data = File::open(&child)?;
                    self.add_file(obj_child, data, meta.mode(), meta.len());
                }
                Kind::File => {}
                Kind::Symlink => {
                    let target = std::fs::read_link(&child)?;
                    self.specials.insert(obj_child, Special::Symlink(target));
                }
                Kind::Fifo => {
                    self.specials.insert(obj_child, Special::Fifo(meta.mode()));
                }
            }
        }
        self.dirs.insert(
            obj,
            DirState {
                durable,
                pending: Vec::new(),
                mode,
            },
        );
        Ok(())
    }

    /// A new directory: durable with no entries (its own name is an operation of its
    /// parent).
    pub fn add_dir(&mut self, obj: Obj, mode: u32) {
        self.dirs.insert(
            obj,
            DirState {
                durable: BTreeMap::new(),
                pending: Vec::new(),
                mode,
            },
        );
    }

    /// A file whose durable content is its first `durable_size` bytes as they are now
    /// (0 for a new file).
    pub fn add_file(&mut self, obj: Obj, data: File, mode: u32, durable_size: u64) {
        self.files.insert(
            obj,
            FileState {
                data,
                durable_size,
                pre: BTreeMap::new(),
                lost: BTreeMap::new(),
                mode,
            },
        );
    }

    pub fn add_special(&mut self, obj: Obj, special: Special) {
        self.specials.insert(obj, special);
    }

    /// Records one operation on directory `dir`.
    pub fn dir_op(&mut self, dir: Obj, changes: Vec<Change>) {
        match self.dirs.get_mut(&dir) {
            Some(d) => d.pending.push(changes),
            None => self
                .errors
                .push(format!("operation {changes:?} on unknown directory {dir}")),
        }
    }

    /// fsync of directory `dir`: its operations so far become durable.
    pub fn fsync_dir(&mut self, dir: Obj) {
        let Some(d) = self.dirs.get_mut(&dir) else {
            self.errors
                .push(format!("fsync of unknown directory {dir}"));
            return;
        };
        for op in d.pending.drain(..) {
            apply(&mut d.durable, &op);
        }
    }

    /// Checks the durable entries of `dir` (just fsynced) against its live listing.
    pub fn check_dir(&mut self, dir: Obj, live: &BTreeMap<OsString, Entry>) {
        if let Some(d) = self.dirs.get(&dir) {
            if d.pending.is_empty() && &d.durable != live {
                let msg = format!(
                    "directory {dir} after fsync: model {:?}, backing {:?}",
                    d.durable, live
                );
                self.errors.push(msg);
            }
        }
    }

    /// Captures the durable bytes of every page of `obj` that a change of its live bytes
    /// `start..end` touches (called before the change).
    pub fn before_modify(&mut self, obj: Obj, start: u64, end: u64) -> io::Result<()> {
        let Some(f) = self.files.get_mut(&obj) else {
            self.errors.push(format!("change of unknown file {obj}"));
            return Ok(());
        };
        let end = end.min(f.durable_size);
        if start >= end {
            return Ok(());
        }
        for page in start / PAGE..=(end - 1) / PAGE {
            if f.pre.contains_key(&page) {
                continue;
            }
            if let Some(bytes) = f.lost.remove(&page) {
                f.pre.insert(page, bytes);
                continue;
            }
            let from = page * PAGE;
            let len = (f.durable_size - from).min(PAGE) as usize;
            let mut bytes = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match f.data.read_at(&mut bytes[got..], from + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if got < len {
                self.errors.push(format!(
                    "file {obj}: page {page} below the durable size {} was not captured \
                     before the live file shrank",
                    f.durable_size
                ));
            }
            f.pre.insert(page, bytes);
        }
        Ok(())
    }

    /// A successful fsync/fdatasync of `obj`: its live content becomes durable (but for
    /// pages lost to an earlier failed write-back).
    pub fn fsync_file(&mut self, obj: Obj) -> io::Result<()> {
        let Some(f) = self.files.get_mut(&obj) else {
            self.errors.push(format!("fsync of unknown file {obj}"));
            return Ok(());
        };
        f.pre.clear();
        f.durable_size = f.live_size()?;
        Ok(())
    }

    /// A failed fsync of `obj`: the pages it should have written are lost.
    pub fn fail_fsync(&mut self, obj: Obj) {
        if let Some(f) = self.files.get_mut(&obj) {
            let pre = std::mem::take(&mut f.pre);
            f.lost.extend(pre);
        }
    }

    /// Unsynced state: directory operations and file pages not yet durable.
    pub fn volatile(&self) -> (usize, usize) {
        let ops = self.dirs.values().map(|d| d.pending.len()).sum();
        let pages = self.files.values().map(|f| f.pre.len()).sum();
        (ops, pages)
    }
}

/// Applies one directory operation to `entries`.
pub fn apply(entries: &mut BTreeMap<OsString, Entry>, op: &[Change]) {
    for (name, entry) in op {
        match entry {
            Some(e) => {
                entries.insert(name.clone(), *e);
            }
            None => {
                entries.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn pages_are_captured_once_before_the_first_change() {
        let (t, data) = temp_file(&vec![7u8; 10_000]);
        let mut m = Model::default();
        m.add_file(1, data, 0o644, 10_000);
        m.before_modify(1, 4000, 4200).unwrap(); // pages 0 and 1
        assert_eq!(m.files[&1].pre.keys().copied().collect::<Vec<_>>(), [0, 1]);
        std::fs::write(t.path(), vec![9u8; 10_000]).unwrap();
        m.before_modify(1, 0, 12_000).unwrap(); // page 2 now: already 9s
        let f = &m.files[&1];
        assert_eq!(f.pre[&0], vec![7u8; 4096], "captured before the change");
        assert_eq!(f.pre[&2].len(), 10_000 - 8192, "cut at the durable size");
        assert_eq!(
            f.pre[&2][0], 9,
            "captured after: the harness's order matters"
        );
        m.fsync_file(1).unwrap();
        assert!(m.files[&1].pre.is_empty());
        assert!(m.files[&1].is_clean().unwrap());
        assert!(m.errors.is_empty(), "{:?}", m.errors);
    }

    #[test]
    fn beyond_the_durable_size_nothing_is_captured() {
        let (_t, data) = temp_file(b"abc");
        let mut m = Model::default();
        m.add_file(1, data, 0o644, 0);
        m.before_modify(1, 0, 3).unwrap();
        assert!(m.files[&1].pre.is_empty());
        assert!(!m.files[&1].is_clean().unwrap(), "3 live bytes, 0 durable");
    }

    #[test]
    fn a_failed_fsync_loses_its_pages_for_good() {
        let (_t, data) = temp_file(&vec![1u8; 8192]);
        let mut m = Model::default();
        m.add_file(1, data, 0o644, 8192);
        m.before_modify(1, 0, 8192).unwrap();
        m.fail_fsync(1);
        assert_eq!(m.files[&1].lost.len(), 2);
        m.fsync_file(1).unwrap();
        assert_eq!(
            m.files[&1].lost.len(),
            2,
            "a later fsync does not bring them back"
        );
        // Written again after the failure: dirty again, durable at the next fsync.
        m.before_modify(1, 0, 1).unwrap();
        assert_eq!(m.files[&1].lost.len(), 1);
        assert_eq!(m.files[&1].pre[&0], vec![1u8; 4096]);
        m.fsync_file(1).unwrap();
        assert_eq!(m.files[&1].lost.keys().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn directory_operations_are_durable_at_the_directory_fsync() {
        let mut m = Model::default();
        m.add_dir(10, 0o755);
        let e = |obj| {
            Some(Entry {
                obj,
                kind: Kind::File,
            })
        };
        m.dir_op(10, vec![("a".into(), e(1))]);
        m.dir_op(10, vec![("a".into(), None), ("b".into(), e(1))]);
        assert!(m.dirs[&10].durable.is_empty());
        m.fsync_dir(10);
        let d = &m.dirs[&10];
        assert!(d.pending.is_empty());
        assert_eq!(d.durable.keys().collect::<Vec<_>>(), ["b"]);
        m.dir_op(99, vec![]);
        assert_eq!(m.errors.len(), 1);
    }
}
