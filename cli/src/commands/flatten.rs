//! `strata flatten STORE [--json]`: fold deleted snapshots' and branches' generations
//! into what is kept, so reads stay one lookup and their metadata leaves the store
//! (docs/generations.md, "Flattening"). The daemon of a mounted store does this by
//! itself after every deletion; this command runs it now: through the daemon when
//! mounted, else it opens the store; either way with progress on a terminal. Resumable: an
//! interrupted run continues where it stopped.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use strata_snapshot::FlattenReport;

use crate::control::proto::Request;
use crate::output;
use crate::progress::Progress;
use crate::session;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprintln!("flattening {} ...", target.store.display());
    }
    let request = Request::Flatten { progress: true };
    let mut progress = Progress::new("flattening");
    let report: FlattenReport =
        session::run_with_progress(&target.store, &request, &mut |d, t| progress.update(d, t))?;
    progress.clear();
    if !crate::scripted::print_json(
        &crate::fields::FLATTEN,
        &args.scripted,
        args.json,
        false,
        || output::json_with_store(&report, &target.store, &[]),
    )? {
        print!("{}", output::flatten_report(&report));
    }
    Ok(ExitCode::SUCCESS)
}
