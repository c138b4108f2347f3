//! `strata mount [--branch B | --snapshot NAME] [STORE] MOUNTPOINT [--foreground]`: check
//! the store and the mount point here, where errors print straight to the user; then, if
//! a daemon already serves the store, ask it to add this mount (one daemon serves every
//! mount of a store); else hand over to `daemon`: start a detached daemon and wait for
//! its word that the mount is ready, or be the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::control::proto::{MountInfo, Request};
use crate::daemon::auto::AutoSnapshots;
use crate::daemon::mounts::MountTarget;
use crate::error::UsageError;
use crate::session::{self, Route};
use crate::{daemon, mountinfo, paths, store};

#[derive(Debug, clap::Args)]
#[command(override_usage = "strata mount [OPTIONS] [STORE] MOUNTPOINT")]
pub struct Args {
    /// [STORE] MOUNTPOINT. Without STORE, the default store is used: $STRATA_DEFAULT_STORE
    /// or /var/lib/strata/default, created with default options if missing.
    #[arg(value_name = "PATH", num_args = 1..=2, required = true)]
    pub paths: Vec<PathBuf>,

    /// Stay attached instead of starting a daemon; SIGINT/SIGTERM unmount cleanly.
    #[arg(long)]
    pub foreground: bool,

    /// FUSE worker threads [default: `threads` in STORE/strata.toml, else the number of
    /// CPUs, at most 8].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Mount this branch (read-write) instead of main; made by `strata clone`.
    #[arg(long, value_name = "BRANCH", conflicts_with = "snapshot")]
    pub branch: Option<String>,

    /// Mount this snapshot, read-only.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,

    /// Take automatic snapshots of the branch while it is mounted, at multiples of this
    /// interval (e.g. 15m, 1h, 1d), named auto-YYYYMMDDTHHMMSSZ. Default:
    /// `auto_snapshot_every` in the store's strata.toml, if set.
    #[arg(long, value_name = "INTERVAL", conflicts_with = "snapshot")]
    pub snapshot_every: Option<String>,

    /// Keep rules applied to the automatic snapshots after each one, as in `strata
    /// snapshot prune` (e.g. hourly=24,daily=7,weekly=4,monthly=6). Default:
    /// `auto_snapshot_keep` in strata.toml; without rules nothing is pruned.
    #[arg(long, value_name = "RULES")]
    pub keep: Option<String>,
}

impl Args {
    /// The STORE argument, if given, and the MOUNTPOINT argument.
    fn store_and_mount_point(&self) -> (Option<&Path>, &Path) {
        match self.paths.as_slice() {
            [mount_point] => (None, mount_point),
            [store, mount_point, ..] => (Some(store), mount_point),
            [] => unreachable!("clap requires at least one path"),
        }
    }
}

/// Worker threads when `--threads` is not given.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

/// Worker threads: `--threads`, else `threads` in the store's strata.toml, else
/// `default_threads`. A store that cannot be read here is left to the mount to report.
fn chosen_threads(flag: Option<usize>, store: Option<&Path>) -> usize {
    let configured = || {
        let store = match store {
            Some(path) => store::locate(path).ok()?,
            None => store::default_store().ok()?,
        };
        strata_snapshot::StoreConfig::load(&store).ok()?.threads
    };
    flag.or_else(configured).unwrap_or_else(default_threads)
}

pub fn run(args: &Args, verbose: u8) -> Result<ExitCode> {
    if args.threads == Some(0) {
        return Err(UsageError("invalid thread count '0': must be at least 1".into()).into());
    }
    let threads = chosen_threads(args.threads, args.store_and_mount_point().0);
    for (what, name) in [("branch", &args.branch), ("snapshot", &args.snapshot)] {
        if let Some(name) = name {
            strata_snapshot::check_name(what, name).map_err(|e| UsageError(e.to_string()))?;
        }
    }
    let auto = AutoSnapshots::parse(args.snapshot_every.as_deref(), args.keep.as_deref())
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let target = MountTarget {
        branch: args.branch.clone(),
        snapshot: args.snapshot.clone(),
        auto,
    };
    let (store_arg, mount_point_arg) = args.store_and_mount_point();
    if args.foreground {
        return daemon::run_foreground(store_arg, mount_point_arg, threads, &target);
    }
    let (store, mount_point) = prepare(store_arg, mount_point_arg)?;
    let request = Request::Mount {
        mount_point: mount_point
            .to_str()
            .context("the mount point is not valid UTF-8")?
            .to_string(),
        branch: target.branch.clone(),
        snapshot: target.snapshot.clone(),
        threads: args.threads,
        snapshot_every: args.snapshot_every.clone(),
        keep: args.keep.clone(),
    };
    match session::route(&store, &request)? {
        Route::Daemon(response) => {
            let _: MountInfo = serde_json::from_value(session::into_result(response)?)
                .context("unexpected reply from the strata daemon")?;
        }
        Route::Free => daemon::spawn(&store, &mount_point, verbose, threads, &target)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves the store (the default one if `store` is `None`) and checks the mount point;
/// returns both canonical paths.
pub fn prepare(store: Option<&Path>, mount_point: &Path) -> Result<(PathBuf, PathBuf)> {
    let store = match store {
        Some(path) => store::locate(path)?,
        None => store::default_store()?,
    };
    let mounts = mountinfo::read().context("cannot read /proc/self/mountinfo")?;
    let mount_point = paths::check_mount_point(mount_point, &store, &mounts)?;
    Ok((store, mount_point))
}
