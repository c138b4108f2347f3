//! What the kernel may have cached for a mount, and dropping it on demand.
//!
//! Owns: `KernelCache`, the record of every directory entry and inode the adapter handed
//! to the kernel (lookup, create, mkdir, mknod, symlink, link and readdirplus replies),
//! kept in step with forget, unlink, rmdir and rename; and `Invalidator`, which tells the
//! kernel to drop those entries, attributes and cached pages through fuser's `Notifier`.
//!
//! The record is bounded by what the kernel holds: an inode and the names leading to it
//! are dropped when the kernel forgets the inode.
//!
//! Notifications must be sent from a thread that is not serving FUSE requests: the
//! kernel may need a request answered (e.g. to write back dirty pages) before it can
//! finish an invalidation.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use fuser::{INodeNo, Notifier};
use strata_snapshot::InodeNo as Ino;

use crate::handles::Handles;
use crate::inodes::{Place, SNAPDIR};
use crate::snapdir::Views;
use crate::stale_attrs::StaleAttrs;
use crate::writeback::{CutSlot, WriteBack};

/// State shared by the request handlers of one mount and its `Invalidator`s.
pub struct Shared {
    pub views: Views,
    pub kernel: KernelCache,
    /// Set by `mount` once the session exists.
    pub notifier: OnceLock<Notifier>,
    pub handles: Handles,
    /// Where the volume is mounted (set by `mount`): a write-back reopens files there.
    pub mount_point: OnceLock<PathBuf>,
    /// The write-back in progress, if any (see `writeback`).
    pub cut: CutSlot,
    /// Inodes whose attributes changed behind the kernel (see `stale_attrs`).
    pub stale: StaleAttrs,
}

/// Entries and inodes the kernel may have cached.
#[derive(Default)]
pub struct KernelCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// parent → name → child, for every entry handed out and not known to be gone.
    names: HashMap<u64, HashMap<Box<[u8]>, u64>>,
    /// Every inode the kernel holds lookups on.
    inodes: HashMap<u64, Held>,
}

/// A cached entry: parent and name.
type Name = (u64, Box<[u8]>);

#[derive(Default)]
struct Held {
    lookups: u64,
    /// The entries leading to this inode (usually one).
    names: Vec<Name>,
}

impl Inner {
    /// Records `(parent, name) → child`, replacing what the name led to before.
    fn link(&mut self, parent: u64, name: &[u8], child: u64) {
        if self.names.get(&parent).and_then(|d| d.get(name)) == Some(&child) {
            return;
        }
        let before = self
            .names
            .entry(parent)
            .or_default()
            .insert(name.into(), child);
        if let Some(old) = before {
            self.drop_name_of(old, parent, name);
        }
        if let Some(h) = self.inodes.get_mut(&child) {
            h.names.push((parent, name.into()));
        }
    }

    /// Forgets `(parent, name)`; returns the child it led to.
    fn unlink(&mut self, parent: u64, name: &[u8]) -> Option<u64> {
        let dir = self.names.get_mut(&parent)?;
        let child = dir.remove(name)?;
        if dir.is_empty() {
            self.names.remove(&parent);
        }
        self.drop_name_of(child, parent, name);
        Some(child)
    }

    fn drop_name_of(&mut self, child: u64, parent: u64, name: &[u8]) {
        if let Some(h) = self.inodes.get_mut(&child) {
            h.names.retain(|(p, n)| !(*p == parent && &**n == name));
        }
    }
}

