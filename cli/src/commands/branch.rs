//! `strata branch list|delete`: the writable lines of a store (`main`, and clones).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::control::proto::{Branch, BranchDeleted, Request};
use crate::{output, session};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List branches: name, live generation, the snapshot each started from.
    List(ListArgs),
    /// Delete a branch (not main, not while mounted); its snapshots stay.
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The branch to delete.
    #[arg(value_name = "BRANCH")]
    pub branch: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Command::List(a) => {
            let target = session::resolve_store(&a.store)?;
            let rows: Vec<Branch> = session::run(&target.store, &Request::BranchList)?;
            if !crate::scripted::print_json(
                &crate::fields::BRANCH_LIST,
                &a.scripted,
                a.json,
                false,
                || Ok(output::branch_json(&rows)),
            )? {
                print!("{}", output::branch_table(&rows));
            }
        }
        Command::Delete(a) => {
            let target = session::resolve_store(&a.store)?;
            let deleted: BranchDeleted = session::run(
                &target.store,
                &Request::BranchDelete {
                    branch: a.branch.clone(),
                },
            )?;
            println!("deleted branch {}", deleted.branch);
        }
    }
    Ok(ExitCode::SUCCESS)
}
