//! How an error reaches the user: one line, `strata: error: <message>`, and the exit code.
//!
//! `UsageError` marks a bad value on the command line (exit 2, like clap's own errors);
//! `Busy` a store another process holds (exit 3); everything else exits 1.

use std::fmt;
use std::process::ExitCode;

/// A value given on the command line is not acceptable (invalid size, level, ...).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The store is held by another process (a daemon, a command that opened it): exit 3,
/// so that scripts can retry, as restic's exit code for a locked repository.
#[derive(Debug)]
pub struct Busy(pub String);

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Busy {}

/// Exit code for errors in the values given on the command line.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the store is busy (locked by another process).
pub const EXIT_BUSY: u8 = 3;
/// Exit code for every other failure (and for `verify` finding problems).
pub const EXIT_FAILURE: u8 = 1;

/// Prints `err` as one line on stderr and returns the exit code that fits it.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("strata: error: {}", message(err));
    if err.chain().any(|cause| cause.is::<UsageError>()) {
        ExitCode::from(EXIT_USAGE)
    } else if err.chain().any(|cause| cause.is::<Busy>()) {
        ExitCode::from(EXIT_BUSY)
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

/// The one-line message of `err` and its causes, `outer: inner: ...`, leaving out a cause
/// whose text the message already ends with (an error that shows its source, as
/// `PATH: {source}` does, would otherwise repeat it).
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = one_line(&cause.to_string());
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Folds a possibly multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn one_line_folds_newlines() {
        assert_eq!(one_line("a\nb  c\n"), "a b c");
    }

    #[test]
    fn usage_errors_are_found_under_context() {
        let err = Err::<(), _>(UsageError("bad".into()))
            .context("outer")
            .unwrap_err();
        assert!(err.chain().any(|c| c.is::<UsageError>()));
        assert_eq!(format!("{err:#}"), "outer: bad");
    }

    #[test]
    fn a_cause_the_message_already_shows_is_left_out() {
        #[derive(Debug)]
        struct Shows(std::io::Error);
        impl fmt::Display for Shows {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "/x/pack: {}", self.0)
            }
        }
        impl std::error::Error for Shows {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Shows(std::io::Error::from_raw_os_error(libc::EIO)))
            .context("gc failed");
        assert_eq!(
            message(&err),
            "gc failed: /x/pack: Input/output error (os error 5)"
        );
    }
}
