//! The volumes one mount serves, and `.snapshots`.
//!
//! Owns: resolving a FUSE inode number (see `inodes`) into the volume and model inode it
//! names; the read-only volumes of the snapshots seen through `.snapshots` (one cached
//! `Volume` per generation, so entering a snapshot costs one name lookup and no work per
//! file); and the synthesized `.snapshots` directory itself.
//!
//! `.snapshots` exists in every branch mount, like ZFS's `snapdir=hidden`: readdir of the
//! root does not list it, but `lookup(ROOT, ".snapshots")` finds it. A real entry named
//! `.snapshots` in the root of the branch is shadowed: it cannot be reached through the
//! mount (and is left out of the root's listing); it stays visible inside snapshots and
//! in read-only snapshot mounts, which have no `.snapshots` of their own.
//!
//! `.snapshots` is mode 0555, owned by root, with one subdirectory per snapshot of the
//! store, read fresh from the store on every lookup and listing. `.snapshots/NAME` is the
//! root of that snapshot's tree; its `..` is `.snapshots`, whose `..` is the root.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use fuser::Errno;
use strata_snapshot as snap;
use strata_snapshot::{Attr, DirEntry, FileKind, GenerationId, InodeNo as Ino, Volume, VolumeKind};

use crate::inodes::{self, InoMap, Place, SNAPDIR};

/// The name of the snapshot directory in the root of a branch mount.
pub const SNAPDIR_NAME: &[u8] = b".snapshots";

/// A volume an object belongs to: the mounted one, or a snapshot's (shared, cached).
pub enum Vol<'a> {
    Own(&'a Volume),
    Snap(Arc<Volume>),
}

impl Deref for Vol<'_> {
    type Target = Volume;
    fn deref(&self) -> &Volume {
        match self {
            Vol::Own(v) => v,
            Vol::Snap(v) => v,
        }
    }
}

/// Which tree an object lies in: the mounted volume or one snapshot. Renames and links
/// between trees are refused (EXDEV), as between two mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    Own,
    Snap(GenerationId),
}

/// An object of a volume: the volume, its model inode number, and the snapshot
/// generation whose numbering it uses (`None`: numbered as it is).
pub struct Obj<'a> {
    pub vol: Vol<'a>,
    pub ino: Ino,
    gen: Option<GenerationId>,
}

impl Obj<'_> {
    /// The FUSE number of model inode `i` of the same volume.
    pub fn fuse(&self, i: Ino) -> u64 {
        match self.gen {
            None => inodes::own(i),
            // The generation was checked when the object was reached.
            Some(g) => inodes::snap(g, i).unwrap_or(u64::MAX),
        }
    }

    /// The FUSE number of the parent of this directory, given the model's answer (the
    /// root is its own parent in the model; a snapshot root's parent is `.snapshots`).
    pub fn fuse_parent(&self, parent: Ino) -> u64 {
        match self.gen {
            Some(_) if self.ino == Ino::ROOT => SNAPDIR,
            _ => self.fuse(parent),
        }
    }

    /// Whether every change here must fail with EROFS.
    pub fn read_only(&self) -> bool {
        self.vol.is_read_only()
    }

    pub fn tree(&self) -> Tree {
        match self.gen {
            None => Tree::Own,
            Some(g) => Tree::Snap(g),
        }
    }
}

/// What a FUSE inode number resolves to.
pub enum Node<'a> {
    Obj(Obj<'a>),
    SnapDir,
}

/// The volumes of one mount.
pub struct Views {
    root: Volume,
    map: InoMap,
    /// Read-only volumes of the snapshots reached through `.snapshots`, by generation.
    snaps: RwLock<HashMap<GenerationId, Arc<Volume>>>,
}

impl Views {
    pub fn new(root: Volume) -> Views {
        let map = InoMap {
            snapdir: !root.is_read_only(),
        };
        Views {
            root,
            map,
            snaps: RwLock::default(),
        }
    }

