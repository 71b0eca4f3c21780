//! The deploy files (`deploy/`) checked by the tools that will run them: the alert rules by
//! `promtool check rules` and their unit tests by `promtool test rules`; the systemd units by
//! `systemd-analyze verify`; every Kubernetes manifest by Kubernetes' own OpenAPI schemas
//! (`kubernetes-validate --strict`) and the CronJob's and RBAC's promises read from the YAML;
//! the container image built from its Containerfile without a registry. Each tool check also
//! shows the check can fail (a broken copy is refused). The RBAC rules meet the real kube
//! source calls in `rbac`. The node-local variant (`node-local/`) is validated with the rest,
//! and its config backs up a real mutual-TLS etcd with the certificates at the mounted paths
//! in `node_local`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

// The node-local CronJob variant: its promises, and its config against a local mTLS etcd.
mod node_local;
// The RBAC manifests enforced by the test API server against real `cpvault backup` runs.
mod rbac;

/// `deploy/` of this checkout.
fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Every object of a YAML manifest file (documents separated by `---`).
pub(crate) fn manifests(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy(rel)).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

const KUBE_VALIDATE: &str = "python3 -m pip install kubernetes-validate==1.34.1";
/// The Kubernetes version whose schemas the manifests must meet (the API server the test
/// server reports, and the oldest with every field the CronJob uses).
const KUBE_VERSION: &str = "1.33.0";

#[test]
#[ignore = "needs prometheus (promtool; apt-get install); CI runs it"]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    require("promtool", "prometheus");
    let rules = deploy("prometheus/cpvault-alerts.yaml");
    let out = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        both(&out).contains("SUCCESS: 7 rules found"),
        "{}",
        both(&out)
    );
    let out = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(deploy("prometheus/cpvault-alerts.test.yaml")));
    assert!(out.status.success(), "{}", both(&out));

    // The unit tests notice a changed threshold or a lost filter: each broken copy fails.
    let text = std::fs::read_to_string(&rules).unwrap();
    for (from, to) in [
        ("> 26 * 3600", "> 28 * 3600"),
        ("< 0.5 *", "< 0.7 *"),
        ("operation!=\"drill\"", "operation!=\"none\""),
        ("> 8 * 86400", "> 10 * 86400"),
    ] {
        assert!(text.contains(from), "{from} is not in the rules any more");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cpvault-alerts.yaml"),
            text.replace(from, to),
        )
        .unwrap();
        std::fs::copy(
            deploy("prometheus/cpvault-alerts.test.yaml"),
            dir.path().join("cpvault-alerts.test.yaml"),
        )
        .unwrap();
        let out = run(Command::new("promtool")
            .args(["test", "rules"])
            .arg(dir.path().join("cpvault-alerts.test.yaml")));
        assert!(!out.status.success(), "{from} → {to} went unnoticed");
    }
}

#[test]
fn alert_rules_cover_every_promised_alert_on_the_contract_metrics() {
    let rules = &manifests("prometheus/cpvault-alerts.yaml")[0]["groups"][0]["rules"];
    let expr = |name: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == name)
            .unwrap_or_else(|| panic!("no alert {name}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(expr("CpvaultBackupStale")
        .contains("cpvault_last_success_timestamp_seconds{operation=\"backup\"}"));
    assert!(expr("CpvaultRunFailed").contains("cpvault_last_run_success"));
    assert!(expr("CpvaultDrillFailed").contains("cpvault_last_run_success{operation=\"drill\"}"));
    assert!(expr("CpvaultBackupSizeDrop").contains("cpvault_backup_size_bytes{layer=\"data\"}"));
    assert!(expr("CpvaultMetricsAbsent").contains("cpvault_last_run_timestamp_seconds"));
    assert!(expr("CpvaultMetricsMissing").starts_with("absent("));
}

/// The units with ExecStart pointing at the built binary (verify checks that it exists).
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let bin = env!("CARGO_BIN_EXE_cpvault");
    ["cpvault-backup.service", "cpvault-backup.timer"]
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, text.replace("/usr/local/bin/cpvault", bin)).unwrap();
            path
        })
        .collect()
}

fn verify(units: &[PathBuf]) -> Output {
    // --man=no: the units name no man page, and the test must not depend on man-db.
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units))
}

#[test]
#[ignore = "needs systemd (systemd-analyze; apt-get install); CI runs it"]
fn systemd_units_pass_systemd_analyze_verify() {
    require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let units = units_for_verify(dir.path());
    let out = verify(&units);
    // verify only warns about unknown keys and bad values: any output is a failure.
    assert!(
        out.status.success() && both(&out).trim().is_empty(),
        "{}",
        both(&out)
    );

    // A misspelled hardening key is reported (the check is not blind to typos).
    let text = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(
        &units[0],
        text.replace("NoNewPrivileges=", "NoNewPrivilege="),
    )
    .unwrap();
    let out = verify(&units);
    assert!(both(&out).contains("NoNewPrivilege"), "{}", both(&out));
}

