//! The one place where snapshot errors become errno values. Every variant is matched
//! explicitly (no catch-all), so a new error kind must be mapped on purpose. Refusals
//! decided by `fs` itself (EROFS and EXDEV around snapshots) are plain `Errno`s.

use fuser::Errno;
use strata_snapshot::Error;

pub fn errno(e: &Error) -> Errno {
    let code = match e {
        Error::NotFound => libc::ENOENT,
        Error::Exists => libc::EEXIST,
        Error::NotDir => libc::ENOTDIR,
        Error::IsDir => libc::EISDIR,
        Error::NotEmpty => libc::ENOTEMPTY,
        Error::NameTooLong => libc::ENAMETOOLONG,
        Error::InvalidArgument(_) => libc::EINVAL,
        Error::NotPermitted => libc::EPERM,
        Error::NoAttribute => libc::ENODATA,
        Error::AttributeTooBig => libc::E2BIG,
        Error::ReadOnly => libc::EROFS,
        Error::NoSpace => libc::ENOSPC,
        Error::NoDataPast => libc::ENXIO,
        Error::NotSupported(_) => libc::EOPNOTSUPP,
        Error::FileTooBig => libc::EFBIG,
        Error::TooManyLinks => libc::EMLINK,
        Error::Stale => libc::ESTALE,
        Error::Block(_) | Error::Io { .. } | Error::Meta(_) if e.is_disk_full() => libc::ENOSPC,
        Error::Block(_) => libc::EIO,
        Error::Io { source, .. } => match source.raw_os_error() {
            Some(libc::EDQUOT) => libc::EDQUOT,
            _ => libc::EIO,
        },
        Error::NotAStore { .. }
        | Error::UnknownVersion { .. }
        | Error::Locked { .. }
        | Error::Invalid(_)
        | Error::Meta(_)
        | Error::BadRecord { .. }
        | Error::Poisoned(_) => libc::EIO,
    };
    Errno::from_i32(code)
}

/// Logs a failed request once, where it becomes an errno. A write refused by a store that
/// stopped taking writes is not logged again (the store said so once, when it stopped).
pub(crate) fn fail(op: &str, e: &Error) -> Errno {
    if is_fault(e) && !matches!(e, Error::Poisoned(_)) {
        tracing::error!(op, error = %e, "request failed");
    } else {
        tracing::debug!(op, error = %e, "request answered with an error");
    }
    let code = errno(e);
    // A read that failed because something below could not write (sled refuses lookups
    // that would rewrite a page after its log could not be written) is an I/O error to
    // the reader, not "no space".
    if op == "read" && code == Errno::ENOSPC {
        return Errno::EIO;
    }
    code
}

/// An error a request handler answers with: a model error (logged and mapped by `fail`)
/// or an errno decided in `fs` (EROFS, EXDEV, ESTALE, ...).
pub(crate) trait Failure {
    fn errno(self, op: &str) -> Errno;
}

impl Failure for Error {
    fn errno(self, op: &str) -> Errno {
        fail(op, &self)
    }
}

impl Failure for Errno {
    fn errno(self, _op: &str) -> Errno {
        self
    }
}

/// Whether an error is a fault of the store (logged at error level) rather than an
/// ordinary answer to the caller (ENOENT, EEXIST, ...).
pub fn is_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::Block(_)
            | Error::Io { .. }
            | Error::Meta(_)
            | Error::BadRecord { .. }
            | Error::Poisoned(_)
            | Error::NotAStore { .. }
            | Error::UnknownVersion { .. }
            | Error::Locked { .. }
            | Error::Invalid(_)
    )
}
