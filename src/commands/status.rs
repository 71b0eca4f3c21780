//! `cpvault status`: per cluster, the newest usable backup, its age and size, and its last
//! drill, as a table or JSON; exit 4 when any cluster is unhealthy (the judgement is
//! `crate::status`'s).

use std::fmt::Write as _;

use super::Ctx;
use crate::cli::StatusArgs;
use crate::error::{HealthCheckFailed, Usage};
use crate::plan::retention::Duration;
use crate::progress::{age, human};

/// The default maximum age of a cluster's newest backup: a daily schedule plus slack.
const DEFAULT_MAX_AGE: &str = "26h";

/// Runs the command.
///
/// # Errors
/// [`HealthCheckFailed`] (exit 4) when a cluster is stale, has no backup, or failed its last
/// drill; other errors when the store cannot be read.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> anyhow::Result<()> {
    let max_age = args
        .max_age
        .or(ctx.config.max_age)
        .unwrap_or_else(|| DEFAULT_MAX_AGE.parse().expect("valid default"));
    if max_age.is_zero() {
        return Err(Usage("--max-age must be more than zero (e.g. 26h)".into()).into());
    }
    let now = chrono::Utc::now();
    let cutoff = max_age
        .before(now, chrono_tz::UTC)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let clusters: Vec<String> = match (&args.cluster, args.all) {
        (Some(c), _) => vec![c.clone()],
        (None, true) => ctx.config.clusters.keys().cloned().collect(),
        (None, false) => ctx.config.cluster.iter().cloned().collect(),
    };
    let all = args.all || clusters.is_empty();
    let store = ctx.store(&args.store, false)?;
    let signers = ctx.allowed_signers(&args.trust)?;
    let statuses =
        crate::status::gather(&store, &clusters, all, signers.as_ref(), cutoff, true).await?;
    if statuses.is_empty() {
        return Err(HealthCheckFailed(format!(
            "no cluster has a backup in {store}, and none is configured; give --cluster NAME"
        ))
        .into());
    }
    if ctx.json() {
        super::print_json(&statuses)?;
    } else {
        super::print_text(&render(&statuses, &max_age))?;
    }
    let bad: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.cluster.as_str())
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(HealthCheckFailed(format!(
        "{} of {} clusters need attention: {}",
        bad.len(),
        statuses.len(),
        bad.join(", ")
    ))
    .into())
}

fn render(statuses: &[crate::status::ClusterStatus], max_age: &Duration) -> String {
    let mut t = String::new();
    let w = statuses
        .iter()
        .map(|s| s.cluster.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        t,
        "{:w$}  {:6}  {:33}  {:>8}  {:>10}  LAST DRILL",
        "CLUSTER", "STATE", "NEWEST BACKUP", "AGE", "STORED"
    );
    for s in statuses {
        let drill = match &s.last_drill {
            Some(d) => format!(
                "{} {}",
                if d.ok { "ok" } else { "FAILED" },
                d.drilled_at.format("%Y-%m-%d %H:%M")
            ),
            None => "never".into(),
        };
        let _ = writeln!(
            t,
            "{:w$}  {:6}  {:33}  {:>8}  {:>10}  {}",
            s.cluster,
            if s.ok { "ok" } else { "BAD" },
            s.newest.as_deref().unwrap_or("-"),
            s.age_seconds
                .map_or("-".into(), |a| age(chrono::TimeDelta::seconds(a))),
            s.stored_bytes.map_or("-".into(), human),
            drill
        );
        for p in &s.problems {
            let _ = writeln!(t, "{:w$}  ! {p}", "");
        }
    }
    let _ = write!(t, "max age {max_age}");
    t
}
