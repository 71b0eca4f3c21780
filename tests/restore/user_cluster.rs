//! A GKE on VMware user cluster restored through the admin cluster's API (the test API
//! server): its etcd is StatefulSet `kube-etcd` in namespace `user1`, pod `kube-etcd-0` a real
//! etcd on the claim's sandbox dir. Backed up by kube exec, changed, restored: the StatefulSet
//! is back at one replica, etcd serves exactly the backed-up keys, the old member/ is kept with
//! its owner given to the new one, and the restore pod is gone; a failure at any step rolls
//! back; a kubeconfig without the verbs is refused before anything changes; the README's Role
//! is enough, restarting the user cluster's kube-apiserver included.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::etcd_cluster::ctl;
use crate::support::kubeapi::{rbac::Rbac, KubeApi};
use crate::support::*;

// A restore killed mid-way, undone by `--rollback ID` from its journal on the StatefulSet.
mod journal;
// The user cluster's kube-apiserver restarted at the end, and a restart that fails.
mod apiserver;

const NS: &str = "user1";
const KEYS: usize = 20;
/// Owner of the data dir: a restore must give the new member/ the old one's.
const ETCD_UID: u32 = 2001;

struct UserScene {
    w: World,
    api: KubeApi,
    kubeconfig: PathBuf,
    volume: PathBuf,
    endpoint: String,
    reference: String,
    /// Keys (with values) at backup time, and after the changes made since.
    at_backup: Vec<String>,
    changed: Vec<String>,
}

/// Every key under /registry with its value, once etcd answers (or a panic after 60 s).
fn served(endpoint: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let o = ctl(endpoint, &["get", "--prefix", "/registry"]);
        if o.status.success() {
            let text = stdout(&o);
            let lines: Vec<&str> = text.lines().collect();
            return lines.chunks(2).map(|kv| kv.join("=")).collect();
        }
        assert!(Instant::now() < end, "etcd does not answer: {}", stderr(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
}

const IMAGE: &str = "gcr.io/gke-on-prem-release/etcd:v3.4.23-0-gke.0";

/// A one-replica StatefulSet `name` whose pods run `container`, labelled `app: name`.
fn one_replica(name: &str, container: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]}},
        }
    })
}

fn statefulset() -> serde_json::Value {
    let mut etcd = one_replica(
        "kube-etcd",
        json!({
            "name": "kube-etcd", "image": IMAGE,
            "command": ["etcd", "--name=kube-etcd-0", "--data-dir=/var/lib/etcd",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=kube-etcd-0=http://127.0.0.1:2380"],
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}],
        }),
    );
    etcd["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}]);
    etcd
}

/// The user cluster's kube-apiserver as GKE on VMware runs it: StatefulSet `kube-apiserver`,
/// pod `kube-apiserver-0` (no process: nothing here talks to it), which its controller brings
/// back when it is deleted.
fn apiserver_statefulset() -> serde_json::Value {
    one_replica(
        "kube-apiserver",
        json!({
            "name": "kube-apiserver",
            "image": "gcr.io/gke-on-prem-release/kube-apiserver:v1.33.1-gke.0",
        }),
    )
}

/// The etcdctl settings of backup and restore: plain http on the pod's mapped loopback port.
const ETCDCTL: [&str; 8] = [
    "--node-etcd-endpoint",
    "http://127.0.0.1:2379",
    "--node-etcd-cacert",
    "",
    "--node-etcd-cert",
    "",
    "--node-etcd-key",
    "",
];

