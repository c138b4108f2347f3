//! Background maintenance of a mounted store: flattening deleted generations away (after
//! every snapshot or branch deletion, once at start to finish a pass an earlier run
//! left unfinished, and when the last open file of a deleted snapshot closes), then gc
//! when automatic pruning removed snapshots.
//!
//! One thread per daemon. It flattens in batches with a pause between them, so the mounts
//! keep serving, and stops between two batches as soon as the daemon is closing: an
//! unmount waits for at most one batch, and the pass resumes at the next mount (or with
//! `strata flatten`). Progress goes to the daemon log.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{error, info};

use super::mounts::Daemon;
use crate::ops::{flatten_batch, FLATTEN_PAUSE};

/// How often an idle thread looks whether the daemon is closing.
const IDLE_CHECK: Duration = Duration::from_secs(1);
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
        }
    }
}

impl Maintenance {
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
    loop {
        if daemon.is_closing() {
            return;
        }
        let asked = daemon.maintenance.next();
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
            match daemon.store.gc() {
                Ok(r) => info!(
                    "gc after pruning: {} bytes freed, {} packs rewritten, {} deleted, in {} ms",
                    r.freed_bytes, r.packs_rewritten, r.packs_deleted, r.took_ms
                ),
                Err(e) => error!("gc after pruning failed: {e}"),
            }
        }
    }
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
    let mut last = Instant::now();
    let result = daemon
        .store
        .flatten(flatten_batch(), FLATTEN_PAUSE, &mut |p| {
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
