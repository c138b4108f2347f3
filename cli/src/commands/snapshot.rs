//! `strata snapshot create|list|delete|rename|hold|release|prune|wrap`: named, read-only
//! generations of a branch. Each runs through the store's daemon when it is mounted, or
//! opens the store itself; `create` and `wrap` run the snapshot hooks (module `hooks`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::control::proto::{Deleted, Held, Pruned, Renamed, Request, Snapshot};
use crate::hooks::{HookEnv, Hooks, Output};
use crate::session::StoreRef;
use crate::{output, session};

use super::check_new_name;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Freeze the live tree of a branch as a named, read-only snapshot.
    Create(CreateArgs),
    /// List snapshots with their space use.
    List(ListArgs),
    /// Delete a snapshot (what nothing else references returns at the next `strata gc`).
    Delete(DeleteArgs),
    /// Rename a snapshot.
    Rename(RenameArgs),
    /// Hold a snapshot: it cannot be deleted and no retention rule removes it.
    Hold(NameArgs),
    /// Release a held snapshot.
    Release(NameArgs),
    /// Remove the automatic snapshots that no keep rule keeps (as restic/borg --keep-*).
    Prune(PruneArgs),
    /// Take NAME-pre, run a command, take NAME-post (as snapper's pre/post pairs).
    Wrap(WrapArgs),
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The snapshot.
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// Keep rules: last=N, hourly=N, daily=N, weekly=N, monthly=N, yearly=N, comma
    /// separated (e.g. hourly=24,daily=7,weekly=4,monthly=6). Periods are UTC calendar
    /// periods; a snapshot kept by any rule, or held, stays.
    #[arg(long, value_name = "RULES", required = true)]
    pub keep: String,
    /// Consider every snapshot, not only the automatic ones (`auto-...`).
    #[arg(long)]
    pub all: bool,
    /// Only print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the decisions as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The store directory, or a mount point of it (whose branch is the default).
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// Name of the new snapshot.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The branch to snapshot [default: the branch mounted at STORE, else main].
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Print the new snapshot as JSON, with `took_us`: the time the store took.
    #[arg(long)]
    pub json: bool,
    /// A shell command to run first (e.g. flushing a database); the snapshot is not
    /// taken if it fails [default: pre_snapshot in STORE/strata.toml].
    #[arg(long, value_name = "CMD")]
    pub pre: Option<String>,
    /// A shell command to run after, always [default: post_snapshot in strata.toml].
    #[arg(long, value_name = "CMD")]
    pub post: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WrapArgs {
    /// The store directory, or a mount point of it (whose branch is the default).
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// Snapshots NAME-pre and NAME-post are taken before and after COMMAND.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The branch to snapshot [default: the branch mounted at STORE, else main].
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// The command to run between the two snapshots; its exit status is wrap's.
    #[arg(value_name = "COMMAND", last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// Print a JSON array (sizes in bytes).
    #[arg(long)]
    pub json: bool,
    /// Exact byte counts instead of human-readable sizes.
    #[arg(long)]
    pub bytes: bool,
    #[command(flatten)]
    pub scripted: crate::scripted::Args,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The snapshot to delete.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Only print how much space deleting it would free.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    /// The store directory, or a mount point of it.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// The snapshot's current name.
    #[arg(value_name = "OLD")]
    pub old: String,
    /// Its new name.
    #[arg(value_name = "NEW")]
    pub new: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        Command::Create(a) => {
            check_new_name("snapshot", &a.name)?;
            let target = session::resolve_store(&a.store)?;
            let hooks = Hooks::chosen(a.pre.as_deref(), a.post.as_deref(), &target.store);
            let created = create_with_hooks(&target, &a.name, &a.branch, &hooks)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                print!("{}", output::snapshot_created(&created));
            }
        }
        Command::List(a) => {
            let target = session::resolve_store(&a.store)?;
            let rows: Vec<Snapshot> = session::run(&target.store, &Request::SnapshotList)?;
            if !crate::scripted::print_json(
                &crate::fields::SNAPSHOT_LIST,
                &a.scripted,
                a.json,
                a.bytes,
                || Ok(output::snapshot_json(&rows)),
            )? {
                print!("{}", output::snapshot_table(&rows, a.bytes));
            }
        }
        Command::Delete(a) => {
            let target = session::resolve_store(&a.store)?;
            let deleted: Deleted = session::run(
                &target.store,
                &Request::SnapshotDelete {
                    name: a.name.clone(),
                    dry_run: a.dry_run,
                },
            )?;
            print!("{}", output::snapshot_deleted(&deleted));
        }
        Command::Hold(a) | Command::Release(a) => {
            let hold = matches!(args.command, Command::Hold(_));
            let target = session::resolve_store(&a.store)?;
            let held: Held = session::run(
                &target.store,
                &Request::SnapshotHold {
                    name: a.name.clone(),
                    hold,
                },
            )?;
            print!("{}", output::snapshot_held(&held));
        }
        Command::Prune(a) => {
            let target = session::resolve_store(&a.store)?;
            let pruned: Pruned = session::run(
                &target.store,
                &Request::SnapshotPrune {
                    keep: a.keep.clone(),
                    all: a.all,
                    dry_run: a.dry_run,
                },
            )?;
            if !crate::scripted::print_json(
                &crate::fields::SNAPSHOT_PRUNE,
                &a.scripted,
                a.json,
                false,
                || Ok(serde_json::to_string_pretty(&pruned)?),
            )? {
                print!("{}", output::snapshot_pruned(&pruned));
            }
        }
        Command::Rename(a) => {
            check_new_name("snapshot", &a.new)?;
            let target = session::resolve_store(&a.store)?;
            let renamed: Renamed = session::run(
                &target.store,
                &Request::SnapshotRename {
                    old: a.old.clone(),
                    new: a.new.clone(),
                },
            )?;
            print!("{}", output::snapshot_renamed(&renamed));
        }
        Command::Wrap(a) => return wrap(a),
    }
    Ok(ExitCode::SUCCESS)
}

