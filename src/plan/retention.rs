//! The retention planner behind `prune`: given the committed backups, a policy, a time zone and
//! the current time, it decides which backups to keep and which to remove, and why. It follows
//! restic's `forget` rules as restic 0.14 applies them (checked against restic itself by the
//! golden tests in `tests/retention.rs`), adds the safety rules of the design (§5), and is a pure
//! function: it never reads a clock, a store or a file, and never deletes anything — the caller
//! executes the plan.
//!
//! How the rules work, as in restic: backups are grouped per cluster and walked newest first.
//! Each `keep_<period>` rule keeps the newest backup of each period (hour, day, ISO week, month,
//! year, in the given zone) until its count is used up; periods with no backup cost nothing;
//! `-1` means no limit, as in newer restic releases. Restic 0.14 does *not* keep the oldest
//! backup when a rule has count left over (newer releases do), and neither does this planner:
//! the golden tests pin 0.14's behaviour. `keep_within`
//! keeps everything newer than the newest backup that is not in the future minus the duration;
//! `keep_within_<period>` keeps the newest backup of each period inside that window. The rules
//! are ORed. On top of restic: an empty policy removes nothing, and the newest backup of each
//! cluster is always kept.
//!
//! Tags: restic's tags are flat strings, cpvault's are `key=value` pairs. A restic tag `k=v`
//! corresponds to the entry `k → v`, a bare restic tag `k` to `k → ""`. A `keep_tags` entry is
//! a comma-separated list that must all match (restic's taglist): `k=v` matches the entry
//! `k → v`, a bare `k` matches any backup that has the key `k`, and an empty list matches a
//! backup with no tags at all.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A committed backup as the planner sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// The cluster the backup belongs to; retention applies per cluster.
    pub cluster: String,
    /// The backup id within its cluster.
    pub id: String,
    /// When the backup was created.
    pub created: DateTime<Utc>,
    /// The backup's tags.
    pub tags: BTreeMap<String, String>,
}

/// A retention policy: restic's `forget --keep-*` options, declared once as the `prune
/// --keep-*` flags (the field docs are their help) and as the config file's `[retention]`
/// and `[clusters.NAME.retention]` tables.
///
/// Counts keep that many periods; `-1` keeps every period; `0`, an absent value and any other
/// negative value turn the rule off ([`Policy::validate`] rejects values below `-1`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Keep the newest N backups (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest backup of each of the last N years that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every backup within DURATION (e.g. 7d, 1y6m, 36h) of the newest one.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<Duration>,
    /// Keep the newest backup of each hour within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<Duration>,
    /// Keep the newest backup of each day within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<Duration>,
    /// Keep the newest backup of each ISO week within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<Duration>,
    /// Keep the newest backup of each month within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<Duration>,
    /// Keep the newest backup of each year within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<Duration>,
    /// Keep backups with these tags (KEY=VALUE or KEY; comma-separated: all must match); repeatable.
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// True when no rule is on: such a policy keeps everything.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, n)| !count_is_on(*n))
            && self.keep_within.is_none_or(|d| d.is_zero())
            && self.withins().iter().all(|(_, d)| d.is_none())
            && self.keep_tags.is_empty()
    }

    /// Checks the values a user can get wrong.
    ///
    /// # Errors
    /// [`PolicyError::NegativeCount`] for a count below `-1`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        match self
            .counts()
            .into_iter()
            .find(|(_, n)| matches!(n, Some(v) if *v < -1))
        {
            Some((rule, Some(value))) => Err(PolicyError::NegativeCount { rule, value }),
            _ => Ok(()),
        }
    }

    fn counts(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ]
    }

    /// The within rules that are on (a zero duration is off, as in restic).
    fn withins(&self) -> [(Period, Option<Duration>); 5] {
        let on = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        [
            (Period::Hour, on(self.keep_within_hourly)),
            (Period::Day, on(self.keep_within_daily)),
            (Period::Week, on(self.keep_within_weekly)),
            (Period::Month, on(self.keep_within_monthly)),
            (Period::Year, on(self.keep_within_yearly)),
        ]
    }
}

