//! `strata verify STORE [--json] [--rate MIB]`: read and check every block and every tree
//! (each branch and snapshot) of a store, with progress on a terminal. Unmounted, the
//! command opens the store; mounted, the daemon does it (a scrub) while the mounts keep
//! serving, reading packs at most `--rate` MiB/s, and sends its progress. Each problem on its own line, naming
//! the file, offset and generation; exit 1 if any.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use strata_snapshot::VerifyReport;

use crate::control::proto::Request;
use crate::error::EXIT_FAILURE;
use crate::progress::Progress;
use crate::session::{self, Route};
use crate::size::format_human;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Read at most this many MiB/s of pack data (0: no limit). Default: 100 while the
    /// store is mounted (the daemon scrubs beside the mounts), no limit otherwise.
    #[arg(long, value_name = "MIB")]
    pub rate: Option<u64>,
}

/// The scrub rate through a daemon when `--rate` is not given.
const MOUNTED_RATE_MIB: u64 = 100;

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let rate = match args.rate {
        Some(0) => None,
        Some(r) => Some(r),
        None => Some(MOUNTED_RATE_MIB),
    };
    let terminal = std::io::stderr().is_terminal();
    let request = Request::Verify {
        rate_mib: rate,
        progress: terminal,
    };
    // Through the daemon: its progress lines drive the same display.
    let mut progress = Progress::new("verifying");
    let mut announced = false;
    let routed = session::route_with_progress(&target.store, &request, &mut |p| {
        if !announced {
            eprintln!(
                "verifying {} through its daemon (mounted){} ...",
                target.store.display(),
                rate.map(|r| format!(", at most {r} MiB/s"))
                    .unwrap_or_default()
            );
            announced = true;
        }
        progress.update(p.done, p.total);
    });
    progress.clear();
    let (path, report) = match routed? {
        Route::Daemon(response) => {
            let report: VerifyReport = serde_json::from_value(session::into_result(response)?)
                .context("unexpected reply from the strata daemon")?;
            (target.store.clone(), report)
        }
        Route::Free => {
            let (path, store) = store::open(&target.store)?;
            let mut progress = Progress::new("verifying");
            let started = Instant::now();
            let limit = args.rate.filter(|r| *r > 0).map(|r| r as f64 * 1048576.0);
            let result = store.verify(&mut |done, total| {
                progress.update(done, total);
                if let Some(limit) = limit {
                    let due = Duration::from_secs_f64(done as f64 / limit);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            });
            progress.clear();
            (path, result.map_err(|err| anyhow!(err))?)
        }
    };

    if args.json {
        let clean = report.problems.is_empty().into();
        println!(
            "{}",
            crate::output::json_with_store(&report, &path, &[("clean", clean)])?
        );
    } else {
        for problem in &report.problems {
            println!("problem: {}", crate::error::one_line(problem));
        }
    }
    let checked = format!(
        "{} blocks ({}) and {} inodes checked",
        report.blocks_checked,
        format_human(report.bytes_checked),
        report.inodes_checked
    );
    if report.problems.is_empty() {
        if !args.json {
            println!("{}: clean, {checked}", path.display());
        }
        Ok(ExitCode::SUCCESS)
    } else {
        let count = report.problems.len();
        eprintln!(
            "strata: verify found {count} problem{} in {} ({checked})",
            if count == 1 { "" } else { "s" },
            path.display()
        );
        Ok(ExitCode::from(EXIT_FAILURE))
    }
}