/// Takes snapshot `name` of `branch` (default: the one mounted at the store named, else
/// main) between the hooks.
fn create_with_hooks(
    target: &StoreRef,
    name: &str,
    branch: &Option<String>,
    hooks: &Hooks,
) -> Result<Snapshot> {
    let branch_name = match branch {
        Some(b) => b.clone(),
        None => session::branch_at(target)?,
    };
    let env = HookEnv {
        store: &target.store,
        snapshot: name,
        branch: &branch_name,
    };
    hooks.around(&env, Output::Inherit, || {
        session::run(
            &target.store,
            &Request::SnapshotCreate {
                name: name.to_string(),
                branch: branch.clone(),
                via: target.via_string(),
            },
        )
    })
}

/// `snapshot wrap`: NAME-pre, the command, NAME-post (taken even if the command failed);
/// exits as the command did.
fn wrap(a: &WrapArgs) -> Result<ExitCode> {
    let (pre, post) = (format!("{}-pre", a.name), format!("{}-post", a.name));
    check_new_name("snapshot", &pre)?;
    check_new_name("snapshot", &post)?;
    let target = session::resolve_store(&a.store)?;
    let hooks = Hooks::chosen(None, None, &target.store);
    let before = create_with_hooks(&target, &pre, &a.branch, &hooks)?;
    print!("{}", output::snapshot_created(&before));
    let status = std::process::Command::new(&a.command[0])
        .args(&a.command[1..])
        .status()
        .with_context(|| format!("cannot run {}", a.command[0]));
    let after = create_with_hooks(&target, &post, &a.branch, &hooks)?;
    print!("{}", output::snapshot_created(&after));
    let status = status?;
    if !status.success() {
        eprintln!("strata: {} exited with {status}", a.command[0]);
    }
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
