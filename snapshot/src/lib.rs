//! strata-snapshot: the versioned filesystem model (no FUSE types here).
//! API CONTRACT used by fs/ and cli/ (bodies being written):
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not a strata store (no strata.toml); create one with `strata init`")]
    NotAStore { path: PathBuf },
    #[error("{path}: store format version {found} is not supported (this strata reads version {supported})")]
    UnknownVersion { path: PathBuf, found: u32, supported: u32 },
    #[error("{path} is in use by another process (pid {pid:?}); unmount it first")]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error("{0}")]
    Invalid(String),
}
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Debug)]
pub struct InitOptions {
    pub block_size: u32,
    pub compression_level: i32,
}

pub struct Store {}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub blocks: u64,
    pub files: u64,
    pub directories: u64,
    pub pack_files: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub bytes_checked: u64,
    pub inodes_checked: u64,
    pub problems: Vec<String>,
}

impl Store {
    pub fn init(_path: &Path, _opts: &InitOptions) -> Result<()> {
        todo!()
    }
    pub fn open(_path: &Path) -> Result<Arc<Store>> {
        todo!()
    }
    pub fn path(&self) -> &Path {
        todo!()
    }
    pub fn sync(&self) -> Result<()> {
        todo!()
    }
    pub fn stats(&self) -> Result<Stats> {
        todo!()
    }
    pub fn verify(&self, _progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        todo!()
    }
}
