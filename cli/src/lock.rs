//! The store's lock file, seen from outside: `STORE/lock` is flock'ed by the one process
//! that has the store open (the mount daemon) and holds that process's pid as text.
//! `strata umount` uses it to wait until the daemon has flushed and let go of the store.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

/// Path of the lock file of the store at `store`.
pub fn lock_path(store: &Path) -> PathBuf {
    store.join("lock")
}

/// The pid recorded in the lock file (the first number in it), if any.
pub fn recorded_pid(store: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(lock_path(store))
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|pid| *pid > 0)
}

/// True if some process holds the store's lock: a shared, non-blocking flock attempt fails.
/// A missing lock file means nobody holds it.
pub fn is_held(store: &Path) -> io::Result<bool> {
    let file = match File::open(lock_path(store)) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    // SAFETY: flock on a descriptor we own; the lock goes away when `file` is dropped.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(false);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(true)
    } else {
        Err(err)
    }
}

/// Describes a lock holder for messages: `the strata daemon (pid 42)`.
pub fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("the strata daemon (pid {pid})"),
        None => "the strata daemon".to_string(),
    }
}

/// Waits until nobody holds the store's lock, printing one note on stderr if it takes
/// more than a few seconds, and failing after `timeout`.
pub fn wait_released(store: &Path, pid: Option<u32>, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut noted = false;
    loop {
        if !is_held(store)? {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(crate::error::Busy(format!(
                "{} still holds the store {} after {} s; it may still be flushing \
                 (see {}/daemon.log)",
                holder(pid),
                store.display(),
                timeout.as_secs(),
                store.display()
            ))
            .into());
        }
        if !noted && waited >= Duration::from_secs(3) {
            eprintln!(
                "strata: waiting for {} to flush and release {} ...",
                holder(pid),
                store.display()
            );
            noted = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_reads_the_lock() {
        let dir = std::env::temp_dir().join(format!("strata-cli-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_held(&dir).unwrap());
        assert_eq!(recorded_pid(&dir), None);

        std::fs::write(lock_path(&dir), "pid 4242\n").unwrap();
        assert_eq!(recorded_pid(&dir), Some(4242));
        assert!(!is_held(&dir).unwrap());

        // flock locks belong to the open file description: a second open conflicts.
        let holder_file = File::open(lock_path(&dir)).unwrap();
        let rc = unsafe { libc::flock(holder_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0);
        assert!(is_held(&dir).unwrap());
        let err = wait_released(&dir, Some(4242), Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("pid 4242"), "{err}");
        drop(holder_file);
        assert!(!is_held(&dir).unwrap());
        wait_released(&dir, None, Duration::from_secs(1)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
