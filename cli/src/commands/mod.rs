//! One module per subcommand: its clap `Args` and its `run`.

pub mod branch;
pub mod clone;
pub mod defrag;
pub mod diff;
pub mod docs;
pub mod flatten;
pub mod gc;
pub mod history;
pub mod init;
pub mod mount;
pub mod rollback;
pub mod snapshot;
pub mod stats;
pub mod status;
pub mod umount;
pub mod verify;

use crate::error::UsageError;

/// Checks the name of a snapshot or branch about to be made; a bad one is a usage error.
pub fn check_new_name(what: &str, name: &str) -> anyhow::Result<()> {
    strata_snapshot::check_name(what, name).map_err(|err| UsageError(err.to_string()).into())
}
