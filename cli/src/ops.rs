//! The snapshot commands as operations on an open store: `execute` carries out one
//! control request and returns its result as JSON. The daemon runs it for requests that
//! arrive on the control socket; a command run while no daemon holds the store opens the
//! store and runs the very same function, so results (and errors) are the same either way.
//!
//! What depends on mounts goes through `Host`: which branch a mount point serves (the
//! default branch of a command that named the store by a mount point), refusing to delete
//! what is mounted, and invalidating kernel caches after a change. A store opened by a
//! command has no mounts (`NoMounts`).

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use strata_snapshot::{Store, VolumeKind, MAIN_BRANCH};

use crate::control::proto::{
    Branch, BranchDeleted, Change, Deleted, Diff, Held, History, Pruned, Renamed, Request,
    RolledBack, Snapshot, Version,
};

/// Pause between flatten batches beside mounts, so their file operations get the store.
pub const FLATTEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// The pause between flatten batches: only beside mounts.
fn flatten_pause(host: &dyn Host) -> std::time::Duration {
    if host.serves_mounts() {
        FLATTEN_PAUSE
    } else {
        std::time::Duration::ZERO
    }
}

/// Record versions per flatten batch: `STRATA_FLATTEN_BATCH` if set (tests use small
/// batches to interrupt a pass), else the model's default.
pub fn flatten_batch() -> usize {
    std::env::var("STRATA_FLATTEN_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(strata_snapshot::DEFAULT_BATCH_RECORDS)
}

/// Seconds after its last change before a read may have a file laid out again
/// (defragmentation on read): `STRATA_DEFRAG_HOT_SECS` if set (tests use 0), else the
/// model's default.
pub fn defrag_hot_secs() -> i64 {
    std::env::var("STRATA_DEFRAG_HOT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 0)
        .unwrap_or(strata_snapshot::DEFRAG_HOT_SECS)
}

/// Bytes of blocks the daemon lays out again before it runs a gc to free their old
/// copies: `STRATA_RELOCATED_GC_BYTES` if set (tests use a few MiB), else `default`.
pub fn relocated_gc_bytes(default: u64) -> u64 {
    std::env::var("STRATA_RELOCATED_GC_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Bytes of copies a defrag makes durable at a time: `STRATA_DEFRAG_GROUP` if set (tests
/// use small groups to interrupt a run between commits), else the model's default.
pub fn defrag_group() -> u64 {
    std::env::var("STRATA_DEFRAG_GROUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(strata_snapshot::DEFRAG_GROUP_BYTES)
}

/// What the process running an operation knows about the store's mounts.
pub trait Host {
    /// What the mount at `mount_point` serves, if it is one of this process's mounts.
    fn mount_kind(&self, mount_point: &str) -> Option<VolumeKind>;
    /// The mount points serving `kind`.
    fn mounted_at(&self, kind: &VolumeKind) -> Vec<String>;
    /// Snapshots were created, deleted or renamed: refresh every `.snapshots/` view.
    fn snapshots_changed(&self);
    /// `branch` now shows another tree: drop every cached page, entry and attribute of
    /// its mounts. Returns those mount points.
    fn branch_replaced(&self, branch: &str) -> Vec<String>;
    /// `branch` is about to be frozen: bring the pages its mounts' kernel caches hold
    /// dirty into the store, and hold back writes to its open files until the returned
    /// guards are dropped (strata_fs::WriteBack).
    fn write_back(&self, _branch: &str) -> Vec<strata_fs::WriteBack> {
        Vec::new()
    }
    /// Snapshots or branches were deleted: their generations are ready to be flattened
    /// (the daemon does it in the background; a command leaves it to `strata flatten`).
    fn generations_deleted(&self);
    /// Whether file operations of mounts run beside the request: long work is then paced
    /// (flatten pauses between batches, a scrub reads at most `MOUNTED_SCRUB_RATE_MIB`
    /// unless asked otherwise).
    fn serves_mounts(&self) -> bool {
        false
    }
}

/// The scrub rate beside mounts when the request names none, in MiB/s of packs.
pub const MOUNTED_SCRUB_RATE_MIB: u64 = 100;

/// The host of a command that opened the store itself: nothing is mounted.
pub struct NoMounts;

impl Host for NoMounts {
    fn mount_kind(&self, _: &str) -> Option<VolumeKind> {
        None
    }
    fn mounted_at(&self, _: &VolumeKind) -> Vec<String> {
        Vec::new()
    }
    fn snapshots_changed(&self) {}
    fn branch_replaced(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn generations_deleted(&self) {}
}

/// The branch a request acts on: the one named, else the one mounted at the mount point
/// the store was named by, else `main`.
fn branch_of(host: &dyn Host, branch: &Option<String>, via: &Option<String>) -> String {
    if let Some(branch) = branch {
        return branch.clone();
    }
    match via.as_deref().and_then(|mp| host.mount_kind(mp)) {
        Some(VolumeKind::Branch(b)) => b,
        _ => MAIN_BRANCH.to_string(),
    }
}

fn model(err: strata_snapshot::Error) -> anyhow::Error {
    anyhow!(err)
}

/// `the mount at /a` / `mounted at /a and /b`, for refusals.
fn mounted_message(what: &str, mount_points: &[String]) -> String {
    let first = &mount_points[0];
    format!(
        "{what} is mounted at {}; unmount it first (`strata umount {first}`)",
        mount_points.join(" and ")
    )
}

/// Carries out `request` on `store`; the result is the JSON form of the op's result type
/// in `control::proto`. `progress` hears (done, total) how far a verify (pack bytes), a
/// flatten (record versions) or a defrag (bytes of files) has got.
pub fn execute(
    store: &Arc<Store>,
    host: &dyn Host,
    request: &Request,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<serde_json::Value> {
    let value = match request {
        Request::Ping | Request::Mount { .. } => {
            bail!("`{}` is answered by the daemon only", request.op())
        }
        Request::SnapshotCreate { name, branch, via } => {
            let branch = branch_of(host, branch, via);
            let started = std::time::Instant::now();
            let cut = host.write_back(&branch);
            let info = store.snapshot_create(&branch, name).map_err(model)?;
            drop(cut);
            let took_us = started.elapsed().as_micros() as u64;
            host.snapshots_changed();
            serde_json::to_value(Snapshot {
                took_us: Some(took_us),
                ..Snapshot::from_info(info, None)
            })?
        }
        Request::SnapshotList => {
            let rows: Vec<Snapshot> = store
                .snapshot_usage()
                .map_err(model)?
                .into_iter()
                .map(|(info, usage)| Snapshot::from_info(info, Some(usage)))
                .collect();
            serde_json::to_value(rows)?
        }
        Request::SnapshotDelete { name, dry_run } => {
            let gen = store.snapshot_gen(name).map_err(model)?;
            let mounted = host.mounted_at(&VolumeKind::Snapshot(gen));
            if !mounted.is_empty() && !dry_run {
                bail!(mounted_message(&format!("snapshot {name}"), &mounted));
            }
            let bytes = store.snapshot_delete(name, *dry_run).map_err(model)?;
            let open_files = store.open_file_count(gen);
            if !dry_run {
                host.snapshots_changed();
                host.generations_deleted();
            }
            serde_json::to_value(Deleted {
                name: name.clone(),
                dry_run: *dry_run,
                bytes,
                open_files,
            })?
        }
        Request::SnapshotRename { old, new } => {
            store.snapshot_rename(old, new).map_err(model)?;
            host.snapshots_changed();
            serde_json::to_value(Renamed {
                old: old.clone(),
                new: new.clone(),
            })?
        }
        Request::Stats => serde_json::to_value(store.stats().map_err(model)?)?,
        Request::Verify { rate_mib, .. } => {
            let started = std::time::Instant::now();
            let mib = match rate_mib {
                Some(0) => None,
                Some(r) => Some(*r),
                None => host.serves_mounts().then_some(MOUNTED_SCRUB_RATE_MIB),
            };
            let rate = mib.map(|r| r as f64 * 1048576.0);
            let report = store
                .verify(&mut |done, total| {
                    progress(done, total);
                    // Throttle: stay at or below `rate` bytes of packs per second.
                    if let Some(rate) = rate {
                        let due = std::time::Duration::from_secs_f64(done as f64 / rate);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                })
                .map_err(model)?;
            crate::last_verify::record(store.path(), &report);
            serde_json::to_value(report)?
        }
        Request::Gc => serde_json::to_value(store.gc().map_err(model)?)?,
        Request::Flatten { .. } => serde_json::to_value(
            store
                .flatten(flatten_batch(), flatten_pause(host), &mut |p| {
                    progress(p.done, p.total);
                    true
                })
                .map_err(model)?,
        )?,
        Request::Defrag { .. } => {
            serde_json::to_value(store.defrag(defrag_group(), progress).map_err(model)?)?
        }
        Request::SnapshotHold { name, hold } => {
            store.snapshot_hold(name, *hold).map_err(model)?;
            serde_json::to_value(Held {
                name: name.clone(),
                held: *hold,
            })?
        }
        Request::SnapshotPrune { keep, all, dry_run } => {
            let policy = strata_snapshot::KeepPolicy::parse(keep).map_err(model)?;
            let decisions = store
                .snapshot_prune(&policy, *all, *dry_run)
                .map_err(model)?;
            if !dry_run && decisions.iter().any(|d| !d.keep) {
                host.snapshots_changed();
                host.generations_deleted();
            }
            serde_json::to_value(Pruned {
                keep: policy.to_string(),
                dry_run: *dry_run,
                decisions,
            })?
        }
        Request::Rollback {
            name,
            force,
            branch,
            via,
        } => {
            let branch = branch_of(host, branch, via);
            // The current state is kept as a snapshot: with every write that returned.
            let cut = host.write_back(&branch);
            let info = store.rollback(&branch, name, *force).map_err(model)?;
            // Pages dirtied after the cut belong to the replaced tree: dropping the
            // caches writes them back, to the cut, which discards them.
            let invalidated = host.branch_replaced(&branch);
            cut.into_iter()
                .for_each(strata_fs::WriteBack::tree_replaced);
            host.snapshots_changed();
            serde_json::to_value(RolledBack {
                branch,
                snapshot: name.clone(),
                saved_as: info.saved_as,
                open_files: info.open_files,
                invalidated,
            })?
        }
        Request::Clone { snapshot, branch } => {
            let info = store.clone_branch(snapshot, branch).map_err(model)?;
            serde_json::to_value(Branch::from(info))?
        }
        Request::BranchList => {
            let rows: Vec<Branch> = store.branches().into_iter().map(Branch::from).collect();
            serde_json::to_value(rows)?
        }
        Request::BranchDelete { branch } => {
            if branch != MAIN_BRANCH {
                let mounted = host.mounted_at(&VolumeKind::Branch(branch.clone()));
                if !mounted.is_empty() {
                    bail!(mounted_message(&format!("branch {branch}"), &mounted));
                }
            }
            store.branch_delete(branch).map_err(model)?;
            host.generations_deleted();
            serde_json::to_value(BranchDeleted {
                branch: branch.clone(),
            })?
        }
        Request::Diff { a, b, branch, via } => {
            let from = VolumeKind::Snapshot(store.snapshot_gen(a).map_err(model)?);
            let (to, to_label) = match b {
                Some(b) => (
                    VolumeKind::Snapshot(store.snapshot_gen(b).map_err(model)?),
                    b.clone(),
                ),
                None => {
                    let branch = branch_of(host, branch, via);
                    let label = format!("{branch} (live)");
                    (VolumeKind::Branch(branch), label)
                }
            };
            let changes: Vec<Change> = store
                .diff(&from, &to)
                .map_err(model)?
                .into_iter()
                .map(Change::from)
                .collect();
            serde_json::to_value(Diff {
                from: a.clone(),
                to: to_label,
                changes,
            })?
        }
        Request::History { mount_point, path } => {
            let branch = match host.mount_kind(mount_point) {
                Some(VolumeKind::Branch(b)) => b,
                Some(VolumeKind::Snapshot(_)) => bail!(
                    "{mount_point} is a read-only snapshot mount; history follows a branch: \
                     give a path in a branch's mount"
                ),
                None => bail!(
                    "{mount_point} is not a mount of {} served by a running strata daemon",
                    store.path().display()
                ),
            };
            let versions: Vec<Version> = store
                .history(&branch, path)
                .map_err(model)?
                .into_iter()
                .map(Version::from)
                .collect();
            serde_json::to_value(History {
                branch,
                path: path.clone(),
                versions,
            })?
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneMount;
    impl Host for OneMount {
        fn mount_kind(&self, mp: &str) -> Option<VolumeKind> {
            (mp == "/mnt/b").then(|| VolumeKind::Branch("b".into()))
        }
        fn mounted_at(&self, _: &VolumeKind) -> Vec<String> {
            vec!["/mnt/b".into()]
        }
        fn snapshots_changed(&self) {}
        fn branch_replaced(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
        fn generations_deleted(&self) {}
    }

    #[test]
    fn branch_defaults() {
        assert_eq!(branch_of(&NoMounts, &None, &None), "main");
        assert_eq!(branch_of(&NoMounts, &None, &Some("/mnt/b".into())), "main");
        assert_eq!(branch_of(&OneMount, &None, &Some("/mnt/b".into())), "b");
        assert_eq!(
            branch_of(&OneMount, &Some("c".into()), &Some("/mnt/b".into())),
            "c"
        );
    }

    #[test]
    fn refusals_name_the_mount_point() {
        let m = mounted_message("branch b", &["/mnt/b".into()]);
        assert_eq!(
            m,
            "branch b is mounted at /mnt/b; unmount it first (`strata umount /mnt/b`)"
        );
    }
}
