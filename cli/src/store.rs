//! Finding and opening a store from the command line: canonical paths, the default store
//! of `strata mount MOUNTPOINT`, and turning `snapshot::Error`s into messages that say
//! what to do (a locked store names the mount point that holds it).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use strata_snapshot::{Error as StoreError, InitOptions, Store};

use crate::error::Busy;
use crate::mountinfo;
use crate::size::DEFAULT_BLOCK_SIZE;

/// Environment variable naming the default store.
pub const DEFAULT_STORE_ENV: &str = "STRATA_DEFAULT_STORE";
/// The default store when `STRATA_DEFAULT_STORE` is not set.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/strata/default";
/// zstd level of `strata init` without `--compression`.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// The name of the file that marks a directory as a store.
const CONFIG_FILE: &str = "strata.toml";

/// Options of a store created without any flags.
pub fn default_init_options() -> InitOptions {
    InitOptions {
        block_size: DEFAULT_BLOCK_SIZE,
        compression_level: DEFAULT_COMPRESSION_LEVEL,
    }
}

/// True if `path` holds a store's configuration file.
pub fn is_store(path: &Path) -> bool {
    path.join(CONFIG_FILE).is_file()
}

/// Canonical path of an existing store directory, or an error naming `path` that says how
/// to create a store there.
pub fn locate(path: &Path) -> Result<PathBuf> {
    let real = match path.canonicalize() {
        Ok(real) => real,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(anyhow!(
                "store {0} does not exist; create it with `strata init {0}`",
                path.display()
            ))
        }
        Err(err) => {
            return Err(anyhow!(err).context(format!("cannot access store {}", path.display())))
        }
    };
    if !real.is_dir() || !is_store(&real) {
        return Err(anyhow!(StoreError::NotAStore {
            path: path.to_path_buf()
        }));
    }
    Ok(real)
}

/// The default store (`$STRATA_DEFAULT_STORE` or `/var/lib/strata/default`), created with
/// default options if it is missing or an empty directory. Returns its canonical path.
pub fn default_store() -> Result<PathBuf> {
    let path = default_store_path();
    if !is_store(&path) && is_missing_or_empty(&path)? {
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create the default store {}", path.display()))?;
        Store::init(&path, &default_init_options())
            .map_err(|err| anyhow!(err))
            .with_context(|| format!("cannot create the default store {}", path.display()))?;
        eprintln!("strata: created the default store {}", path.display());
    }
    locate(&path)
}

/// Where the default store is (`$STRATA_DEFAULT_STORE` or `/var/lib/strata/default`),
/// whether it exists or not.
pub fn default_store_path() -> PathBuf {
    match std::env::var_os(DEFAULT_STORE_ENV) {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_STORE_PATH),
    }
}

/// True if nothing is at `path` or it is an empty directory.
pub fn is_missing_or_empty(path: &Path) -> Result<bool> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(err) => Err(anyhow!(err).context(format!("cannot read {}", path.display()))),
    }
}

/// Opens the store at `path` for exclusive use by this process; returns its canonical path
/// and the open store.
pub fn open(path: &Path) -> Result<(PathBuf, Arc<Store>)> {
    let real = locate(path)?;
    let store = Store::open(&real).map_err(|err| describe_open_error(err, &real))?;
    Ok((real, store))
}

/// Turns a `Store::open` error into the message the user should see.
pub fn describe_open_error(err: StoreError, store: &Path) -> anyhow::Error {
    match err {
        StoreError::Locked { path, pid } => {
            let mounts = mountinfo::read().unwrap_or_default();
            let message = if let Some(mount) = mountinfo::strata_mounts_of(&mounts, store).next() {
                let mp = mount.mount_point.display();
                format!(
                    "{} is mounted at {mp}; unmount it first (`strata umount {mp}`)",
                    path.display()
                )
            } else {
                match pid {
                    Some(pid) => format!(
                        "{} is in use by another process (pid {pid})",
                        path.display()
                    ),
                    None => format!("{} is in use by another process", path.display()),
                }
            };
            anyhow::Error::new(Busy(message))
        }
        other => anyhow!(other),
    }
}
