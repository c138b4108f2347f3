//! The one error type of the snapshot layer. File-system variants map one-to-one onto
//! errno values in `fs` (the mapping lives there, with no catch-all); store-level
//! variants carry what the CLI needs to name the problem.

use std::path::PathBuf;

use strata_blockstore as blockstore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- store-level ---
    #[error("{path} is not a strata store (no strata.toml); create one with `strata init`")]
    NotAStore { path: PathBuf },
    #[error("{path}: store format version {found} is not supported (this strata reads version {supported})")]
    UnknownVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is in use by another process{}; unmount it first", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata store (meta/): {}", blockstore::sled_message(.0))]
    Meta(sled::Error),
    #[error("metadata record {key} is malformed: {detail}")]
    BadRecord { key: String, detail: String },
    #[error(transparent)]
    Block(#[from] blockstore::Error),
    #[error("an earlier commit failed ({0}); the store refuses further writes until remounted")]
    Poisoned(String),

    // --- file-system level (POSIX) ---
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("operation not permitted")]
    NotPermitted,
    #[error("no such attribute")]
    NoAttribute,
    #[error("attribute value too large")]
    AttributeTooBig,
    #[error("read-only generation")]
    ReadOnly,
    #[error("no space left on the disk under the store")]
    NoSpace,
    #[error("no data or hole past the offset")]
    NoDataPast,
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("the snapshot was deleted")]
    Stale,
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Meta(e)
    }
}

impl Error {
    /// Whether this says the disk under the store is full, whichever layer saw it (the
    /// file system maps it to ENOSPC; it never needs the block store's error type).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::NoSpace | Error::Block(blockstore::Error::NoSpace { .. }) => true,
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            Error::Meta(e) | Error::Block(blockstore::Error::Index(e)) => {
                blockstore::sled_os_error(e) == Some(libc::ENOSPC)
            }
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_io_errors_read_as_the_system_names_them() {
        let direct = sled::Error::Io(std::io::Error::from_raw_os_error(libc::EIO));
        let cloned = direct.clone(); // sled keeps only the Debug text of a clone
        let full = sled::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(Error::from(full.clone()).is_disk_full());
        assert!(Error::from(full).is_disk_full());
        for e in [direct, cloned] {
            assert_eq!(
                Error::from(e).to_string(),
                "metadata store (meta/): Input/output error (os error 5)"
            );
        }
    }
}
