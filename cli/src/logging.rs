//! Log setup: `tracing-subscriber` writing to stderr.
//!
//! The level comes from `-v` (repeatable) if given, else `RUST_LOG`, else a default by
//! role: `warn` for ordinary commands, `info` for the mount daemon (whose stderr is
//! `STORE/daemon.log` when it runs detached). The daemon's lines carry timestamps.
//!
//! A log line that cannot be written (the disk under `daemon.log` is full or failing) is
//! dropped: tracing-subscriber reports a failed write with `eprintln!`, which panics when
//! stderr itself fails, and a panic inside a FUSE request's panic ends the daemon.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// What this process is, which decides the default level and the line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A short-lived command (`init`, `verify`, `umount`, ...).
    Command,
    /// The long-lived mount daemon (`mount --foreground`).
    Daemon,
}

fn level_for(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber. Called once, first thing in `main`.
pub fn init(verbose: u8, role: Role) {
    let filter = if verbose > 0 {
        EnvFilter::new(level_for(verbose))
    } else {
        match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
            _ => EnvFilter::new(match role {
                Role::Command => "warn",
                Role::Daemon => "info",
            }),
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match role {
        Role::Daemon => builder.try_init(),
        Role::Command => builder.without_time().with_target(false).try_init(),
    };
    // A second init (never expected) keeps the first subscriber.
    let _ = result;
}

/// stderr, never failing: what cannot be written is dropped.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for(0), "warn");
        assert_eq!(level_for(1), "info");
        assert_eq!(level_for(2), "debug");
        assert_eq!(level_for(7), "trace");
    }
}