impl KernelCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An entry reply: the kernel counts one lookup of `child` and may cache the name.
    pub fn entry(&self, parent: u64, name: &[u8], child: u64) {
        let mut c = self.lock();
        c.inodes.entry(child).or_default().lookups += 1;
        c.link(parent, name, child);
    }

    /// The kernel dropped `n` lookups of `ino`; at zero it holds nothing of it.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut c = self.lock();
        let Some(h) = c.inodes.get_mut(&ino) else {
            return;
        };
        h.lookups = h.lookups.saturating_sub(n);
        if h.lookups > 0 {
            return;
        }
        let h = c.inodes.remove(&ino).unwrap_or_default();
        for (p, name) in h.names {
            if let Some(dir) = c.names.get_mut(&p) {
                if dir.get(&name) == Some(&ino) {
                    dir.remove(&name);
                    if dir.is_empty() {
                        c.names.remove(&p);
                    }
                }
            }
        }
    }

    /// A successful unlink or rmdir.
    pub fn removed(&self, parent: u64, name: &[u8]) {
        self.lock().unlink(parent, name);
    }

    /// A successful rename (`exchange`: RENAME_EXCHANGE).
    pub fn renamed(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        exchange: bool,
    ) {
        let mut c = self.lock();
        let moved = c.unlink(parent, name);
        let replaced = c.unlink(newparent, newname);
        if let Some(m) = moved {
            c.link(newparent, newname, m);
        }
        if let (true, Some(r)) = (exchange, replaced) {
            c.link(parent, name, r);
        }
    }

    /// A path from the mount's root to `ino`, through names the kernel was given; `None`
    /// if the kernel holds no name of it (e.g. an unlinked open file).
    pub fn path_of(&self, mut ino: u64) -> Option<PathBuf> {
        let c = self.lock();
        let mut parts: Vec<OsString> = Vec::new();
        // A bound on the depth, in case the record ever held a cycle.
        for _ in 0..4096 {
            if ino == Ino::ROOT.0 {
                return Some(parts.iter().rev().collect());
            }
            let (parent, name) = c.inodes.get(&ino)?.names.first()?;
            parts.push(OsStr::from_bytes(name).to_owned());
            ino = *parent;
        }
        None
    }

    /// The entries whose parent `pick` selects (except those leading to `.snapshots`,
    /// which never changes) and the inodes it selects.
    fn collect(&self, pick: impl Fn(u64) -> bool) -> (Vec<Name>, Vec<u64>) {
        let c = self.lock();
        let names = c
            .names
            .iter()
            .filter(|(p, _)| pick(**p))
            .flat_map(|(p, dir)| {
                dir.iter()
                    .filter(|(_, child)| **child != SNAPDIR)
                    .map(|(n, _)| (*p, n.clone()))
            })
            .collect();
        let inodes = c.inodes.keys().copied().filter(|i| pick(*i)).collect();
        (names, inodes)
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let c = self.lock();
        (c.names.values().map(|d| d.len()).sum(), c.inodes.len())
    }
}

/// Drops what the kernel cached of one mount. Cheap to clone; usable from any thread
/// that is not serving a FUSE request of this mount. Does nothing once the mount ended.
#[derive(Clone)]
pub struct Invalidator {
    shared: Weak<Shared>,
}

impl Invalidator {
    pub(crate) fn new(shared: &Arc<Shared>) -> Invalidator {
        Invalidator {
            shared: Arc::downgrade(shared),
        }
    }

    /// Drops every cached entry, attribute and page of the mounted tree (and of
    /// `.snapshots`), so the next stat, read or readdir asks the daemon: call after the
    /// branch's tree changed under the mount (a rollback). Inode numbers stay valid; an
    /// inode the kernel still holds open keeps its cached size until it is released.
    pub fn invalidate_all(&self) {
        self.run(true);
    }

    /// Drops the cached entries of `.snapshots` and everything cached of snapshots that
    /// no longer exist: call after a snapshot was created, deleted or renamed.
    pub fn invalidate_snapshots(&self) {
        self.run(false);
    }

    /// How many files of the mount are open (distinct inodes).
    pub fn open_files(&self) -> u64 {
        self.shared
            .upgrade()
            .map_or(0, |s| s.handles.files(false).len() as u64)
    }

