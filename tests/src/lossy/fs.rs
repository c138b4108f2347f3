//! The passthrough: a fuser `Filesystem` that serves the backing directory and keeps the
//! durable model (`model`) up to date with every operation, under one lock.
//!
//! Every object the kernel looked up is held by an O_PATH descriptor (`Node`), so the
//! passthrough reaches it with the *at() calls whatever renames happened above it, and
//! its inode number (the FUSE inode number: the backing root is swapped with 1) is not
//! reused while the kernel may still name it. Writes, truncations and fsyncs hold the
//! lock from the model's capture through the change itself; reads only look at the lock.
//! Sockets and device nodes cannot be created (EPERM): this disk, like some FUSE
//! filesystems and NFS, cannot hold a Unix socket. No extended attributes (ENOSYS).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::model::{Entry, Kind, Model, Obj, Special};
use super::points::{Op, Points, Verdict};
use super::sys;

/// Entry and attribute lifetime given to the kernel (the disk has no other writer).
const TTL: Duration = Duration::from_secs(1);

pub(crate) struct Shared {
    pub backing: PathBuf,
    pub state: Mutex<State>,
    /// Signalled when a cut happens.
    pub cut_cv: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Node {
    fd: OwnedFd,
    nlookup: u64,
    parent: u64,
    name: OsString,
}

enum Handle {
    File {
        file: Arc<File>,
        ino: u64,
    },
    Dir {
        entries: Vec<(OsString, u64, FileType)>,
    },
}

pub(crate) struct State {
    pub model: Model,
    pub points: Points,
    /// statfs reports no free space.
    pub full: bool,
    nodes: HashMap<u64, Node>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

impl State {
    pub fn new(backing: &Path, model: Model) -> io::Result<State> {
        let root = sys::open_path(libc::AT_FDCWD, backing.as_os_str())?;
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                fd: root,
                nlookup: u64::MAX / 2,
                parent: 1,
                name: OsString::new(),
            },
        );
        Ok(State {
            model,
            points: Points::default(),
            full: false,
            nodes,
            handles: HashMap::new(),
            next_fh: 1,
        })
    }

    /// FUSE inode number of an object: the backing root is 1 (and an object numbered 1,
    /// if any, takes the root's number).
    fn ino_of(&self, obj: Obj) -> u64 {
        if obj == self.model.root {
            1
        } else if obj == 1 {
            self.model.root
        } else {
            obj
        }
    }

    fn obj_of(&self, ino: u64) -> Obj {
        self.ino_of(ino) // the mapping is its own inverse
    }

    fn fd(&self, ino: u64) -> Result<RawFd, Errno> {
        self.nodes
            .get(&ino)
            .map(|n| n.fd.as_raw_fd())
            .ok_or(Errno::ESTALE)
    }

