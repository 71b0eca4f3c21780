//! Prometheus metrics of scheduled runs (design §9): every run of backup, prune, verify, copy
//! and drill records when it ran, whether it succeeded and how long it took, per cluster, in
//! a node_exporter textfile (written atomically and merged with what the file holds for other
//! clusters and operations) and/or on a Pushgateway. Failing to write metrics never hides the
//! run's own result: the caller reports both. Names are a contract (alert rules in
//! `deploy/prometheus/` use them); change them only with the rules.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The metric families, with their help text.
const FAMILIES: [(&str, &str); 6] = [
    (
        "cpvault_last_success_timestamp_seconds",
        "When the operation last succeeded for the cluster (Unix seconds).",
    ),
    (
        "cpvault_last_run_timestamp_seconds",
        "When the operation last ran for the cluster (Unix seconds).",
    ),
    (
        "cpvault_last_run_success",
        "Whether the operation's last run for the cluster succeeded (1) or failed (0).",
    ),
    (
        "cpvault_last_run_duration_seconds",
        "How long the operation's last run for the cluster took.",
    ),
    (
        "cpvault_backup_size_bytes",
        "Size of the cluster's newest backup: layer=data (plaintext) or stored (encrypted).",
    ),
    (
        "cpvault_backups",
        "Committed (trusted, with allowed signers) backups of the cluster in the store.",
    ),
];

/// One run of one operation for one cluster.
#[derive(Debug, Clone)]
pub struct Run {
    /// Cluster.
    pub cluster: String,
    /// backup, prune, verify, copy or drill.
    pub operation: &'static str,
    /// When it started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// Whether it succeeded.
    pub success: bool,
    /// The newest backup's plaintext and stored sizes, when the run knows them.
    pub backup_size: Option<(u64, u64)>,
    /// Backups of the cluster in the store after the run, when the run knows.
    pub backups: Option<u64>,
}

impl Run {
    /// A run of `operation` on `cluster` that started at `started` (wall clock) and has just
    /// ended (`clock` measured it), with no sizes or counts.
    pub fn ended(
        cluster: impl Into<String>,
        operation: &'static str,
        started: SystemTime,
        clock: std::time::Instant,
        success: bool,
    ) -> Run {
        Run {
            cluster: cluster.into(),
            operation,
            started,
            duration: clock.elapsed(),
            success,
            backup_size: None,
            backups: None,
        }
    }
}

/// Where metrics go.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// node_exporter textfile.
    pub file: Option<std::path::PathBuf>,
    /// Pushgateway base URL.
    pub pushgateway: Option<String>,
}

impl Sinks {
    /// Whether any sink is configured.
    pub fn any(&self) -> bool {
        self.file.is_some() || self.pushgateway.is_some()
    }
}

/// Why metrics could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The metrics file could not be read or replaced.
    #[error(
        "metrics file '{path}': {source}; fix --metrics-file (its directory must be writable)"
    )]
    File {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The Pushgateway refused or could not be reached.
    #[error("pushgateway {url}: {reason}; check --pushgateway")]
    Push {
        /// The URL pushed to.
        url: String,
        /// Cause.
        reason: String,
    },
}

type Labels = Vec<(String, String)>;
/// Samples by family name, then by label set.
type Samples = BTreeMap<String, BTreeMap<Labels, f64>>;

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Applies `runs` to `samples`.
fn apply(samples: &mut Samples, runs: &[Run]) {
    let mut set = |name: &str, l: Labels, v: f64| {
        samples.entry(name.to_string()).or_default().insert(l, v);
    };
    for r in runs {
        let op = labels(&[("cluster", &r.cluster), ("operation", r.operation)]);
        set(
            "cpvault_last_run_timestamp_seconds",
            op.clone(),
            secs(r.started),
        );
        set(
            "cpvault_last_run_success",
            op.clone(),
            if r.success { 1.0 } else { 0.0 },
        );
        set(
            "cpvault_last_run_duration_seconds",
            op.clone(),
            r.duration.as_secs_f64(),
        );
        if r.success {
            set(
                "cpvault_last_success_timestamp_seconds",
                op,
                secs(r.started + r.duration),
            );
        }
        if let Some((data, stored)) = r.backup_size {
            for (layer, v) in [("data", data), ("stored", stored)] {
                set(
                    "cpvault_backup_size_bytes",
                    labels(&[("cluster", &r.cluster), ("layer", layer)]),
                    v as f64,
                );
            }
        }
        if let Some(n) = r.backups {
            set(
                "cpvault_backups",
                labels(&[("cluster", &r.cluster)]),
                n as f64,
            );
        }
    }
}

/// The samples in Prometheus' text format, encoded by prometheus-client.
fn encode(samples: &Samples) -> String {
    let mut registry = Registry::default();
    for (name, help) in FAMILIES {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let Some(series) = samples.get(name) else {
            continue;
        };
        for (l, v) in series {
            family.get_or_create(l).set(*v);
        }
        registry.register(name, help, family);
    }
    let mut out = String::new();
    encode_registry(&mut out, &registry).expect("writing to a String");
    out
}

