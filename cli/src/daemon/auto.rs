//! Automatic snapshots of a mounted branch: `strata mount --snapshot-every 15m --keep
//! hourly=24,daily=7`, or `auto_snapshot_every` / `auto_snapshot_keep` in the store's
//! strata.toml.
//!
//! One thread per branch mount with a schedule. Snapshots are taken at multiples of the
//! interval since the epoch (every 15 min: at :00, :15, :30, :45 UTC), named
//! `auto-YYYYMMDDTHHMMSSZ` so they sort by time; after each, the keep rules (if any)
//! prune the automatic snapshots the same way `strata snapshot prune` does (held and
//! manual snapshots are never removed), and the maintenance thread flattens the pruned
//! generations and runs gc. The store's pre_snapshot/post_snapshot hooks run around each
//! (their output goes to the daemon log). The thread ends with the mount.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use strata_snapshot::VolumeKind;
use tracing::{error, info};

use super::mounts::Daemon;
use crate::control::proto::Schedule;
use crate::hooks::{HookEnv, Hooks, Output};
use crate::ops::Host;

pub use strata_cli::schedule::AutoSnapshots;

/// Seconds to wait from `now` (since the epoch) to the next multiple of `every`.
fn until_next(now: Duration, every: Duration) -> Duration {
    let e = every.as_secs().max(1);
    let next = (now.as_secs() / e + 1) * e;
    Duration::from_secs(next) - now
}

/// Starts the schedule for `branch`; it runs while the branch is mounted.
pub fn start(daemon: Arc<Daemon>, branch: String, auto: AutoSnapshots) -> Result<()> {
    info!(
        "automatic snapshots of branch {branch} every {}s{}",
        auto.every.as_secs(),
        auto.keep.map(|k| format!(", keep {k}")).unwrap_or_default()
    );
    std::thread::Builder::new()
        .name("auto-snapshot".into())
        .spawn(move || run(&daemon, &branch, &auto))?;
    Ok(())
}

fn run(daemon: &Daemon, branch: &str, auto: &AutoSnapshots) {
    let kind = VolumeKind::Branch(branch.to_string());
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut wait = until_next(now, auto.every);
        daemon
            .schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                branch.to_string(),
                Schedule {
                    branch: branch.to_string(),
                    every_secs: auto.every.as_secs(),
                    keep: auto.keep.as_ref().map(|k| k.to_string()),
                    next: (now + wait).as_secs() as i64,
                },
            );
        // Wake at least every second to notice the end of the mount.
        while !wait.is_zero() {
            if daemon.mounted_at(&kind).is_empty() {
                info!("branch {branch} is no longer mounted: automatic snapshots stop");
                daemon
                    .schedules
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(branch);
                return;
            }
            let step = wait.min(Duration::from_secs(1));
            std::thread::sleep(step);
            wait -= step;
        }
        let Some(_busy) = daemon.begin() else { return };
        // The store's pre_snapshot/post_snapshot hooks around it (module `hooks`).
        let name = daemon.store.auto_snapshot_name();
        let config = daemon.store.config();
        let hooks = Hooks {
            pre: config.pre_snapshot.clone(),
            post: config.post_snapshot.clone(),
        };
        let env = HookEnv {
            store: &daemon.store_path,
            snapshot: &name,
            branch,
        };
        let made = hooks.around(&env, Output::Log, || {
            let cut = daemon.write_back(branch);
            let made = daemon.store.snapshot_create(branch, &name);
            drop(cut);
            Ok(made?)
        });
        match made {
            Ok(info) => info!("automatic snapshot {} of branch {branch}", info.name),
            Err(e) => error!(
                "automatic snapshot of branch {branch} failed: {}",
                crate::error::message(&e)
            ),
        }
        if let Some(keep) = &auto.keep {
            match daemon.store.snapshot_prune(keep, false, false) {
                Ok(decisions) => {
                    for d in decisions.iter().filter(|d| !d.keep) {
                        info!("pruned automatic snapshot {} (keep {keep})", d.name);
                    }
                    if decisions.iter().any(|d| !d.keep) {
                        // Fold the pruned generations away, then give their space back.
                        daemon.maintenance.request(true);
                    }
                }
                Err(e) => error!("pruning automatic snapshots failed: {e}"),
            }
        }
        daemon.snapshots_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_align() {
        let e = Duration::from_secs(900);
        assert_eq!(
            until_next(Duration::from_secs(900 * 7 + 100), e).as_secs(),
            800
        );
        assert_eq!(until_next(Duration::from_secs(900 * 7), e).as_secs(), 900);
    }
}
