//! Workloads in the test API server: StatefulSets with their `scale` subresource (GET, merge
//! PATCH, PUT) and status, whose controller makes pod `NAME-i` for each replica from the pod
//! template (claims from `volumeClaimTemplates` named `TEMPLATE-NAME-i`, as the real
//! controller names them) and deletes the pods above the replica count; pods created by POST
//! and deleted by DELETE, their processes run by [`super::pods`] (a StatefulSet's pod deleted
//! while its replicas cover it comes back as a new pod, unless the test holds that
//! controller); and
//! SelfSubjectAccessReviews answered from the RBAC in force. Only what a user-cluster restore
//! uses; no watch, no generations, no rolling updates.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::rbac::Attributes;
use super::rest::{bad_request, not_found, now, ok, status};
use super::{lock, pods, Body, Shared, State};

type Response = hyper::Response<Body>;

fn find<'a>(list: &'a mut [Value], ns: &str, name: &str) -> Option<&'a mut Value> {
    list.iter_mut()
        .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == ns)
}

pub(super) fn get_statefulset(state: &Shared, ns: &str, name: &str) -> Response {
    let mut st = lock(state);
    match find(&mut st.statefulsets, ns, name) {
        Some(s) => ok(s),
        None => not_found("statefulsets.apps", name),
    }
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// PATCH (merge) of `.../statefulsets/NAME`, e.g. its annotations.
pub(super) fn patch_statefulset(state: &Shared, ns: &str, name: &str, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body is not a JSON merge patch");
    };
    {
        let mut st = lock(state);
        st.resource_version += 1;
        let rv = st.resource_version.to_string();
        let Some(s) = find(&mut st.statefulsets, ns, name) else {
            return not_found("statefulsets.apps", name);
        };
        merge(s, &patch);
        s["metadata"]["resourceVersion"] = json!(rv);
    }
    reconcile(state, ns, name);
    get_statefulset(state, ns, name)
}

fn scale_of(s: &Value) -> Value {
    let replicas = s["spec"]["replicas"].clone();
    let selector: Vec<String> = (s["spec"]["selector"]["matchLabels"].as_object().into_iter())
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let m = &s["metadata"];
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": replicas},
        "status": {"replicas": s["status"]["replicas"], "selector": selector.join(",")}})
}

/// GET, PATCH (merge) or PUT of `.../statefulsets/NAME/scale`.
pub(super) fn scale(state: &Shared, method: &str, ns: &str, name: &str, body: &[u8]) -> Response {
    let replicas = if method == "GET" {
        None
    } else {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        match parsed.as_ref().and_then(|b| b["spec"]["replicas"].as_i64()) {
            Some(n) if n >= 0 => Some(n),
            _ => return bad_request("the body has no spec.replicas >= 0"),
        }
    };
    {
        let mut st = lock(state);
        let Some(s) = find(&mut st.statefulsets, ns, name) else {
            return not_found("statefulsets.apps", name);
        };
        let Some(n) = replicas else {
            return ok(&scale_of(s));
        };
        s["spec"]["replicas"] = json!(n);
    }
    reconcile(state, ns, name);
    let mut st = lock(state);
    let s = find(&mut st.statefulsets, ns, name).expect("still there");
    ok(&scale_of(s))
}

/// Adds (or replaces) a StatefulSet and lets its controller act.
pub(super) fn add_statefulset(state: &Shared, ns: &str, mut sts: Value) {
    let name = sts["metadata"]["name"].as_str().unwrap().to_string();
    {
        let mut st = lock(state);
        let labels: Vec<(&str, &str)> = vec![];
        let meta = st.metadata(Some(ns), &name, &labels);
        for (k, v) in meta.as_object().unwrap() {
            sts["metadata"][k] = v.clone();
        }
        sts["kind"] = json!("StatefulSet");
        sts["apiVersion"] = json!("apps/v1");
        st.statefulsets
            .retain(|o| !(o["metadata"]["name"] == *name && o["metadata"]["namespace"] == ns));
        st.statefulsets.push(sts);
    }
    reconcile(state, ns, &name);
}

/// The controller of a pod `pod` was owned by, once that pod is gone: a StatefulSet makes a
/// new one (another uid, Ready at once) if its replicas still cover it, as the real one does.
pub(super) fn pod_gone(state: &Shared, pod: &Value) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let owners = (pod["metadata"]["ownerReferences"].as_array().into_iter()).flatten();
    for o in owners.filter(|o| o["kind"] == "StatefulSet" && o["controller"] == true) {
        let name = o["name"].as_str().unwrap_or_default();
        let held = (lock(state).held.iter()).any(|(n, s)| n == ns && s == name);
        if !held && find(&mut lock(state).statefulsets, ns, name).is_some() {
            reconcile(state, ns, name);
        }
    }
}