#[test]
fn the_service_runs_the_scheduled_command_hardened_and_the_timer_is_persistent() {
    let service = std::fs::read_to_string(deploy("systemd/cpvault-backup.service")).unwrap();
    let lines: Vec<&str> = service.lines().map(str::trim).collect();
    for want in [
        "Type=oneshot",
        "ExecStart=/usr/local/bin/cpvault run --config /etc/cpvault/config.toml --metrics-file /var/lib/prometheus/node-exporter/cpvault.prom",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/prometheus/node-exporter",
        "StateDirectory=cpvault",
        "PrivateTmp=yes",
        "ProtectHome=read-only",
        "CapabilityBoundingSet=",
    ] {
        assert!(lines.contains(&want), "{want} missing from the service");
    }
    let timer = std::fs::read_to_string(deploy("systemd/cpvault-backup.timer")).unwrap();
    let lines: Vec<&str> = timer.lines().map(str::trim).collect();
    for want in ["Persistent=true", "RandomizedDelaySec=1h"] {
        assert!(lines.contains(&want), "{want} missing from the timer");
    }
    assert!(lines.iter().any(|l| l.starts_with("OnCalendar=")));
}

const MANIFESTS: [&str; 8] = [
    "kubernetes/namespace.yaml",
    "kubernetes/serviceaccount.yaml",
    "kubernetes/rbac.yaml",
    "kubernetes/rbac-user-cluster.yaml",
    "kubernetes/configmap.yaml",
    "kubernetes/secret.yaml",
    "kubernetes/cronjob.yaml",
    "kubernetes/node-local/cpvault.yaml",
];

/// Every file below `deploy/kubernetes`, as `kubernetes/…` paths.
fn kubernetes_files(rel: &str) -> Vec<String> {
    let mut out = vec![];
    for e in std::fs::read_dir(deploy(rel)).unwrap() {
        let e = e.unwrap();
        let path = format!("{rel}/{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            out.extend(kubernetes_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    run(Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBE_VERSION])
        .args(files))
}

#[test]
#[ignore = "needs kubernetes-validate (pip); CI runs it"]
fn every_kubernetes_manifest_validates_against_the_kubernetes_schemas() {
    if !on_path("kubernetes-validate") {
        missing("`kubernetes-validate`", KUBE_VALIDATE);
    }
    // Every file in the directory is listed, so a new manifest cannot skip validation.
    let mut on_disk = kubernetes_files("kubernetes");
    on_disk.sort();
    let mut listed: Vec<String> = MANIFESTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|m| deploy(m)).collect();
    let out = kubernetes_validate(&files);
    assert!(out.status.success(), "{}", both(&out));

    // A misspelled field is refused (strict validation is on).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cronjob.yaml");
    let text = std::fs::read_to_string(deploy("kubernetes/cronjob.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
    )
    .unwrap();
    let out = kubernetes_validate(&[bad]);
    assert!(!out.status.success(), "a misspelled field validated");
    assert!(
        both(&out).contains("readOnlyRootFileSystem"),
        "{}",
        both(&out)
    );
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn the_cronjob_is_forbid_bounded_non_root_read_only_and_wired_to_its_objects() {
    let cronjobs = manifests("kubernetes/cronjob.yaml");
    let cj = object(&cronjobs, "CronJob");
    let spec = &cj["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    assert!(spec["startingDeadlineSeconds"].as_u64().is_some());
    assert!(spec["successfulJobsHistoryLimit"].as_u64().is_some());
    assert!(spec["failedJobsHistoryLimit"].as_u64().is_some());
    let job = &spec["jobTemplate"]["spec"];
    assert!(job["activeDeadlineSeconds"].as_u64().is_some());
    let pod = &job["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--config", "/etc/cpvault/config.toml"])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory", "ephemeral-storage"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}");
        }
    }
    let mounts = c["volumeMounts"].as_array().unwrap();
    let tmp = mounts.iter().find(|m| m["mountPath"] == "/tmp").unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &Value| volumes.iter().find(|v| v["name"] == *name).unwrap();
    assert!(volume(&tmp["name"])["emptyDir"].is_object());

    // Wired to the other manifests: the account, the ConfigMap's keys, the Secret's keys.
    let sa = &manifests("kubernetes/serviceaccount.yaml")[0];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(cj["metadata"]["namespace"], sa["metadata"]["namespace"]);
    let cm = &manifests("kubernetes/configmap.yaml")[0];
    let config = volume(&serde_json::json!("config"));
    assert_eq!(config["configMap"]["name"], cm["metadata"]["name"]);
    for item in config["configMap"]["items"].as_array().unwrap() {
        let key = item["key"].as_str().unwrap();
        assert!(cm["data"][key].is_string(), "ConfigMap has no {key}");
    }
    let secret = &manifests("kubernetes/secret.yaml")[0];
    let keys = volume(&serde_json::json!("keys"));
    assert_eq!(keys["secret"]["secretName"], secret["metadata"]["name"]);
    for item in keys["secret"]["items"].as_array().unwrap() {
        let key = item["key"].as_str().unwrap();
        assert!(secret["stringData"][key].is_string(), "Secret has no {key}");
    }
    for env in c["env"].as_array().unwrap() {
        if let Some(r) = env["valueFrom"]["secretKeyRef"].as_object() {
            assert_eq!(r["name"], secret["metadata"]["name"]);
            assert!(secret["stringData"][r["key"].as_str().unwrap()].is_string());
        }
    }
    // The kubeconfig the config points at is the mounted one, using the pod's token.
    let config_toml = cm["data"]["config.toml"].as_str().unwrap();
    assert!(config_toml.contains("kubeconfig = \"/etc/cpvault/in-cluster.kubeconfig\""));
    assert!(cm["data"]["in-cluster.kubeconfig"]
        .as_str()
        .unwrap()
        .contains("tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"));
}

