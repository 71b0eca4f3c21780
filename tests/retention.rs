//! Retention planner (`prune`'s plan): it must decide exactly as restic 0.14's `forget` does on
//! the recorded golden cases (tests/data/retention/, made by scripts/gen-retention-golden.sh
//! with the real restic), keep the safety rules of design §5, and hold its properties on random
//! backup lists.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use chrono_tz::Tz;
use cpvault::plan::retention::{
    plan, Duration, DurationError, Plan, Policy, PolicyError, Snapshot,
};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    restic: String,
    tz: String,
    now: DateTime<Utc>,
    snapshots: Vec<GoldenSnapshot>,
    policies: Vec<GoldenPolicy>,
}

#[derive(Deserialize)]
struct GoldenSnapshot {
    id: String,
    time: DateTime<Utc>,
    restic_time: DateTime<FixedOffset>,
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct GoldenPolicy {
    flags: Vec<String>,
    keep: Vec<GoldenKept>,
    remove: Vec<String>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct GoldenKept {
    id: String,
    reasons: Vec<String>,
}

fn golden() -> Golden {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/retention/golden.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// restic's flat tags as cpvault's map: `k=v` is `k → v`, a bare `k` is `k → ""`.
fn tag_map(tags: &[String]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect()
}

fn policy_from_flags(flags: &[String]) -> Policy {
    let mut p = Policy::default();
    for flag in flags {
        let (name, value) = flag
            .split_once('=')
            .unwrap_or_else(|| panic!("flag without value: {flag}"));
        let count = || Some(value.parse::<i64>().unwrap());
        let duration = || Some(value.parse::<Duration>().unwrap());
        match name {
            "--keep-last" => p.keep_last = count(),
            "--keep-hourly" => p.keep_hourly = count(),
            "--keep-daily" => p.keep_daily = count(),
            "--keep-weekly" => p.keep_weekly = count(),
            "--keep-monthly" => p.keep_monthly = count(),
            "--keep-yearly" => p.keep_yearly = count(),
            "--keep-within" => p.keep_within = duration(),
            "--keep-within-hourly" => p.keep_within_hourly = duration(),
            "--keep-within-daily" => p.keep_within_daily = duration(),
            "--keep-within-weekly" => p.keep_within_weekly = duration(),
            "--keep-within-monthly" => p.keep_within_monthly = duration(),
            "--keep-within-yearly" => p.keep_within_yearly = duration(),
            "--keep-tag" => p.keep_tags.push(value.to_string()),
            other => panic!("golden flag {other} is not mapped to a Policy field"),
        }
    }
    p
}

#[test]
fn golden_file_comes_from_restic_0_14_and_covers_the_cases() {
    let g = golden();
    assert!(
        g.restic.starts_with("restic 0.14"),
        "golden made by {}",
        g.restic
    );
    assert!(g.snapshots.len() >= 300, "{} snapshots", g.snapshots.len());
    assert!(g.policies.len() >= 15, "{} policies", g.policies.len());
    let first = g.snapshots.iter().map(|s| s.time).min().unwrap();
    let newest_past = g
        .snapshots
        .iter()
        .map(|s| s.time)
        .filter(|t| *t < g.now)
        .max()
        .unwrap();
    assert!(newest_past - first >= chrono::TimeDelta::days(730));
    let tz: Tz = g.tz.parse().unwrap();
    for s in &g.snapshots {
        // restic stored each time with the zone's offset at that instant: the script's premise
        assert_eq!(s.restic_time, s.time, "{}", s.id);
        assert_eq!(
            s.restic_time.offset(),
            s.time.with_timezone(&tz).fixed_offset().offset(),
            "{}",
            s.id
        );
    }
}

#[test]
fn plan_matches_restic_forget_on_every_golden_policy() {
    let g = golden();
    let tz: Tz = g.tz.parse().unwrap();
    let snapshots: Vec<Snapshot> = g
        .snapshots
        .iter()
        .map(|s| Snapshot {
            cluster: "c".into(),
            id: s.id.clone(),
            created: s.time,
            tags: tag_map(&s.tags),
        })
        .collect();
    let newest = g
        .snapshots
        .iter()
        .max_by_key(|s| s.time)
        .unwrap()
        .id
        .clone();
    let mut failures = Vec::new();
    for case in &g.policies {
        let policy = policy_from_flags(&case.flags);
        let got = plan(&snapshots, &policy, tz, g.now);
        let mut want_keep: Vec<(String, Vec<String>)> = case
            .keep
            .iter()
            .map(|k| (k.id.clone(), k.reasons.clone()))
            .collect();
        let mut want_remove = case.remove.clone();
        // Design §5 on top of restic: the newest backup survives any policy.
        if want_remove.first() == Some(&newest) {
            want_remove.remove(0);
            want_keep.insert(0, (newest.clone(), vec!["newest of cluster".into()]));
        }
        let got_keep: Vec<(String, Vec<String>)> = got
            .keep
            .iter()
            .map(|d| (d.id.clone(), d.reasons.clone()))
            .collect();
        let got_remove: Vec<String> = got.remove.iter().map(|d| d.id.clone()).collect();
        if got_keep != want_keep || got_remove != want_remove {
            let diff: Vec<_> = want_keep
                .iter()
                .filter(|k| !got_keep.contains(k))
                .take(3)
                .collect();
            let extra: Vec<_> = got_keep
                .iter()
                .filter(|k| !want_keep.contains(k))
                .take(3)
                .collect();
            failures.push(format!("{:?}: restic keeps, we don't (first 3): {diff:?}; we keep, restic doesn't: {extra:?}", case.flags));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} policies differ from restic:\n{}",
        failures.len(),
        g.policies.len(),
        failures.join("\n")
    );
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn snap(cluster: &str, id: &str, created: &str, tags: &[(&str, &str)]) -> Snapshot {
    Snapshot {
        cluster: cluster.into(),
        id: id.into(),
        created: at(created),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn kept(p: &Plan) -> Vec<&str> {
    p.keep.iter().map(|d| d.id.as_str()).collect()
}

#[test]
fn empty_policy_removes_nothing() {
    let list = [
        snap("c", "a", "2024-01-01T00:00:00Z", &[]),
        snap("c", "b", "2024-01-02T00:00:00Z", &[]),
    ];
    let p = plan(
        &list,
        &Policy {
            keep_last: Some(0),
            ..Policy::default()
        },
        Tz::UTC,
        at("2025-01-01T00:00:00Z"),
    );
    assert_eq!(kept(&p), ["b", "a"]);
    assert!(p.remove.is_empty());
    assert_eq!(p.keep[0].reasons, ["policy is empty"]);
}

#[test]
fn minus_one_keeps_every_period() {
    let list: Vec<Snapshot> = (0..40)
        .map(|i| {
            snap(
                "c",
                &format!("{i:02}"),
                &format!("2024-01-{:02}T{:02}:00:00Z", 1 + i / 2, 6 + (i % 2) * 6),
                &[],
            )
        })
        .collect();
    let all = plan(
        &list,
        &Policy {
            keep_daily: Some(-1),
            ..Policy::default()
        },
        Tz::UTC,
        at("2025-01-01T00:00:00Z"),
    );
    assert_eq!(all.keep.len(), 20);
    assert!(
        all.keep
            .iter()
            .all(|d| d.id.ends_with(['1', '3', '5', '7', '9'])),
        "the later one of each day"
    );
}

#[test]
fn keep_tags_map_restic_flat_tags_onto_key_value_pairs() {
    let list = [
        snap("c", "prod", "2024-01-01T00:00:00Z", &[("env", "prod")]),
        snap("c", "dev", "2024-01-02T00:00:00Z", &[("env", "dev")]),
        snap(
            "c",
            "pinned",
            "2024-01-03T00:00:00Z",
            &[("pinned", ""), ("env", "prod")],
        ),
        snap("c", "none", "2024-01-04T00:00:00Z", &[]),
        snap("c", "newest", "2024-01-05T00:00:00Z", &[("x", "y")]),
    ];
    let run = |tags: &[&str]| {
        let policy = Policy {
            keep_tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Policy::default()
        };
        plan(&list, &policy, Tz::UTC, at("2025-01-01T00:00:00Z"))
    };
    assert_eq!(kept(&run(&["env=prod"])), ["newest", "pinned", "prod"]);
    assert_eq!(
        kept(&run(&["env"])),
        ["newest", "pinned", "dev", "prod"],
        "a bare key matches any value"
    );
    assert_eq!(
        kept(&run(&["env=prod,pinned"])),
        ["newest", "pinned"],
        "a list must match whole"
    );
    assert_eq!(
        kept(&run(&[""])),
        ["newest", "none"],
        "an empty list matches untagged backups"
    );
    assert_eq!(
        run(&["env=prod,pinned"]).keep[1].reasons,
        ["has tags [env=prod, pinned]"]
    );
    assert_eq!(run(&["env=prod"]).keep[0].reasons, ["newest of cluster"]);
}

#[test]
fn clusters_are_planned_separately() {
    let list = [
        snap("a", "a1", "2024-01-01T00:00:00Z", &[]),
        snap("a", "a2", "2024-01-02T00:00:00Z", &[]),
        snap("b", "b1", "2024-01-03T00:00:00Z", &[]),
        snap("b", "b2", "2024-01-04T00:00:00Z", &[]),
    ];
    let p = plan(
        &list,
        &Policy {
            keep_last: Some(1),
            ..Policy::default()
        },
        Tz::UTC,
        at("2025-01-01T00:00:00Z"),
    );
    assert_eq!(kept(&p), ["b2", "a2"]);
    assert_eq!(
        p.remove.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["b1", "a1"]
    );
}

#[test]
fn keep_within_counts_from_the_newest_backup_not_in_the_future() {
    let list = [
        snap("c", "old", "2024-01-01T00:00:00Z", &[]),
        snap("c", "recent", "2024-01-09T00:00:00Z", &[]),
        snap("c", "latest", "2024-01-10T00:00:00Z", &[]),
        snap("c", "future", "2030-01-01T00:00:00Z", &[]),
    ];
    let policy = Policy {
        keep_within: Some("7d".parse().unwrap()),
        ..Policy::default()
    };
    let p = plan(&list, &policy, Tz::UTC, at("2024-06-01T00:00:00Z"));
    assert_eq!(kept(&p), ["future", "latest", "recent"]);
    assert_eq!(p.keep[1].reasons, ["within 7d"]);
}

#[test]
fn durations_parse_like_restic() {
    let d: Duration = "1y2m3d4h".parse().unwrap();
    assert_eq!(
        d,
        Duration {
            years: 1,
            months: 2,
            days: 3,
            hours: 4
        }
    );
    assert_eq!(d.to_string(), "1y2m3d4h");
    assert_eq!("4h1y".parse::<Duration>().unwrap().to_string(), "1y4h");
    assert_eq!(
        Duration::default().to_string().parse::<Duration>().unwrap(),
        Duration::default()
    );
    assert_eq!("".parse::<Duration>(), Err(DurationError::Empty));
    for bad in ["7", "7w", "-1d", "1d1d", "d", "1 d", "99999999999d"] {
        let err = bad.parse::<Duration>().expect_err(bad);
        assert!(
            err.to_string().contains("retention duration"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn policy_reads_from_config_and_rejects_typos() {
    let p: Policy = serde_json::from_str(
        r#"{"keep_daily": 7, "keep_within": "1m15d", "keep_tags": ["env=prod"]}"#,
    )
    .unwrap();
    assert_eq!(p.keep_daily, Some(7));
    assert_eq!(
        p.keep_within,
        Some(Duration {
            months: 1,
            days: 15,
            ..Duration::default()
        })
    );
    assert!(serde_json::from_str::<Policy>(r#"{"keep_dayly": 7}"#).is_err());
    assert!(serde_json::from_str::<Policy>(r#"{"keep_within": "7w"}"#).is_err());
    assert_eq!(
        Policy {
            keep_weekly: Some(-2),
            ..Policy::default()
        }
        .validate(),
        Err(PolicyError::NegativeCount {
            rule: "keep_weekly",
            value: -2
        })
    );
    assert!(Policy {
        keep_weekly: Some(-1),
        ..Policy::default()
    }
    .validate()
    .is_ok());
    assert!(Policy {
        keep_within: Some(Duration::default()),
        ..Policy::default()
    }
    .is_empty());
}

// ---- properties ------------------------------------------------------------------------

const BASE: i64 = 1_640_995_200; // 2022-01-01T00:00:00Z
const SPAN: i64 = 3 * 365 * 86_400;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(BASE + SPAN * 5 / 6, 0).unwrap() // some backups lie in the future
}

fn zones() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        Tz::UTC,
        Tz::Europe__Berlin,
        Tz::America__New_York,
        Tz::Australia__Lord_Howe,
        Tz::Asia__Kolkata,
    ])
}

/// Backups with distinct times over three years, in up to three clusters.
fn backups() -> impl Strategy<Value = Vec<Snapshot>> {
    prop::collection::btree_map(0..SPAN, (0..3usize, 0..4usize), 1..60).prop_map(|m| {
        m.into_iter()
            .enumerate()
            .map(|(i, (offset, (cluster, tag)))| Snapshot {
                cluster: format!("c{cluster}"),
                id: format!("{i:03}"),
                created: Utc.timestamp_opt(BASE + offset, 0).unwrap(),
                tags: match tag {
                    0 => BTreeMap::from([("env".to_string(), "prod".to_string())]),
                    1 => BTreeMap::from([("pinned".to_string(), String::new())]),
                    _ => BTreeMap::new(),
                },
            })
            .collect()
    })
}

fn count() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![3 => Just(None), 2 => (1i64..8).prop_map(Some), 1 => Just(Some(-1))]
}

fn duration() -> impl Strategy<Value = Option<Duration>> {
    let d =
        (0u32..2, 0u32..13, 0u32..40, 0u32..72).prop_map(|(years, months, days, hours)| Duration {
            years,
            months,
            days,
            hours,
        });
    prop_oneof![3 => Just(None), 1 => d.prop_map(Some)]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        (count(), count(), count(), count(), count(), count()),
        (
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
            duration(),
        ),
        prop::collection::vec(
            prop::sample::select(vec!["env=prod", "pinned", "env", ""]),
            0..2,
        ),
    )
        .prop_map(
            |((l, h, d, w, m, y), (wi, wh, wd, ww, wm, wy), tags)| Policy {
                keep_last: l,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
                keep_yearly: y,
                keep_within: wi,
                keep_within_hourly: wh,
                keep_within_daily: wd,
                keep_within_weekly: ww,
                keep_within_monthly: wm,
                keep_within_yearly: wy,
                keep_tags: tags.into_iter().map(String::from).collect(),
            },
        )
}

fn removed(p: &Plan) -> BTreeSet<(String, String)> {
    p.remove
        .iter()
        .map(|d| (d.cluster.clone(), d.id.clone()))
        .collect()
}

proptest! {
    #[test]
    fn newest_of_each_cluster_is_kept_and_every_backup_decided_once(list in backups(), policy in policy(), tz in zones()) {
        let p = plan(&list, &policy, tz, now());
        let mut newest: BTreeMap<&str, &Snapshot> = BTreeMap::new();
        for s in &list {
            let e = newest.entry(&s.cluster).or_insert(s);
            if s.created > e.created { *e = s; }
        }
        for s in newest.values() {
            prop_assert!(p.keep.iter().any(|d| d.cluster == s.cluster && d.id == s.id), "newest {} of {} removed", s.id, s.cluster);
        }
        prop_assert_eq!(p.keep.len() + p.remove.len(), list.len());
        prop_assert!(p.keep.iter().all(|d| !d.reasons.is_empty()));
        prop_assert!(p.remove.iter().all(|d| d.reasons.is_empty()));
        prop_assert!(p.keep.windows(2).all(|w| w[0].created >= w[1].created), "keep is newest first");
    }

    #[test]
    fn keep_last_n_keeps_exactly_the_n_newest(mut list in backups(), n in 1usize..60, tz in zones()) {
        for s in &mut list { s.cluster = "c".into(); }
        let n = n.min(list.len());
        let p = plan(&list, &Policy { keep_last: Some(n as i64), ..Policy::default() }, tz, now());
        let mut want: Vec<&Snapshot> = list.iter().collect();
        want.sort_by_key(|s| std::cmp::Reverse(s.created));
        let want: Vec<&str> = want.iter().take(n).map(|s| s.id.as_str()).collect();
        prop_assert_eq!(kept(&p), want);
    }

    #[test]
    fn adding_a_rule_never_removes_more(list in backups(), base in policy(), extra in policy(), tz in zones()) {
        prop_assume!(!base.is_empty());
        let merged = Policy {
            keep_last: base.keep_last.or(extra.keep_last),
            keep_hourly: base.keep_hourly.or(extra.keep_hourly),
            keep_daily: base.keep_daily.or(extra.keep_daily),
            keep_weekly: base.keep_weekly.or(extra.keep_weekly),
            keep_monthly: base.keep_monthly.or(extra.keep_monthly),
            keep_yearly: base.keep_yearly.or(extra.keep_yearly),
            keep_within: base.keep_within.or(extra.keep_within),
            keep_within_hourly: base.keep_within_hourly.or(extra.keep_within_hourly),
            keep_within_daily: base.keep_within_daily.or(extra.keep_within_daily),
            keep_within_weekly: base.keep_within_weekly.or(extra.keep_within_weekly),
            keep_within_monthly: base.keep_within_monthly.or(extra.keep_within_monthly),
            keep_within_yearly: base.keep_within_yearly.or(extra.keep_within_yearly),
            keep_tags: base.keep_tags.iter().chain(&extra.keep_tags).cloned().collect(),
        };
        let before = removed(&plan(&list, &base, tz, now()));
        let after = removed(&plan(&list, &merged, tz, now()));
        prop_assert!(after.is_subset(&before), "newly removed: {:?}", after.difference(&before).collect::<Vec<_>>());
    }

    #[test]
    fn plan_is_deterministic_whatever_the_input_order(
        (list, shuffled) in backups().prop_flat_map(|l| (Just(l.clone()), Just(l).prop_shuffle())),
        policy in policy(),
        tz in zones(),
    ) {
        let a = plan(&list, &policy, tz, now());
        prop_assert_eq!(&a, &plan(&shuffled, &policy, tz, now()));
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&plan(&list, &policy, tz, now())).unwrap());
    }
}
