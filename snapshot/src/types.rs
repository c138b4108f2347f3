//! Plain value types of the model: typed ids, file kinds, timestamps, attributes, and the
//! caller context. No I/O here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Inode number, stable for the life of the inode. `ROOT` is the root directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeNo(pub u64);

impl InodeNo {
    pub const ROOT: InodeNo = InodeNo(1);
    /// First number handed out to a new inode.
    pub const FIRST_FREE: u64 = 2;
    /// Inode numbers handed out stay below this (2^40 - 1); `fs` uses the numbers from
    /// here up for `.snapshots` and the objects of snapshot views.
    pub const LIMIT: u64 = (1 << 40) - 1;
}

/// A node in the generation tree. Numbers grow monotonically and are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GenerationId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FileKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDevice = 6,
    BlockDevice = 7,
}

impl FileKind {
    pub fn from_u8(v: u8) -> Option<FileKind> {
        Some(match v {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDevice,
            7 => FileKind::BlockDevice,
            _ => return None,
        })
    }

    /// The kind encoded in the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => return None,
        })
    }
}

/// Seconds and nanoseconds since the Unix epoch (may be negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nsecs: u32,
}

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(&self) -> i64 {
        self.secs * 1000 + i64::from(self.nsecs / 1_000_000)
    }

    pub fn now() -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nsecs: d.subsec_nanos(),
        }
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + std::time::Duration::new(self.secs as u64, self.nsecs)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(self.secs.unsigned_abs())
                + std::time::Duration::from_nanos(self.nsecs as u64)
        }
    }

    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nsecs = d.subsec_nanos();
                if nsecs > 0 {
                    secs -= 1;
                    nsecs = 1_000_000_000 - nsecs;
                }
                Timestamp { secs, nsecs }
            }
        }
    }
}

/// The attributes of an inode as the POSIX layer sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: InodeNo,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Allocated space in 512-byte units.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    pub rdev: u32,
    /// Preferred I/O size (the store's block size).
    pub blksize: u32,
}

/// A time to set: the current time or a given one (utimensat's UTIME_NOW / a value;
/// UTIME_OMIT is `None` in `SetAttr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(Timestamp),
}

/// Which attributes a setattr changes; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Timestamp>,
}

/// Who is asking: new inodes take this uid/gid (or the parent's gid under setgid), and
/// their permissions lose the bits of `umask` unless the directory has a default ACL
/// (module `acl`).
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

/// One directory entry as listed by readdir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: InodeNo,
    pub kind: FileKind,
}

/// File system figures, from the disk under the store.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// lseek's SEEK_DATA / SEEK_HOLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekWhence {
    Data,
    Hole,
}

/// fallocate modes that strata implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FallocateMode {
    pub keep_size: bool,
    pub punch_hole: bool,
    pub zero_range: bool,
}

/// rename(2) flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RenameFlags {
    pub noreplace: bool,
    pub exchange: bool,
}

/// Longest name of a directory entry, in bytes.
pub const NAME_MAX: usize = 255;
/// Largest xattr value, in bytes (as ext4 with large xattrs: XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Largest file size.
pub const FILE_SIZE_MAX: u64 = i64::MAX as u64;
/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65000;