#[test]
fn rbac_grants_no_wildcard_no_write_and_only_the_sshkeys_secret() {
    for file in ["kubernetes/rbac.yaml", "kubernetes/rbac-user-cluster.yaml"] {
        for o in manifests(file) {
            let Some(rules) = o["rules"].as_array() else {
                continue;
            };
            for r in rules {
                let list = |k: &str| -> Vec<String> {
                    r[k].as_array()
                        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default()
                };
                let text = r.to_string();
                assert!(!text.contains('*'), "{file}: wildcard in {text}");
                assert_eq!(list("apiGroups"), [""], "{file}: {text}");
                for verb in list("verbs") {
                    let exec = list("resources") == ["pods/exec"];
                    assert!(
                        ["get", "list"].contains(&verb.as_str()) || (exec && verb == "create"),
                        "{file}: verb {verb} in {text}"
                    );
                }
                if list("resources").contains(&"secrets".to_string()) {
                    assert_eq!(list("resourceNames"), ["sshkeys"], "{file}: {text}");
                }
            }
        }
    }
}

#[test]
#[ignore = "needs podman (apt-get install), root, openssh-client, etcd-server, etcd-client; CI runs it"]
fn the_container_image_builds_without_a_registry_and_holds_a_working_cpvault() {
    require("podman", "podman");
    let chroot =
        find_on_path("chroot").unwrap_or_else(|| missing("`chroot`", "apt-get install coreutils"));
    // chroot and mknod need root.
    let uid = run(Command::new("id").arg("-u"));
    if stdout(&uid).trim() != "0" {
        missing(
            "root (chroot into the exported image)",
            "run the test as root",
        );
    }
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(
        deploy("container/Containerfile"),
        ctx.path().join("Containerfile"),
    )
    .unwrap();
    let out = run(Command::new(deploy("container/build-rootfs.sh"))
        .arg(env!("CARGO_BIN_EXE_cpvault"))
        .arg(ctx.path().join("rootfs")));
    assert!(out.status.success(), "{}", both(&out));
    let tag = format!("localhost/cpvault-test:{:016x}", rand::random::<u64>());
    // No network and no pull: the build must need no registry at all.
    let out = run(Command::new("podman")
        .args(["build", "--network=none", "--pull=never", "-q", "-t", &tag])
        .arg(ctx.path()));
    assert!(out.status.success(), "{}", both(&out));
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
        }
    }
    let image = Image(tag);
    let out = run(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}}",
        &image.0,
    ]));
    assert_eq!(
        stdout(&out).trim(),
        "65532:65532 [\"/usr/local/bin/cpvault\"]",
        "{}",
        both(&out)
    );
    // `podman run` needs cgroups and rlimits this sandbox does not grant; the image's own
    // filesystem, exported, runs the same binaries under chroot as the image's user.
    let out = run(Command::new("podman").args(["create", &image.0]));
    assert!(out.status.success(), "{}", both(&out));
    let container = stdout(&out).trim().to_string();
    let root = ctx.path().join("exported");
    std::fs::create_dir(&root).unwrap();
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "podman export {container} | tar -C '{}' -x",
        root.display()
    )));
    let _ = Command::new("podman").args(["rm", &container]).output();
    assert!(out.status.success(), "{}", both(&out));
    // A runtime mounts /dev; ssh needs /dev/null.
    std::fs::create_dir_all(root.join("dev")).unwrap();
    let out = run(Command::new("mknod")
        .args(["-m", "666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"]));
    assert!(out.status.success(), "{}", both(&out));
    for (argv, want) in [
        (&["/usr/local/bin/cpvault", "--version"][..], "cpvault "),
        (&["/usr/bin/etcd", "--version"][..], "etcd Version:"),
        (&["/usr/bin/etcdctl", "version"][..], "etcdctl version:"),
        (&["/usr/bin/ssh", "-V"][..], "OpenSSH_"),
    ] {
        let out = run(Command::new(&chroot)
            .arg("--userspec=65532:65532")
            .arg(&root)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin"));
        assert!(
            out.status.success() && both(&out).contains(want),
            "{argv:?}: {}",
            both(&out)
        );
    }
}
