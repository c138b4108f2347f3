//! `strata verify STORE [--json] [--rate MIB]`: read and check every block and every tree
//! (each branch and snapshot) of a store, with progress on a terminal. Unmounted, the
//! command opens the store; mounted, the daemon does it (a scrub) while the mounts keep
//! serving, reading packs at most `--rate` MiB/s, and sends its progress. Each problem on its own line, naming
//! the file, offset and generation; exit 1 if any.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use strata_snapshot::VerifyReport;

use crate::control::proto::Request;
use crate::error::EXIT_FAILURE;
use crate::progress::Progress;
use crate::session;
use crate::size::format_human;

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

    /// Read at most this many MiB/s of pack data (0: no limit). Default: 100 while the
    /// store is mounted (the daemon scrubs beside the mounts), no limit otherwise.
    #[arg(long, value_name = "MIB")]
    pub rate: Option<u64>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprintln!("verifying {} ...", target.store.display());
    }
    let request = Request::Verify {
        rate_mib: args.rate,
        progress: true,
    };
    let mut progress = Progress::new("verifying");
    let report: VerifyReport =
        session::run_with_progress(&target.store, &request, &mut |d, t| progress.update(d, t))?;
    progress.clear();
    let path = target.store;

    let clean = report.problems.is_empty().into();
    let printed = crate::scripted::print_json(
        &crate::fields::VERIFY,
        &args.scripted,
        args.json,
        false,
        || crate::output::json_with_store(&report, &path, &[("clean", clean)]),
    )?;
    if !printed {
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
        if !printed {
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
