//! Objects encoded with k8s-pb (prost types generated from Kubernetes' own .proto files, the
//! encoding kube-apiserver writes), decoded, and compared with the JSON the API prints for
//! them; each result must also survive k8s-openapi's typed round trip unchanged (a field name
//! the API does not know, or a value of the wrong JSON type, would not).

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde::{de::DeserializeOwned, Serialize};

use super::*;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn envelope<'a>(api_version: &str, kind: &str, raw: &'a [u8]) -> Envelope<'a> {
    Envelope {
        api_version: api_version.into(),
        kind: kind.into(),
        raw,
        content_encoding: String::new(),
    }
}

/// `j` is exactly what k8s-openapi's `T` reads and writes back.
fn typed_round_trip<T: DeserializeOwned + Serialize>(j: &Json) {
    let typed: T = serde_json::from_value(j.clone()).expect("the API's types read it");
    assert_eq!(&serde_json::to_value(typed).unwrap(), j);
}

fn port(p: IntOrString) -> Option<IntOrString> {
    Some(p)
}

fn deployment() -> apps::Deployment {
    let container = core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        ports: vec![core::ContainerPort {
            name: s("http"),
            container_port: Some(8080),
            protocol: s("TCP"),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: s("TOKEN"),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: s("creds") }),
                    key: s("token"),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("cpu".to_string(), Quantity { string: s("500m") })].into(),
            requests: [("memory".to_string(), Quantity { string: s("128Mi") })].into(),
            ..Default::default()
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: port(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: s("http"),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(10),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                tcp_socket: Some(core::TcpSocketAction {
                    port: port(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            namespace: s("shop"),
            uid: s("6f1c7a52-0000-4000-8000-000000000001"),
            resource_version: s("4711"),
            generation: Some(3),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_764_000_000),
                nanos: Some(0),
            }),
            labels: [("app".to_string(), "web".to_string())].into(),
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("apps/v1"),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:spec":{"f:replicas":{}}}"#.to_vec()),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    volumes: vec![core::Volume {
                        name: s("conf"),
                        volume_source: Some(core::VolumeSource {
                            config_map: Some(core::ConfigMapVolumeSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: s("web-conf"),
                                }),
                                default_mode: Some(0o644),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: port(IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: None,
                    }),
                    max_surge: port(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: s("25%"),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(3),
            conditions: vec![apps::DeploymentCondition {
                r#type: s("Available"),
                status: s("True"),
                last_transition_time: Some(meta::Time {
                    seconds: Some(1_764_000_100),
                    nanos: Some(0),
                }),
                reason: s("MinimumReplicasAvailable"),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

#[test]
fn a_deployment_written_as_kube_apiserver_writes_it_comes_back_as_the_apis_json() {
    let raw = deployment().encode_to_vec();
    let d = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
    assert_eq!(d.unknown_fields, 0);
    let expected = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "shop", "uid": "6f1c7a52-0000-4000-8000-000000000001",
            "resourceVersion": "4711", "generation": 3,
            "creationTimestamp": "2025-11-24T16:00:00Z",
            "labels": {"app": "web"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web", "image": "nginx:1.27",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef":
                            {"name": "creds", "key": "token", "optional": false}}}],
                        "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "128Mi"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                            "periodSeconds": 10},
                        "readinessProbe": {"tcpSocket": {"port": 8080}}
                    }],
                    "volumes": [{"name": "conf",
                        "configMap": {"name": "web-conf", "defaultMode": 420}}]
                }
            }
        },
        "status": {
            "observedGeneration": 3,
            "conditions": [{"type": "Available", "status": "True",
                "lastTransitionTime": "2025-11-24T16:01:40Z", "reason": "MinimumReplicasAvailable"}]
        }
    });
    assert_eq!(d.json, expected);
    typed_round_trip::<k8s_openapi::api::apps::v1::Deployment>(&d.json);
}

