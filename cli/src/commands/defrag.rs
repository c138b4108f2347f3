//! `strata defrag STORE [--json] [--bytes]`: lay out again, contiguously, the files of
//! every branch's live tree whose blocks copy-on-write spread over the packs (a file
//! rewritten in place over many generations reads sequentially as a random read of the
//! disk). Only block data moves, inside the packs; snapshots sharing the blocks read the
//! same bytes from the copies. The old copies are garbage for `strata gc`. Through the
//! daemon when mounted (file operations go on), else the command opens the store; with
//! progress on a terminal either way. Exit 1 if damaged blocks were met, or if the disk
//! has no room for the copies.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use strata_snapshot::DefragReport;

use crate::control::proto::Request;
use crate::error::EXIT_FAILURE;
use crate::output;
use crate::progress::Progress;
use crate::session;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Print the report as one JSON object (sizes in bytes).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,

    /// Exact byte counts instead of human-readable sizes.
    #[arg(long)]
    pub bytes: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprintln!("defragmenting {} ...", target.store.display());
    }
    let request = Request::Defrag { progress: true };
    let mut progress = Progress::new("defragmenting");
    let report: DefragReport =
        session::run_with_progress(&target.store, &request, &mut |d, t| progress.update(d, t))?;
    progress.clear();
    if !crate::scripted::print_json(
        &crate::fields::DEFRAG,
        &args.scripted,
        args.json,
        args.bytes,
        || output::json_with_store(&report, &target.store, &[]),
    )? {
        print!("{}", output::defrag_report(&report, args.bytes));
    }
    if report.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        let count = report.problems.len();
        eprintln!(
            "strata: defrag met {count} problem{} in {}",
            if count == 1 { "" } else { "s" },
            target.store.display()
        );
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}
