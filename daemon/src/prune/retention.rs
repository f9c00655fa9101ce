//! Retention: which snapshots of one dataset's history a policy keeps, as
//! restic's `forget` decides it. Snapshots are taken newest first:
//! `keep_last N` keeps the N newest; `keep_within D` keeps those at most D
//! older than the newest; `keep_daily/weekly/monthly N` keep the newest
//! snapshot of each of the N newest days (UTC), ISO weeks or months that
//! have one; tagged snapshots are kept (`keep_tagged`, on unless turned
//! off). The head is always kept. With no rule at all, everything is kept.

use crate::id::Id;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_within_secs: Option<u64>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    /// Keep every tagged snapshot (on by default: a tag names a version a
    /// user wants; remove the tag to let it go).
    pub keep_tagged: bool,
}

impl Policy {
    /// Whether any rule limits history (else everything is kept).
    pub fn limits(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_within_secs.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
    }
}

/// One snapshot of the history: its id and time (unix nanoseconds:
/// snapshots a second apart must still sort).
#[derive(Debug, Clone, Copy)]
pub struct Dated {
    pub id: Id,
    pub time_ns: i64,
}

const NS: i64 = 1_000_000_000;

/// The kept snapshots of `history` (any order) with why each is kept.
pub fn apply(
    policy: &Policy,
    history: &[Dated],
    head: Option<Id>,
    tagged: &HashSet<Id>,
) -> BTreeMap<Id, Vec<&'static str>> {
    let mut snaps: Vec<Dated> = history.to_vec();
    snaps.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(a.id.cmp(&b.id)));
    let mut kept: BTreeMap<Id, Vec<&'static str>> = BTreeMap::new();
    let mut keep = |id: Id, why: &'static str| kept.entry(id).or_default().push(why);
    if !policy.limits() {
        for s in &snaps {
            keep(s.id, "no retention rule");
        }
        return kept;
    }
    if let Some(h) = head {
        keep(h, "head");
    }
    if let Some(n) = policy.keep_last {
        for s in snaps.iter().take(n as usize) {
            keep(s.id, "last");
        }
    }
    if let (Some(w), Some(newest)) = (policy.keep_within_secs, snaps.first()) {
        for s in &snaps {
            if newest.time_ns.saturating_sub(s.time_ns) <= (w as i64).saturating_mul(NS) {
                keep(s.id, "within");
            }
        }
    }
    type Bucket = fn(i64) -> i64;
    let buckets: [(Option<u32>, &'static str, Bucket); 3] = [
        (policy.keep_daily, "daily", day_of),
        (policy.keep_weekly, "weekly", week_of),
        (policy.keep_monthly, "monthly", month_of),
    ];
    for (n, why, bucket) in buckets {
        let Some(n) = n else { continue };
        let mut last = None;
        let mut taken = 0;
        for s in &snaps {
            if taken >= n {
                break;
            }
            let b = bucket(s.time_ns.div_euclid(NS));
            if last != Some(b) {
                last = Some(b);
                taken += 1;
                keep(s.id, why);
            }
        }
    }
    if policy.keep_tagged {
        for s in &snaps {
            if tagged.contains(&s.id) {
                keep(s.id, "tagged");
            }
        }
    }
    kept
}

/// Days since 1970-01-01 (UTC).
fn day_of(t: i64) -> i64 {
    t.div_euclid(86_400)
}

/// The ISO week: (ISO year × 100 + week number).
fn week_of(t: i64) -> i64 {
    let days = day_of(t);
    // 1970-01-01 was a Thursday; Monday = 0.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _) = civil(thursday);
    let jan1 = days_from_civil(year, 1, 1);
    year * 100 + (thursday - jan1) / 7 + 1
}

/// Year × 100 + month.
fn month_of(t: i64) -> i64 {
    let (y, m, _) = civil(day_of(t));
    y * 100 + m
}

