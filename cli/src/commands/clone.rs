//! `strata clone STORE SNAPSHOT BRANCH`: a new writable branch starting at a snapshot,
//! mountable beside the main line with `strata mount --branch BRANCH STORE MOUNTPOINT`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::control::proto::{Branch, Request};
use crate::{output, session};

use super::check_new_name;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The snapshot the branch starts from.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Name of the new branch.
    #[arg(value_name = "BRANCH")]
    pub branch: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    check_new_name("branch", &args.branch)?;
    let target = session::resolve_store(&args.store)?;
    let branch: Branch = session::run(
        &target.store,
        &Request::Clone {
            snapshot: args.snapshot.clone(),
            branch: args.branch.clone(),
        },
    )?;
    print!(
        "{}",
        output::cloned(&branch, &target.store.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}
