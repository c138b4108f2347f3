//! `strata status [STORE|MOUNTPOINT] [--json]`: what a store's daemon is doing — its pid
//! and start, every mount (branch or snapshot, read-only, open files), data not yet
//! sealed and the last commit, background work, automatic snapshot schedules — and the
//! last verify (`last_verify`). Without STORE, the default store.
//!
//! Exit status: 0 when the store is healthy, 1 when it is not: it refuses writes (a
//! commit failed), a mount ended with an error, or its last verify found problems.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::control::proto::Status;
use crate::last_verify::{self, LastVerify};
use crate::output::{size, utc_time};
use crate::{session, store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it [default: the default store].
    #[arg(value_name = "STORE")]
    pub store: Option<PathBuf>,
    /// Print one JSON object (docs/cli-status.md).
    #[arg(long)]
    pub json: bool,
    /// Exact numbers: bytes, and times as seconds since the epoch.
    #[arg(short = 'p', long)]
    pub parsable: bool,
}

/// The JSON document.
#[derive(Debug, Serialize)]
struct Report {
    store: String,
    healthy: bool,
    /// Why not, one line each.
    problems: Vec<String>,
    /// The daemon serving the store, if one does.
    daemon: Option<Status>,
    last_verify: Option<LastVerify>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let path = match &args.store {
        Some(p) => session::resolve_store(p)?.store,
        None => store::locate(&store::default_store_path())?,
    };
    let daemon = session::daemon_status(&path)?;
    let last_verify = last_verify::load(&path);
    let mut problems = Vec::new();
    if let Some(d) = &daemon {
        if let Some(why) = &d.refusing_writes {
            problems.push(format!("refusing writes: {why}"));
        }
        for e in &d.mount_errors {
            problems.push(format!("a mount ended with an error: {e}"));
        }
    }
    if let Some(v) = last_verify.as_ref().filter(|v| v.problems > 0) {
        problems.push(format!(
            "the last verify ({}) found {} problem(s)",
            utc_time(v.at),
            v.problems
        ));
    }
    let report = Report {
        store: path.display().to_string(),
        healthy: problems.is_empty(),
        problems,
        daemon,
        last_verify,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, args.parsable));
    }
    Ok(if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(r: &Report, exact: bool) -> String {
    let time = |t: i64| {
        if exact {
            t.to_string()
        } else {
            format!("{} UTC", utc_time(t))
        }
    };
    let mut out = format!("store:      {}\n", r.store);
    out += &format!(
        "health:     {}\n",
        if r.healthy { "ok" } else { "PROBLEMS" }
    );
    for p in &r.problems {
        out += &format!("  {p}\n");
    }
    match &r.daemon {
        None => out += "daemon:     none (not mounted)\n",
        Some(d) => {
            out += &format!("daemon:     pid {}, since {}\n", d.pid, time(d.since));
            for m in &d.mounts {
                let what = match (&m.branch, &m.snapshot) {
                    (Some(b), _) => format!("branch {b}"),
                    (None, Some(s)) => format!("snapshot {s}"),
                    (None, None) => "?".into(),
                };
                out += &format!(
                    "mount:      {} ({what}, {}, {} open file(s))\n",
                    m.mount_point,
                    if m.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    m.open_files
                );
            }
            out += &format!(
                "unsealed:   {} (last commit: {})\n",
                size(d.dirty_bytes, exact),
                d.last_commit
                    .map_or("none since the daemon started".into(), time)
            );
            if d.background.is_empty() {
                out += "background: idle\n";
            }
            for j in &d.background {
                let far = match (j.done, j.total) {
                    (Some(done), Some(total)) => format!(", {done}/{total}"),
                    _ => String::new(),
                };
                out += &format!(
                    "background: {} ({}), since {}{far}\n",
                    j.what,
                    j.why,
                    time(j.since)
                );
            }
            let c = &d.block_cache;
            out += &if c.capacity_bytes == 0 {
                "cache:      off (block_cache_mib = 0)\n".to_string()
            } else {
                let reads = c.hits + c.misses;
                let rate = match (c.hits * 100).checked_div(reads) {
                    None => "no reads yet".to_string(),
                    Some(pct) => format!("{pct}% of {reads} block reads served from it"),
                };
                format!(
                    "cache:      {} of {} ({} blocks), {rate}\n",
                    size(c.bytes, exact),
                    size(c.capacity_bytes, exact),
                    c.blocks
                )
            };
            if d.relocation_queued_bytes > 0 {
                out += &format!(
                    "relocation: {} queued to be laid out again\n",
                    size(d.relocation_queued_bytes, exact)
                );
            }
            for s in &d.schedules {
                out += &format!(
                    "schedule:   branch {} every {}s{}, next {}\n",
                    s.branch,
                    s.every_secs,
                    s.keep
                        .as_ref()
                        .map(|k| format!(", keep {k}"))
                        .unwrap_or_default(),
                    time(s.next)
                );
            }
        }
    }
    match &r.last_verify {
        None => out += "verify:     never (run `strata verify`)\n",
        Some(v) => {
            out += &format!(
                "verify:     {}: {} problem(s), {} blocks, {} inodes checked\n",
                time(v.at),
                v.problems,
                v.blocks_checked,
                v.inodes_checked
            );
            for p in &v.first_problems {
                out += &format!("  {p}\n");
            }
        }
    }
    out
}