fn scene() -> UserScene {
    require("etcd", "etcd-server");
    require("etcdctl", "etcd-client");
    let w = World::new();
    let api = KubeApi::start();
    let volume = w.path("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let logs = w.path("pod-logs");
    std::fs::create_dir(&logs).unwrap();
    api.set_pod_logs(&logs);
    api.add_volume(NS, "data-kube-etcd-0", &volume);
    let (client, peer) = (free_port(), free_port());
    api.map_exec("127.0.0.1:2379", &format!("127.0.0.1:{client}"));
    api.map_exec("127.0.0.1:2380", &format!("127.0.0.1:{peer}"));
    api.add_statefulset(NS, apiserver_statefulset());
    api.add_statefulset(NS, statefulset());
    let endpoint = format!("http://127.0.0.1:{client}");
    served(&endpoint);
    for i in 0..KEYS {
        let o = ctl(
            &endpoint,
            &[
                "put",
                &format!("/registry/configmaps/{NS}/cm-{i:02}"),
                &format!("v{i}"),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let owned = Command::new("chown")
        .args(["-R", &format!("{ETCD_UID}:{ETCD_UID}")])
        .arg(volume.join("member"))
        .status()
        .unwrap();
    assert!(owned.success());
    let kubeconfig = w.path("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin");
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--profile",
        "gke-user",
        "--namespace",
        NS,
    ];
    args.extend(ETCDCTL);
    let reference = w.backup(&args);
    let at_backup = served(&endpoint);
    assert_eq!(at_backup.len(), KEYS);
    for (k, v) in [
        ("/registry/late", "after the backup"),
        ("/registry/configmaps/user1/cm-00", "changed"),
    ] {
        assert!(ctl(&endpoint, &["put", k, v]).status.success());
    }
    let changed = served(&endpoint);
    UserScene {
        w,
        api,
        kubeconfig,
        volume,
        endpoint,
        reference,
        at_backup,
        changed,
    }
}

impl UserScene {
    /// `restore FIRST… -i KEY --kubeconfig … --profile gke-user --namespace NS …` with the
    /// etcdctl flags and the store.
    fn args(&self, first: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["restore"]
            .iter()
            .chain(first)
            .map(|a| a.to_string())
            .collect();
        args.extend(
            [
                "-i",
                self.w.key.to_str().unwrap(),
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "--profile",
                "gke-user",
                "--namespace",
                NS,
                "--wait-timeout",
                "60",
            ]
            .iter()
            .chain(ETCDCTL.iter())
            .map(|a| a.to_string()),
        );
        args.extend(["--store".to_string(), self.w.store.display().to_string()]);
        args
    }

    /// `restore REF` with `extra` (a `--wait-timeout` there replaces the default 60 s).
    fn restore(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args = self.args(&[&self.reference, "--allow-unsigned"]);
        if extra.contains(&"--wait-timeout") {
            let at = args.iter().position(|a| a == "--wait-timeout").unwrap();
            args.drain(at..at + 2);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        cpvault_cmd(self.w.dir.path())
            .envs(env.iter().copied())
            .args(&args)
            .output()
            .unwrap()
    }

    /// Names in the volume besides etcd's own member/.
    fn volume_extras(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.volume)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "member")
            .collect();
        names.sort();
        names
    }

    fn restore_pods(&self) -> Vec<String> {
        let mut pods = self.api.pod_names(NS);
        pods.retain(|p| p.starts_with("cpvault-restore-"));
        pods
    }

    /// The restore journal annotated on the StatefulSet, if any.
    fn journal(&self) -> serde_json::Value {
        self.api.statefulset(NS, "kube-etcd")["metadata"]["annotations"]
            ["cpvault.io/restore-journal"]
            .clone()
    }

    /// The uid of pod kube-apiserver-0 (it must be there).
    fn apiserver_uid(&self) -> String {
        let pod = self
            .api
            .pod(NS, "kube-apiserver-0")
            .expect("kube-apiserver-0");
        pod["metadata"]["uid"].as_str().unwrap().to_string()
    }

    fn apiserver_ready(&self) -> bool {
        let pod = self.api.pod(NS, "kube-apiserver-0");
        pod.is_some_and(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && (p["status"]["conditions"].as_array().into_iter().flatten())
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    }

    fn changing_requests(&self) -> Vec<String> {
        (self.api.requests().into_iter())
            .filter(|r| !r.starts_with("GET ") && !r.contains("selfsubjectaccessreviews"))
            .collect()
    }
}

/// The Role the README documents for a user-cluster restore, bound to the token's account.
fn readme_role() -> Vec<serde_json::Value> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## User-cluster restore")
        .nth(1)
        .expect("README has the section");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut objects: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&yaml.replace("USER_CLUSTER", NS)).unwrap();
    objects.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "cpvault-restore", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
            "name": objects[0]["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "cpvault", "namespace": "ops"}]}),
    );
    objects
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_user_cluster_is_restored_through_the_api_with_only_the_readme_role() {
    let s = scene();
    let dry = s.restore(&["--dry-run"], &[]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = stdout(&dry);
    let mut at = 0;
    for step in [
        "preflight",
        "verify",
        "scale-down",
        "restore-pod",
        "stage",
        "restore-snapshot",
        "swap-data-dir",
        "cleanup",
        "remove-restore-pod",
        "scale-up",
        "wait-ready",
        "restart-apiserver",
    ] {
        let found = plan[at..]
            .find(&format!(". {step} "))
            .unwrap_or_else(|| panic!("{step} not in order in:\n{plan}"));
        at += found;
    }
    assert!(
        plan.contains("kubectl -n user1 scale statefulset kube-etcd --replicas=1"),
        "{plan}"
    );
    assert!(
        s.changing_requests().is_empty(),
        "{:?}",
        s.changing_requests()
    );

    let apiserver = s.apiserver_uid();
    s.api
        .enforce_rbac(Rbac::for_service_account("ops", "cpvault", &readme_role()));
    let out = s.restore(&["--yes"], &[]);
    assert_no_panic(&out);
    assert!(
        out.status.success(),
        "{}\n{:?}",
        stderr(&out),
        s.api.denied()
    );
    assert!(s.api.denied().is_empty(), "{:?}", s.api.denied());
    // The apiserver was restarted: another pod of that name, Ready.
    assert_ne!(
        s.apiserver_uid(),
        apiserver,
        "kube-apiserver-0 not restarted"
    );
    assert!(
        s.apiserver_ready(),
        "{:?}",
        s.api.pod(NS, "kube-apiserver-0")
    );
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 1);
    assert_eq!(
        served(&s.endpoint),
        s.at_backup,
        "not exactly the backed-up keys"
    );
    assert!(s.restore_pods().is_empty(), "{:?}", s.restore_pods());
    assert!(s.journal().is_null(), "journal left: {}", s.journal());
    let extras = s.volume_extras();
    assert_eq!(extras.len(), 1, "{extras:?}");
    assert!(
        extras[0].starts_with("member.before-cpvault-restore-"),
        "{extras:?}"
    );
    assert_eq!(
        std::fs::metadata(s.volume.join("member")).unwrap().uid(),
        ETCD_UID
    );
    // The old data is kept whole: an etcd on a copy of it serves the changed keys.
    let kept = s.w.path("kept");
    std::fs::create_dir(&kept).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(s.volume.join(&extras[0]))
        .arg(kept.join("member"))
        .status()
        .unwrap();
    assert!(copied.success());
    let old = Etcd::start_on(&kept, "kube-etcd-0", None);
    assert_eq!(served(&old.endpoint), s.changed);
    // The snapshot went into the pod over exec stdin, not through a file on this machine.
    let staged = s
        .api
        .execs()
        .into_iter()
        .find(|e| e.command.iter().any(|a| a.contains("exec cat > ")));
    let staged = staged.expect("no staging exec");
    assert!(
        staged.pod.starts_with("cpvault-restore-")
            && staged.container.as_deref() == Some("restore"),
        "{staged:?}"
    );
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_failure_at_any_step_of_a_user_cluster_restore_rolls_back() {
    let s = scene();
    for step in [
        "scale-down",
        "restore-pod",
        "stage",
        "restore-snapshot",
        "swap-data-dir",
        "remove-restore-pod",
        "scale-up",
        "wait-ready",
    ] {
        let out = s.restore(&["--yes"], &[("CPVAULT_RESTORE_FAIL_AT", step)]);
        assert_no_panic(&out);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{step}: {err}");
        assert!(
            err.contains(&format!("restore step {step} failed")) && err.contains("rolled back"),
            "{step}: {err}"
        );
        assert_eq!(s.api.replicas(NS, "kube-etcd"), 1, "{step}");
        assert!(
            s.restore_pods().is_empty(),
            "{step}: {:?}",
            s.restore_pods()
        );
        assert_eq!(s.volume_extras(), Vec::<String>::new(), "{step}");
        assert_eq!(
            served(&s.endpoint),
            s.changed,
            "{step}: the data is not the one before"
        );
        assert!(
            s.journal().is_null(),
            "{step}: journal left: {}",
            s.journal()
        );
    }
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn etcd_scaled_back_up_during_the_restore_stops_it_before_the_volume_is_touched() {
    let s = scene();
    // Something else manages the StatefulSet: it scales it back up as soon as the restore
    // pod appears, and etcd starts again on the volume.
    s.api.scale_up_on_next_pod(NS, "kube-etcd");
    let out = s.restore(&["--yes"], &[]);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("restore step stage failed")
            && err.contains("was scaled up again")
            && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 1);
    assert!(s.restore_pods().is_empty(), "{:?}", s.restore_pods());
    assert_eq!(s.volume_extras(), Vec::<String>::new());
    assert_eq!(
        served(&s.endpoint),
        s.changed,
        "the data is not the one before"
    );
    assert!(s.journal().is_null(), "journal left: {}", s.journal());
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_kubeconfig_without_the_verbs_is_refused_before_any_change() {
    let s = scene();
    let mut objects = readme_role();
    // The Role without the scale rule and without pod deletion.
    let rules = objects[0]["rules"].as_array_mut().unwrap();
    rules.retain(|r| r["resources"][0] != "statefulsets/scale");
    for r in rules.iter_mut() {
        if r["resources"][0] == "pods" {
            r["verbs"] = json!(["get", "create"]);
        }
    }
    s.api
        .enforce_rbac(Rbac::for_service_account("ops", "cpvault", &objects));
    let out = s.restore(&["--yes"], &[]);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = error_line(&out);
    assert_contains_all(
        &line,
        &[
            "patch statefulsets/scale.apps kube-etcd",
            "delete pods",
            "nothing was changed",
            "User-cluster restore",
        ],
    );
    assert!(
        s.changing_requests().is_empty(),
        "{:?}",
        s.changing_requests()
    );
    assert_eq!(served(&s.endpoint), s.changed);
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_distroless_image_names_what_the_restore_pod_needs_and_an_older_etcd_or_no_replica_is_refused()
{
    let s = scene();
    s.api.make_image_distroless(IMAGE);
    let out = s.restore(&["--yes"], &[]);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = error_line(&out);
    assert_contains_all(
        &line,
        &[
            "restore step restore-pod failed",
            "exec: \"sh\"",
            "--restore-pod-image",
            "rolled back",
        ],
    );
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 1);
    assert!(s.restore_pods().is_empty(), "{:?}", s.restore_pods());
    assert_eq!(s.volume_extras(), Vec::<String>::new());
    assert_eq!(served(&s.endpoint), s.changed);

    // An image with a shell, given for the restore pod, goes through.
    let tools = "registry.local/etcd-tools:v3.4.23";
    let out = s.restore(&["--yes", "--restore-pod-image", tools], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(served(&s.endpoint), s.at_backup);

    // A StatefulSet running an older etcd minor than the snapshot's is refused in preflight.
    let mut older = statefulset();
    older["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("gcr.io/gke-on-prem-release/etcd:v3.3.27-0-gke.0");
    s.api.add_statefulset(NS, older);
    let before = s.changing_requests().len();
    let out = s.restore(&["--yes"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_contains_all(&err, &["etcd 3.4 or newer", "3.3.27", "--force-version"]);
    assert_eq!(
        s.changing_requests().len(),
        before,
        "{:?}",
        s.changing_requests()
    );

    // Scaled to 0 already: scale-up would never bring etcd back; refused, naming the fix.
    let mut zero = statefulset();
    zero["spec"]["replicas"] = json!(0);
    s.api.add_statefulset(NS, zero);
    let out = s.restore(&["--yes"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("scaled to 0 replicas") && err.contains("--replicas=1"),
        "{err}"
    );
}
