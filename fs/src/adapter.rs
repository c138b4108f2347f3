//! The fuser `Filesystem` implementation: a thin translation of each kernel request into
//! one `strata_snapshot::Volume` call and a reply. No file-system logic lives here.
//!
//! Which volume and model inode a FUSE inode number names, and `.snapshots`, belong to
//! `snapdir`; every entry and inode handed to the kernel is recorded in
//! `invalidate::KernelCache` so it can be invalidated later.
//!
//! Refusals: any change inside a snapshot or inside `.snapshots` is EROFS (including
//! opening for writing); a rename or link between two trees (the mounted one, one
//! snapshot, another snapshot) is EXDEV, as between two mounts; creating a name
//! `.snapshots` in the root of a branch mount is EEXIST, removing or renaming it EROFS.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use strata_snapshot as snap;
use strata_snapshot::{Attr, Ctx, FileKind, Volume};

use crate::errno::{fail, Failure};
use crate::handles::{Handle, Handles};
use crate::inodes::{Place, SNAPDIR};
use crate::invalidate::{KernelCache, Shared};
use crate::snapdir::{Node, Obj, Views};

/// How long the kernel may cache entries and attributes of the live tree: long, since a
/// branch is mounted once and every change goes through this daemon. The kernel drops
/// what its own requests change; what changes behind it is dropped through the notifier:
/// a rollback's tree and `.snapshots` (module `invalidate`), the blocks a write-back
/// allocates (module `stale_attrs`). A long entry TTL also keeps the kernel's cached
/// POSIX ACLs, which it forgets whenever it revalidates an entry: `ls -l` then costs one
/// GETXATTR (security.selinux) a file instead of a LOOKUP and two GETXATTRs.
const TTL: Duration = Duration::from_secs(3600);
/// The same inside snapshots, which never change.
const SNAP_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_WRITE: u32 = 1 << 20;

pub struct StrataFs {
    shared: Arc<Shared>,
    /// Whether to ask the kernel for FUSE_WRITEBACK_CACHE (see `init`).
    writeback: bool,
}

impl StrataFs {
    /// The adapter of `volume`; `writeback`: let the kernel cache writes (module
    /// `writeback` keeps snapshots exact).
    pub fn new(volume: Volume, writeback: bool) -> StrataFs {
        StrataFs {
            shared: Arc::new(Shared {
                views: Views::new(volume),
                kernel: KernelCache::default(),
                notifier: OnceLock::new(),
                handles: Handles::default(),
                mount_point: OnceLock::new(),
                cut: Default::default(),
                stale: Default::default(),
            }),
            writeback,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn views(&self) -> &Views {
        &self.shared.views
    }

    fn node(&self, i: INodeNo) -> Result<Node<'_>, Errno> {
        self.shared.node(i)
    }

    fn obj(&self, i: INodeNo, on_snapdir: Errno) -> Result<Obj<'_>, Errno> {
        self.shared.obj(i, on_snapdir)
    }

