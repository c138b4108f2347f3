//! The lossy disk: a passthrough FUSE filesystem over a real directory that behaves like
//! a disk with a volatile write cache, for power-cut tests (docs/power-cut-harness.md).
//!
//! `LossyDisk::mount(backing, mnt)` serves `backing` at `mnt`. Everything written is
//! visible at once, as through a page cache; what is durable is tracked beside it
//! (`model`): file data since the last fsync/fdatasync of that file, and directory
//! operations (create, mkdir, rename, link, unlink, rmdir, symlink) since the last fsync
//! of that directory, are volatile. `cut` takes the power at once, `arm` at a named
//! point (the Nth write, fsync, rename, ... of a path: `points`); from then on every
//! request fails with EIO and nothing reaches the disk. `reboot` then unmounts, writes
//! what a disk would hold after the power loss into a new directory that replaces
//! `backing` (`reboot`), and mounts it again. The same points inject I/O errors (EIO,
//! ENOSPC) instead of a cut, and `set_full` makes statfs report a full disk.
//!
//! Layout: `model` (the durable state), `fs` (the fuser passthrough that keeps it),
//! `points` (named points and their actions), `reboot` (the disk after a cut), `sys`
//! (the *at() calls).

mod fs;
pub mod model;
pub mod points;
pub mod reboot;
mod sys;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, Session, SessionACL};

pub use points::{Action, CutMode, Op, Point};
pub use reboot::RebootReport;

use fs::{LossyFs, Shared, State};
use model::Model;

/// A mounted lossy disk. Dropping it unmounts it (cleanly: nothing is lost). Every method
/// takes `&self`: a test reboots the disk while its store's mount guard borrows it.
pub struct LossyDisk {
    backing: PathBuf,
    mnt: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    /// Device number of the mount (for aborting its connection).
    dev: u64,
    /// Reboots so far.
    boots: u32,
    /// Problems of the harness itself found so far (model and backing disagreed).
    errors: Vec<String>,
}

