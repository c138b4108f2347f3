//! Schedules of automatic snapshots as the user writes them: `--snapshot-every 15m --keep
//! hourly=24,daily=7` on `strata mount` (or in a `mount` request), `auto_snapshot_every`
//! and `auto_snapshot_keep` in strata.toml. Pure parsing; `daemon::auto` runs them.

use std::time::Duration;

use anyhow::{bail, Result};
use strata_snapshot::KeepPolicy;

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
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("invalid interval {text:?}: the unit must be s, m, h or d"),
    };
    match n.checked_mul(unit_secs) {
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => bail!(
            "invalid interval {text:?}: longer than {} seconds",
            u64::MAX
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_schedules_parse() {
        assert_eq!(parse_interval("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_interval("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_interval("30s").unwrap(), Duration::from_secs(30));
        for bad in ["", "15", "m", "0m", "3w", "-1h"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert!(AutoSnapshots::parse(None, Some("daily=7")).is_err());
        assert_eq!(AutoSnapshots::parse(None, None).unwrap(), None);
        let a = AutoSnapshots::parse(Some("1h"), Some("hourly=24"))
            .unwrap()
            .unwrap();
        assert_eq!(a.keep.unwrap().hourly, 24);
    }

    /// `n * unit` used to overflow: a panic in a debug build, and in a release build an
    /// interval wrapped around to another length (`213503982334602d` is 2^64 + 61,184
    /// seconds: snapshots every 17 hours).
    #[test]
    fn an_interval_too_long_is_refused() {
        let err = parse_interval("213503982334602d").unwrap_err().to_string();
        assert!(err.contains("longer than"), "{err}");
        assert_eq!(
            parse_interval("18446744073709551615s").unwrap(),
            Duration::from_secs(u64::MAX)
        );
    }
}
