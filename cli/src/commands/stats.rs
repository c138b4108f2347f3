//! `strata stats STORE [--json] [--bytes]`: space use of a store (through its daemon when
//! mounted).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use strata_snapshot::Stats;

use crate::control::proto::Request;
use crate::session;
use crate::size::format_human;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,

    /// Print one JSON object (sizes in bytes).
    #[arg(long)]
    pub json: bool,

    /// Exact byte counts instead of human-readable sizes.
    #[arg(long)]
    pub bytes: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let target = session::resolve_store(&args.store)?;
    let path = target.store.clone();
    let stats: Stats = session::run(&target.store, &Request::Stats)?;
    if !crate::scripted::print_json(
        &crate::fields::STATS,
        &args.scripted,
        args.json,
        args.bytes,
        || crate::output::json_with_store(&stats, &path, &[]),
    )? {
        print!(
            "{}",
            render(&path.display().to_string(), &stats, args.bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable table.
fn render(path: &str, stats: &Stats, exact: bool) -> String {
    let size = |bytes: u64| {
        if exact {
            bytes.to_string()
        } else {
            format_human(bytes)
        }
    };
    let rows = [
        ("store", path.to_string()),
        ("logical size", size(stats.logical_bytes)),
        ("after dedup", size(stats.unique_bytes)),
        ("stored size", size(stats.stored_bytes)),
        ("pack files size", size(stats.pack_bytes)),
        ("dedup ratio", format!("{:.2}x", stats.dedup_ratio)),
        (
            "compression ratio",
            format!("{:.2}x", stats.compression_ratio),
        ),
        ("blocks", stats.blocks.to_string()),
        ("block references", stats.block_refs.to_string()),
        ("files", stats.files.to_string()),
        ("directories", stats.directories.to_string()),
        ("symlinks", stats.symlinks.to_string()),
        ("other inodes", stats.other_inodes.to_string()),
        ("pack files", stats.pack_files.to_string()),
    ];
    rows.iter()
        .map(|(name, value)| format!("{name:<18} {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_human_and_exact() {
        let stats = Stats {
            logical_bytes: 16 << 20,
            stored_bytes: 8 << 20,
            dedup_ratio: 2.0,
            compression_ratio: 1.0,
            blocks: 128,
            files: 2,
            directories: 1,
            pack_files: 1,
            ..Stats::default()
        };
        let human = render("/s", &stats, false);
        assert!(human.contains("logical size       16 MiB"), "{human}");
        assert!(human.contains("dedup ratio        2.00x"), "{human}");
        let exact = render("/s", &stats, true);
        assert!(exact.contains("16777216"), "{exact}");
    }
}