/// Reads our own samples back from a textfile (other lines are dropped: the file is ours).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => match rest.strip_suffix('}').and_then(parse_labels) {
                Some(l) => (n, l),
                None => continue,
            },
            None => (series, vec![]),
        };
        if FAMILIES.iter().any(|(f, _)| *f == name) {
            out.entry(name.to_string())
                .or_default()
                .insert(labels, value);
        }
    }
    out
}

/// `k="v",k2="v2"` with `\\`, `\"` and `\n` escapes.
fn parse_labels(s: &str) -> Option<Labels> {
    let mut out = vec![];
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
    }
}

/// Records `runs` in every configured sink; tries each and reports the first failure.
///
/// # Errors
/// [`MetricsError`] naming the sink.
pub async fn record(sinks: &Sinks, runs: &[Run]) -> Result<(), MetricsError> {
    let mut first_error = None;
    if let Some(path) = &sinks.file {
        if let Err(e) = write_file(path, runs) {
            first_error.get_or_insert(e);
        }
    }
    if let Some(url) = &sinks.pushgateway {
        if let Err(e) = push(url, runs).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Merges `runs` into the textfile at `path`, replacing it atomically (temp file + rename).
fn write_file(path: &Path, runs: &[Run]) -> Result<(), MetricsError> {
    let err = |source| MetricsError::File {
        path: path.display().to_string(),
        source,
    };
    let mut samples = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Samples::new(),
        Err(e) => return Err(err(e)),
    };
    apply(&mut samples, runs);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // node_exporter reads only `*.prom`, so the temp file's name keeps it out of a scrape.
    let mut tmp = tempfile::Builder::new()
        .prefix(".cpvault-metrics-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(encode(&samples).as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Pushes each run under job `cpvault`, grouped by cluster and operation (so that one
/// operation's push never replaces another's).
async fn push(base: &str, runs: &[Run]) -> Result<(), MetricsError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| MetricsError::Push {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
    for r in runs {
        let mut samples = Samples::new();
        apply(&mut samples, std::slice::from_ref(r));
        // The grouping labels are added by the Pushgateway; pushed series must not repeat
        // them with other values.
        for series in samples.values_mut() {
            *series = std::mem::take(series)
                .into_iter()
                .map(|(l, v)| {
                    let l = l
                        .into_iter()
                        .filter(|(k, _)| k != "cluster" && k != "operation")
                        .collect();
                    (l, v)
                })
                .collect();
        }
        let url = format!(
            "{}/metrics/job/cpvault/cluster/{}/operation/{}",
            base.trim_end_matches('/'),
            r.cluster,
            r.operation
        );
        let fail = |reason: String| MetricsError::Push {
            url: url.clone(),
            reason,
        };
        let resp = client
            .put(&url)
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(encode(&samples))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(fail(format!(
                "{status}: {}",
                crate::text::escape_for_line(text.trim(), 300)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cluster: &str, op: &'static str, ok: bool, at: u64) -> Run {
        Run {
            cluster: cluster.into(),
            operation: op,
            started: UNIX_EPOCH + Duration::from_secs(at),
            duration: Duration::from_secs(2),
            success: ok,
            backup_size: (op == "backup").then_some((100, 40)),
            backups: (op == "backup").then_some(3),
        }
    }

    #[test]
    fn merge_keeps_other_clusters_and_the_last_success() {
        let mut s = Samples::new();
        apply(
            &mut s,
            &[
                run("a", "backup", true, 1000),
                run("b", "prune", true, 1000),
            ],
        );
        let text = encode(&s);
        let mut again = parse(&text);
        assert_eq!(again, s, "{text}");
        // A failed backup of a keeps its last success time, and b is untouched.
        apply(&mut again, &[run("a", "backup", false, 2000)]);
        let key = |c: &str, o: &str| labels(&[("cluster", c), ("operation", o)]);
        assert_eq!(
            again["cpvault_last_success_timestamp_seconds"][&key("a", "backup")],
            1002.0
        );
        assert_eq!(again["cpvault_last_run_success"][&key("a", "backup")], 0.0);
        assert_eq!(
            again["cpvault_last_run_timestamp_seconds"][&key("a", "backup")],
            2000.0
        );
        assert_eq!(again["cpvault_last_run_success"][&key("b", "prune")], 1.0);
        assert!(
            text.contains("cpvault_backup_size_bytes{cluster=\"a\",layer=\"data\"} 100"),
            "{text}"
        );
    }

    #[test]
    fn labels_with_escapes_round_trip() {
        let l = parse_labels(r#"cluster="a\"b",operation="x\\y""#).unwrap();
        assert_eq!(l, labels(&[("cluster", "a\"b"), ("operation", "x\\y")]));
        assert!(parse_labels(r#"cluster=a"#).is_none());
    }
}
