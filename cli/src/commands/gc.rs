//! `strata gc STORE [--json] [--bytes]`: reclaim the space of blocks that no branch and
//! no snapshot references any more (after `snapshot delete`, `branch delete`, or
//! overwrites), rewriting packs whose live fraction fell low so the disk space returns to
//! the file system under the store. Through the daemon when the store is mounted (file
//! operations of its mounts go on; they wait only for the gc's mark, a pass over the
//! block maps), else the command opens the store.
//! Exit 1 if damaged blocks were met (they are left in place; run `strata verify`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use strata_snapshot::GcReport;

use crate::control::proto::Request;
use crate::error::EXIT_FAILURE;
use crate::{output, session, store};

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
    if std::io::stderr().is_terminal() {
        eprintln!("collecting garbage in {} ...", target.store.display());
    }
    let mut report: GcReport = session::run(&target.store, &Request::Gc)?;
    if report.meta_compaction_pending && session::daemon_status(&target.store)?.is_none() {
        // Unmounted: opening the store compacts meta/ now (mounted: at the next mount).
        let (path, store) = store::open(&target.store)?;
        store
            .close()
            .map_err(|err| anyhow!(err))
            .with_context(|| format!("cannot close the store {}", path.display()))?;
        report.meta_bytes = strata_snapshot::disk_bytes(&path.join("meta"));
        report.meta_compaction_pending = false;
    }
    if !crate::scripted::print_json(
        &crate::fields::GC,
        &args.scripted,
        args.json,
        args.bytes,
        || output::json_with_store(&report, &target.store, &[]),
    )? {
        print!("{}", output::gc_report(&report, args.bytes));
    }
    if report.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        let count = report.problems.len();
        eprintln!(
            "strata: gc left {count} damaged block{} in place in {}; run `strata verify`",
            if count == 1 { "" } else { "s" },
            target.store.display()
        );
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}
