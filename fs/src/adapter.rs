//! The fuser `Filesystem` implementation: a thin translation of each kernel request into
//! one `strata_snapshot::Store` call and a reply. No file-system logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use strata_snapshot as snap;
use strata_snapshot::{Attr, Ctx, FileKind, InodeNo as Ino, Volume};

use crate::errno::{errno, is_fault};
use crate::handles::{Handle, Handles};

/// How long the kernel may cache entries and attributes. Every change goes through this
/// daemon, and the kernel invalidates what its own requests change.
const TTL: Duration = Duration::from_secs(1);
const MAX_WRITE: u32 = 1 << 20;

pub struct StrataFs {
    store: Volume,
    handles: Handles,
}

impl StrataFs {
    pub fn new(store: Volume) -> StrataFs {
        StrataFs {
            store,
            handles: Handles::default(),
        }
    }

    /// Runs one request handler. A panic is contained: the reply it dropped answers EIO,
    /// and the store refuses further writes and commits (its in-memory state may be half
    /// changed), so the mount stays readable and a remount returns to the last commit.
    fn contain(&self, op: &'static str, handler: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(handler)) {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(op, panic = %msg, "request handler panicked; refusing writes until remounted");
            self.store.poison(format!("{op} panicked: {msg}"));
        }
    }

    /// Replies with an entry; the kernel now holds a reference until it forgets it.
    fn entry(&self, reply: ReplyEntry, a: &Attr) {
        self.store.hold(a.ino, 1);
        reply.entry(&TTL, &attr(a), Generation(0));
    }
}

