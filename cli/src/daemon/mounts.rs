//! The daemon's state: the open store and the table of its mounts.
//!
//! One daemon owns a store and serves every mount of it: the main line, branches
//! (read-write) and snapshots (read-only), each at its own mount point. For each mount
//! the table keeps what it serves and the handles to unmount it and to invalidate its
//! kernel caches; a thread per mount waits for it to end (`Mounted::wait`, which commits)
//! and then removes it from the table.
//!
//! The daemon ends when its last mount has ended and no control request is running:
//! `wait_idle` then marks it closing (requests arriving later are answered `closing`, so
//! the client waits for the store's lock and does the work itself), and the caller closes
//! the store. Mounts are added under the table lock, so a mount request either lands
//! before the daemon decides to close or is refused as closing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};
use strata_fs::{Invalidator, MountOptions, Unmounter};

use strata_snapshot::{Store, VolumeKind, MAIN_BRANCH};
use tracing::{error, info, warn};

use crate::commands::umount;
use crate::control::proto::{MountInfo, Schedule, Status};
use crate::ops::Host;
use crate::{mountinfo, paths};

/// What a mount request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountTarget {
    /// A branch to mount read-write (`main` if neither is given).
    pub branch: Option<String>,
    /// A snapshot to mount read-only.
    pub snapshot: Option<String>,
    /// Automatic snapshots of the branch while it is mounted (else the store config's).
    pub auto: Option<super::auto::AutoSnapshots>,
}

impl MountTarget {
    /// `branch main` / `snapshot nightly`, for messages.
    pub fn describe(&self) -> String {
        match (&self.snapshot, &self.branch) {
            (Some(s), _) => format!("snapshot {s}"),
            (None, Some(b)) => format!("branch {b}"),
            (None, None) => format!("branch {MAIN_BRANCH}"),
        }
    }
}

/// One mount in the table.
struct Slot {
    kind: VolumeKind,
    unmounter: Unmounter,
    invalidator: Invalidator,
}

#[derive(Default)]
struct Table {
    /// Canonical mount point → mount.
    mounts: BTreeMap<String, Slot>,
    /// Control requests being carried out.
    busy: usize,
    /// Set once the last mount ended and nothing was busy: no new work is accepted.
    closing: bool,
    /// Mounts that ended with an error (their final commit failed).
    errors: Vec<String>,
}

pub struct Daemon {
    pub store: Arc<Store>,
    pub store_path: PathBuf,
    threads: usize,
    table: Mutex<Table>,
    changed: Condvar,
    pub maintenance: super::maintenance::Maintenance,
    /// When the daemon started (seconds since the epoch).
    since: i64,
    /// Automatic snapshot schedules by branch (`daemon::auto` keeps them current).
    pub schedules: Mutex<BTreeMap<String, Schedule>>,
}

/// A control request in progress; keeps the daemon from closing until dropped.
pub struct Busy<'a> {
    daemon: &'a Daemon,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut table = self.daemon.lock();
        table.busy -= 1;
        self.daemon.changed.notify_all();
    }
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))
}

