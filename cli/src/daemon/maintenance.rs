//! Background maintenance of a mounted store: flattening deleted generations away (after
//! every snapshot or branch deletion, once at start to finish a pass an earlier run
//! left unfinished, and when the last open file of a deleted snapshot closes), then gc
//! when automatic pruning removed snapshots; laying out again the blocks that reads of
//! live files found scattered (`Store::relocate_queued`, "defragmentation on read"), and
//! a gc once those copies left `RELOCATED_GC_BYTES` of old records behind.
//!
//! One thread per daemon. It flattens in batches with a pause between them, so the mounts
//! keep serving, and stops between two batches as soon as the daemon is closing: an
//! unmount waits for at most one batch, and the pass resumes at the next mount (or with
//! `strata flatten`). Progress goes to the daemon log.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{error, info, warn};

use super::mounts::Daemon;
use crate::control::proto::Job;
use crate::ops::{flatten_batch, FLATTEN_PAUSE};

/// How often an idle thread looks whether the daemon is closing, or reads queued blocks
/// to relocate.
const IDLE_CHECK: Duration = Duration::from_millis(200);
/// Bytes of blocks relocated after which a gc reclaims their old records (by default;
/// `STRATA_RELOCATED_GC_BYTES`).
const RELOCATED_GC_BYTES: u64 = 1 << 30;
/// Queued blocks are relocated once reads queued none, and no write came, for this long.
const RELOCATE_QUIET: Duration = Duration::from_millis(100);
/// How often a long flatten logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What the thread has been asked to do.
#[derive(Default)]
struct Wants {
    flatten: bool,
    gc: bool,
}

pub struct Maintenance {
    wants: Mutex<Wants>,
    wake: Condvar,
    /// What the thread is doing, for `strata status`.
    current: Mutex<Option<Job>>,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            // At start: finish whatever an earlier run left.
            wants: Mutex::new(Wants {
                flatten: true,
                gc: false,
            }),
            wake: Condvar::new(),
            current: Mutex::new(None),
        }
    }
}

/// Clears the job `Maintenance::doing` set when dropped.
struct Doing<'a>(&'a Maintenance);

impl Drop for Doing<'_> {
    fn drop(&mut self) {
        *self.0.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Maintenance {
    /// The background work under way (none, or the one job of the thread).
    pub fn jobs(&self) -> Vec<Job> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.iter().cloned().collect()
    }

    fn doing(&self, what: &str, why: &str) -> Doing<'_> {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Job {
            what: what.into(),
            why: why.into(),
            since: strata_snapshot::Timestamp::now().secs,
            done: None,
            total: None,
        });
        Doing(self)
    }

    fn progress(&self, done: u64, total: u64) {
        if let Some(job) = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            job.done = Some(done);
            job.total = Some(total);
        }
    }

    /// Asks for a flatten (and, if `gc`, a gc after it).
    pub fn request(&self, gc: bool) {
        let mut w = self.wants.lock().unwrap_or_else(|p| p.into_inner());
        w.flatten = true;
        w.gc |= gc;
        self.wake.notify_all();
    }

    /// Waits for a request (or `IDLE_CHECK`); takes it.
    fn next(&self) -> Option<Wants> {
        let w = self.wants.lock().unwrap_or_else(|p| p.into_inner());
        let (mut w, _) = self
            .wake
            .wait_timeout_while(w, IDLE_CHECK, |w| !w.flatten && !w.gc)
            .unwrap_or_else(|p| p.into_inner());
        (w.flatten || w.gc).then(|| std::mem::take(&mut *w))
    }
}

/// Starts the maintenance thread of `daemon`.
pub fn start(daemon: Arc<Daemon>) -> Result<()> {
    std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || run(&daemon))?;
    Ok(())
}

