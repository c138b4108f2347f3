//! Helpers for strata's end-to-end tests, which drive the built `strata` binary against
//! real FUSE mounts (they need root and /dev/fuse).
//!
//! - `binary`: finding `strata` (env `STRATA_BIN`, else next to the test executable in the
//!   target directory, same profile) and running it with a time limit.
//! - `cli`: shorthands of the CLI-level tests (`ok`, `json`, `snapshot_names`,
//!   `env_u64`, `UnmountOnDrop`).
//! - `fixture`: `TestStore` (a temp dir with a store and a mount point, optionally on a
//!   small tmpfs) and `Mount`, a guard that always unmounts, even when the test panicked,
//!   and never leaves a stale mount behind; `Mount::crash` kills the daemon with SIGKILL.
//! - `lossy`: the lossy disk of the power-cut tests, a passthrough FUSE filesystem whose
//!   unsynced writes and directory operations a `reboot` drops (docs/power-cut-harness.md).
//! - `power`: the cycle of a power cut of a running strata (kill, reboot the disk, clear
//!   the mount), the writer whose acknowledgements live outside the disk.
//! - `mounts`: /proc/self/mountinfo, forced unmounts, tmpfs, synthetic stale FUSE mounts.
//! - `sys`: thin libc wrappers (xattrs, renameat2, fallocate, lseek, copy_file_range, ...).
//! - `data`: deterministic data (random, compressible, mixed) and comparisons that report
//!   the first differing offset; `records`: the numbered records of the crash test;
//!   `trees`: checksums of whole trees, copies of store directories.
//!
//! Every test makes its own temp dirs, so tests run in parallel without sharing state.
//! Environment: `STRATA_BIN` (binary under test), `STRATA_TEST_DAEMON_LOG` (RUST_LOG of
//! the daemons), `STRATA_TEST_KEEP` (keep temp dirs), `STRATA_CRASH_RUNS`/`STRATA_CRASH_SEED`.

pub mod binary;
pub mod cli;
pub mod data;
pub mod fixture;
pub mod lossy;
pub mod mounts;
pub mod power;
pub mod records;
pub mod sys;
pub mod trees;

pub use binary::{strata, strata_bin, Run};
pub use fixture::{Mount, TestStore};