    fn writable(&self, i: INodeNo) -> Result<Obj<'_>, Errno> {
        self.shared.writable(i)
    }

    fn contain(&self, op: &'static str, handler: impl FnOnce()) {
        self.shared.contain(op, handler)
    }

    /// Runs `op` now, or once the write-back in progress ended if it cut one of `inos`
    /// (module `writeback`).
    fn after_cut<F: FnOnce(&Shared) + Send + 'static>(&self, inos: &[u64], op: F) {
        if !self.shared.cut.active() {
            return op(&self.shared);
        }
        if let Some(op) = self.shared.cut.keep_op(inos, Box::new(op)) {
            op(&self.shared)
        }
    }

    /// The directory in which `name` is to be created (`exists`: the answer for the name
    /// `.snapshots` in the root) or removed (EROFS for it).
    fn dir_to_change(
        &self,
        parent: INodeNo,
        name: &OsStr,
        exists: Errno,
    ) -> Result<Obj<'_>, Errno> {
        let o = self.writable(parent)?;
        if self.views().is_snapdir_name(parent.0, name.as_bytes()) {
            return Err(exists);
        }
        Ok(o)
    }

    /// Replies with the entry `(parent, name)` → `a` (an object of `o`'s volume); the
    /// kernel now holds a reference until it forgets it.
    fn entry(
        &self,
        reply: ReplyEntry,
        parent: INodeNo,
        name: &OsStr,
        o: &Obj,
        a: &Attr,
        ttl: &Duration,
    ) {
        o.vol.hold(a.ino, 1);
        let fa = fattr(o, a);
        self.shared
            .kernel
            .entry(parent.0, name.as_bytes(), fa.ino.0);
        reply.entry(ttl, &fa, Generation(0));
    }

    /// The attributes of the object numbered `fuse`, with their TTL.
    fn stat(&self, fuse: u64) -> Result<(FileAttr, &'static Duration), Errno> {
        match self.views().node(fuse)? {
            Node::SnapDir => Ok((attr(&self.views().snapdir_attr()?), &TTL)),
            Node::Obj(o) => {
                let a = o.vol.getattr(o.ino).map_err(|e| fail("getattr", &e))?;
                Ok((fattr(&o, &a), ttl(&o)))
            }
        }
    }

    /// Counts a kernel reference on the object numbered `fuse` (a readdirplus entry).
    fn hold(&self, fuse: u64) {
        if let Ok(Node::Obj(o)) = self.views().node(fuse) {
            o.vol.hold(o.ino, 1);
        }
    }
}

impl Shared {
    fn node(&self, i: INodeNo) -> Result<Node<'_>, Errno> {
        self.views.node(i.0)
    }

    /// The object `i` names; `.snapshots` is answered with `on_snapdir`.
    fn obj(&self, i: INodeNo, on_snapdir: Errno) -> Result<Obj<'_>, Errno> {
        match self.node(i)? {
            Node::Obj(o) => Ok(o),
            Node::SnapDir => Err(on_snapdir),
        }
    }

    /// The object `i` names, to be changed: EROFS inside snapshots and `.snapshots`.
    pub(crate) fn writable(&self, i: INodeNo) -> Result<Obj<'_>, Errno> {
        match self.obj(i, Errno::EROFS)? {
            o if o.read_only() => Err(Errno::EROFS),
            o => Ok(o),
        }
    }

    /// Runs one request handler. A panic is contained: the reply it dropped answers EIO,
    /// and the store refuses further writes and commits (its in-memory state may be half
    /// changed), so the mount stays readable and a remount returns to the last commit.
    pub(crate) fn contain(&self, op: &'static str, handler: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // The store logs its refusal of writes once, naming the panic.
            self.views.root().poison(format!("{op} panicked: {msg}"));
        }
    }
}

fn ttl(o: &Obj) -> &'static Duration {
    if o.read_only() {
        &SNAP_TTL
    } else {
        &TTL
    }
}

