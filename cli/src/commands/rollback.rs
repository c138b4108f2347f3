//! `strata rollback STORE NAME [--force] [--branch B]`: make a branch's live tree the
//! content of a snapshot. The state before is kept as an automatic snapshot
//! (`pre-rollback-<UTC time>`), so a rollback can be undone by rolling back to it. Refused
//! while files are open in the branch unless `--force`; while mounted, the kernel caches
//! of the branch's mounts are invalidated.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::control::proto::{Request, RolledBack};
use crate::{output, session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it (whose branch is the default).
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The snapshot to roll back to.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Roll back even if files are open in the branch.
    #[arg(long)]
    pub force: bool,
    /// The branch to roll back [default: the branch mounted at STORE, else main].
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let done: RolledBack = session::run(
        &target.store,
        &Request::Rollback {
            name: args.name.clone(),
            force: args.force,
            branch: args.branch.clone(),
            via: target.via_string(),
        },
    )?;
    print!("{}", output::rolled_back(&done));
    Ok(ExitCode::SUCCESS)
}