fn run(daemon: &Daemon) {
    let gc_after = crate::ops::relocated_gc_bytes(RELOCATED_GC_BYTES);
    let mut relocated = 0u64;
    loop {
        if daemon.is_closing() {
            return; // what reads queued for relocation is laid out by `wait_idle`
        }
        let asked = daemon.maintenance.next();
        if let Some(_busy) = daemon.begin() {
            queue_rewritten(daemon, false);
        }
        if daemon.store.relocation_ready(RELOCATE_QUIET) {
            let Some(_busy) = daemon.begin() else {
                continue;
            };
            relocated += relocate(daemon, RELOCATE_QUIET);
            if relocated >= gc_after && !daemon.is_closing() {
                relocated = 0;
                gc(daemon, "after relocating blocks found scattered");
            }
        }
        // The last open file of a deleted snapshot closed: its generation can go now.
        let freed = daemon.store.take_flatten_wanted();
        let Some(wants) = asked.or_else(|| {
            freed.then_some(Wants {
                flatten: true,
                gc: false,
            })
        }) else {
            continue;
        };
        let Some(_busy) = daemon.begin() else { return };
        if wants.flatten {
            flatten(daemon, !wants.gc);
        }
        if wants.gc && !daemon.is_closing() {
            gc(daemon, "after pruning");
        }
    }
}

fn gc(daemon: &Daemon, why: &str) {
    let _doing = daemon.maintenance.doing("gc", why);
    match daemon.store.gc() {
        Ok(r) => info!(
            "gc {why}: {} bytes freed, {} packs rewritten, {} deleted, in {} ms",
            r.freed_bytes, r.packs_rewritten, r.packs_deleted, r.took_ms
        ),
        Err(e) => error!("gc {why} failed: {e}"),
    }
}

/// Queues the ranges of rewritten files found scattered: of the files that cooled, or
/// with `all` of every file (`Store::queue_rewritten`).
pub(super) fn queue_rewritten(daemon: &Daemon, all: bool) {
    match daemon.store.queue_rewritten(all) {
        Ok(0) => {}
        Ok(n) => info!("queued {n} blocks of rewritten files found scattered"),
        Err(e) => error!("cannot look at the layout of rewritten files: {e}"),
    }
}

/// Relocates what reads queued, step by step until the queue is empty or reads queued
/// more within `quiet` (they go first: the thread comes back once they pause); the
/// bytes moved.
pub(super) fn relocate(daemon: &Daemon, quiet: Duration) -> u64 {
    let _doing = daemon
        .maintenance
        .doing("relocate", "laying out blocks found scattered");
    let (mut blocks, mut bytes, started) = (0, 0, Instant::now());
    while daemon.store.relocation_ready(quiet) {
        match daemon.store.relocate_queued() {
            Ok((r, more)) => {
                blocks += r.blocks_moved;
                bytes += r.bytes_moved;
                for p in &r.problems {
                    warn!("laying out blocks found scattered: {p}");
                }
                if !more {
                    break;
                }
            }
            Err(e) => {
                error!("laying out blocks found scattered failed: {e}");
                break;
            }
        }
    }
    if blocks > 0 {
        info!(
            "laid out again: {blocks} blocks found scattered ({bytes} bytes) in {} ms",
            started.elapsed().as_millis()
        );
    }
    bytes
}

/// Flattens what is pending; with `measure`, then checks whether `meta/` wants a
/// compaction (a gc that follows does that check itself).
fn flatten(daemon: &Daemon, measure: bool) {
    match daemon.store.flatten_pending() {
        Ok(false) => return,
        Ok(true) => {}
        Err(e) => {
            error!("cannot look for generations to flatten: {e}");
            return;
        }
    }
    let _doing = daemon
        .maintenance
        .doing("flatten", "folding deleted generations away");
    let mut last = Instant::now();
    let result = daemon
        .store
        .flatten(flatten_batch(), FLATTEN_PAUSE, &mut |p| {
            daemon.maintenance.progress(p.done, p.total);
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                info!(
                    "flattening {} deleted generations: {}/{} inode record groups",
                    p.generations, p.done, p.total
                );
            }
            !daemon.is_closing()
        });
    if measure && result.as_ref().is_ok_and(|r| r.generations_removed > 0) {
        // What the removed generations held is gone from sled's trees, not its file.
        if let Err(e) = daemon.store.check_meta_size() {
            error!("cannot measure meta/: {e}");
        }
    }
    match result {
        Ok(r) if r.batches > 0 => info!(
            "flattened: {} deleted generations removed, {} records folded, {} dropped, {} batches (longest {} ms), {} ms",
            r.generations_removed, r.records_folded, r.records_dropped, r.batches, r.max_batch_ms, r.took_ms
        ),
        Ok(_) => {}
        Err(e) => error!("flattening failed: {e}"),
    }
}
