//! `strata verify STORE [--json]`: read and check every block and inode of an unmounted
//! store. Progress on a terminal only; each problem on its own line; exit 1 if any.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::error::EXIT_FAILURE;
use crate::size::format_human;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory (must not be mounted).
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Draws `verifying: 42% (n/total)` on stderr, at most ten times a second.
struct Progress {
    enabled: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now - last < Duration::from_millis(100))
            && done < total
        {
            return;
        }
        self.last = Some(now);
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        eprint!("\r\x1b[Kverifying: {percent:>3}% ({done}/{total})");
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let (path, store) = store::open(&args.store)?;
    let mut progress = Progress::new();
    let result = store.verify(&mut |done, total| progress.update(done, total));
    progress.clear();
    let report = result.map_err(|err| anyhow!(err))?;

    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("store".into(), path.display().to_string().into());
            object.insert("clean".into(), report.problems.is_empty().into());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
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