/// The controller: a pod per replica, none above; the status counts them.
fn reconcile(state: &Shared, ns: &str, name: &str) {
    let (want, sts) = {
        let mut st = lock(state);
        let s = find(&mut st.statefulsets, ns, name).expect("stored");
        (s["spec"]["replicas"].as_i64().unwrap_or(1), s.clone())
    };
    let ordinal = |p: &Value| -> Option<i64> {
        let n = p["metadata"]["name"].as_str()?;
        n.strip_prefix(&format!("{name}-"))?.parse().ok()
    };
    let extra: Vec<String> = lock(state)
        .pods
        .iter()
        .filter(|p| p["metadata"]["namespace"] == ns)
        .filter(|p| ordinal(p).is_some_and(|i| i >= want))
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    for pod in extra {
        pods::delete_later(state, ns, &pod);
    }
    let mut st = lock(state);
    for i in 0..want {
        let pod_name = format!("{name}-{i}");
        if find(&mut st.pods, ns, &pod_name).is_none() {
            let pod = from_template(&mut st, ns, &sts, &pod_name);
            st.pods.push(pod.clone());
            pods::start(&mut st, &pod);
        }
    }
    let s = find(&mut st.statefulsets, ns, name).expect("stored");
    s["status"] = json!({"replicas": want, "readyReplicas": want, "currentReplicas": want,
        "availableReplicas": want, "updatedReplicas": want, "observedGeneration": 1});
}

fn from_template(st: &mut State, ns: &str, sts: &Value, pod_name: &str) -> Value {
    let t = &sts["spec"]["template"];
    let labels: Vec<(String, String)> = (t["metadata"]["labels"].as_object().into_iter())
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut metadata = st.metadata(Some(ns), pod_name, &labels);
    // As the real controller marks its pods: what brings one back once it is deleted.
    metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet",
        "name": sts["metadata"]["name"], "uid": sts["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true}]);
    let mut spec = t["spec"].clone();
    let claims = (sts["spec"]["volumeClaimTemplates"].as_array().into_iter()).flatten();
    let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for c in claims {
        let tmpl = c["metadata"]["name"].as_str().unwrap_or_default();
        volumes.push(json!({"name": tmpl,
            "persistentVolumeClaim": {"claimName": format!("{tmpl}-{pod_name}")}}));
    }
    spec["volumes"] = json!(volumes);
    running(json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec}))
}

/// The pod as the kubelet reports it once its containers run: Running and Ready.
fn running(mut pod: Value) -> Value {
    let now = now();
    pod["spec"]["hostNetwork"] = json!(true);
    let statuses: Vec<Value> = (pod["spec"]["containers"].as_array().into_iter().flatten())
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "",
            "ready": true, "started": true, "restartCount": 0,
            "state": {"running": {"startedAt": now}}})
        })
        .collect();
    pod["status"] = json!({"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "startTime": now, "containerStatuses": statuses,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]});
    pod
}

/// POST `.../namespaces/NS/pods`.
pub(super) fn create_pod(state: &Shared, ns: &str, body: &[u8]) -> Response {
    let Ok(mut pod) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body is not a Pod");
    };
    let Some(name) = pod["metadata"]["name"].as_str().map(String::from) else {
        return bad_request("metadata.name is required");
    };
    let mut st = lock(state);
    if find(&mut st.pods, ns, &name).is_some() {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("pods \"{name}\" already exists"),
            Some(json!({"name": name, "kind": "pods"})),
        );
    }
    let labels: Vec<(String, String)> = (pod["metadata"]["labels"].as_object().into_iter())
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pod["metadata"] = st.metadata(Some(ns), &name, &labels);
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    let pod = running(pod);
    st.pods.push(pod.clone());
    pods::start(&mut st, &pod);
    let rescale = st.scale_up_on_pod.take();
    drop(st);
    if let Some((sns, sts)) = rescale {
        if let Some(s) = find(&mut lock(state).statefulsets, &sns, &sts) {
            s["spec"]["replicas"] = json!(1);
        }
        reconcile(state, &sns, &sts);
    }
    let mut r = ok(&pod);
    *r.status_mut() = StatusCode::CREATED;
    r
}

/// DELETE `.../namespaces/NS/pods/NAME`: answers with the terminating pod.
pub(super) fn delete_pod(state: &Shared, ns: &str, name: &str) -> Response {
    match pods::delete_later(state, ns, name) {
        Some(pod) => ok(&pod),
        None => not_found("pods", name),
    }
}

/// POST `/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: allowed when no RBAC is
/// enforced (an admin kubeconfig) or when it allows the attributes.
pub(super) fn access_review(state: &Shared, body: &[u8]) -> Response {
    let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body is not a SelfSubjectAccessReview");
    };
    let a = &review["spec"]["resourceAttributes"];
    let text = |k: &str| a[k].as_str().filter(|s| !s.is_empty()).map(String::from);
    let attributes = Attributes {
        verb: text("verb").unwrap_or_default(),
        namespace: text("namespace"),
        api_group: text("group").unwrap_or_default(),
        resource: text("resource").unwrap_or_default(),
        subresource: text("subresource"),
        name: text("name"),
    };
    let allowed = lock(state)
        .rbac
        .as_ref()
        .is_none_or(|r| r.allows(&attributes));
    review["status"] = json!({"allowed": allowed});
    review["metadata"] = json!({"creationTimestamp": null});
    let mut r = ok(&review);
    *r.status_mut() = StatusCode::CREATED;
    r
}