/// (year, month, day) of a day number (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub use hoard_proto::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// 2026-11-30 12:00 UTC, a Monday.
    const T0: i64 = 1_796_040_000;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    /// Snapshots 1..=n, one every `step` seconds back from T0 (1 newest).
    fn history(n: u8, step: i64) -> Vec<Dated> {
        (1..=n)
            .map(|i| Dated {
                id: id(i),
                time_ns: (T0 - (i as i64 - 1) * step) * NS,
            })
            .collect()
    }

    fn kept(p: &Policy, h: &[Dated], tagged: &[u8]) -> Vec<u8> {
        let tagged: HashSet<Id> = tagged.iter().map(|&t| id(t)).collect();
        let mut out: Vec<u8> = apply(p, h, Some(id(1)), &tagged)
            .keys()
            .map(|k| k.0[0])
            .collect();
        out.sort();
        out
    }

    #[test]
    fn dates_are_civil_and_iso_weeks_are_right() {
        assert_eq!(civil(day_of(T0)), (2026, 11, 30));
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 11, 30), day_of(T0));
        // 2026-01-01 is a Thursday: ISO week 1 of 2026; 2027-01-01 (Friday)
        // is in week 53 of 2026.
        assert_eq!(week_of(days_from_civil(2026, 1, 1) * DAY), 202601);
        assert_eq!(week_of(days_from_civil(2027, 1, 1) * DAY), 202653);
        assert_eq!(week_of(days_from_civil(2024, 12, 30) * DAY), 202501);
        assert_eq!(month_of(T0), 202611);
    }

    #[test]
    fn retention_table() {
        let hourly = history(10, 3_600); // 10 snapshots an hour apart
        let daily = history(40, DAY); // 40 days, one a day
        let twice_a_day = history(20, DAY / 2);
        let none = Policy::default();
        let last3 = Policy {
            keep_last: Some(3),
            ..none.clone()
        };
        type Case<'a> = (&'a str, Policy, &'a [Dated], &'a [u8], Vec<u8>);
        let cases: Vec<Case> = vec![
            (
                "no rule keeps all",
                none.clone(),
                &hourly,
                &[],
                (1..=10).collect(),
            ),
            ("last 3", last3.clone(), &hourly, &[], vec![1, 2, 3]),
            (
                "last 0 keeps the head",
                Policy {
                    keep_last: Some(0),
                    ..none.clone()
                },
                &hourly,
                &[],
                vec![1],
            ),
            (
                "last 3 + tagged",
                Policy {
                    keep_tagged: true,
                    ..last3.clone()
                },
                &hourly,
                &[7],
                vec![1, 2, 3, 7],
            ),
            (
                "tags ignored when off",
                last3.clone(),
                &hourly,
                &[7],
                vec![1, 2, 3],
            ),
            (
                "within 5h",
                Policy {
                    keep_within_secs: Some(5 * 3_600),
                    ..none.clone()
                },
                &hourly,
                &[],
                (1..=6).collect(),
            ),
            (
                "daily 3 of hourly: one day",
                Policy {
                    keep_daily: Some(3),
                    ..none.clone()
                },
                &hourly,
                &[],
                vec![1],
            ),
            (
                "daily 3 of twice a day",
                Policy {
                    keep_daily: Some(3),
                    ..none.clone()
                },
                &twice_a_day,
                &[],
                vec![1, 3, 5],
            ),
            (
                "weekly 2 of daily",
                Policy {
                    keep_weekly: Some(2),
                    ..none.clone()
                },
                &daily,
                &[],
                vec![1, 2],
            ),
            (
                "monthly 2 of daily",
                Policy {
                    keep_monthly: Some(2),
                    ..none.clone()
                },
                &daily,
                &[],
                vec![1, 31],
            ),
            (
                "last 2 + weekly 3",
                Policy {
                    keep_last: Some(2),
                    keep_weekly: Some(3),
                    ..none.clone()
                },
                &daily,
                &[],
                vec![1, 2, 9],
            ),
            (
                "more than there are",
                Policy {
                    keep_last: Some(50),
                    ..none.clone()
                },
                &hourly,
                &[],
                (1..=10).collect(),
            ),
        ];
        for (name, p, h, tagged, want) in cases {
            assert_eq!(kept(&p, h, tagged), want, "{name}");
        }
    }

    #[test]
    fn durations_parse_or_say_how() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("1y6m"), Ok(365 * 86_400 + 180 * 86_400));
        assert_eq!(parse_duration("90min"), Ok(5_400));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("2w12h"), Ok(14 * 86_400 + 12 * 3_600));
        for bad in ["", "d", "30", "3x", "-1d", "99999999999999999999y"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("30d"), "{bad}: {e}");
        }
    }
}