/// `a` (an object of `o`'s volume) with its FUSE inode number.
fn fattr(o: &Obj, a: &Attr) -> FileAttr {
    let mut f = attr(a);
    f.ino = INodeNo(o.fuse(a.ino));
    f
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system_time(),
        mtime: a.mtime.to_system_time(),
        ctime: a.ctime.to_system_time(),
        crtime: a.crtime.to_system_time(),
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// Who asks, and the umask the kernel left to us (FUSE_DONT_MASK: module `acl` of the
/// snapshot layer applies it, or the directory's default ACL instead).
fn ctx(req: &Request, umask: u32) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

fn ts(t: SystemTime) -> snap::Timestamp {
    snap::Timestamp::from_system_time(t)
}

macro_rules! tri {
    ($op:expr, $reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $reply.error(Failure::errno(e, $op));
                return;
            }
        }
    };
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // FUSE_WRITEBACK_CACHE: write() returns from the page cache and the kernel
        // sends pages later; a snapshot first writes them back and cuts every open file
        // (module `writeback`, docs/generations.md "Consistent point"). The kernel then
        // owns size and times of open files and sends them with SETATTR.
        let mut wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_CACHE_SYMLINKS;
        if self.writeback && !self.views().root().is_read_only() {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        // The daemon clears set-user-ID and set-group-ID bits itself (`kill_suid`), so
        // the kernel stops asking for security.capability before every write() (one
        // GETXATTR round trip per call, the cost of small buffered writes).
        wanted |= InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        // POSIX ACLs as on ext4 mounted with acl: the kernel enforces them and caches
        // them per inode (`ls -l` then asks once per file, not on every call); the
        // snapshot layer keeps them coherent with the permission bits and applies the
        // umask or the directory's default ACL to new inodes (FUSE_DONT_MASK).
        wanted |= InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        let available = config.capabilities() & wanted;
        if let Err(missing) = config.add_capabilities(available) {
            tracing::warn!(?missing, "kernel refused FUSE capabilities");
        }
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        tracing::info!(capabilities = ?available, "FUSE session initialised");
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.contain("lookup", move || {
            match tri!("lookup", reply, self.node(parent)) {
                Node::SnapDir => {
                    let (o, a) = tri!("lookup", reply, self.views().enter(name.as_bytes()));
                    self.entry(reply, parent, name, &o, &a, &TTL);
                }
                Node::Obj(_) if self.views().is_snapdir_name(parent.0, name.as_bytes()) => {
                    let a = tri!("lookup", reply, self.views().snapdir_attr());
                    self.shared.kernel.entry(parent.0, name.as_bytes(), SNAPDIR);
                    reply.entry(&TTL, &attr(&a), Generation(0));
                }
                Node::Obj(o) => {
                    let a = tri!("lookup", reply, o.vol.lookup(o.ino, name.as_bytes()));
                    self.entry(reply, parent, name, &o, &a, ttl(&o));
                }
            }
        });
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        self.contain("forget", move || {
            self.shared.kernel.forget(i.0, nlookup);
            let views = self.views();
            let dropped = match views.map().place(i.0) {
                Some(Place::Own(ino)) => views.root().drop_refs(ino, nlookup),
                Some(Place::Snap(g, ino)) => match views.cached(g) {
                    Some(v) => v.drop_refs(ino, nlookup),
                    None => Ok(()),
                },
                Some(Place::SnapDir) | None => Ok(()),
            };
            if let Err(e) = dropped {
                fail("forget", &e);
            }
        });
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.contain("getattr", move || {
            let (a, ttl) = tri!("getattr", reply, self.stat(i.0));
            reply.attr(ttl, &a);
        });
    }

    fn setattr(
        &self,
        req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.contain("setattr", move || {
            if self.shared.cut.is_resync(req.pid()) {
                // A rolled-back file's size handed to the kernel (WriteBack::tree_replaced):
                // answered with what the store holds, nothing changed.
                let (a, ttl) = tri!("setattr", reply, self.stat(i.0));
                reply.attr(ttl, &a);
                return;
            }
            let caller = (req.uid(), req.gid());
            self.after_cut(&[i.0], move |s| {
                setattr(
                    s, i, caller, mode, uid, gid, size, atime, mtime, ctime, reply,
                )
            });
        });
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        self.contain("readlink", move || {
            let o = tri!("readlink", reply, self.obj(i, Errno::EINVAL));
            let t = tri!("readlink", reply, o.vol.readlink(o.ino));
            reply.data(&t);
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.contain("mknod", move || {
            let o = tri!(
                "mknod",
                reply,
                self.dir_to_change(parent, name, Errno::EEXIST)
            );
            let a = tri!(
                "mknod",
                reply,
                o.vol
                    .mknod(o.ino, name.as_bytes(), mode, rdev, ctx(req, umask))
            );
            self.entry(reply, parent, name, &o, &a, &TTL);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.contain("mkdir", move || {
            let o = tri!(
                "mkdir",
                reply,
                self.dir_to_change(parent, name, Errno::EEXIST)
            );
            let a = tri!(
                "mkdir",
                reply,
                o.vol.mkdir(o.ino, name.as_bytes(), mode, ctx(req, umask))
            );
            self.entry(reply, parent, name, &o, &a, &TTL);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.contain("unlink", move || {
            let o = tri!(
                "unlink",
                reply,
                self.dir_to_change(parent, name, Errno::EROFS)
            );
            tri!("unlink", reply, o.vol.unlink(o.ino, name.as_bytes()));
            self.shared.kernel.removed(parent.0, name.as_bytes());
            reply.ok();
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.contain("rmdir", move || {
            let o = tri!(
                "rmdir",
                reply,
                self.dir_to_change(parent, name, Errno::EROFS)
            );
            tri!("rmdir", reply, o.vol.rmdir(o.ino, name.as_bytes()));
            self.shared.kernel.removed(parent.0, name.as_bytes());
            reply.ok();
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.contain("symlink", move || {
            let o = tri!(
                "symlink",
                reply,
                self.dir_to_change(parent, link_name, Errno::EEXIST)
            );
            let a = tri!(
                "symlink",
                reply,
                o.vol.symlink(
                    o.ino,
                    link_name.as_bytes(),
                    target.as_os_str().as_bytes(),
                    ctx(req, 0)
                )
            );
            self.entry(reply, parent, link_name, &o, &a, &TTL);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.contain("rename", move || {
            let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
            if !(flags - known).is_empty() {
                reply.error(Errno::from_i32(libc::EINVAL));
                return;
            }
            let (a, b) = tri!("rename", reply, self.views().pair(parent.0, newparent.0));
            if self.views().is_snapdir_name(parent.0, name.as_bytes())
                || self
                    .views()
                    .is_snapdir_name(newparent.0, newname.as_bytes())
            {
                reply.error(Errno::EROFS);
                return;
            }
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            let f = snap::RenameFlags {
                noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
                exchange,
            };
            tri!(
                "rename",
                reply,
                a.vol
                    .rename(a.ino, name.as_bytes(), b.ino, newname.as_bytes(), f)
            );
            self.shared.kernel.renamed(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                exchange,
            );
            reply.ok();
        });
    }

    fn link(
        &self,
        _req: &Request,
        i: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.contain("link", move || {
            let (src, o) = tri!("link", reply, self.views().pair(i.0, newparent.0));
            if self
                .views()
                .is_snapdir_name(newparent.0, newname.as_bytes())
            {
                reply.error(Errno::EEXIST);
                return;
            }
            let a = tri!(
                "link",
                reply,
                o.vol.link(src.ino, o.ino, newname.as_bytes())
            );
            self.entry(reply, newparent, newname, &o, &a, &TTL);
        });
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.contain("open", move || {
            let o = tri!("open", reply, self.obj(i, Errno::EISDIR));
            let writes =
                flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
            if writes && o.read_only() {
                reply.error(Errno::EROFS);
                return;
            }
            tri!("open", reply, o.vol.open_file(o.ino));
            let fh = self
                .shared
                .handles
                .insert(Handle::File { ino: i.0, writes });
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
        });
    }

    fn read(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.contain("read", move || {
            self.after_cut(&[i.0], move |s| {
                let o = tri!("read", reply, s.obj(i, Errno::EISDIR));
                let data = tri!("read", reply, o.vol.read(o.ino, offset, size));
                reply.data(&data);
            });
        });
    }

    fn write(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.contain("write", move || {
            let o = tri!("write", reply, self.writable(i));
            if self.shared.cut.keep_write(i.0, offset, data) {
                // Cut for a snapshot: written once it is frozen (module `writeback`).
                reply.written(data.len() as u32);
                return;
            }
            let n = tri!("write", reply, o.vol.write(o.ino, offset, data));
            // The blocks it allocated are news to the kernel (module `stale_attrs`).
            self.shared.stale.mark(i.0);
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                // Asked by the kernel (FUSE_HANDLE_KILLPRIV_V2): a write by a caller
                // without CAP_FSETID clears the set-ID bits.
                let a = tri!(
                    "write",
                    reply,
                    o.vol.getattr(o.ino).map_err(|e| fail("write", &e))
                );
                if let Some(mode) = without_set_id(&a, (req.uid(), req.gid())) {
                    let set = snap::SetAttr {
                        mode: Some(mode),
                        ..Default::default()
                    };
                    tri!(
                        "write",
                        reply,
                        o.vol.setattr(o.ino, &set).map_err(|e| fail("write", &e))
                    );
                }
            }
            reply.written(n);
        });
    }

    fn flush(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.contain("flush", move || {
            // After the writes a snapshot kept, whose failure close reports.
            self.after_cut(&[i.0], move |s| match s.cut.take_error(i.0) {
                Some(e) => reply.error(e),
                None => reply.ok(),
            });
        });
    }

    fn release(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.contain("release", move || {
            // After the writes a snapshot kept: the last release of an unlinked file
            // removes it.
            self.after_cut(&[i.0], move |s| {
                let i = match s.handles.remove(fh.0) {
                    Some(Handle::File { ino, .. }) => INodeNo(ino),
                    _ => i,
                };
                // A snapshot deleted meanwhile has nothing to release.
                if let Ok(o) = s.obj(i, Errno::EISDIR) {
                    tri!("release", reply, o.vol.release_file(o.ino));
                }
                reply.ok();
            });
        });
    }

    fn fsync(
        &self,
        req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.contain("fsync", move || {
            if self.shared.cut.own_fsync(i.0, req.pid()) {
                // A snapshot's write-back: its pages are here; the snapshot commits them.
                reply.ok();
                return;
            }
            self.after_cut(&[i.0], move |s| {
                if let Some(e) = s.cut.take_error(i.0) {
                    reply.error(e);
                    return;
                }
                match tri!("fsync", reply, s.node(i)) {
                    Node::Obj(o) if !o.read_only() => tri!("fsync", reply, o.vol.fsync(o.ino)),
                    _ => {} // nothing ever changes there
                }
                reply.ok();
            });
        });
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.contain("opendir", move || {
            let (all, cacheable) = tri!("opendir", reply, self.views().listing(i.0));
            let fh = self.shared.handles.insert(Handle::Dir(Arc::new(all)));
            let flags = match cacheable {
                true => FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                false => FopenFlags::empty(),
            };
            reply.opened(FileHandle(fh), flags);
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.contain("readdir", move || {
            let Some(entries) = self.shared.handles.dir(fh.0) else {
                reply.error(Errno::from_i32(libc::EBADF));
                return;
            };
            for (n, e) in entries.iter().enumerate().skip(offset as usize) {
                if reply.add(
                    INodeNo(e.ino.0),
                    n as u64 + 1,
                    kind(e.kind),
                    OsStr::from_bytes(&e.name),
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.contain("readdirplus", move || {
            let Some(entries) = self.shared.handles.dir(fh.0) else {
                reply.error(Errno::from_i32(libc::EBADF));
                return;
            };
            let in_snapdir = matches!(self.node(i), Ok(Node::SnapDir));
            for (n, e) in entries.iter().enumerate().skip(offset as usize) {
                // The kernel counts a lookup for every entry but `.` and `..`.
                let counted = n >= 2;
                let (a, ttl) = match self.stat(e.ino.0) {
                    Ok(found) => found,
                    // Removed since opendir.
                    Err(err) if err == Errno::ENOENT || err == Errno::ESTALE => continue,
                    Err(err) => {
                        reply.error(err);
                        return;
                    }
                };
                let ttl = if in_snapdir { &TTL } else { ttl };
                let name = OsStr::from_bytes(&e.name);
                if reply.add(INodeNo(e.ino.0), n as u64 + 1, name, ttl, &a, Generation(0)) {
                    break;
                }
                if counted {
                    self.hold(e.ino.0);
                    self.shared.kernel.entry(i.0, &e.name, e.ino.0);
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.contain("releasedir", move || {
            self.shared.handles.remove(fh.0);
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        req: &Request,
        i: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(req, i, fh, datasync, reply);
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        self.contain("statfs", move || {
            // The same figures everywhere in the mount, snapshots included.
            let s = tri!("statfs", reply, self.views().root().statfs());
            reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            );
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.contain("setxattr", move || {
            let o = tri!("setxattr", reply, self.writable(i));
            // Setting an access ACL clears set-group-ID unless the caller is in the
            // file's group or privileged (taken as: root), as the kernel decides for ext4.
            let kill_sgid = name.as_bytes() == b"system.posix_acl_access"
                && req.uid() != 0
                && !match o.vol.getattr(o.ino) {
                    Ok(a) => in_group(req, a.gid),
                    Err(e) => {
                        reply.error(fail("setxattr", &e));
                        return;
                    }
                };
            let f = snap::XattrFlags {
                create: flags & libc::XATTR_CREATE != 0,
                replace: flags & libc::XATTR_REPLACE != 0,
                kill_sgid,
            };
            tri!(
                "setxattr",
                reply,
                o.vol.setxattr(o.ino, name.as_bytes(), value, f)
            );
            reply.ok();
        });
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.contain("getxattr", move || {
            let o = tri!("getxattr", reply, self.obj(i, Errno::NO_XATTR));
            let v = tri!("getxattr", reply, o.vol.getxattr(o.ino, name.as_bytes()));
            reply_xattr(reply, size, &v);
        });
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        self.contain("listxattr", move || {
            let names = match tri!("listxattr", reply, self.node(i)) {
                Node::Obj(o) => tri!("listxattr", reply, o.vol.listxattr(o.ino)),
                Node::SnapDir => Vec::new(),
            };
            let mut buf = Vec::new();
            for n in names {
                buf.extend_from_slice(&n);
                buf.push(0);
            }
            reply_xattr(reply, size, &buf);
        });
    }

    fn removexattr(&self, _req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.contain("removexattr", move || {
            let o = tri!("removexattr", reply, self.writable(i));
            tri!(
                "removexattr",
                reply,
                o.vol.removexattr(o.ino, name.as_bytes())
            );
            reply.ok();
        });
    }

    fn access(&self, _req: &Request, i: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.contain("access", move || {
            // Permissions are checked by the kernel (default_permissions); here only
            // existence, and that nothing is writable in a snapshot.
            let read_only = match tri!("access", reply, self.node(i)) {
                Node::Obj(o) => {
                    tri!("access", reply, o.vol.getattr(o.ino));
                    o.read_only()
                }
                Node::SnapDir => true,
            };
            if read_only && mask.contains(AccessFlags::W_OK) {
                reply.error(Errno::EROFS);
                return;
            }
            reply.ok();
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.contain("create", move || {
            let o = tri!(
                "create",
                reply,
                self.dir_to_change(parent, name, Errno::EEXIST)
            );
            let a = tri!(
                "create",
                reply,
                o.vol
                    .mknod(o.ino, name.as_bytes(), mode, 0, ctx(req, umask))
            );
            tri!("create", reply, o.vol.open_file(a.ino));
            o.vol.hold(a.ino, 1);
            let fa = fattr(&o, &a);
            self.shared
                .kernel
                .entry(parent.0, name.as_bytes(), fa.ino.0);
            let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
            let fh = self.shared.handles.insert(Handle::File {
                ino: fa.ino.0,
                writes,
            });
            reply.created(
                &TTL,
                &fa,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            );
        });
    }

    fn ioctl(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        self.contain("ioctl", move || {
            // No ioctls (programs probe TCGETS on every open): "not a typewriter", quietly.
            reply.error(Errno::from_i32(libc::ENOTTY));
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.contain("fallocate", move || {
            let known =
                libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
            if mode & !known != 0 {
                reply.error(Errno::from_i32(libc::EOPNOTSUPP));
                return;
            }
            self.after_cut(&[i.0], move |s| {
                let o = tri!("fallocate", reply, s.writable(i));
                let m = snap::FallocateMode {
                    keep_size: mode & libc::FALLOC_FL_KEEP_SIZE != 0,
                    punch_hole: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
                    zero_range: mode & libc::FALLOC_FL_ZERO_RANGE != 0,
                };
                tri!(
                    "fallocate",
                    reply,
                    o.vol.fallocate(o.ino, offset, length, m)
                );
                reply.ok();
            });
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.contain("lseek", move || {
            let w = match whence {
                libc::SEEK_DATA => snap::SeekWhence::Data,
                libc::SEEK_HOLE => snap::SeekWhence::Hole,
                _ => {
                    reply.error(Errno::from_i32(libc::EINVAL));
                    return;
                }
            };
            if offset < 0 {
                reply.error(Errno::from_i32(libc::ENXIO));
                return;
            }
            self.after_cut(&[i.0], move |s| {
                let o = tri!("lseek", reply, s.obj(i, Errno::EISDIR));
                let off = tri!("lseek", reply, o.vol.lseek(o.ino, offset as u64, w));
                reply.offset(off as i64);
            });
        });
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.contain("copy_file_range", move || {
            if self.shared.cut.is_cut(&[ino_in.0, ino_out.0]) {
                // The kernel holds the destination's inode lock while it waits: kept, the
                // request could stop the snapshot's fsync of that file. EXDEV makes the
                // kernel copy through the page cache instead.
                reply.error(Errno::EXDEV);
                return;
            }
            self.after_cut(&[ino_in.0, ino_out.0], move |s| {
                // Between trees the kernel falls back to copying through the page cache.
                let (src, dst) = tri!("copy_file_range", reply, s.views.pair(ino_in.0, ino_out.0));
                // The reply carries a u32; the kernel loops for the rest.
                let len = len.min(1 << 30);
                let n = tri!(
                    "copy_file_range",
                    reply,
                    dst.vol
                        .copy_file_range(src.ino, offset_in, dst.ino, offset_out, len)
                );
                reply.written(n as u32);
            });
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn setattr(
    s: &Shared,
    i: INodeNo,
    caller: (u32, u32),
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    ctime: Option<SystemTime>,
    reply: ReplyAttr,
) {
    let o = tri!("setattr", reply, s.writable(i));
    let time = |t: TimeOrNow| match t {
        TimeOrNow::Now => snap::TimeSet::Now,
        TimeOrNow::SpecificTime(t) => snap::TimeSet::At(ts(t)),
    };
    // FUSE_HANDLE_KILLPRIV_V2: the kernel leaves clearing the set-ID bits to us, as
    // Linux does it: a chown of anything but a directory clears them, a truncate by a
    // caller without CAP_FSETID (taken as: not root) too.
    let chown = uid.is_some() || gid.is_some();
    let mut mode = mode;
    if mode.is_none() && (chown || (size.is_some() && caller.0 != 0)) {
        let a = tri!(
            "setattr",
            reply,
            o.vol.getattr(o.ino).map_err(|e| fail("setattr", &e))
        );
        if a.kind != FileKind::Dir {
            mode = without_set_id(&a, caller);
        }
    }
    let set = snap::SetAttr {
        mode,
        uid,
        gid,
        size,
        atime: atime.map(time),
        mtime: mtime.map(time),
        ctime: ctime.map(ts),
    };
    let a = tri!("setattr", reply, o.vol.setattr(o.ino, &set));
    reply.attr(ttl(&o), &fattr(&o, &a));
}

/// `a`'s permissions without set-user-ID and, as Linux decides it
/// (setattr_should_drop_sgid), without set-group-ID when the group may execute or the
/// caller is neither in the file's group nor privileged; `None` if nothing changes.
/// `caller`: (uid, gid) of the request; uid 0 stands for CAP_FSETID, and only the
/// caller's primary group is known.
fn without_set_id(a: &Attr, caller: (u32, u32)) -> Option<u32> {
    let before = u32::from(a.perm);
    let mut p = before & !libc::S_ISUID;
    let in_group_or_capable = caller.0 == 0 || caller.1 == a.gid;
    if p & libc::S_IXGRP != 0 || !in_group_or_capable {
        p &= !libc::S_ISGID;
    }
    (p != before).then_some(p)
}

/// Whether the caller of `req` is in group `gid`: its primary group, or one of the
/// supplementary groups its process has (`Groups:` of /proc/PID/status).
fn in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", req.pid())) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|groups| groups.split_whitespace().any(|g| g.parse() == Ok(gid)))
}

fn reply_xattr(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_is_contained_and_stops_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let opts = snap::InitOptions {
            block_size: 32768,
            compression_level: 1,
        };
        snap::Store::init(&path, &opts).unwrap();
        let store = snap::Store::open(&path).unwrap().main();
        let ctx = Ctx {
            uid: 0,
            gid: 0,
            umask: 0,
        };
        let f = store
            .mknod(snap::InodeNo::ROOT, b"f", libc::S_IFREG | 0o644, 0, ctx)
            .unwrap()
            .ino;
        store.write(f, 0, b"kept").unwrap();
        store.sync().unwrap();
        let fs = StrataFs::new(store.clone(), true);
        fs.contain("test", || panic!("boom"));
        assert!(matches!(
            store.write(f, 0, b"x"),
            Err(snap::Error::Poisoned(m)) if m.contains("boom")
        ));
        assert!(matches!(store.sync(), Err(snap::Error::Poisoned(_))));
        assert_eq!(store.read(f, 0, 10).unwrap(), b"kept");
    }
}
