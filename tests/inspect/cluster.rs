//! The cluster the inspect tests write: a real etcd driven through etcd-client, the keys
//! written kept as a model, and values shaped like kube-apiserver's (JSON ConfigMaps,
//! protobuf Secrets with apiserver field numbers, other kinds as bare envelopes).

use std::collections::BTreeMap;

use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions};

use crate::support::*;

/// The keys of the cluster as written: key → value.
pub(super) type Model = BTreeMap<String, Vec<u8>>;

/// What etcd serves: key → (value, mod revision, create revision, version).
pub(super) type Served = BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64)>;

/// A protobuf length-delimited field.
pub(super) fn field(n: u8, v: &[u8]) -> Vec<u8> {
    let mut out = vec![n << 3 | 2];
    let mut len = v.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(v);
    out
}

/// A protobuf varint field.
pub(super) fn number(n: u8, mut v: u64) -> Vec<u8> {
    let mut out = vec![n << 3];
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A protobuf map entry `{key=1, value=2}` as field `n`.
pub(super) fn map_entry(n: u8, k: &str, v: &[u8]) -> Vec<u8> {
    let mut e = field(1, k.as_bytes());
    e.extend(field(2, v));
    field(n, &e)
}

/// A core/v1 Secret as kube-apiserver stores it, field numbers from k8s.io/api core/v1
/// and apimachinery meta/v1 generated.proto, and the JSON the API serves for it.
pub(super) fn secret(ns: &str, name: &str, i: usize) -> (Vec<u8>, serde_json::Value) {
    secret_with(ns, name, i, &[])
}

/// As [`secret`], with `extra` protobuf fields appended to the Secret (fields a newer
/// Kubernetes might write).
fn secret_with(ns: &str, name: &str, i: usize, extra: &[u8]) -> (Vec<u8>, serde_json::Value) {
    let created = 1_764_000_000 + i as u64;
    let mut meta = field(1, name.as_bytes());
    meta.extend(field(3, ns.as_bytes()));
    meta.extend(field(5, format!("uid-{ns}-{i}").as_bytes()));
    meta.extend(field(8, &number(1, created)));
    meta.extend(map_entry(11, "app", b"web"));
    let token = format!("token {ns} {i}\0\u{1}binary");
    let mut body = field(1, &meta);
    body.extend(map_entry(2, "token", token.as_bytes()));
    body.extend(field(3, b"Opaque"));
    body.extend_from_slice(extra);
    let stamp = chrono::DateTime::from_timestamp(created as i64, 0).unwrap();
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{i}"),
            "creationTimestamp": stamp.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "labels": {"app": "web"}},
        "data": {"token": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, token.as_bytes())},
        "type": "Opaque",
    });
    (protobuf("v1", "Secret", &body), json)
}

/// A kube-apiserver protobuf value: `k8s\0` and a runtime.Unknown naming apiVersion/kind.
pub(super) fn protobuf(api_version: &str, kind: &str, body: &[u8]) -> Vec<u8> {
    let mut type_meta = field(1, api_version.as_bytes());
    type_meta.extend(field(2, kind.as_bytes()));
    let mut v = b"k8s\0".to_vec();
    v.extend(field(1, &type_meta));
    v.extend(field(2, body));
    v
}

pub(super) fn secret_json(ns: &str, name: &str, i: usize) -> serde_json::Value {
    secret(ns, name, i).1
}

pub(super) fn configmap(ns: &str, name: &str, data: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "7"},
        "data": {"k": data},
    }))
    .unwrap()
}

pub(super) struct Cluster {
    pub(super) etcd: Etcd,
    rt: tokio::runtime::Runtime,
    client: Client,
    pub(super) model: Model,
}

impl Cluster {
    pub(super) fn start() -> Cluster {
        let etcd = Etcd::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(Client::connect([etcd.endpoint.as_str()], None))
            .unwrap();
        Cluster {
            etcd,
            rt,
            client,
            model: Model::new(),
        }
    }

    pub(super) fn put(&mut self, k: &str, v: Vec<u8>) {
        self.rt
            .block_on(self.client.put(k, v.clone(), None))
            .unwrap();
        self.model.insert(k.to_string(), v);
    }

    pub(super) fn delete_prefix(&mut self, p: &str) {
        let opts = DeleteOptions::new().with_prefix();
        self.rt.block_on(self.client.delete(p, Some(opts))).unwrap();
        self.model.retain(|k, _| !k.starts_with(p));
    }

    pub(super) fn compact_now(&mut self) -> i64 {
        let rev = self.revision();
        let opts = CompactionOptions::new().with_physical();
        self.rt
            .block_on(self.client.compact(rev, Some(opts)))
            .unwrap();
        rev
    }

