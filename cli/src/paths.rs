//! Mount-point paths: resolving them without touching a possibly dead FUSE mount, and the
//! checks `strata mount` makes before it starts a daemon (exists, is a directory, is not
//! already a mount point, is not a stale mount, does not overlap the store).

use std::io;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::mountinfo::{self, MountEntry};

/// Absolute path of `path` with its parent canonicalized but its last component kept as is,
/// so that it can be computed for a stale mount point (whose own `stat` fails with
/// ENOTCONN). `.` and `..` as last component are resolved like any directory.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    match absolute.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = absolute.parent().unwrap_or(Path::new("/"));
            Ok(parent.canonicalize()?.join(name))
        }
        _ => absolute.canonicalize(),
    }
}

/// Like `absolute`, but also follows a symlink in the last component when it can.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let absolute = absolute(path)?;
    match absolute.canonicalize() {
        Ok(real) => Ok(real),
        Err(_) => Ok(absolute),
    }
}

/// True for the error a stat of a FUSE mount whose daemon died returns.
pub fn is_stale_error(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOTCONN)
}

/// The message for a stale mount point, naming the command that clears it.
pub fn stale_message(shown: &Path) -> String {
    format!(
        "{0} is a stale mount (its daemon is gone); run `strata umount {0}`",
        shown.display()
    )
}

/// Checks that `mount_point` can take a new mount of the store at `store` (canonical) and
/// returns its canonical path. Errors name the mount point as the user wrote it.
pub fn check_mount_point(
    mount_point: &Path,
    store: &Path,
    mounts: &[MountEntry],
) -> Result<PathBuf> {
    let shown = mount_point.display();
    let absolute = match absolute(mount_point) {
        Ok(path) => path,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist")
        }
        Err(err) if is_stale_error(&err) => {
            bail!("cannot reach mount point {shown}: a parent directory is a stale mount ({err})")
        }
        Err(err) => return Err(anyhow!(err).context(format!("cannot access mount point {shown}"))),
    };
    match std::fs::metadata(&absolute) {
        Ok(meta) if !meta.is_dir() => bail!("mount point {shown} is not a directory"),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist")
        }
        Err(err) if is_stale_error(&err) => bail!(stale_message(mount_point)),
        Err(err) => return Err(anyhow!(err).context(format!("cannot access mount point {shown}"))),
    }
    let real = absolute
        .canonicalize()
        .with_context(|| format!("cannot access mount point {shown}"))?;
    if let Some(existing) = mountinfo::find_mount_point(mounts, &real) {
        if existing.is_strata() {
            bail!(
                "mount point {shown} is already a mount point (strata, store {}); \
                 unmount it first with `strata umount {shown}`",
                existing.source
            );
        }
        bail!(
            "mount point {shown} is already a mount point ({} from {})",
            existing.fs_type,
            existing.source
        );
    }
    if real.starts_with(store) {
        bail!(
            "mount point {shown} is inside the store {}",
            store.display()
        );
    }
    if store.starts_with(&real) {
        bail!(
            "the store {} is inside mount point {shown}; the store must live outside the mount",
            store.display()
        );
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("strata-cli-paths-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.canonicalize().unwrap()
    }

    #[test]
    fn absolute_keeps_missing_last_component() {
        let dir = temp_dir("abs");
        let missing = dir.join("missing");
        assert_eq!(absolute(&missing).unwrap(), missing);
        assert_eq!(
            absolute(&dir.join("a/..")).unwrap_or_default(),
            PathBuf::new()
        );
        std::fs::create_dir(dir.join("a")).unwrap();
        assert_eq!(absolute(&dir.join("a/..")).unwrap(), dir);
        assert_eq!(absolute(&dir.join("a/.")).unwrap(), dir.join("a"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mount_point_checks_name_the_problem() {
        let dir = temp_dir("check");
        let store = dir.join("store");
        std::fs::create_dir(&store).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();

        let err = check_mount_point(&dir.join("nope"), &store, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        let err = check_mount_point(&file, &store, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("is not a directory"), "{err:#}");
        let err = check_mount_point(&store.join("."), &store, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("inside the store"), "{err:#}");
        let err = check_mount_point(&dir, &store, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("is inside mount point"),
            "{err:#}"
        );

        let mounts = vec![MountEntry {
            mount_point: mnt.clone(),
            fs_type: "tmpfs".into(),
            source: "none".into(),
        }];
        let err = check_mount_point(&mnt, &store, &mounts).unwrap_err();
        assert!(
            format!("{err:#}").contains("already a mount point"),
            "{err:#}"
        );
        assert_eq!(check_mount_point(&mnt, &store, &[]).unwrap(), mnt);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_message_names_the_fix() {
        let msg = stale_message(Path::new("/mnt/s"));
        assert_eq!(
            msg,
            "/mnt/s is a stale mount (its daemon is gone); run `strata umount /mnt/s`"
        );
    }
}