impl LossyDisk {
    /// Mounts a lossy disk holding `backing` (an existing directory: its content is
    /// durable) at `mnt` (an existing empty directory). Needs root.
    pub fn mount(backing: &Path, mnt: &Path) -> io::Result<LossyDisk> {
        sys::raise_nofile();
        let backing = backing.canonicalize()?;
        let mnt = mnt.canonicalize()?;
        let shared = Arc::new(Shared {
            backing: backing.clone(),
            state: Mutex::new(State::new(&backing, Model::scan(&backing)?)?),
            cut_cv: Condvar::new(),
        });
        let (session, dev) = start(&shared, &mnt)?;
        Ok(LossyDisk {
            backing,
            mnt,
            inner: Mutex::new(Inner {
                shared,
                session: Some(session),
                dev,
                boots: 0,
                errors: Vec::new(),
            }),
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The directory underneath, as it is live (for reading logs before a reboot).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shared(&self) -> Arc<Shared> {
        self.inner().shared.clone()
    }

    /// Reboots so far.
    pub fn boots(&self) -> u32 {
        self.inner().boots
    }

    /// Arms a named point (counted from now).
    pub fn arm(&self, point: Point, action: Action) {
        self.shared().lock().points.arm(point, action);
    }

    /// Removes every armed point (injected failures stop).
    pub fn disarm_all(&self) {
        self.shared().lock().points.disarm_all();
    }

    /// Takes the power now.
    pub fn cut(&self, mode: CutMode) {
        let shared = self.shared();
        let mut st = shared.lock();
        if st.points.cut.is_none() {
            st.points.cut = Some(mode);
        }
        shared.cut_cv.notify_all();
    }

    /// The cut that took the power, if one did.
    pub fn cut_mode(&self) -> Option<CutMode> {
        self.shared().lock().points.cut
    }

    /// Waits until the power is cut (by `cut` or an armed point); false on timeout.
    pub fn wait_for_cut(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let shared = self.shared();
        let mut st = shared.lock();
        while st.points.cut.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // A point fires inside a request without signalling: poll too.
            let wait = (deadline - now).min(Duration::from_millis(20));
            st = shared
                .cut_cv
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Operations of a kind seen since the disk was (re)mounted.
    pub fn count(&self, op: Op) -> u64 {
        self.shared()
            .lock()
            .points
            .counts
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    /// Injected errors so far since the last (re)mount: (operation, path, errno).
    pub fn injected(&self) -> Vec<(Op, String, i32)> {
        self.shared().lock().points.injected.clone()
    }

    /// Unsynced directory operations and file pages.
    pub fn volatile(&self) -> (usize, usize) {
        self.shared().lock().model.volatile()
    }

    /// Makes statfs report no free space (true) or the real figures (false).
    pub fn set_full(&self, full: bool) {
        self.shared().lock().full = full;
    }

    /// Inconsistencies of the harness itself (must stay empty).
    pub fn harness_errors(&self) -> Vec<String> {
        let inner = self.inner();
        let mut all = inner.errors.clone();
        all.extend(inner.shared.lock().model.errors.iter().cloned());
        all
    }

    /// Power loss and restart: cuts the power (dropping everything unsynced, unless a
    /// cut already happened), unmounts, replaces the backing directory by what the disk
    /// held durably, and mounts it again. Whatever used the disk must be stopped first
    /// (its open files would keep the old mount busy).
    pub fn reboot(&self) -> io::Result<RebootReport> {
        self.cut(CutMode::DropAll);
        let mode = self.cut_mode().unwrap_or(CutMode::DropAll);
        let mut inner = self.inner();
        self.unmount(&mut inner)?;
        let name = self
            .backing
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = self
            .backing
            .parent()
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let fresh = parent.join(format!(".{name}.reboot"));
        let old = parent.join(format!(".{name}.old"));
        for d in [&fresh, &old] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
        }
        let report = {
            let shared = inner.shared.clone();
            let mut st = shared.lock();
            inner.errors.append(&mut st.model.errors);
            reboot::materialize(&st.model, mode, &fresh)?
        };
        std::fs::rename(&self.backing, &old)?;
        std::fs::rename(&fresh, &self.backing)?;
        std::fs::remove_dir_all(&old)?;
        inner.boots += 1;
        self.remount(&mut inner)?;
        Ok(report)
    }

    /// A clean restart: unmounts and mounts again, losing nothing.
    pub fn restart(&self) -> io::Result<()> {
        let mut inner = self.inner();
        self.unmount(&mut inner)?;
        let shared = inner.shared.clone();
        inner.errors.append(&mut shared.lock().model.errors);
        self.remount(&mut inner)
    }

    fn remount(&self, inner: &mut Inner) -> io::Result<()> {
        inner.shared = Arc::new(Shared {
            backing: self.backing.clone(),
            state: Mutex::new(State::new(&self.backing, Model::scan(&self.backing)?)?),
            cut_cv: Condvar::new(),
        });
        let (session, dev) = start(&inner.shared, &self.mnt)?;
        inner.session = Some(session);
        inner.dev = dev;
        Ok(())
    }

    /// Unmounts (lazily if busy) and waits for the session to end, aborting the FUSE
    /// connection if it does not.
    fn unmount(&self, inner: &mut Inner) -> io::Result<()> {
        let Some(session) = inner.session.take() else {
            return Ok(());
        };
        let c = CString::new(self.mnt.as_os_str().as_bytes())?;
        // SAFETY: a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            // SAFETY: as above.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !session.guard.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !session.guard.is_finished() {
            let minor = libc::minor(inner.dev);
            let abort = format!("/sys/fs/fuse/connections/{minor}/abort");
            let _ = std::fs::write(&abort, "1");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !session.guard.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if session.guard.is_finished() {
            let _ = session.join();
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the lossy disk at {} does not let go",
                self.mnt.display()
            )))
        }
    }
}

impl Drop for LossyDisk {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut taken = Inner {
            shared: inner.shared.clone(),
            session: inner.session.take(),
            dev: inner.dev,
            boots: inner.boots,
            errors: Vec::new(),
        };
        if let Err(e) = self.unmount(&mut taken) {
            eprintln!("warning: {e}");
        }
    }
}
/// Mounts the filesystem of `shared` at `mnt` (root: mount(2) with a /dev/fuse
/// descriptor, type `fuse.lossy`) and serves it on background threads.
fn start(shared: &Arc<Shared>, mnt: &Path) -> io::Result<(BackgroundSession, u64)> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd: OwnedFd = dev.into();
    let md = std::fs::metadata(mnt)?;
    let data = format!(
        "fd={},rootmode={:o},user_id=0,group_id=0,default_permissions,allow_other",
        fd.as_raw_fd(),
        md.mode() & libc::S_IFMT
    );
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::other("path with a NUL byte"));
    let (src, target, fstype, data) = (
        c(shared.backing.as_os_str().as_bytes())?,
        c(mnt.as_os_str().as_bytes())?,
        c(b"fuse.lossy")?,
        c(data.as_bytes())?,
    );
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount {}: {e}", mnt.display()),
        ));
    }
    let mut config = Config::default();
    config.n_threads = Some(4);
    config.clone_fd = true;
    config.acl = SessionACL::All;
    let fs = LossyFs {
        shared: shared.clone(),
    };
    let session = Session::from_fd(fs, fd, SessionACL::All, config)?.spawn()?;
    let dev = std::fs::metadata(mnt)?.dev();
    Ok((session, dev))
}