    /// The path of `ino` relative to the disk's root, as far as the kernel looked it up.
    fn path_of(&self, ino: u64) -> PathBuf {
        let mut parts = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == 1 {
                break;
            }
            let Some(n) = self.nodes.get(&cur) else { break };
            parts.push(n.name.clone());
            cur = n.parent;
        }
        parts.iter().rev().collect()
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> String {
        self.path_of(parent)
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    /// Counts an operation; `Err` if it must not be applied.
    fn check(&mut self, op: Op, path: &str) -> Result<(), Errno> {
        match self.points.check(op, path) {
            Verdict::Go => Ok(()),
            Verdict::Dead => Err(Errno::EIO),
            Verdict::Fail(errno) => Err(Errno::from_i32(errno)),
        }
    }

    fn dead(&self) -> Result<(), Errno> {
        if self.points.cut.is_some() {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    /// Takes a kernel reference to the object behind `fd` (found as `name` in `parent`).
    fn register(&mut self, fd: OwnedFd, st: &libc::stat, parent: u64, name: &OsStr) -> u64 {
        let ino = self.ino_of(st.st_ino);
        match self.nodes.get_mut(&ino) {
            Some(n) => {
                n.nlookup += 1;
                if ino != 1 {
                    n.parent = parent;
                    n.name = name.to_os_string();
                }
            }
            None => {
                self.nodes.insert(
                    ino,
                    Node {
                        fd,
                        nlookup: 1,
                        parent,
                        name: name.to_os_string(),
                    },
                );
            }
        }
        ino
    }

    fn file(&self, fh: FileHandle) -> Result<(Arc<File>, u64), Errno> {
        match self.handles.get(&fh.0) {
            Some(Handle::File { file, ino }) => Ok((file.clone(), *ino)),
            _ => Err(Errno::EBADF),
        }
    }

    fn add_handle(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }

    /// The live entries of directory `ino` as the model describes them.
    fn live_entries(&self, ino: u64) -> io::Result<BTreeMap<OsString, Entry>> {
        let fd = self
            .fd(ino)
            .map_err(|_| io::Error::from_raw_os_error(libc::ESTALE))?;
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(sys::proc_path(fd))? {
            let e = e?;
            if let Some(kind) = Kind::of(e.file_type()?) {
                out.insert(e.file_name(), Entry { obj: e.ino(), kind });
            }
        }
        Ok(out)
    }

    /// Captures what a change of bytes `start..end` of `ino` overwrites.
    fn before_modify(&mut self, ino: u64, start: u64, end: u64) -> Result<(), Errno> {
        let obj = self.obj_of(ino);
        self.model
            .before_modify(obj, start, end)
            .map_err(Errno::from)
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn kind(mode: u32) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        _ => Kind::File,
    }
}

fn attr(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn timespec(t: TimeOrNow) -> libc::timespec {
    match t {
        TimeOrNow::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => libc::timespec {
                tv_sec: -(e.duration().as_secs() as i64),
                tv_nsec: 0,
            },
        },
    }
}

/// Open flags the passthrough passes to the backing file: O_APPEND is dropped (the kernel
/// gives every write's offset), so are O_DIRECT and what open(2) would act on again.
fn backing_flags(flags: i32) -> i32 {
    flags
        & !(libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_DIRECT)
}

pub(crate) struct LossyFs {
    pub shared: Arc<Shared>,
}

impl LossyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Makes a new object `name` in `parent` (by `make`), records it in the model and
    /// replies with its entry.
    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        make: impl FnOnce(RawFd) -> io::Result<Option<Special>>,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<FileAttr, Errno> {
            let path = st.child_path(parent.0, name);
            st.check(Op::Create, &path)?;
            let pfd = st.fd(parent.0)?;
            let special = make(pfd)?;
            let fd = sys::open_path(pfd, name)?;
            let s = sys::stat_fd(fd.as_raw_fd())?;
            let k = kind(s.st_mode);
            match k {
                Kind::Dir => st.model.add_dir(s.st_ino, s.st_mode),
                Kind::File => {
                    let data = sys::reopen(fd.as_raw_fd(), libc::O_RDONLY)?;
                    st.model.add_file(s.st_ino, data, s.st_mode, 0);
                }
                Kind::Symlink | Kind::Fifo => {
                    if let Some(special) = special {
                        st.model.add_special(s.st_ino, special);
                    }
                }
            }
            let pobj = st.obj_of(parent.0);
            st.model.dir_op(
                pobj,
                vec![(
                    name.to_os_string(),
                    Some(Entry {
                        obj: s.st_ino,
                        kind: k,
                    }),
                )],
            );
            let ino = st.register(fd, &s, parent.0, name);
            Ok(attr(ino, &s))
        })();
        drop(st);
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, flags: i32, reply: ReplyEmpty) {
        let mut st = self.lock();
        let result = (|| -> Result<(), Errno> {
            let path = st.child_path(parent.0, name);
            st.check(Op::Remove, &path)?;
            let pfd = st.fd(parent.0)?;
            sys::unlink_at(pfd, name, flags)?;
            let pobj = st.obj_of(parent.0);
            st.model.dir_op(pobj, vec![(name.to_os_string(), None)]);
            Ok(())
        })();
        drop(st);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Truncates `ino` (through `file`, or a descriptor opened for it) to `size`.
    fn truncate(st: &mut State, ino: u64, file: Option<&File>, size: u64) -> Result<(), Errno> {
        let path = st.path_of(ino).to_string_lossy().into_owned();
        st.check(Op::Truncate, &path)?;
        let opened;
        let file = match file {
            Some(f) => f,
            None => {
                opened = sys::reopen(st.fd(ino)?, libc::O_WRONLY)?;
                &opened
            }
        };
        let live = file.metadata()?.len();
        st.before_modify(ino, size.min(live), size.max(live))?;
        file.set_len(size)?;
        Ok(())
    }
}

impl Filesystem for LossyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.lock();
        let result = (|| -> Result<FileAttr, Errno> {
            st.dead()?;
            let fd = sys::open_path(st.fd(parent.0)?, name)?;
            let s = sys::stat_fd(fd.as_raw_fd())?;
            let ino = st.register(fd, &s, parent.0, name);
            Ok(attr(ino, &s))
        })();
        drop(st);
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.nlookup = n.nlookup.saturating_sub(nlookup);
            if n.nlookup == 0 && ino.0 != 1 {
                st.nodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.lock();
        let result = st
            .dead()
            .and_then(|()| st.fd(ino.0))
            .and_then(|fd| sys::stat_fd(fd).map_err(Errno::from));
        drop(st);
        match result {
            Ok(s) => reply.attr(&TTL, &attr(ino.0, &s)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<libc::stat, Errno> {
            st.dead()?;
            let fd = st.fd(ino.0)?;
            if let Some(size) = size {
                let file = fh.and_then(|fh| st.file(fh).ok()).map(|(f, _)| f);
                LossyFs::truncate(&mut st, ino.0, file.as_deref(), size)?;
            }
            if let Some(mode) = mode {
                sys::chmod(fd, mode & 0o7777)?;
            }
            if uid.is_some() || gid.is_some() {
                sys::chown(fd, uid, gid)?;
            }
            if atime.is_some() || mtime.is_some() {
                sys::set_times(fd, atime.map(timespec), mtime.map(timespec))?;
            }
            Ok(sys::stat_fd(fd)?)
        })();
        drop(st);
        match result {
            Ok(s) => reply.attr(&TTL, &attr(ino.0, &s)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.lock();
        let result = st
            .dead()
            .and_then(|()| st.fd(ino.0))
            .and_then(|fd| sys::read_link(fd).map_err(Errno::from));
        drop(st);
        match result {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match mode & libc::S_IFMT {
            libc::S_IFREG => self.make(parent, name, reply, |pfd| {
                sys::mknod_at(pfd, name, mode, 0).map(|()| None)
            }),
            libc::S_IFIFO => self.make(parent, name, reply, |pfd| {
                sys::mknod_at(pfd, name, mode, 0).map(|()| Some(Special::Fifo(mode)))
            }),
            // Sockets and devices: this disk cannot hold them.
            _ => reply.error(Errno::EPERM),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(parent, name, reply, |pfd| {
            sys::mkdir_at(pfd, name, mode).map(|()| None)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, 0, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, libc::AT_REMOVEDIR, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.make(parent, link_name, reply, |pfd| {
            sys::symlink_at(target, pfd, link_name)
                .map(|()| Some(Special::Symlink(target.to_path_buf())))
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
        let mut st = self.lock();
        let result = (|| -> Result<(), Errno> {
            let path = st.child_path(parent.0, name);
            st.check(Op::Rename, &path)?;
            if flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            let (pfd, npfd) = (st.fd(parent.0)?, st.fd(newparent.0)?);
            let src = sys::stat_at(pfd, name)?;
            let dst = sys::stat_at(npfd, newname).ok();
            sys::rename_at(pfd, name, npfd, newname, flags.bits())?;
            let entry = |s: &libc::stat| Entry {
                obj: s.st_ino,
                kind: kind(s.st_mode),
            };
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            let old_side = (
                name.to_os_string(),
                if exchange {
                    dst.as_ref().map(entry)
                } else {
                    None
                },
            );
            let new_side = (newname.to_os_string(), Some(entry(&src)));
            let (pobj, npobj) = (st.obj_of(parent.0), st.obj_of(newparent.0));
            if pobj == npobj {
                st.model.dir_op(pobj, vec![old_side, new_side]);
            } else {
                st.model.dir_op(pobj, vec![old_side]);
                st.model.dir_op(npobj, vec![new_side]);
            }
            // Keep the looked-up paths current (named points match on them).
            let src_ino = st.ino_of(src.st_ino);
            if let Some(n) = st.nodes.get_mut(&src_ino) {
                n.parent = newparent.0;
                n.name = newname.to_os_string();
            }
            if let (true, Some(d)) = (exchange, dst) {
                let dst_ino = st.ino_of(d.st_ino);
                if let Some(n) = st.nodes.get_mut(&dst_ino) {
                    n.parent = parent.0;
                    n.name = name.to_os_string();
                }
            }
            Ok(())
        })();
        drop(st);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<FileAttr, Errno> {
            let path = st.child_path(newparent.0, newname);
            st.check(Op::Create, &path)?;
            let (fd, npfd) = (st.fd(ino.0)?, st.fd(newparent.0)?);
            sys::link_at(fd, npfd, newname)?;
            let s = sys::stat_fd(fd)?;
            let npobj = st.obj_of(newparent.0);
            st.model.dir_op(
                npobj,
                vec![(
                    newname.to_os_string(),
                    Some(Entry {
                        obj: s.st_ino,
                        kind: kind(s.st_mode),
                    }),
                )],
            );
            let new_fd = sys::open_path(npfd, newname)?;
            let ino = st.register(new_fd, &s, newparent.0, newname);
            Ok(attr(ino, &s))
        })();
        drop(st);
        match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let result = (|| -> Result<u64, Errno> {
            st.dead()?;
            let file = sys::reopen(st.fd(ino.0)?, backing_flags(flags.0))?;
            if flags.0 & libc::O_TRUNC != 0 {
                LossyFs::truncate(&mut st, ino.0, Some(&file), 0)?;
            }
            Ok(st.add_handle(Handle::File {
                file: Arc::new(file),
                ino: ino.0,
            }))
        })();
        drop(st);
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.lock();
        let path = st.path_of(ino.0).to_string_lossy().into_owned();
        let file = st.check(Op::Read, &path).and_then(|()| st.file(fh));
        drop(st);
        let result = file.and_then(|(file, _)| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Errno::from(e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match result {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<u32, Errno> {
            let path = st.path_of(ino.0).to_string_lossy().into_owned();
            st.check(Op::Write, &path)?;
            let (file, _) = st.file(fh)?;
            st.before_modify(ino.0, offset, offset + data.len() as u64)?;
            file.write_all_at(data, offset)?;
            Ok(data.len() as u32)
        })();
        drop(st);
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let path = st.path_of(ino.0).to_string_lossy().into_owned();
        let obj = st.obj_of(ino.0);
        let result = match st.points.check(Op::Fsync, &path) {
            Verdict::Go => st
                .file(fh)
                .and_then(|_| st.model.fsync_file(obj).map_err(Errno::from)),
            Verdict::Dead => Err(Errno::EIO),
            Verdict::Fail(errno) => {
                st.model.fail_fsync(obj);
                Err(Errno::from_i32(errno))
            }
        };
        drop(st);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let result = (|| -> Result<u64, Errno> {
            st.dead()?;
            let fd = st.fd(ino.0)?;
            let parent = st.nodes.get(&ino.0).map_or(1, |n| n.parent);
            let mut entries = vec![
                (OsString::from("."), ino.0, FileType::Directory),
                (OsString::from(".."), parent, FileType::Directory),
            ];
            for e in std::fs::read_dir(sys::proc_path(fd))? {
                let e = e?;
                let md = e.file_type()?;
                let ft = if md.is_dir() {
                    FileType::Directory
                } else if md.is_symlink() {
                    FileType::Symlink
                } else if md.is_file() {
                    FileType::RegularFile
                } else {
                    use std::os::unix::fs::FileTypeExt;
                    if md.is_fifo() {
                        FileType::NamedPipe
                    } else if md.is_socket() {
                        FileType::Socket
                    } else if md.is_char_device() {
                        FileType::CharDevice
                    } else {
                        FileType::BlockDevice
                    }
                };
                entries.push((e.file_name(), st.ino_of(e.ino()), ft));
            }
            Ok(st.add_handle(Handle::Dir { entries }))
        })();
        drop(st);
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.lock();
        if st.dead().is_err() {
            drop(st);
            return reply.error(Errno::EIO);
        }
        match st.handles.get(&fh.0) {
            Some(Handle::Dir { entries }) => {
                for (i, (name, ino, ft)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), (i + 1) as u64, *ft, name) {
                        break;
                    }
                }
                drop(st);
                reply.ok();
            }
            _ => {
                drop(st);
                reply.error(Errno::EBADF);
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<(), Errno> {
            let path = st.path_of(ino.0).to_string_lossy().into_owned();
            st.check(Op::Fsync, &path)?;
            let obj = st.obj_of(ino.0);
            st.model.fsync_dir(obj);
            let live = st.live_entries(ino.0)?;
            st.model.check_dir(obj, &live);
            Ok(())
        })();
        drop(st);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.lock();
        let full = st.full;
        let dead = st.dead();
        drop(st);
        let result = dead.and_then(|()| sys::statvfs(&self.shared.backing).map_err(Errno::from));
        match result {
            Ok(s) => {
                let (bfree, bavail) = if full {
                    (0, 0)
                } else {
                    (s.f_bfree, s.f_bavail)
                };
                reply.statfs(
                    s.f_blocks,
                    bfree,
                    bavail,
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    s.f_namemax as u32,
                    s.f_frsize as u32,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<(FileAttr, u64), Errno> {
            let path = st.child_path(parent.0, name);
            st.check(Op::Create, &path)?;
            let pfd = st.fd(parent.0)?;
            let existed = sys::stat_at(pfd, name).is_ok();
            let open_flags = backing_flags(flags) | libc::O_CREAT | (flags & libc::O_EXCL);
            let file = sys::open_at(pfd, name, open_flags, mode)?;
            let fd = sys::open_path(pfd, name)?;
            let s = sys::stat_fd(fd.as_raw_fd())?;
            if !existed {
                let data = sys::reopen(fd.as_raw_fd(), libc::O_RDONLY)?;
                st.model.add_file(s.st_ino, data, s.st_mode, 0);
                let pobj = st.obj_of(parent.0);
                st.model.dir_op(
                    pobj,
                    vec![(
                        name.to_os_string(),
                        Some(Entry {
                            obj: s.st_ino,
                            kind: Kind::File,
                        }),
                    )],
                );
            }
            let ino = st.register(fd, &s, parent.0, name);
            if existed && flags & libc::O_TRUNC != 0 {
                LossyFs::truncate(&mut st, ino, Some(&file), 0)?;
            }
            let s = sys::stat_fd(st.fd(ino)?)?;
            let fh = st.add_handle(Handle::File {
                file: Arc::new(file),
                ino,
            });
            Ok((attr(ino, &s), fh))
        })();
        drop(st);
        match result {
            Ok((a, fh)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let result = (|| -> Result<(), Errno> {
            let path = st.path_of(ino.0).to_string_lossy().into_owned();
            st.check(Op::Write, &path)?;
            let allowed =
                libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
            if mode & !allowed != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let (file, _) = st.file(fh)?;
            st.before_modify(ino.0, offset, offset + length)?;
            crate::sys::fallocate(&file, mode, offset, length)?;
            Ok(())
        })();
        drop(st);
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let st = self.lock();
        let file = st.dead().and_then(|()| st.file(fh));
        drop(st);
        match file.and_then(|(f, _)| sys::lseek(&f, offset, whence).map_err(Errno::from)) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }
}