    /// Brings every dirty page of the mount's files into the daemon and cuts each file
    /// (module `writeback`): call before freezing the branch. Until the returned guard
    /// is dropped, requests that change a cut file are kept, then run in order.
    pub fn write_back(&self) -> WriteBack {
        if on_request_thread() {
            tracing::error!("write-back requested from a FUSE request handler; skipped");
            return WriteBack::none();
        }
        match self.shared.upgrade() {
            Some(shared) => WriteBack::run(shared),
            None => WriteBack::none(),
        }
    }

    fn run(&self, all: bool) {
        if on_request_thread() {
            // The kernel could wait for this very thread to answer a request.
            tracing::error!("cache invalidation requested from a FUSE request handler; skipped");
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(notifier) = shared.notifier.get().cloned() else {
            return;
        };
        let map = shared.views.map();
        let gone = shared.views.prune();
        let pick = |fuse: u64| match map.place(fuse) {
            Some(Place::Own(_)) => all,
            Some(Place::SnapDir) => true,
            Some(Place::Snap(g, _)) => gone.contains(&g),
            None => false,
        };
        let (names, inodes) = shared.kernel.collect(pick);
        let mut inodes: HashSet<u64> = inodes.into_iter().collect();
        if all {
            inodes.insert(Ino::ROOT.0);
        }
        if map.snapdir {
            inodes.insert(SNAPDIR);
        }
        drop(shared);
        tracing::debug!(
            all,
            entries = names.len(),
            inodes = inodes.len(),
            "invalidating kernel caches"
        );
        for (parent, name) in &names {
            if let Err(e) = notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name)) {
                tracing::warn!(error = %e, parent, "cannot invalidate a cached entry");
                return;
            }
        }
        for ino in inodes {
            // Offset 0, length 0: the attributes and every cached page.
            if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                tracing::warn!(error = %e, ino, "cannot invalidate a cached inode");
                return;
            }
        }
    }
}

/// Whether the calling thread serves FUSE requests (fuser names its threads so).
pub(crate) fn on_request_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("fuser-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_forget_unlink_and_rename() {
        let k = KernelCache::default();
        k.entry(1, b"a", 10);
        k.entry(1, b"a", 10);
        k.entry(1, b"b", 11);
        k.entry(10, b"x", 12);
        assert_eq!(k.counts(), (3, 3));
        k.forget(10, 1);
        assert_eq!(k.counts(), (3, 3));
        k.forget(10, 1);
        assert_eq!(k.counts(), (2, 2));
        k.renamed(1, b"b", 1, b"c", false);
        let (names, _) = k.collect(|p| p == 1);
        assert_eq!(names, vec![(1, b"c".to_vec().into_boxed_slice())]);
        k.entry(1, b"d", 13);
        k.renamed(1, b"c", 1, b"d", true);
        let (mut names, _) = k.collect(|p| p == 1);
        names.sort();
        assert_eq!(names.len(), 2);
        k.removed(1, b"c");
        k.removed(1, b"d");
        assert!(k.collect(|p| p == 1).0.is_empty());
        assert_eq!(k.collect(|_| true).1.len(), 3);
        for i in [11, 12, 13] {
            k.forget(i, 5);
        }
        assert_eq!(k.counts(), (0, 0));
        k.entry(1, b".snapshots", SNAPDIR);
        assert!(k.collect(|_| true).0.is_empty());
    }

    #[test]
    fn paths_follow_the_first_name_up_to_the_root() {
        let k = KernelCache::default();
        k.entry(1, b"a", 10);
        k.entry(10, b"b", 11);
        k.entry(11, b"f", 12);
        assert_eq!(k.path_of(12), Some(PathBuf::from("a/b/f")));
        assert_eq!(k.path_of(1), Some(PathBuf::new()));
        k.renamed(10, b"b", 1, b"c", false);
        assert_eq!(k.path_of(12), Some(PathBuf::from("c/f")));
        k.removed(11, b"f");
        assert_eq!(k.path_of(12), None);
        assert_eq!(k.path_of(99), None);
    }
}
