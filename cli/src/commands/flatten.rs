//! `strata flatten STORE [--json]`: fold deleted snapshots' and branches' generations
//! into what is kept, so reads stay one lookup and their metadata leaves the store
//! (docs/generations.md, "Flattening"). The daemon of a mounted store does this by
//! itself after every deletion; this command runs it now: through the daemon when
//! mounted, else it opens the store; either way with progress on a terminal. Resumable: an
//! interrupted run continues where it stopped.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use strata_snapshot::FlattenReport;

use crate::control::proto::Request;
use crate::progress::Progress;
use crate::session::{self, Route};
use crate::{output, store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let request = Request::Flatten {
        progress: std::io::stderr().is_terminal(),
    };
    // Through the daemon: its progress lines drive the same display.
    let mut progress = Progress::new("flattening");
    let routed = session::route_with_progress(&target.store, &request, &mut |p| {
        progress.update(p.done, p.total)
    });
    progress.clear();
    let (path, report): (PathBuf, FlattenReport) = match routed? {
        Route::Daemon(response) => {
            let report = serde_json::from_value(session::into_result(response)?)
                .context("unexpected reply from the strata daemon")?;
            (target.store.clone(), report)
        }
        Route::Free => {
            let (path, store) = store::open(&target.store)?;
            if std::io::stderr().is_terminal() {
                eprintln!("flattening {} ...", path.display());
            }
            let mut progress = Progress::new("flattening");
            let result = store.flatten(crate::ops::flatten_batch(), Duration::ZERO, &mut |p| {
                progress.update(p.done, p.total);
                true
            });
            progress.clear();
            let report = result.map_err(|err| anyhow!(err))?;
            store
                .close()
                .map_err(|err| anyhow!(err))
                .with_context(|| format!("cannot close the store {}", path.display()))?;
            (path, report)
        }
    };
    if args.json {
        println!("{}", output::json_with_store(&report, &path, &[])?);
    } else {
        print!("{}", output::flatten_report(&report));
    }
    Ok(ExitCode::SUCCESS)
}