    pub(super) fn revision(&mut self) -> i64 {
        let r = self.rt.block_on(self.client.get("x", None)).unwrap();
        r.header().unwrap().revision()
    }

    /// Every live key as etcd serves it: key → (value, mod, create, version); and the revision.
    pub(super) fn served(&mut self) -> (Served, i64) {
        let r = self
            .rt
            .block_on(self.client.get("", Some(GetOptions::new().with_all_keys())))
            .unwrap();
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    (
                        kv.value().to_vec(),
                        kv.mod_revision(),
                        kv.create_revision(),
                        kv.version(),
                    ),
                )
            })
            .collect();
        (kvs, r.header().unwrap().revision())
    }
}

/// The first state: 3 namespaces × configmaps (JSON) and secrets (protobuf), pods, nodes,
/// a CRD-backed resource, a value over a page, and history (overwrites and deletes).
pub(super) fn first_state(c: &mut Cluster) {
    for ns in ["default", "team-a", "team-b"] {
        for i in 0..120 {
            c.put(
                &format!("/registry/configmaps/{ns}/cm-{i:03}"),
                configmap(ns, &format!("cm-{i:03}"), &format!("v{i}")),
            );
            c.put(
                &format!("/registry/secrets/{ns}/s-{i:03}"),
                secret(ns, &format!("s-{i:03}"), i).0,
            );
        }
        c.put(
            &format!("/registry/cert-manager.io/certificates/{ns}/web"),
            br#"{"apiVersion":"cert-manager.io/v1","kind":"Certificate","metadata":{"name":"web"}}"#.to_vec(),
        );
    }
    for i in 0..5 {
        c.put(
            &format!("/registry/minions/node-{i}"),
            protobuf("v1", "Node", b"n"),
        );
    }
    c.put(
        "/registry/configmaps/default/big",
        configmap("default", "big", &"x".repeat(20_000)),
    );
    c.put("/registry/pods/team-a/p", protobuf("v1", "Pod", b"p"));
    c.put("compact_rev_key", b"3".to_vec());
    for i in 0..40 {
        c.put(
            &format!("/registry/configmaps/default/cm-{i:03}"),
            configmap("default", &format!("cm-{i:03}"), "overwritten"),
        );
    }
    c.delete_prefix("/registry/configmaps/team-a/cm-01");
}

/// The second state: a namespace deleted, keys updated and added, one key deleted and put back.
pub(super) fn second_state(c: &mut Cluster) {
    c.delete_prefix("/registry/secrets/team-b/");
    c.delete_prefix("/registry/configmaps/team-b/");
    c.delete_prefix("/registry/cert-manager.io/certificates/team-b/");
    c.put(
        "/registry/configmaps/default/cm-100",
        configmap("default", "cm-100", "changed"),
    );
    c.put("/registry/pods/team-a/q", protobuf("v1", "Pod", b"q"));
    c.put(
        "/registry/clusterroles/admin",
        protobuf("rbac.authorization.k8s.io/v1", "ClusterRole", b"r"),
    );
    c.delete_prefix("/registry/pods/team-a/p");
    c.put("/registry/pods/team-a/p", protobuf("v1", "Pod", b"p"));
    c.put("/registry/deployments/shop/web", deployment().0);
    // Two Secrets as a newer Kubernetes might write them: a field (15) the 1.33 table lacks.
    for i in 0..2 {
        let name = format!("s-{i}");
        let newer = field(15, b"from a newer apiserver");
        c.put(
            &format!("/registry/secrets/future/{name}"),
            secret_with("future", &name, i, &newer).0,
        );
    }
}

/// An apps/v1 Deployment encoded with k8s-pb (the prost types generated from Kubernetes' own
/// .proto files) as kube-apiserver stores it, and the JSON the API serves for it.
pub(super) fn deployment() -> (Vec<u8>, serde_json::Value) {
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message as _;
    let s = |v: &str| Some(v.to_string());
    let labels = || [("app".to_string(), "web".to_string())].into();
    let d = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            namespace: s("shop"),
            uid: s("uid-web"),
            resource_version: s(""),
            generation: Some(2),
            labels: labels(),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: labels(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: labels(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("web"),
                        image: s("nginx:1.27"),
                        ports: vec![core::ContainerPort {
                            container_port: Some(8080),
                            protocol: s("TCP"),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("25%"),
                    }),
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: s(""),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let json = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "generation": 2,
            "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}}},
    });
    (protobuf("apps/v1", "Deployment", &d.encode_to_vec()), json)
}