    /// The mounted volume.
    pub fn root(&self) -> &Volume {
        &self.root
    }

    pub fn map(&self) -> InoMap {
        self.map
    }

    /// Resolves a FUSE inode number. ESTALE for a number this mount never handed out, or
    /// one inside a snapshot that no longer exists.
    pub fn node(&self, fuse: u64) -> Result<Node<'_>, Errno> {
        match self.map.place(fuse) {
            Some(Place::Own(ino)) => Ok(Node::Obj(Obj {
                vol: Vol::Own(&self.root),
                ino,
                gen: None,
            })),
            Some(Place::SnapDir) => Ok(Node::SnapDir),
            Some(Place::Snap(g, ino)) => Ok(Node::Obj(Obj {
                vol: Vol::Snap(self.snapshot(g, false)?),
                ino,
                gen: Some(g),
            })),
            None => Err(Errno::ESTALE),
        }
    }

    /// The cached volume of generation `g`, if any (no store access).
    pub fn cached(&self, g: GenerationId) -> Option<Arc<Volume>> {
        self.snaps.read().unwrap().get(&g).cloned()
    }

    /// The volume of snapshot generation `g`, cached. `known` says whether the caller
    /// just read `g` from the store's list of snapshots; otherwise it is checked there.
    fn snapshot(&self, g: GenerationId, known: bool) -> Result<Arc<Volume>, Errno> {
        if let Some(v) = self.cached(g) {
            return Ok(v);
        }
        let exists = known
            || self
                .root
                .store()
                .snapshots()
                .iter()
                .any(|s| s.generation == g.0);
        if !exists {
            return Err(Errno::ESTALE);
        }
        let v = self
            .root
            .store()
            .volume(VolumeKind::Snapshot(g))
            .map_err(|e| crate::errno::fail("snapshot volume", &e))?;
        let mut snaps = self.snaps.write().unwrap();
        Ok(snaps.entry(g).or_insert_with(|| Arc::new(v)).clone())
    }

    /// Two objects for an operation that changes the tree of the second and involves
    /// the first (rename, link, copy_file_range): EROFS into, out of or within
    /// `.snapshots` or a snapshot; EXDEV between two trees, as between two mounts.
    pub fn pair(&self, a: u64, b: u64) -> Result<(Obj<'_>, Obj<'_>), Errno> {
        let (Node::Obj(a), Node::Obj(b)) = (self.node(a)?, self.node(b)?) else {
            return Err(Errno::EROFS);
        };
        if a.tree() != b.tree() {
            return Err(Errno::EXDEV);
        }
        if b.read_only() {
            return Err(Errno::EROFS);
        }
        Ok((a, b))
    }

    /// The listing of directory `fuse`, `.` and `..` first, with FUSE numbers, and
    /// whether the kernel may cache it (`.snapshots` is read afresh at every opendir).
    pub fn listing(&self, fuse: u64) -> Result<(Vec<DirEntry>, bool), Errno> {
        let dots = |dot: u64, dotdot: u64| {
            let e = |name: &[u8], ino| DirEntry {
                name: name.to_vec(),
                ino: Ino(ino),
                kind: FileKind::Dir,
            };
            vec![e(b".", dot), e(b"..", dotdot)]
        };
        let o = match self.node(fuse)? {
            Node::Obj(o) => o,
            Node::SnapDir => {
                let mut all = dots(SNAPDIR, Ino::ROOT.0);
                all.extend(self.list());
                return Ok((all, false));
            }
        };
        let fail = |e| crate::errno::fail("opendir", &e);
        let entries = o.vol.readdir(o.ino).map_err(fail)?;
        let parent = o.vol.parent_of(o.ino).map_err(fail)?;
        let mut all = dots(fuse, o.fuse_parent(parent));
        all.reserve(entries.len());
        for mut e in entries {
            if self.is_snapdir_name(fuse, &e.name) {
                continue; // shadowed by `.snapshots`
            }
            e.ino = Ino(o.fuse(e.ino));
            all.push(e);
        }
        Ok((all, true))
    }

    /// Whether `(parent, name)` names `.snapshots` (which shadows a real entry).
    pub fn is_snapdir_name(&self, parent: u64, name: &[u8]) -> bool {
        self.map.snapdir && parent == Ino::ROOT.0 && name == SNAPDIR_NAME
    }

    /// `.snapshots/NAME`: the root of that snapshot, as an object and its attributes
    /// (model numbering; map with `Obj::fuse`).
    pub fn enter(&self, name: &[u8]) -> Result<(Obj<'_>, Attr), Errno> {
        let name = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
        let g = match self.root.store().snapshot_gen(name) {
            Ok(g) => g,
            Err(snap::Error::Invalid(_)) => return Err(Errno::ENOENT),
            Err(e) => return Err(crate::errno::fail("lookup in .snapshots", &e)),
        };
        if inodes::snap(g, Ino::ROOT).is_none() {
            return Err(Errno::from_i32(libc::EOVERFLOW));
        }
        let vol = self.snapshot(g, true)?;
        let a = vol
            .getattr(Ino::ROOT)
            .map_err(|e| crate::errno::fail("lookup in .snapshots", &e))?;
        let obj = Obj {
            vol: Vol::Snap(vol),
            ino: Ino::ROOT,
            gen: Some(g),
        };
        Ok((obj, a))
    }

    /// The listing of `.snapshots` (without `.` and `..`), with FUSE inode numbers, in
    /// the store's order (oldest first). Caches the volume of every snapshot listed.
    pub fn list(&self) -> Vec<DirEntry> {
        let mut out = Vec::new();
        for s in self.root.store().snapshots() {
            let g = GenerationId(s.generation);
            let Some(n) = inodes::snap(g, Ino::ROOT) else {
                continue;
            };
            if self.cached(g).is_none() && self.snapshot(g, true).is_err() {
                continue;
            }
            out.push(DirEntry {
                name: s.name.into_bytes(),
                ino: Ino(n),
                kind: FileKind::Dir,
            });
        }
        out
    }

    /// The attributes of `.snapshots`: a directory, 0555, root's, with a link per
    /// snapshot; its times are those of the newest snapshot (or of the mounted root).
    pub fn snapdir_attr(&self) -> Result<Attr, Errno> {
        let mut a = self
            .root
            .getattr(Ino::ROOT)
            .map_err(|e| crate::errno::fail("getattr .snapshots", &e))?;
        let list = self.root.store().snapshots();
        if let Some(t) = list.iter().map(|s| s.created).max() {
            let t = snap::Timestamp { secs: t, nsecs: 0 };
            (a.atime, a.mtime, a.ctime, a.crtime) = (t, t, t, t);
        }
        a.ino = Ino(SNAPDIR);
        a.kind = FileKind::Dir;
        a.perm = 0o555;
        (a.uid, a.gid) = (0, 0);
        a.nlink = 2u32.saturating_add(list.len().min(u32::MAX as usize) as u32);
        (a.size, a.blocks, a.rdev) = (0, 0, 0);
        Ok(a)
    }

    /// Drops the cached volumes of generations that are no longer snapshots, but those
    /// with files still open (they read on until closed; nothing new opens there);
    /// returns the generations dropped or deleted.
    pub fn prune(&self) -> HashSet<GenerationId> {
        let store = self.root.store();
        let live: HashSet<u64> = store.snapshots().iter().map(|s| s.generation).collect();
        let mut snaps = self.snaps.write().unwrap();
        let deleted: HashSet<GenerationId> = snaps
            .keys()
            .filter(|g| !live.contains(&g.0))
            .copied()
            .collect();
        snaps.retain(|g, _| !deleted.contains(g) || store.has_open_files(*g));
        deleted
    }
}
