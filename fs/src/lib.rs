//! strata-fs: the FUSE adapter.
//!
//! Owns: translation of kernel requests into `strata_snapshot::Volume` calls (`adapter`),
//! the one errno mapping (`errno`), open handles (`handles`), FUSE inode numbering
//! (`inodes`), the volumes a mount serves and its `.snapshots` directory (`snapdir`),
//! what the kernel cached and its invalidation (`invalidate`, `stale_attrs`), bringing the kernel's
//! dirty pages in before a snapshot (`writeback`), and the mount lifecycle (this file).
//! Never touches sled or pack files.
//!
//! A mount serves one `Volume`:
//! - a branch (writable): its live tree, plus `MOUNT/.snapshots/NAME/...`, every snapshot
//!   of the store, read-only (hidden from the root's listing, reachable by name);
//! - a snapshot: that snapshot's tree, mounted read-only (MS_RDONLY), no `.snapshots`.
//!
//! Writes anywhere in a snapshot fail with EROFS.
//!
//! Lifecycle: `mount` returns once the kernel has completed FUSE INIT; `Mounted::wait`
//! returns when the filesystem is unmounted (by anyone), after committing everything.
//! It does not close the store: several mounts may share one `Arc<Store>`, and its owner
//! calls `Store::close` after the last of them ended. While mounted, `Mounted::invalidator`
//! lets the owner drop the kernel's caches after changing the store behind the mount's
//! back (a rollback, a snapshot created, renamed or deleted), and write back the pages
//! the kernel holds dirty before the branch is frozen (`Invalidator::write_back`).

mod adapter;
mod errno;
mod handles;
mod inodes;
mod invalidate;
mod snapdir;
mod stale_attrs;
mod writeback;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};
use strata_snapshot::{Store, Volume};

pub use adapter::StrataFs;
pub use errno::errno;
pub use invalidate::Invalidator;
pub use writeback::WriteBack;

#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Worker threads serving FUSE requests.
    pub threads: usize,
    /// Name shown as the mount's source in /proc/mounts (the store path).
    pub fsname: String,
    /// The kernel's readahead window for files of the mount, in bytes (0: leave the
    /// kernel's default, 128 KiB). See `set_readahead`.
    pub readahead: u64,
    /// Let the kernel cache writes (FUSE_WRITEBACK_CACHE): write() returns from the page
    /// cache. Snapshots stay exact (module `writeback`).
    pub writeback_cache: bool,
}

/// Readahead set on every mount: large enough that a sequential read asks the daemon for
/// 1 MiB requests (FUSE's largest) several at a time, so the blocks of a file that
/// copy-on-write scattered over the packs are fetched together (BENCHMARKS.md, "1000
/// generations").
pub const DEFAULT_READAHEAD: u64 = 4 << 20;

/// The share of the system's dirty-page limit a writeback-cached mount may hold, in
/// percent. The kernel gives each FUSE mount 1% (and enforces it strictly), which throttles
/// a writer after a few MiB; this lets the page cache absorb bursts of writes as on a
/// local disk, while the system-wide limit still bounds the total. See `set_dirty_share`.
pub const DIRTY_SHARE_PERCENT: u32 = 40;

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 4,
            fsname: "strata".into(),
            readahead: DEFAULT_READAHEAD,
            writeback_cache: true,
        }
    }
}

/// A live mount.
pub struct Mounted {
    session: BackgroundSession,
    store: Arc<Store>,
    unmounter: Unmounter,
    invalidator: Invalidator,
}

/// Clonable handle that unmounts the mount from another thread (e.g. on a signal).
#[derive(Clone)]
pub struct Unmounter {
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmounts; if the mount is busy, detaches it (lazy unmount) so the daemon can
    /// finish once the last open file is closed.
    pub fn unmount(&self) -> std::io::Result<()> {
        let c = CString::new(self.mountpoint.as_os_str().as_bytes())?;
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => {
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                    return Ok(());
                }
                Err(std::io::Error::last_os_error())
            }
            Some(libc::EPERM) => {
                let st = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mountpoint)
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "fusermount3 -u failed: {st}"
                    )))
                }
            }
            Some(libc::EINVAL) => Ok(()), // not mounted (any more)
            _ => Err(err),
        }
    }
}

