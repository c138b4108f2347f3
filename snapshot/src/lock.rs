//! `STORE/lock`: an exclusive flock held by the one process that has the store open.
//! The holder writes its pid into the file so others can name it (and `strata umount`
//! can wait for it to exit).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = "lock";

/// Held for as long as the store is open; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    pub path: PathBuf,
}

impl StoreLock {
    pub fn acquire(store: &Path) -> Result<StoreLock> {
        let path = store.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(Error::Locked {
                    path: store.to_path_buf(),
                    pid: s.trim().parse().ok(),
                });
            }
            return Err(Error::io(&path, err));
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.rewind().map_err(|e| Error::io(&path, e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(StoreLock { _file: file, path })
    }
}

/// The pid recorded in a store's lock file, if the lock is currently held.
pub fn holder(store: &Path) -> Option<u32> {
    let path = store.join(LOCK_FILE);
    let mut file = File::open(&path).ok()?;
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_pid() {
        let dir = tempfile::tempdir().unwrap();
        let l = StoreLock::acquire(dir.path()).unwrap();
        match StoreLock::acquire(dir.path()) {
            Err(Error::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        drop(l);
        assert_eq!(holder(dir.path()), None);
        StoreLock::acquire(dir.path()).unwrap();
    }
}