fn count_is_on(n: Option<i64>) -> bool {
    matches!(n, Some(v) if v > 0 || v == -1)
}

/// A policy that cannot be applied as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A count below -1.
    #[error("retention policy: {rule} = {value} is not a count; use a positive number, or -1 to keep every period")]
    NegativeCount {
        /// The rule, e.g. `keep_daily`.
        rule: &'static str,
        /// The value given.
        value: i64,
    },
}

/// A calendar duration as restic writes it: `1y2m3d4h` (any subset, in any order).
///
/// Years, months and days are calendar steps back from the newest backup's local date (with
/// Go's `AddDate` overflow: one month before 31 March is 3 March, or 2 March in a leap year);
/// hours are exact hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Duration {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Calendar days.
    pub days: u32,
    /// Hours of 3600 seconds.
    pub hours: u32,
}

impl Duration {
    /// True when every part is zero; a zero duration turns its rule off.
    pub fn is_zero(&self) -> bool {
        *self == Duration::default()
    }

    /// The instant this duration before `reference`, with the calendar steps taken in `tz`.
    /// `None` when that lies outside the representable range (so everything is "within").
    pub fn before(&self, reference: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = reference.with_timezone(&tz).naive_local();
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let first = NaiveDate::from_ymd_opt(
            i32::try_from(months.div_euclid(12)).ok()?,
            u32::try_from(months.rem_euclid(12)).ok()? + 1,
            1,
        )?;
        let date = first.checked_add_signed(TimeDelta::try_days(
            i64::from(local.day()) - 1 - i64::from(self.days),
        )?)?;
        let stepped = from_local_like_go(date.and_time(local.time()), tz)?;
        stepped.checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)
    }
}

/// Resolves a wall time the way Go's `time.Date` does, so that times in a DST gap or overlap
/// land where restic puts them: take the offset in force at the wall time read as UTC, and if
/// the result falls outside that offset's span, the offset in force at the result.
fn from_local_like_go(wall: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    let offset_at =
        |t: &NaiveDateTime| i64::from(tz.offset_from_utc_datetime(t).fix().local_minus_utc());
    let first = offset_at(&wall);
    let utc = wall.checked_sub_signed(TimeDelta::try_seconds(first)?)?;
    let second = offset_at(&utc);
    let utc = if second == first {
        utc
    } else {
        wall.checked_sub_signed(TimeDelta::try_seconds(second)?)?
    };
    Some(Utc.from_utc_datetime(&utc))
}

impl fmt::Display for Duration {
    /// restic's spelling, e.g. `1m15d`; used in reasons such as `within 1m15d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Why a retention duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing given.
    #[error("retention duration is empty; write it as in restic, e.g. 7d, 36h or 1y2m")]
    Empty,
    /// Something other than a number where a number belongs (a sign included).
    #[error("retention duration {input:?}: expected a number at {rest:?}; write it as in restic, e.g. 7d, 36h or 1y2m")]
    ExpectedNumber {
        /// The whole input.
        input: String,
        /// What was left when a number was expected.
        rest: String,
    },
    /// A number without a unit after it.
    #[error("retention duration {input:?}: {number} has no unit; add y, m, d or h")]
    MissingUnit {
        /// The whole input.
        input: String,
        /// The number without a unit.
        number: String,
    },
    /// A unit restic does not know.
    #[error("retention duration {input:?}: unknown unit {unit:?}; use y (years), m (months), d (days) or h (hours)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: char,
    },
    /// The same unit twice.
    #[error("retention duration {input:?}: unit {unit:?} appears twice; give each of y, m, d, h at most once")]
    RepeatedUnit {
        /// The whole input.
        input: String,
        /// The repeated unit.
        unit: char,
    },
    /// A number too large to be a duration.
    #[error(
        "retention duration {input:?}: {number} is too large; use at most 4294967295 per unit"
    )]
    TooLarge {
        /// The whole input.
        input: String,
        /// The number.
        number: String,
    },
}