fn ino(i: INodeNo) -> Ino {
    Ino(i.0)
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

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn ts(t: SystemTime) -> snap::Timestamp {
    snap::Timestamp::from_system_time(t)
}

/// Logs a failed request once, where it becomes an errno.
fn fail(op: &str, e: &snap::Error) -> Errno {
    if is_fault(e) {
        tracing::error!(op, error = %e, "request failed");
    } else {
        tracing::debug!(op, error = %e, "request answered with an error");
    }
    errno(e)
}

macro_rules! tri {
    ($op:expr, $reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $reply.error(fail($op, &e));
                return;
            }
        }
    };
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_WRITEBACK_CACHE
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_CACHE_SYMLINKS;
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
            let a = tri!(
                "lookup",
                reply,
                self.store.lookup(ino(parent), name.as_bytes())
            );
            self.entry(reply, &a);
        });
    }

    fn forget(&self, _req: &Request, i: INodeNo, nlookup: u64) {
        self.contain("forget", move || {
            if let Err(e) = self.store.drop_refs(ino(i), nlookup) {
                fail("forget", &e);
            }
        });
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.contain("getattr", move || {
            let a = tri!("getattr", reply, self.store.getattr(ino(i)));
            reply.attr(&TTL, &attr(&a));
        });
    }

    fn setattr(
        &self,
        _req: &Request,
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
            let time = |t: TimeOrNow| match t {
                TimeOrNow::Now => snap::TimeSet::Now,
                TimeOrNow::SpecificTime(t) => snap::TimeSet::At(ts(t)),
            };
            let set = snap::SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: atime.map(time),
                mtime: mtime.map(time),
                ctime: ctime.map(ts),
            };
            let a = tri!("setattr", reply, self.store.setattr(ino(i), &set));
            reply.attr(&TTL, &attr(&a));
        });
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        self.contain("readlink", move || {
            let t = tri!("readlink", reply, self.store.readlink(ino(i)));
            reply.data(&t);
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.contain("mknod", move || {
            let a = tri!(
                "mknod",
                reply,
                self.store
                    .mknod(ino(parent), name.as_bytes(), mode, rdev, ctx(req))
            );
            self.entry(reply, &a);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.contain("mkdir", move || {
            let a = tri!(
                "mkdir",
                reply,
                self.store
                    .mkdir(ino(parent), name.as_bytes(), mode, ctx(req))
            );
            self.entry(reply, &a);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.contain("unlink", move || {
            tri!(
                "unlink",
                reply,
                self.store.unlink(ino(parent), name.as_bytes())
            );
            reply.ok();
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.contain("rmdir", move || {
            tri!(
                "rmdir",
                reply,
                self.store.rmdir(ino(parent), name.as_bytes())
            );
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
            let a = tri!(
                "symlink",
                reply,
                self.store.symlink(
                    ino(parent),
                    link_name.as_bytes(),
                    target.as_os_str().as_bytes(),
                    ctx(req)
                )
            );
            self.entry(reply, &a);
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
            let f = snap::RenameFlags {
                noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
                exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
            };
            tri!(
                "rename",
                reply,
                self.store.rename(
                    ino(parent),
                    name.as_bytes(),
                    ino(newparent),
                    newname.as_bytes(),
                    f
                )
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
            let a = tri!(
                "link",
                reply,
                self.store.link(ino(i), ino(newparent), newname.as_bytes())
            );
            self.entry(reply, &a);
        });
    }

    fn open(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.contain("open", move || {
            tri!("open", reply, self.store.open_file(ino(i)));
            let fh = self.handles.insert(Handle::File(ino(i)));
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
            let data = tri!("read", reply, self.store.read(ino(i), offset, size));
            reply.data(&data);
        });
    }

    fn write(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.contain("write", move || {
            let n = tri!("write", reply, self.store.write(ino(i), offset, data));
            reply.written(n);
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.contain("flush", move || {
            reply.ok();
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
            let i = match self.handles.remove(fh.0) {
                Some(Handle::File(h)) => h,
                _ => ino(i),
            };
            tri!("release", reply, self.store.release_file(i));
            reply.ok();
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.contain("fsync", move || {
            tri!("fsync", reply, self.store.fsync(ino(i)));
            reply.ok();
        });
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.contain("opendir", move || {
            let entries = tri!("opendir", reply, self.store.readdir(ino(i)));
            let parent = tri!("opendir", reply, self.store.parent_of(ino(i)));
            let mut all = Vec::with_capacity(entries.len() + 2);
            all.push(snap::DirEntry {
                name: b".".to_vec(),
                ino: ino(i),
                kind: FileKind::Dir,
            });
            all.push(snap::DirEntry {
                name: b"..".to_vec(),
                ino: parent,
                kind: FileKind::Dir,
            });
            all.extend(entries);
            let fh = self.handles.insert(Handle::Dir(Arc::new(all)));
            reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            );
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
            let Some(entries) = self.handles.dir(fh.0) else {
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
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.contain("readdirplus", move || {
            let Some(entries) = self.handles.dir(fh.0) else {
                reply.error(Errno::from_i32(libc::EBADF));
                return;
            };
            for (n, e) in entries.iter().enumerate().skip(offset as usize) {
                let a = match self.store.getattr(e.ino) {
                    Ok(a) => a,
                    Err(snap::Error::NotFound) => continue, // removed since opendir
                    Err(err) => {
                        reply.error(fail("readdirplus", &err));
                        return;
                    }
                };
                if reply.add(
                    INodeNo(e.ino.0),
                    n as u64 + 1,
                    OsStr::from_bytes(&e.name),
                    &TTL,
                    &attr(&a),
                    Generation(0),
                ) {
                    break;
                }
                // The kernel counts a lookup for every entry but `.` and `..`.
                if n >= 2 {
                    self.store.hold(e.ino, 1);
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
            self.handles.remove(fh.0);
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        i: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.contain("fsyncdir", move || {
            tri!("fsyncdir", reply, self.store.fsync(ino(i)));
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        self.contain("statfs", move || {
            let s = tri!("statfs", reply, self.store.statfs());
            reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            );
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.contain("setxattr", move || {
            let f = snap::XattrFlags {
                create: flags & libc::XATTR_CREATE != 0,
                replace: flags & libc::XATTR_REPLACE != 0,
            };
            tri!(
                "setxattr",
                reply,
                self.store.setxattr(ino(i), name.as_bytes(), value, f)
            );
            reply.ok();
        });
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.contain("getxattr", move || {
            let v = tri!(
                "getxattr",
                reply,
                self.store.getxattr(ino(i), name.as_bytes())
            );
            reply_xattr(reply, size, &v);
        });
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        self.contain("listxattr", move || {
            let names = tri!("listxattr", reply, self.store.listxattr(ino(i)));
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
            tri!(
                "removexattr",
                reply,
                self.store.removexattr(ino(i), name.as_bytes())
            );
            reply.ok();
        });
    }

    fn access(&self, _req: &Request, i: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.contain("access", move || {
            // Permissions are checked by the kernel (default_permissions); only existence here.
            tri!("access", reply, self.store.getattr(ino(i)));
            reply.ok();
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.contain("create", move || {
            let a = tri!(
                "create",
                reply,
                self.store
                    .mknod(ino(parent), name.as_bytes(), mode, 0, ctx(req))
            );
            tri!("create", reply, self.store.open_file(a.ino));
            self.store.hold(a.ino, 1);
            let fh = self.handles.insert(Handle::File(a.ino));
            reply.created(
                &TTL,
                &attr(&a),
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
            let m = snap::FallocateMode {
                keep_size: mode & libc::FALLOC_FL_KEEP_SIZE != 0,
                punch_hole: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
                zero_range: mode & libc::FALLOC_FL_ZERO_RANGE != 0,
            };
            tri!(
                "fallocate",
                reply,
                self.store.fallocate(ino(i), offset, length, m)
            );
            reply.ok();
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
            let off = tri!("lseek", reply, self.store.lseek(ino(i), offset as u64, w));
            reply.offset(off as i64);
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
            // The reply carries a u32; the kernel loops for the rest.
            let len = len.min(1 << 30);
            let n = tri!(
                "copy_file_range",
                reply,
                self.store
                    .copy_file_range(ino(ino_in), offset_in, ino(ino_out), offset_out, len)
            );
            reply.written(n as u32);
        });
    }
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
        let ctx = Ctx { uid: 0, gid: 0 };
        let f = store
            .mknod(Ino::ROOT, b"f", libc::S_IFREG | 0o644, 0, ctx)
            .unwrap()
            .ino;
        store.write(f, 0, b"kept").unwrap();
        store.sync().unwrap();
        let fs = StrataFs::new(store.clone());
        fs.contain("test", || panic!("boom"));
        assert!(matches!(
            store.write(f, 0, b"x"),
            Err(snap::Error::Poisoned(m)) if m.contains("boom")
        ));
        assert!(matches!(store.sync(), Err(snap::Error::Poisoned(_))));
        assert_eq!(store.read(f, 0, 10).unwrap(), b"kept");
    }
}
