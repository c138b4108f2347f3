//! strata-fs: FUSE adapter. API CONTRACT used by cli/ (bodies being written):
use std::path::Path;
use std::sync::Arc;
use strata_snapshot::Store;

#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Worker threads serving FUSE requests.
    pub threads: usize,
    /// Name shown as the mount's source in /proc/mounts (the store path).
    pub fsname: String,
}

/// A live mount. `wait` blocks until the filesystem is unmounted (by `strata umount`,
/// `umount`, or `Unmounter::unmount`), then commits everything and returns.
pub struct Mounted {}

/// Clonable handle that unmounts the mount from another thread (signal handler thread).
#[derive(Clone)]
pub struct Unmounter {}

impl Unmounter {
    pub fn unmount(&self) -> std::io::Result<()> {
        todo!()
    }
}

/// Mounts `store` at `mountpoint`; returns once the kernel has completed FUSE INIT,
/// i.e. the mount is ready for use.
pub fn mount(_store: Arc<Store>, _mountpoint: &Path, _opts: &MountOptions) -> std::io::Result<Mounted> {
    todo!()
}

impl Mounted {
    pub fn unmounter(&self) -> Unmounter {
        todo!()
    }
    pub fn wait(self) -> std::io::Result<()> {
        todo!()
    }
}