impl FromStr for Duration {
    type Err = DurationError;

    /// Parses restic's format: numbers each followed by `y`, `m`, `d` or `h`. Stricter than
    /// restic: a sign or a repeated unit is an error instead of being taken as written.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let (mut d, mut seen, mut rest) = (Duration::default(), String::new(), s);
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(DurationError::ExpectedNumber {
                    input: input.into(),
                    rest: rest.into(),
                });
            }
            let (number, tail) = rest.split_at(digits);
            let mut chars = tail.chars();
            let unit = chars.next().ok_or_else(|| DurationError::MissingUnit {
                input: input.into(),
                number: number.into(),
            })?;
            let value: u32 = number.parse().map_err(|_| DurationError::TooLarge {
                input: input.into(),
                number: number.into(),
            })?;
            let slot = match unit {
                'y' => &mut d.years,
                'm' => &mut d.months,
                'd' => &mut d.days,
                'h' => &mut d.hours,
                _ => {
                    return Err(DurationError::UnknownUnit {
                        input: input.into(),
                        unit,
                    })
                }
            };
            if seen.contains(unit) {
                return Err(DurationError::RepeatedUnit {
                    input: input.into(),
                    unit,
                });
            }
            seen.push(unit);
            *slot = value;
            rest = chars.as_str();
        }
        Ok(d)
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The verdict on one backup.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Decision {
    /// The backup's cluster.
    pub cluster: String,
    /// The backup's id.
    pub id: String,
    /// When the backup was created.
    pub created: DateTime<Utc>,
    /// Why it is kept, in restic's words (`daily snapshot`, `within 7d`,
    /// `has tags [env=prod]`, …) plus `policy is empty` and `newest of cluster`; empty for a
    /// backup to remove.
    pub reasons: Vec<String>,
}

/// What to keep and what to remove, each newest first.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Plan {
    /// Backups to keep, with at least one reason each.
    pub keep: Vec<Decision>,
    /// Backups to remove.
    pub remove: Vec<Decision>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// The period's key for a local time, numbered as restic does (`YYYYMMDDHH`, `YYYYWW`, …).
    fn key<T: Datelike + Timelike>(self, t: &T) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Day => (y * 100 + m) * 100 + d,
            Period::Week => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Month => y * 100 + m,
            Period::Year => y,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }
}

/// A counted rule: `None` period is `keep_last`, which gives each backup a period of its own.
struct Counter {
    period: Option<Period>,
    left: i64,
    last: Option<i64>,
    reason: &'static str,
}

/// A `keep_within_<period>` rule: uncounted, but only for backups newer than `since`.
struct WithinBucket {
    period: Period,
    duration: Duration,
    since: Option<DateTime<Utc>>,
    last: Option<i64>,
}

/// Applies `policy` to `snapshots`, per cluster, with periods in `tz` and the future measured
/// from `now`. The result holds every input backup exactly once.
pub fn plan(snapshots: &[Snapshot], policy: &Policy, tz: Tz, now: DateTime<Utc>) -> Plan {
    let mut clusters: BTreeMap<&str, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        clusters.entry(s.cluster.as_str()).or_default().push(s);
    }
    let mut out = Plan::default();
    for (_, mut group) in clusters {
        group.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        for (s, reasons) in group.iter().zip(plan_group(&group, policy, tz, now)) {
            let decision = Decision {
                cluster: s.cluster.clone(),
                id: s.id.clone(),
                created: s.created,
                reasons,
            };
            if decision.reasons.is_empty() {
                out.remove.push(decision);
            } else {
                out.keep.push(decision);
            }
        }
    }
    for list in [&mut out.keep, &mut out.remove] {
        list.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| a.cluster.cmp(&b.cluster))
                .then_with(|| b.id.cmp(&a.id))
        });
    }
    out
}

