//! Retention: which snapshots `--keep` rules keep, the same way restic's and borg's
//! `--keep-*` options and sanoid do it. Pure: time is a parameter, so the rules are
//! tested over a simulated clock.
//!
//! Rules: `last=N` keeps the N newest snapshots; `hourly=N` (daily, weekly, monthly,
//! yearly) keeps the newest snapshot of each of the N most recent hours (days, ...) that
//! have one. A snapshot kept by any rule is kept; a held snapshot is always kept. Periods
//! are calendar periods in UTC; weeks start on Monday.

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

const RULES: [&str; 6] = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];

impl KeepPolicy {
    /// Parses `hourly=24,daily=7,weekly=4,monthly=6` (any subset of the rules).
    pub fn parse(text: &str) -> Result<KeepPolicy> {
        let mut p = KeepPolicy::default();
        for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (rule, n) = part.split_once('=').ok_or_else(|| {
                Error::Invalid(format!(
                    "keep rule {part:?}: expected RULE=COUNT, e.g. daily=7"
                ))
            })?;
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| Error::Invalid(format!("keep rule {part:?}: {n:?} is not a count")))?;
            let slot = match rule.trim() {
                "last" => &mut p.last,
                "hourly" => &mut p.hourly,
                "daily" => &mut p.daily,
                "weekly" => &mut p.weekly,
                "monthly" => &mut p.monthly,
                "yearly" => &mut p.yearly,
                other => {
                    return Err(Error::Invalid(format!(
                        "unknown keep rule {other:?} (rules: {})",
                        RULES.join(", ")
                    )))
                }
            };
            *slot = n;
        }
        if p == KeepPolicy::default() {
            return Err(Error::Invalid(
                "no keep rule with a count above 0: that would remove every snapshot".into(),
            ));
        }
        Ok(p)
    }

    fn counts(&self) -> [(&'static str, u32); 6] {
        [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
    }
}

impl fmt::Display for KeepPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .counts()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A snapshot as retention sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub name: String,
    /// Seconds since the epoch (when the snapshot was taken).
    pub time: i64,
    pub held: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Decision {
    pub name: String,
    pub time: i64,
    pub keep: bool,
    /// The rules that keep it (`held`, `daily`, ...); empty when it goes.
    pub reasons: Vec<String>,
}

/// (year, month, day, hour) in UTC and the day number since the epoch.
fn civil(secs: i64) -> (i64, u32, u32, u32, i64) {
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, hour, days)
}

/// The period of `rule` that `secs` falls in, as a comparable key.
fn bucket(rule: &str, secs: i64) -> i64 {
    let (y, m, _, _, days) = civil(secs);
    match rule {
        "hourly" => secs.div_euclid(3600),
        "daily" => days,
        // Monday-based weeks: 1970-01-01 was a Thursday (weekday 3 counting from Monday).
        "weekly" => days - (days + 3).rem_euclid(7),
        "monthly" => y * 12 + i64::from(m),
        "yearly" => y,
        _ => unreachable!("no bucket for {rule}"),
    }
}

/// Which of `snapshots` the policy keeps, newest first.
pub fn plan(snapshots: &[Candidate], policy: &KeepPolicy) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = snapshots.iter().collect();
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    let mut out: Vec<Decision> = order
        .iter()
        .map(|c| Decision {
            name: c.name.clone(),
            time: c.time,
            keep: c.held,
            reasons: if c.held { vec!["held".into()] } else { vec![] },
        })
        .collect();
    for (rule, count) in policy.counts() {
        if count == 0 {
            continue;
        }
        let mut kept = 0;
        let mut last_bucket = None;
        for (i, c) in order.iter().enumerate() {
            if kept >= count {
                break;
            }
            let b = if rule == "last" {
                i as i64
            } else {
                bucket(rule, c.time)
            };
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                kept += 1;
                out[i].keep = true;
                out[i].reasons.push(rule.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86_400;
    // 2026-11-23 00:00:00 UTC, a Monday.
    const T0: i64 = 1_795_392_000;

    fn snaps(times: &[i64]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                name: format!("auto-{t}"),
                time: *t,
                held: false,
            })
            .collect()
    }

    fn kept(plan: &[Decision]) -> Vec<i64> {
        let mut v: Vec<i64> = plan.iter().filter(|d| d.keep).map(|d| d.time).collect();
        v.sort();
        v
    }

    #[test]
    fn parses_rules_and_refuses_nonsense() {
        let p = KeepPolicy::parse("hourly=24,daily=7,weekly=4,monthly=6").unwrap();
        assert_eq!(
            (p.hourly, p.daily, p.weekly, p.monthly, p.last),
            (24, 7, 4, 6, 0)
        );
        assert_eq!(p.to_string(), "hourly=24,daily=7,weekly=4,monthly=6");
        for bad in ["", "daily", "daily=x", "fortnightly=2", "daily=0"] {
            assert!(KeepPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_dates_and_weeks() {
        assert_eq!(civil(T0).0, 2026);
        assert_eq!((civil(T0).1, civil(T0).2), (11, 23));
        // Monday 00:00 and Sunday 23:59 of the same week share a bucket; the next Monday
        // starts a new one.
        assert_eq!(bucket("weekly", T0), bucket("weekly", T0 + 7 * D - 1));
        assert_ne!(bucket("weekly", T0), bucket("weekly", T0 + 7 * D));
        assert_ne!(bucket("weekly", T0 - 1), bucket("weekly", T0));
    }

    #[test]
    fn snapshots_every_15_minutes_for_60_days() {
        let times: Vec<i64> = (0..60 * 24 * 4).map(|i| T0 + i * 900).collect();
        let now = *times.last().unwrap();
        let policy = KeepPolicy::parse("hourly=24,daily=7,weekly=4,monthly=6").unwrap();
        let p = plan(&snaps(&times), &policy);
        let k = kept(&p);
        // 24 hourly, plus daily for the 6 days before the newest, weekly and monthly
        // fill further back: every kept snapshot is the newest of its hour.
        assert!(
            k.iter().all(|t| (t + 900) % H == 0),
            "not the newest of its hour"
        );
        let hourly: Vec<&i64> = k.iter().filter(|t| now - **t < 24 * H).collect();
        assert_eq!(hourly.len(), 24);
        let days: std::collections::BTreeSet<i64> = k.iter().map(|t| t / D).collect();
        assert!(days.len() >= 7);
        // The oldest kept is from the earliest month that has snapshots (monthly=6
        // reaches back past the 60 days).
        // November's newest (Nov 30, 23:45) is the oldest kept.
        assert_eq!(k[0], T0 + 8 * D - 900);
        assert!(k.len() < 24 + 7 + 4 + 6 + 1);
    }

    #[test]
    fn held_snapshots_and_last_are_kept() {
        let mut s = snaps(&[T0, T0 + H, T0 + 2 * H, T0 + 3 * H]);
        s[0].held = true;
        let p = plan(&s, &KeepPolicy::parse("last=2").unwrap());
        assert_eq!(kept(&p), vec![T0, T0 + 2 * H, T0 + 3 * H]);
        let held = p.iter().find(|d| d.time == T0).unwrap();
        assert_eq!(held.reasons, ["held"]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let s = snaps(&[T0 + H, T0 + 5 * H, T0 + D + H, T0 + D + 9 * H, T0 + 3 * D]);
        let p = plan(&s, &KeepPolicy::parse("daily=2").unwrap());
        assert_eq!(kept(&p), vec![T0 + D + 9 * H, T0 + 3 * D]);
    }
}
