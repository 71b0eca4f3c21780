//! Clusters from the config file: `backup --all` runs every configured cluster and reports
//! the failed one, one cluster by name takes its section's sources, and a typo in a cluster
//! section is refused.

use super::{assert_restores, load};
use crate::support::*;

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn backup_all_runs_every_configured_cluster_and_reports_the_failed_one() {
    let w = World::new();
    let etcd = Etcd::start();
    load(&etcd);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = w.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\nrecipients = [\"{}\"]\n\
             [clusters.good]\netcd_endpoints = [\"{}\"]\n\
             [clusters.good.retention]\nkeep_last = 3\n\
             [clusters.gone]\netcd_endpoints = [\"{dead}\"]\n",
            w.store.display(),
            w.recipient,
            etcd.endpoint
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let all = cpvault_in(w.dir.path(), &["--config", cfg, "backup", "--all"]);
    assert_no_panic(&all);
    assert_eq!(all.status.code(), Some(1), "{}", stderr(&all));
    let table = stdout(&all);
    let good = table.lines().find(|l| l.starts_with("good")).expect(&table);
    let gone = table.lines().find(|l| l.starts_with("gone")).expect(&table);
    assert!(good.contains(" ok ") && good.contains("good/"), "{table}");
    assert!(gone.contains("FAILED") && gone.contains(&dead), "{table}");
    assert!(
        stderr(&all).contains("1 of 2 cluster backups failed"),
        "{}",
        stderr(&all)
    );
    let list = cpvault_in(w.dir.path(), &["--config", cfg, "list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let clusters: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cluster"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clusters, ["good"]);

    // One cluster by name takes its section's sources.
    let one = cpvault_in(
        w.dir.path(),
        &["--config", cfg, "backup", "--cluster", "good"],
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let reference = stdout(&one).trim().to_string();
    etcd.put("/registry/late", "x");
    assert_restores(&w, &reference, "out");
}

#[test]
fn a_typo_in_a_cluster_section_is_refused() {
    let w = World::new();
    let config = w.path("config.toml");
    std::fs::write(&config, "[clusters.admin]\nkubeconfg = \"/x\"\n").unwrap();
    let out = cpvault_in(
        w.dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "backup",
            "--cluster",
            "admin",
        ],
    );
    assert_no_panic(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("kubeconfg"), "{}", stderr(&out));
}
