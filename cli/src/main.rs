//! The `strata` command: clap definitions and dispatch to `commands::*`.
//!
//! Every command returns `anyhow::Result<ExitCode>`; an error is printed once, here, as
//! `strata: error: <message>` on one line (the anyhow chain joined with ": "), and exits 1,
//! or 2 for invalid values on the command line (see `error::UsageError`).

mod commands;
mod control;
mod daemon;
mod error;
mod fields;
mod hooks;
mod last_verify;
mod lock;
mod logging;
mod mount_helper;
mod mountinfo;
mod ops;
mod output;
mod paths;
mod progress;
mod scripted;
mod sd_notify;
mod session;
mod size;
mod store;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// strata: a copy-on-write, snapshotting filesystem in user space (FUSE).
/// `0.1.0 (store format 1)`: the build, and the store format it reads.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (store format {})",
        env!("CARGO_PKG_VERSION"),
        strata_snapshot::FORMAT_VERSION
    )
});

#[derive(Debug, Parser)]
#[command(name = "strata", version = VERSION.as_str(), propagate_version = true)]
struct Cli {
    /// More log output: -v info, -vv debug, -vvv trace (overrides RUST_LOG).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new store in an empty or new directory.
    Init(commands::init::Args),
    /// Mount a store, a branch or a snapshot; returns once the mount is ready.
    Mount(commands::mount::Args),
    /// Unmount a strata mount and wait until it is committed (the store released, if last).
    Umount(commands::umount::Args),
    /// Check every block and inode of a store, mounted (the daemon does it, throttled) or not.
    Verify(commands::verify::Args),
    /// Show space use: logical and stored bytes, dedup and compression ratios.
    Stats(commands::stats::Args),
    /// What a store's daemon is doing, and whether the store is healthy (exit status).
    Status(commands::status::Args),
    /// Free the blocks nothing references any more and give their disk space back.
    Gc(commands::gc::Args),
    /// Fold deleted snapshots' generations into what is kept (the daemon does it by itself).
    Flatten(commands::flatten::Args),
    /// Lay out again the files that copy-on-write scattered over the packs.
    Defrag(commands::defrag::Args),
    /// Create, list, delete and rename snapshots (read-only generations).
    Snapshot(commands::snapshot::Args),
    /// Make a branch's live tree the content of a snapshot (the state before is kept).
    Rollback(commands::rollback::Args),
    /// Start a writable branch from a snapshot.
    Clone(commands::clone::Args),
    /// List and delete branches.
    Branch(commands::branch::Args),
    /// What changed between two snapshots, or from a snapshot to the live tree.
    Diff(commands::diff::Args),
    /// Every generation in which a path inside a mount changed.
    History(commands::history::Args),
    /// Print the manual page strata(8), or write every page into a directory.
    Man(commands::docs::ManArgs),
    /// Print the completion script for a shell (bash, zsh, fish).
    Completions(commands::docs::CompletionsArgs),
}

fn main() -> ExitCode {
    // Run as /sbin/mount.strata or /sbin/umount.fuse.strata (module `mount_helper`).
    if let Some(code) = mount_helper::dispatch() {
        return code;
    }
    let cli = Cli::parse();
    let role = match &cli.command {
        Command::Mount(args) if args.foreground => logging::Role::Daemon,
        _ => logging::Role::Command,
    };
    logging::init(cli.verbose, role);

    let result = match cli.command {
        Command::Init(args) => commands::init::run(&args),
        Command::Mount(args) => commands::mount::run(&args, cli.verbose),
        Command::Umount(args) => commands::umount::run(&args),
        Command::Verify(args) => commands::verify::run(&args),
        Command::Stats(args) => commands::stats::run(&args),
        Command::Status(args) => commands::status::run(&args),
        Command::Gc(args) => commands::gc::run(&args),
        Command::Flatten(args) => commands::flatten::run(&args),
        Command::Defrag(args) => commands::defrag::run(&args),
        Command::Snapshot(args) => commands::snapshot::run(&args),
        Command::Rollback(args) => commands::rollback::run(&args),
        Command::Clone(args) => commands::clone::run(&args),
        Command::Branch(args) => commands::branch::run(&args),
        Command::Diff(args) => commands::diff::run(&args),
        Command::History(args) => commands::history::run(&args),
        Command::Man(args) => commands::docs::man(<Cli as clap::CommandFactory>::command(), &args),
        Command::Completions(args) => {
            commands::docs::completions(<Cli as clap::CommandFactory>::command(), &args)
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => error::report(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mount_takes_one_or_two_paths() {
        let cli = Cli::try_parse_from(["strata", "mount", "/mnt/x"]).unwrap();
        let Command::Mount(args) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(args.paths.len(), 1);
        let cli =
            Cli::try_parse_from(["strata", "-v", "mount", "/s", "/m", "--foreground"]).unwrap();
        assert_eq!(cli.verbose, 1);
        let Command::Mount(args) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(args.paths.len(), 2);
        assert!(args.foreground);
        assert!(Cli::try_parse_from(["strata", "mount"]).is_err());
        assert!(Cli::try_parse_from(["strata", "mount", "a", "b", "c"]).is_err());
        let cli = Cli::try_parse_from(["strata", "mount", "--branch", "b", "/s", "/m"]).unwrap();
        let Command::Mount(args) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(args.branch.as_deref(), Some("b"));
        assert!(Cli::try_parse_from([
            "strata",
            "mount",
            "--branch",
            "b",
            "--snapshot",
            "s",
            "/s",
            "/m"
        ])
        .is_err());
    }

    #[test]
    fn snapshot_commands_parse() {
        let cli =
            Cli::try_parse_from(["strata", "snapshot", "delete", "/s", "x", "--dry-run"]).unwrap();
        let Command::Snapshot(args) = cli.command else {
            panic!("not snapshot")
        };
        let commands::snapshot::Command::Delete(delete) = args.command else {
            panic!("not delete")
        };
        assert!(delete.dry_run);
        assert!(Cli::try_parse_from(["strata", "diff", "/s", "a"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "diff", "/s", "a", "b", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "diff", "/s"]).is_err());
        assert!(Cli::try_parse_from(["strata", "rollback", "/s", "a", "--force"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "clone", "/s", "a", "b"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "branch", "list", "/s", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "history", "/m/f", "--bytes"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "gc", "/s", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "gc"]).is_err());
    }
}
