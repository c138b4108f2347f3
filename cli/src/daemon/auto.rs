//! Automatic snapshots of a mounted branch: `strata mount --snapshot-every 15m --keep
//! hourly=24,daily=7`, or `auto_snapshot_every` / `auto_snapshot_keep` in the store's
//! strata.toml.
//!
//! One thread per branch mount with a schedule. Snapshots are taken at multiples of the
//! interval since the epoch (every 15 min: at :00, :15, :30, :45 UTC), named
//! `auto-YYYYMMDDTHHMMSSZ` so they sort by time; after each, the keep rules (if any)
//! prune the automatic snapshots the same way `strata snapshot prune` does (held and
//! manual snapshots are never removed), and the maintenance thread flattens the pruned
//! generations and runs gc. The thread ends with the mount.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use strata_snapshot::{KeepPolicy, VolumeKind};
use tracing::{error, info};

use super::mounts::Daemon;
use crate::ops::Host;

/// A schedule of automatic snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoSnapshots {
    pub every: Duration,
    pub keep: Option<KeepPolicy>,
}

/// Parses `30s`, `15m`, `1h`, `1d` (a number and a unit).
pub fn parse_interval(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = match num.parse() {
        Ok(n) if n > 0 => n,
        _ => bail!("invalid interval {text:?}: expected a number and a unit, e.g. 15m"),
    };
    let secs = match unit {
        "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("invalid interval {text:?}: the unit must be s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

impl AutoSnapshots {
    /// From the command line or the store's config (`None`: no automatic snapshots).
    pub fn parse(every: Option<&str>, keep: Option<&str>) -> Result<Option<AutoSnapshots>> {
        let Some(every) = every else {
            if keep.is_some() {
                bail!("--keep needs --snapshot-every (it prunes automatic snapshots)");
            }
            return Ok(None);
        };
        let keep = match keep {
            Some(k) => Some(KeepPolicy::parse(k).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        };
        Ok(Some(AutoSnapshots {
            every: parse_interval(every)?,
            keep,
        }))
    }
}

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
        // Wake at least every second to notice the end of the mount.
        while !wait.is_zero() {
            if daemon.mounted_at(&kind).is_empty() {
                info!("branch {branch} is no longer mounted: automatic snapshots stop");
                return;
            }
            let step = wait.min(Duration::from_secs(1));
            std::thread::sleep(step);
            wait -= step;
        }
        let Some(_busy) = daemon.begin() else { return };
        match daemon.store.snapshot_auto(branch) {
            Ok(info) => info!("automatic snapshot {} of branch {branch}", info.name),
            Err(e) => error!("automatic snapshot of branch {branch} failed: {e}"),
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
    fn intervals_parse_and_align() {
        assert_eq!(parse_interval("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_interval("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_interval("30s").unwrap(), Duration::from_secs(30));
        for bad in ["", "15", "m", "0m", "3w", "-1h"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        let e = Duration::from_secs(900);
        assert_eq!(
            until_next(Duration::from_secs(900 * 7 + 100), e).as_secs(),
            800
        );
        assert_eq!(until_next(Duration::from_secs(900 * 7), e).as_secs(), 900);
        assert!(AutoSnapshots::parse(None, Some("daily=7")).is_err());
        assert_eq!(AutoSnapshots::parse(None, None).unwrap(), None);
        let a = AutoSnapshots::parse(Some("1h"), Some("hourly=24"))
            .unwrap()
            .unwrap();
        assert_eq!(a.keep.unwrap().hourly, 24);
    }
}