impl Daemon {
    pub fn new(store: Arc<Store>, store_path: PathBuf, threads: usize) -> Arc<Daemon> {
        Arc::new(Daemon {
            store,
            store_path,
            threads,
            table: Mutex::new(Table::default()),
            changed: Condvar::new(),
            maintenance: Default::default(),
            since: strata_snapshot::Timestamp::now().secs,
            schedules: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a control request; `None` once the daemon is closing.
    pub fn begin(&self) -> Option<Busy<'_>> {
        let mut table = self.lock();
        if table.closing {
            return None;
        }
        table.busy += 1;
        Some(Busy { daemon: self })
    }

    /// Whether the daemon stops: its last mount ended (background work gives way).
    pub fn is_closing(&self) -> bool {
        let table = self.lock();
        table.closing || table.mounts.is_empty()
    }

    /// The volume a mount target names.
    fn resolve(&self, target: &MountTarget) -> Result<VolumeKind> {
        match (&target.snapshot, &target.branch) {
            (Some(_), Some(_)) => bail!("--branch and --snapshot cannot be used together"),
            (Some(name), None) => Ok(VolumeKind::Snapshot(
                self.store
                    .snapshot_gen(name)
                    .map_err(|e| anyhow!("cannot mount snapshot {name}: {e}"))?,
            )),
            (None, branch) => {
                let branch = branch.clone().unwrap_or_else(|| MAIN_BRANCH.into());
                if !self.store.branches().iter().any(|b| b.name == branch) {
                    bail!(
                        "cannot mount branch {branch}: no branch named {branch:?} in {} \
                         (make one with `strata clone STORE SNAPSHOT {branch}`)",
                        self.store_path.display()
                    );
                }
                Ok(VolumeKind::Branch(branch))
            }
        }
    }

    /// Mounts `target` at `mount_point` and starts the thread that waits for its end.
    pub fn mount(
        self: &Arc<Self>,
        mount_point: &Path,
        target: &MountTarget,
        threads: Option<usize>,
    ) -> Result<MountInfo> {
        let kind = self.resolve(target)?;
        let mut table = self.lock();
        if table.closing {
            bail!("the strata daemon is releasing the store; retry the mount");
        }
        let mounts = mountinfo::read().context("cannot read /proc/self/mountinfo")?;
        let mount_point = paths::check_mount_point(mount_point, &self.store_path, &mounts)?;
        let key = path_str(&mount_point)?;
        if let VolumeKind::Branch(branch) = &kind {
            if let Some((at, _)) = table.mounts.iter().find(|(_, s)| s.kind == kind) {
                bail!(
                    "branch {branch} of {} is already mounted at {at}; a branch is mounted \
                     once (mount a snapshot of it, or a clone, elsewhere)",
                    self.store_path.display()
                );
            }
        }
        let volume = self.store.volume(kind.clone()).map_err(|e| anyhow!(e))?;
        let options = MountOptions {
            threads: threads.unwrap_or(self.threads).max(1),
            fsname: self.store_path.display().to_string(),
            writeback_cache: self.store.config().writeback_cache,
            ..MountOptions::default()
        };
        let mounted = strata_fs::mount(volume, &mount_point, &options).with_context(|| {
            format!(
                "cannot mount {} ({}) at {}",
                self.store_path.display(),
                target.describe(),
                mount_point.display()
            )
        })?;
        table.mounts.insert(
            key.clone(),
            Slot {
                kind: kind.clone(),
                unmounter: mounted.unmounter(),
                invalidator: mounted.invalidator(),
            },
        );
        drop(table);
        info!(
            "mounted {} ({}) at {key}",
            self.store_path.display(),
            target.describe()
        );
        if let VolumeKind::Branch(branch) = &kind {
            let auto = match &target.auto {
                Some(a) => Some(a.clone()),
                None => {
                    let cfg = self.store.config();
                    super::auto::AutoSnapshots::parse(
                        cfg.auto_snapshot_every.as_deref(),
                        cfg.auto_snapshot_keep.as_deref(),
                    )
                    .with_context(|| {
                        format!(
                            "auto_snapshot_* in {}/strata.toml",
                            self.store_path.display()
                        )
                    })?
                }
            };
            if let Some(auto) = auto {
                super::auto::start(Arc::clone(self), branch.clone(), auto)?;
            }
        }
        let daemon = Arc::clone(self);
        let waiter_key = key.clone();
        let spawned = std::thread::Builder::new()
            .name("mount-wait".into())
            .spawn(move || {
                let result = mounted.wait();
                let mut table = daemon.lock();
                table.mounts.remove(&waiter_key);
                match result {
                    Ok(()) => info!("{waiter_key} unmounted and committed"),
                    Err(err) => {
                        error!("the mount at {waiter_key} ended with an error: {err}");
                        table.errors.push(format!(
                            "the mount at {waiter_key} ended with an error: {err}"
                        ));
                    }
                }
                daemon.changed.notify_all();
            });
        if let Err(err) = spawned {
            // Without its waiter the mount would never leave the table: take it down.
            error!("cannot start the thread of the mount at {key}: {err}");
            let slot = self.lock().mounts.remove(&key);
            if let Some(slot) = slot {
                let _ = slot.unmounter.unmount();
            }
            bail!("cannot start the thread of the mount at {key}: {err}");
        }
        Ok(self.mount_info(&key, &kind, 0))
    }

    fn mount_info(&self, mount_point: &str, kind: &VolumeKind, open_files: u64) -> MountInfo {
        match kind {
            VolumeKind::Branch(b) => MountInfo {
                mount_point: mount_point.to_string(),
                branch: Some(b.clone()),
                snapshot: None,
                read_only: false,
                open_files,
            },
            VolumeKind::Snapshot(g) => MountInfo {
                mount_point: mount_point.to_string(),
                branch: None,
                snapshot: Some(
                    self.store
                        .snapshots()
                        .into_iter()
                        .find(|s| s.generation == g.0)
                        .map(|s| s.name)
                        .unwrap_or_else(|| format!("(generation {})", g.0)),
                ),
                read_only: true,
                open_files,
            },
        }
    }

    /// The daemon's pid, store and mounts.
    pub fn status(&self) -> Status {
        let (mounts, mount_errors): (Vec<(String, VolumeKind, Invalidator)>, Vec<String>) = {
            let table = self.lock();
            let mounts = table
                .mounts
                .iter()
                .map(|(mp, slot)| (mp.clone(), slot.kind.clone(), slot.invalidator.clone()))
                .collect();
            (mounts, table.errors.clone())
        };
        let activity = self.store.activity();
        Status {
            pid: std::process::id(),
            store: self.store_path.display().to_string(),
            mounts: mounts
                .iter()
                .map(|(mp, kind, inv)| self.mount_info(mp, kind, inv.open_files()))
                .collect(),
            refusing_writes: self.store.refusing_writes(),
            since: self.since,
            dirty_bytes: activity.dirty_bytes,
            last_commit: activity.last_commit,
            background: self.maintenance.jobs(),
            relocation_queued_bytes: activity.relocation_queued_bytes,
            block_cache: activity.block_cache.into(),
            schedules: self
                .schedules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect(),
            mount_errors,
        }
    }

    /// Blocks until no mount is left and no request is running, queues the ranges of
    /// rewritten files found scattered and lays out what is queued for relocation (at
    /// most `strata_snapshot` `QUEUE_BYTES`: the last unmount waits for it), then marks
    /// the daemon closing. Returns the errors mounts ended with.
    pub fn wait_idle(&self) -> Vec<String> {
        let mut looked = false;
        loop {
            let mut table = self.lock();
            while !(table.mounts.is_empty() && table.busy == 0) {
                table = self.changed.wait(table).unwrap_or_else(|p| p.into_inner());
            }
            if looked && !self.store.relocation_ready(std::time::Duration::ZERO) {
                table.closing = true;
                return std::mem::take(&mut table.errors);
            }
            // Busy meanwhile: a mount that comes now is served, and waited for again.
            table.busy += 1;
            let _busy = Busy { daemon: self };
            drop(table);
            if looked {
                super::maintenance::relocate(self, std::time::Duration::ZERO);
            } else {
                // No write follows: the ranges rewritten files left scattered are queued
                // now, hot or not (once; what the queue cannot take is forgotten).
                super::maintenance::queue_rewritten(self, true);
                looked = true;
            }
        }
    }

    /// Unmounts everything (on SIGINT/SIGTERM); `lazy` detaches busy mounts.
    pub fn unmount_all(&self, lazy: bool) {
        let slots: Vec<(String, Unmounter)> = self
            .lock()
            .mounts
            .iter()
            .map(|(mp, slot)| (mp.clone(), slot.unmounter.clone()))
            .collect();
        for (mp, unmounter) in slots {
            if lazy {
                info!("detaching {mp} lazily");
                if let Err(err) = umount::detach(Path::new(&mp), true) {
                    error!("cannot detach {mp}: {err}");
                }
            } else {
                info!("unmounting {mp}");
                if let Err(err) = unmounter.unmount() {
                    warn!("cannot unmount {mp}: {err}; send the signal again to detach it lazily");
                }
            }
        }
    }

    fn invalidators<F>(&self, select: F) -> Vec<(String, Invalidator)>
    where
        F: Fn(&VolumeKind) -> bool,
    {
        self.lock()
            .mounts
            .iter()
            .filter(|(_, slot)| select(&slot.kind))
            .map(|(mp, slot)| (mp.clone(), slot.invalidator.clone()))
            .collect()
    }
}

impl Host for Daemon {
    fn serves_mounts(&self) -> bool {
        true
    }

    fn mount_kind(&self, mount_point: &str) -> Option<VolumeKind> {
        self.lock()
            .mounts
            .get(mount_point)
            .map(|slot| slot.kind.clone())
    }

    fn mounted_at(&self, kind: &VolumeKind) -> Vec<String> {
        self.lock()
            .mounts
            .iter()
            .filter(|(_, slot)| slot.kind == *kind)
            .map(|(mp, _)| mp.clone())
            .collect()
    }

    fn snapshots_changed(&self) {
        for (mp, invalidator) in self.invalidators(|k| matches!(k, VolumeKind::Branch(_))) {
            tracing::debug!("refreshing .snapshots of {mp}");
            invalidator.invalidate_snapshots();
        }
    }

    fn generations_deleted(&self) {
        self.maintenance.request(false);
    }

    fn write_back(&self, branch: &str) -> Vec<strata_fs::WriteBack> {
        self.invalidators(|k| matches!(k, VolumeKind::Branch(b) if b.as_str() == branch))
            .into_iter()
            .map(|(mp, invalidator)| {
                let wb = invalidator.write_back();
                tracing::debug!("wrote back {} open files of {mp}", wb.files());
                wb
            })
            .collect()
    }

    fn branch_replaced(&self, branch: &str) -> Vec<String> {
        let targets =
            self.invalidators(|k| matches!(k, VolumeKind::Branch(b) if b.as_str() == branch));
        for (mp, invalidator) in &targets {
            info!("branch {branch} was rolled back: invalidating the kernel caches of {mp}");
            invalidator.invalidate_all();
        }
        targets.into_iter().map(|(mp, _)| mp).collect()
    }
}