/// The reasons to keep each backup of one cluster (sorted newest first); empty means remove.
fn plan_group(
    group: &[&Snapshot],
    policy: &Policy,
    tz: Tz,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    if policy.is_empty() {
        return group
            .iter()
            .map(|_| vec!["policy is empty".to_string()])
            .collect();
    }
    // restic measures the windows from the newest backup that is not in the future; with none,
    // every backup is within them.
    let latest = group.iter().map(|s| s.created).filter(|c| *c < now).max();
    let threshold = |d: &Duration| latest.and_then(|l| d.before(l, tz));
    let within = |created: DateTime<Utc>, t: Option<DateTime<Utc>>| t.is_none_or(|t| created > t);

    let within_all = policy
        .keep_within
        .filter(|d| !d.is_zero())
        .map(|d| (d, threshold(&d)));
    let mut counters: Vec<Counter> = [
        (None, policy.keep_last, "last snapshot"),
        (Some(Period::Hour), policy.keep_hourly, "hourly snapshot"),
        (Some(Period::Day), policy.keep_daily, "daily snapshot"),
        (Some(Period::Week), policy.keep_weekly, "weekly snapshot"),
        (Some(Period::Month), policy.keep_monthly, "monthly snapshot"),
        (Some(Period::Year), policy.keep_yearly, "yearly snapshot"),
    ]
    .into_iter()
    .filter(|(_, n, _)| count_is_on(*n))
    .map(|(period, n, reason)| Counter {
        period,
        left: n.unwrap_or(0),
        last: None,
        reason,
    })
    .collect();
    let mut within_buckets: Vec<WithinBucket> = policy
        .withins()
        .into_iter()
        .filter_map(|(period, d)| {
            d.map(|d| WithinBucket {
                period,
                duration: d,
                since: threshold(&d),
                last: None,
            })
        })
        .collect();
    let tag_lists: Vec<Vec<&str>> = policy
        .keep_tags
        .iter()
        .map(|l| l.split(',').map(str::trim).collect())
        .collect();

    let mut result = Vec::with_capacity(group.len());
    for (nr, s) in group.iter().enumerate() {
        let mut reasons = Vec::new();
        let local = s.created.with_timezone(&tz);
        for list in &tag_lists {
            if list.iter().all(|f| tag_matches(&s.tags, f)) {
                reasons.push(format!("has tags [{}]", list.join(", ")));
            }
        }
        if let Some((d, t)) = within_all {
            if within(s.created, t) {
                reasons.push(format!("within {d}"));
            }
        }
        for c in &mut counters {
            if c.left == 0 {
                continue;
            }
            let key = c.period.map_or(nr as i64, |p| p.key(&local));
            if c.last != Some(key) {
                c.last = Some(key);
                if c.left > 0 {
                    c.left -= 1;
                }
                reasons.push(c.reason.to_string());
            }
        }
        for b in &mut within_buckets {
            if within(s.created, b.since) {
                let key = b.period.key(&local);
                if b.last != Some(key) {
                    b.last = Some(key);
                    reasons.push(format!("{} within {}", b.period.name(), b.duration));
                }
            }
        }
        result.push(reasons);
    }
    // Design §5: the newest backup of a cluster is never removed, whatever the rules say.
    if let Some(first) = result.first_mut().filter(|r| r.is_empty()) {
        first.push("newest of cluster".to_string());
    }
    result
}

/// Whether one tag filter matches (see the module docs for the mapping from restic's tags).
fn tag_matches(tags: &BTreeMap<String, String>, filter: &str) -> bool {
    if filter.is_empty() {
        return tags.is_empty();
    }
    match filter.split_once('=') {
        Some((k, v)) => tags.get(k).is_some_and(|have| have == v),
        None => tags.contains_key(filter),
    }
}