#[test]
fn a_custom_resource_definitions_schema_unions_and_raw_json_decode() {
    let props = |ty: &str| ext::JsonSchemaProps {
        r#type: s(ty),
        ..Default::default()
    };
    let crd = ext::CustomResourceDefinition {
        metadata: Some(meta::ObjectMeta {
            name: s("widgets.example.com"),
            ..Default::default()
        }),
        spec: Some(ext::CustomResourceDefinitionSpec {
            group: s("example.com"),
            names: Some(ext::CustomResourceDefinitionNames {
                plural: s("widgets"),
                kind: s("Widget"),
                ..Default::default()
            }),
            scope: s("Namespaced"),
            versions: vec![ext::CustomResourceDefinitionVersion {
                name: s("v1"),
                served: Some(true),
                storage: Some(true),
                schema: Some(ext::CustomResourceValidation {
                    open_apiv3_schema: Some(ext::JsonSchemaProps {
                        r#type: s("object"),
                        properties: [
                            (
                                "size".to_string(),
                                ext::JsonSchemaProps {
                                    x_kubernetes_int_or_string: Some(true),
                                    default: Some(ext::Json {
                                        raw: Some(b"\"1Gi\"".to_vec()),
                                    }),
                                    ..Default::default()
                                },
                            ),
                            (
                                "tags".to_string(),
                                ext::JsonSchemaProps {
                                    r#type: s("array"),
                                    items: Some(Box::new(ext::JsonSchemaPropsOrArray {
                                        schema: Some(Box::new(props("string"))),
                                        j_son_schemas: vec![],
                                    })),
                                    ..Default::default()
                                },
                            ),
                            (
                                "extra".to_string(),
                                ext::JsonSchemaProps {
                                    r#type: s("object"),
                                    additional_properties: Some(Box::new(
                                        ext::JsonSchemaPropsOrBool {
                                            allows: Some(true),
                                            schema: None,
                                        },
                                    )),
                                    ..Default::default()
                                },
                            ),
                        ]
                        .into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let raw = crd.encode_to_vec();
    let e = envelope("apiextensions.k8s.io/v1", "CustomResourceDefinition", &raw);
    let j = to_json(&e).unwrap();
    assert_eq!(
        j["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        json!({"type": "object", "properties": {
            "size": {"x-kubernetes-int-or-string": true, "default": "1Gi"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object", "additionalProperties": true}
        }})
    );
    assert_eq!(
        j["spec"]["names"],
        json!({"plural": "widgets", "kind": "Widget"})
    );
    typed_round_trip::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >(&j);
}

#[test]
fn secrets_and_configmaps_keep_bytes_as_base64_and_empty_optional_strings_out() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("creds"),
            namespace: s("shop"),
            // kube-apiserver writes Go's non-pointer strings even when empty.
            generate_name: s(""),
            ..Default::default()
        }),
        data: [("token".to_string(), vec![0, 1, 2, 255])].into(),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let raw = secret.encode_to_vec();
    let j = to_json(&envelope("v1", "Secret", &raw)).unwrap();
    assert_eq!(
        j,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "creds", "namespace": "shop"},
            "data": {"token": "AAEC/w=="}})
    );
    typed_round_trip::<k8s_openapi::api::core::v1::Secret>(&j);
}

#[test]
fn fields_the_table_does_not_know_are_counted_and_left_out_and_broken_values_refused() {
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("app"),
            ..Default::default()
        }),
        data: [("a".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let mut raw = cm.encode_to_vec();
    raw.extend([0x9a, 0x06, 3, b'n', b'e', b'w']); // field 99: a newer Kubernetes
    let d = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(d.unknown_fields, 1);
    assert_eq!(d.json["data"], json!({"a": "1"}));
    assert_eq!(to_json(&envelope("v1", "NoSuchKind", &raw)), None);
    assert_eq!(
        to_json(&envelope("v1", "ConfigMap", &raw[..raw.len() - 2])),
        None
    );
    let encoded = Envelope {
        content_encoding: "gzip".into(),
        ..envelope("v1", "ConfigMap", &raw)
    };
    assert_eq!(to_json(&encoded), None);
}

/// JSONSchemaProps nested `levels` deep through `not` (field 28).
fn nested_schema(levels: usize) -> Vec<u8> {
    let mut b: Vec<u8> = vec![];
    for _ in 0..levels {
        let mut outer = vec![0xe2, 0x01]; // tag 28, wire type 2
        let mut n = b.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                outer.push(byte);
                break;
            }
            outer.push(byte | 0x80);
        }
        outer.extend_from_slice(&b);
        b = outer;
    }
    b
}

#[test]
fn nesting_past_the_bound_is_refused_without_exhausting_the_stack() {
    const PROPS: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps";
    let mut d = Decoder { unknown: 0 };
    let mut at = d.message(PROPS, &nested_schema(40), 0).unwrap();
    for _ in 0..40 {
        at = at["not"].clone();
    }
    assert_eq!(at, json!({}), "40 levels are within the bound");
    assert_eq!(d.message(PROPS, &nested_schema(10_000), 0), None);
}

#[test]
fn times_and_durations_print_as_go_does() {
    let t = meta::MicroTime {
        seconds: Some(1_764_000_000),
        nanos: Some(123_456_000),
    }
    .encode_to_vec();
    let mut d = Decoder { unknown: 0 };
    assert_eq!(
        d.message("apimachinery.pkg.apis.meta.v1.MicroTime", &t, 0),
        Some(json!("2025-11-24T16:00:00.123456Z"))
    );
    assert_eq!(
        d.message("apimachinery.pkg.apis.meta.v1.Time", &[], 0),
        Some(Json::Null)
    );
    for (ns, go) in [
        (0, "0s"),
        (1_500, "1.5µs"),
        (150_000_000, "150ms"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(ns), go, "{ns}");
    }
}

proptest::proptest! {
    /// Values from a hostile store: any bytes, as any kind, decode or are refused, never panic.
    #[test]
    fn any_bytes_as_any_kind_never_panic(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        kind in 0usize..6,
    ) {
        let (v, k) = [
            ("apps/v1", "Deployment"),
            ("v1", "Pod"),
            ("v1", "Secret"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            ("v1", "Event"),
            ("batch/v1", "CronJob"),
        ][kind];
        let _ = decode(&envelope(v, k, &raw));
    }

    /// A real object with one byte changed: the same.
    #[test]
    fn a_mutated_deployment_never_panics(at in 0usize..4096, byte in proptest::prelude::any::<u8>()) {
        let mut raw = deployment().encode_to_vec();
        let i = at % raw.len();
        raw[i] = byte;
        let _ = decode(&envelope("apps/v1", "Deployment", &raw));
    }
}
