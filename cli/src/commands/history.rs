//! `strata history PATH [--json] [--bytes]`: every generation of the branch mounted
//! around PATH in which what PATH names changed (created, modified, replaced, deleted),
//! with its size and time; the live tree last, as `(live)`.
//!
//! PATH must be inside a branch mount; the command sends the mount point and the path
//! from the mount's root to the daemon, which knows the branch the mount serves.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::control::proto::{History, Request};
use crate::{output, session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A path inside a strata mount (it need not exist any more).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Exact byte counts instead of human-readable sizes.
    #[arg(long)]
    pub bytes: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let found = session::resolve_in_mount(&args.path)?;
    let history: History = session::run(
        &found.store,
        &Request::History {
            mount_point: found.mount_point.display().to_string(),
            path: found.relative.clone(),
        },
    )?;
    if !crate::scripted::print_json(
        &crate::fields::HISTORY,
        &args.scripted,
        args.json,
        args.bytes,
        || Ok(output::history_json(&history)),
    )? {
        print!("{}", output::history_table(&history, args.bytes));
    }
    Ok(ExitCode::SUCCESS)
}
