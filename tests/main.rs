//! The integration tests: one binary, one module per area. Every test drives the real
//! `cpvault` binary (or the library where a test needs to reach inside) against real files,
//! real tools and real servers started on loopback.

// Backup → list → verify (both levels) → extract round trips, JSON output, schema.
mod roundtrip;
// The stock age, zstd and tar tools open an archive with no cpvault at all.
mod stock_tools;
// A real etcd: snapshot, back up, extract, `etcdctl snapshot restore`, start, read keys.
mod etcd_restore;
// Corrupted archives and manifests, wrong keys: verify exits 3 and names the layer.
mod corruption;
// What list shows: committed backups only; distinct ids; the checked-in v1 sample.
mod listing;
// The listing cache: filled by backup, emptied by prune, forged entries judged like manifests.
mod listing_cache;
// Certificate facts: show lists expiry and key state, list flags expiring backups, openssl keys.
mod certs;
// Command-line contract: usage errors, exit codes, config file, env vars, key types.
mod cli;
// Retention planner: golden comparisons with restic 0.14, property tests.
mod retention;
// prune: execution order, orphans and the grace period, broken manifests, config, moto S3.
mod prune;
// Stores: conformance suite on moto S3, conditional-create refusal, CLI round trip on moto.
mod stores;
// Sources: etcd gRPC (plain, mTLS), SSH (PKI, etcdctl), Kubernetes exec, auto discovery.
mod sources;
// copy: local ⇄ moto S3, verified both sides, corrupted sources refused.
mod copy;
// The store failing on the wire (a proxy): killed mid-upload, connections cut and retried.
mod store_faults;
// restore: onto a sandbox node over a real sshd (plan, rollback of every step), and --to-dir.
mod restore;
// HA control planes: backups of a real 3-member etcd record the membership and come from a
// follower; `restore --to-dir --members` gives data dirs on which three etcds form one cluster.
mod ha;
// Signed backups: keys, stock ssh-keygen, forgeries refused everywhere, prune, copy, list.
mod signing;
// Interrupted commands: extract stopped by SIGINT, SIGTERM or SIGHUP leaves no plaintext.
mod interrupt;
// Reliability figures: the corruption matrix and the crash matrix (local store and moto).
mod matrix;
// A hostile store: oversized PAX paths and manifests in bounded memory (RSS measured), duplicate
// entries, escaped control characters, no setuid on extract; property tests of every parser.
mod hostile;
// Looking inside backups: the snapshot reader against a real etcd (compaction, tombstones,
// overflow pages), inspect/diff/get on stored backups, corrupt page trees, property tests.
mod inspect;
mod support;
// Running unattended: status (exit 4), drill on a real etcd, metrics (promtool, Pushgateway),
// the run entry point, completions and the man page.
mod unattended;
// Deploy files checked by their tools (promtool, systemd-analyze, kubernetes-validate, podman)
// and the shipped RBAC enforced by the test API server against real kube-source backups.
mod deploy;
// Azure store on Azurite: conformance suite, key/SAS/emulator settings, commit refusal, CLI.
mod stores_azure;
// S3 store on s3s-fs (SigV4-checking): conformance suite, commit refusal, CLI round trip.
mod stores_s3sfs;
// GCS store: conformance suite on a GCS test server, generation preconditions, credentials,
// CLI round trip, and reads/list/delete on fake-gcs-server.
mod stores_gcs;