/// Mounts `volume` at `mountpoint` and serves it on background threads; returns once
/// the kernel has completed FUSE INIT, i.e. the mount is ready for use. A read-only
/// volume (a snapshot) is mounted read-only.
///
/// As root, strata calls mount(2) itself, with file-system type `fuse.strata` and the
/// store path as the source (so `df -T` and /proc/mounts name it, and no character of
/// the path can break an option string). Otherwise fuser mounts through fusermount3.
pub fn mount(volume: Volume, mountpoint: &Path, opts: &MountOptions) -> std::io::Result<Mounted> {
    let store = volume.store().clone();
    let read_only = volume.is_read_only();
    let mut config = Config::default();
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    store.start_background();
    let writeback = opts.writeback_cache && !read_only;
    let fs = StrataFs::new(volume, writeback);
    let shared = fs.shared().clone();
    let _ = shared.mount_point.set(mountpoint.to_path_buf());
    let session = if unsafe { libc::geteuid() } == 0 {
        let fd = kernel_mount(mountpoint, &opts.fsname, read_only)?;
        match Session::from_fd(fs, fd, SessionACL::All, config) {
            Ok(s) => s,
            Err(e) => {
                let _ = Unmounter {
                    mountpoint: mountpoint.to_path_buf(),
                }
                .unmount();
                return Err(e);
            }
        }
    } else {
        config.mount_options = vec![
            MountOption::FSName(opts.fsname.clone()),
            MountOption::Subtype("strata".into()),
            MountOption::DefaultPermissions,
            if read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
        ];
        Session::new(fs, mountpoint, &config)?
    };
    let _ = shared.notifier.set(session.notifier());
    let invalidator = Invalidator::new(&shared);
    if let Err(e) = stale_attrs::spawn_refresher(Arc::downgrade(&shared)) {
        tracing::warn!(error = %e, "no thread to refresh attributes; st_blocks may lag");
    }
    drop(shared); // the session owns the adapter; the invalidator only refers to it
    let session = session.spawn()?;
    if opts.readahead > 0 {
        set_readahead(mountpoint, opts.readahead);
    }
    if writeback {
        set_dirty_share(mountpoint, DIRTY_SHARE_PERCENT);
    }
    tracing::info!(
        mountpoint = %mountpoint.display(),
        store = %store.path().display(),
        read_only,
        writeback,
        "mounted"
    );
    Ok(Mounted {
        session,
        store,
        unmounter: Unmounter {
            mountpoint: mountpoint.to_path_buf(),
        },
        invalidator,
    })
}

/// Sets the readahead window of the mount's backing device info
/// (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`, the device of the mount's root). FUSE
/// cannot ask for more than the kernel's 128 KiB default at INIT, so sequential reads
/// would reach the daemon as 128 KiB requests one or two at a time; the sysfs knob is the
/// documented way to raise it (it is root's: an unprivileged mount keeps the default).
/// Called once the session serves requests: the stat below is one of them.
fn set_readahead(mountpoint: &Path, bytes: u64) {
    let kb = (bytes / 1024).max(4);
    set_bdi(mountpoint, "read_ahead_kb", kb, "readahead");
}

/// Sets the share of the dirty-page limit the mount may hold
/// (`/sys/class/bdi/MAJOR:MINOR/max_ratio`, root's knob like the readahead).
fn set_dirty_share(mountpoint: &Path, percent: u32) {
    set_bdi(
        mountpoint,
        "max_ratio",
        u64::from(percent),
        "dirty-page share",
    );
}

/// Writes `value` to the knob `name` of the mount's backing device info.
fn set_bdi(mountpoint: &Path, name: &str, value: u64, what: &str) {
    let dev = match std::fs::metadata(mountpoint) {
        Ok(md) => md.dev(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot stat the mount point to set its {what}");
            return;
        }
    };
    let path = format!(
        "/sys/class/bdi/{}:{}/{name}",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&path, format!("{value}\n")) {
        Ok(()) => tracing::debug!(path, value, "{what} set"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!(path, "{what} left at the kernel's default (not root)")
        }
        Err(e) => tracing::warn!(path, error = %e, "cannot set the mount's {what}"),
    }
}

/// Opens /dev/fuse and mounts it at `mountpoint` as `fuse.strata` (root only).
fn kernel_mount(mountpoint: &Path, source: &str, read_only: bool) -> std::io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| std::io::Error::new(e.kind(), format!("/dev/fuse: {e}")))?;
    let fd: OwnedFd = dev.into();
    let md = std::fs::metadata(mountpoint)?;
    let data = format!(
        "fd={},rootmode={:o},user_id=0,group_id=0,default_permissions,allow_other",
        fd.as_raw_fd(),
        md.mode() & libc::S_IFMT
    );
    let c = |s: &[u8]| CString::new(s).map_err(|_| std::io::Error::other("path with a NUL byte"));
    let src = c(source.as_bytes())?;
    let target = c(mountpoint.as_os_str().as_bytes())?;
    let fstype = c(b"fuse.strata")?;
    let data = c(data.as_bytes())?;
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            if read_only { libc::MS_RDONLY } else { 0 },
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("mount {}: {e}", mountpoint.display()),
        ));
    }
    Ok(fd)
}

impl Mounted {
    pub fn unmounter(&self) -> Unmounter {
        self.unmounter.clone()
    }

    /// A handle that drops the kernel's caches of this mount (see `Invalidator`).
    pub fn invalidator(&self) -> Invalidator {
        self.invalidator.clone()
    }

    /// Blocks until the filesystem is unmounted, then commits everything. The store stays
    /// open: its owner closes it after its last mount ended.
    pub fn wait(self) -> std::io::Result<()> {
        let Mounted { session, store, .. } = self;
        let served = session.join();
        if let Err(e) = &served {
            tracing::warn!(error = %e, "FUSE session ended with an error");
        }
        store
            .sync()
            .map_err(|e| std::io::Error::other(format!("final commit failed: {e}")))?;
        tracing::info!("unmounted; store committed");
        Ok(())
    }
}
