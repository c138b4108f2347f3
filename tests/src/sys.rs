//! Thin libc wrappers for what std does not offer: xattrs, renameat2, fallocate,
//! SEEK_DATA/SEEK_HOLE, copy_file_range, statvfs, utimensat, mkfifo, syncfs, flock, kill,
//! posix_fadvise.
//! Each returns `io::Result` so a test can assert on the errno.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The errno of an I/O error (0 if it has none).
pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

/// The path as a C string.
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_size(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `lsetxattr(path, name, value, 0)`.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (path, name) = (cpath(path), CString::new(name).expect("name"));
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// `lgetxattr`, sized by a first call.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (path, name) = (cpath(path), CString::new(name).expect("name"));
    loop {
        // SAFETY: a size query with a null buffer.
        let size = check_size(unsafe {
            libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
        })?;
        let mut buffer = vec![0u8; size.max(1)];
        // SAFETY: the buffer has `buffer.len()` bytes.
        match check_size(unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        }) {
            Ok(n) => {
                buffer.truncate(n);
                return Ok(buffer);
            }
            Err(err) if errno(&err) == libc::ERANGE => continue, // grew in between
            Err(err) => return Err(err),
        }
    }
}

/// `llistxattr`, names sorted.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let path = cpath(path);
    loop {
        // SAFETY: a size query with a null buffer.
        let size = check_size(unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) })?;
        let mut buffer = vec![0u8; size.max(1)];
        // SAFETY: the buffer has `buffer.len()` bytes.
        match check_size(unsafe {
            libc::llistxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len())
        }) {
            Ok(n) => {
                let mut names: Vec<String> = buffer[..n]
                    .split(|b| *b == 0)
                    .filter(|name| !name.is_empty())
                    .map(|name| String::from_utf8_lossy(name).into_owned())
                    .collect();
                names.sort();
                return Ok(names);
            }
            Err(err) if errno(&err) == libc::ERANGE => continue,
            Err(err) => return Err(err),
        }
    }
}

/// `lremovexattr`.
pub fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (cpath(path), CString::new(name).expect("name"));
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) })
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`.
pub fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (cpath(from), cpath(to));
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
}

/// `fallocate(fd, mode, offset, len)`.
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
}

/// `lseek(fd, offset, whence)`; for SEEK_DATA / SEEK_HOLE.
pub fn lseek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: a valid descriptor.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as u64)
    }
}

/// One `copy_file_range` call with explicit offsets; returns the bytes copied.
pub fn copy_file_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: usize,
) -> io::Result<usize> {
    let mut off_in = src_offset as libc::loff_t;
    let mut off_out = dst_offset as libc::loff_t;
    // SAFETY: valid descriptors and offset pointers.
    check_size(unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    })
}

/// Copies `len` bytes with as many `copy_file_range` calls as it takes.
pub fn copy_file_range_all(
    src: &File,
    mut src_offset: u64,
    dst: &File,
    mut dst_offset: u64,
    mut len: usize,
) -> io::Result<()> {
    while len > 0 {
        let n = copy_file_range(src, src_offset, dst, dst_offset, len)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "copy_file_range returned 0",
            ));
        }
        src_offset += n as u64;
        dst_offset += n as u64;
        len -= n;
    }
    Ok(())
}

/// `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`: drops the file's clean pages from the
/// page cache, so that the next read asks the filesystem (a strata mount keeps the page
/// cache of files across opens, and of snapshot files for long).
pub fn drop_page_cache(file: &File) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `statvfs(path)`.
pub fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let path = cpath(path);
    // SAFETY: zeroed plain data filled by the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(path.as_ptr(), &mut stat) })?;
    Ok(stat)
}

/// A (seconds, nanoseconds) timestamp.
pub type Time = (i64, i64);

/// `utimensat` with exact atime and mtime; `follow` false sets a symlink's own times.
pub fn set_times(path: &Path, atime: Time, mtime: Time, follow: bool) -> io::Result<()> {
    let path = cpath(path);
    let times = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: a valid C string and two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), flags) })
}

/// `mkfifo(path, mode)`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) -> io::Result<()> {
    let path = cpath(path);
    // SAFETY: a valid C string.
    check(unsafe { libc::mkfifo(path.as_ptr(), mode) })
}

/// `syncfs(fd)`: commit the whole filesystem the file is on.
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::syncfs(file.as_raw_fd()) })
}

/// Takes an exclusive flock on `path` (created if missing) and keeps it while the returned
/// file is open: makes a store look "in use by another process".
pub fn hold_flock(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: a valid descriptor.
    check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })?;
    Ok(file)
}

/// True if some process holds a flock on `path` (a shared, non-blocking attempt fails).
pub fn flock_is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: a valid descriptor; the lock, if taken, goes with `file`.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// `kill(pid, signal)`.
pub fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: sending a signal has no memory effects here.
    check(unsafe { libc::kill(pid as libc::pid_t, signal) })
}

/// True if `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// The command line of `pid`, split into arguments.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}
