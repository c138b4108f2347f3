//! `strata diff STORE A [B] [--json] [--branch B]`: what changed from snapshot A to
//! snapshot B, or to the live tree of the branch (the one mounted at STORE, else main).
//! One line per change, as `zfs diff`: `+` added, `-` removed, `M` modified, `R` renamed
//! (`R\t/old -> /new`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::control::proto::{Diff, Request};
use crate::{output, session};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it (whose branch is the default).
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The snapshot to compare from.
    #[arg(value_name = "A")]
    pub a: String,
    /// The snapshot to compare to [default: the live tree of the branch].
    #[arg(value_name = "B")]
    pub b: Option<String>,
    /// The branch whose live tree B defaults to [default: the branch mounted at STORE,
    /// else main].
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let diff: Diff = session::run(
        &target.store,
        &Request::Diff {
            a: args.a.clone(),
            b: args.b.clone(),
            branch: args.branch.clone(),
            via: target.via_string(),
        },
    )?;
    if !crate::scripted::print_json(
        &crate::fields::DIFF,
        &args.scripted,
        args.json,
        false,
        || Ok(output::diff_json(&diff)),
    )? {
        print!("{}", output::diff_lines(&diff));
    }
    Ok(ExitCode::SUCCESS)
}
