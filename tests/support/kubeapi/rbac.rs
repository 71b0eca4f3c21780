//! RBAC for the test API server: decides, as the real API server's RBAC authorizer does,
//! whether the token's identity (a ServiceAccount) may make a request, from Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding objects as written in YAML manifests
//! (e.g. `deploy/kubernetes/rbac.yaml`). A request nothing allows is answered 403 with the
//! real `Forbidden` Status and message. It only decides; it never changes a stored object.
//!
//! Modelled: request attributes as the API server derives them (verb from method, name and
//! `watch`; resource, subresource, namespace from the path), apiGroups/resources/verbs with
//! `*`, resourceNames, RoleBindings granting a Role or a ClusterRole within their namespace,
//! ClusterRoleBindings granting a ClusterRole everywhere, ServiceAccount, User and the
//! `system:serviceaccounts[:NS]`/`system:authenticated` Group subjects, and discovery paths
//! (`/version`, `/api`, `/apis`) open to every authenticated user as the default
//! `system:discovery` binding makes them. A websocket exec (HTTP GET) needs `get` on
//! `pods/exec` and, as since Kubernetes 1.35 (`AuthorizePodWebsocketUpgradeCreatePermission`),
//! also `create`; an SPDY exec (POST) needs `create`. A port-forward (`pods/portforward`)
//! is authorized the same way. Not modelled: aggregated ClusterRoles,
//! non-resource URL rules, impersonation, other authorizers.

use serde_json::Value;

/// What a request asks to do, as the API server's request-info factory derives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// `None` for cluster-scoped resources and all-namespace lists.
    pub namespace: Option<String>,
    /// `""` for the core group.
    pub api_group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    /// "pods/exec" or "pods".
    fn full_resource(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// The message the real API server puts in its Forbidden Status.
    pub fn forbidden_message(&self, user: &str) -> String {
        let object = match &self.name {
            Some(n) => format!("{} \"{n}\"", self.resource),
            None => self.resource.clone(),
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        format!(
            "{object} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            self.verb,
            self.full_resource(),
            self.api_group
        )
    }
}

/// The attributes of a request, or `None` for a non-resource (discovery) path. A request
/// may need several checks (websocket exec: `get` and `create`), all of which must pass.
pub fn attributes(
    method: &str,
    segments: &[&str],
    query: &[(String, String)],
    websocket: bool,
) -> Option<Vec<Attributes>> {
    let (api_group, rest) = match segments {
        ["api", "v1", rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [] => return None,
        [r] => (*r, None, None),
        [r, n] => (*r, Some((*n).to_string()), None),
        [r, n, s, ..] => (*r, Some((*n).to_string()), Some((*s).to_string())),
    };
    let watch = query
        .iter()
        .any(|(k, v)| k == "watch" && matches!(v.as_str(), "1" | "true"));
    let verbs: Vec<&str> = match (method, &name) {
        ("GET", _)
            if matches!(subresource.as_deref(), Some("exec" | "portforward")) && websocket =>
        {
            vec!["get", "create"]
        }
        ("GET" | "HEAD", _) if watch => vec!["watch"],
        ("GET" | "HEAD", Some(_)) => vec!["get"],
        ("GET" | "HEAD", None) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", _) => vec!["patch"],
        ("DELETE", Some(_)) => vec!["delete"],
        ("DELETE", None) => vec!["deletecollection"],
        (other, _) => vec![other],
    };
    Some(
        verbs
            .into_iter()
            .map(|verb| Attributes {
                verb: verb.to_string(),
                namespace: namespace.clone(),
                api_group: api_group.clone(),
                resource: resource.to_string(),
                subresource: subresource.clone(),
                name: name.clone(),
            })
            .collect(),
    )
}

/// The RBAC objects in force and the ServiceAccount the server's token stands for.
#[derive(Debug, Clone)]
pub struct Rbac {
    namespace: String,
    name: String,
    objects: Vec<Value>,
}

impl Rbac {
    /// RBAC for the token of ServiceAccount `namespace/name`, from manifests' objects
    /// (anything that is not an RBAC kind is ignored, so whole manifest files can be given).
    pub fn for_service_account(namespace: &str, name: &str, objects: &[Value]) -> Rbac {
        let kinds = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];
        Rbac {
            namespace: namespace.into(),
            name: name.into(),
            objects: objects
                .iter()
                .filter(|o| {
                    o["apiVersion"] == "rbac.authorization.k8s.io/v1"
                        && kinds.iter().any(|k| o["kind"] == *k)
                })
                .cloned()
                .collect(),
        }
    }

    /// The user name the API server gives the ServiceAccount's token.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    fn subject_matches(&self, s: &Value) -> bool {
        let (kind, name) = (s["kind"].as_str(), s["name"].as_str());
        match (kind, name) {
            (Some("ServiceAccount"), Some(n)) => {
                n == self.name && s["namespace"].as_str() == Some(&self.namespace)
            }
            (Some("User"), Some(n)) => n == self.user(),
            (Some("Group"), Some(g)) => [
                "system:authenticated".to_string(),
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{}", self.namespace),
            ]
            .contains(&g.to_string()),
            _ => false,
        }
    }

    fn role(&self, kind: &str, name: &str, namespace: Option<&str>) -> Option<&Value> {
        self.objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && (kind == "ClusterRole" || o["metadata"]["namespace"].as_str() == namespace)
        })
    }

    /// Whether some binding of this identity grants a rule covering `a`.
    pub fn allows(&self, a: &Attributes) -> bool {
        self.objects.iter().any(|b| {
            let bound = b["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| self.subject_matches(s)));
            if !bound {
                return false;
            }
            let (ref_kind, ref_name) = (
                b["roleRef"]["kind"].as_str().unwrap_or(""),
                b["roleRef"]["name"].as_str().unwrap_or(""),
            );
            let role = match b["kind"].as_str() {
                // A RoleBinding grants only within its own namespace.
                Some("RoleBinding") => {
                    let ns = b["metadata"]["namespace"].as_str();
                    if a.namespace.as_deref() != ns || ns.is_none() {
                        return false;
                    }
                    self.role(ref_kind, ref_name, ns)
                }
                Some("ClusterRoleBinding") if ref_kind == "ClusterRole" => {
                    self.role("ClusterRole", ref_name, None)
                }
                _ => None,
            };
            role.and_then(|r| r["rules"].as_array())
                .is_some_and(|rules| rules.iter().any(|r| rule_covers(r, a)))
        })
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_covers(rule: &Value, a: &Attributes) -> bool {
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let verbs = strings(&rule["verbs"]);
    let names = strings(&rule["resourceNames"]);
    let full = a.full_resource();
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == full
            || (a.subresource.is_some() && *r == format!("*/{}", a.subresource.as_deref().unwrap()))
            || (a.subresource.is_some() && *r == format!("{}/*", a.resource))
    });
    groups.iter().any(|g| *g == "*" || *g == a.api_group)
        && resource_ok
        && verbs.iter().any(|v| *v == "*" || *v == a.verb)
        && (names.is_empty() || a.name.as_deref().is_some_and(|n| names.contains(&n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(watch: bool) -> Vec<(String, String)> {
        if watch {
            vec![("watch".into(), "true".into())]
        } else {
            vec![]
        }
    }

    #[test]
    fn attributes_are_derived_like_the_api_server() {
        let a = |m, p: &str, watch, ws| {
            let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            attributes(m, &segs, &q(watch), ws)
                .unwrap()
                .into_iter()
                .map(|a| {
                    format!(
                        "{} {} {:?} {:?}",
                        a.verb,
                        a.full_resource(),
                        a.namespace,
                        a.name
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            a("GET", "/api/v1/nodes", false, false),
            ["list nodes None None"]
        );
        assert_eq!(
            a(
                "GET",
                "/api/v1/namespaces/kube-system/secrets/sshkeys",
                false,
                false
            ),
            ["get secrets Some(\"kube-system\") Some(\"sshkeys\")"]
        );
        assert_eq!(
            a("GET", "/api/v1/namespaces/x/pods/p/exec", false, true),
            [
                "get pods/exec Some(\"x\") Some(\"p\")",
                "create pods/exec Some(\"x\") Some(\"p\")"
            ]
        );
        assert_eq!(
            a(
                "GET",
                "/api/v1/namespaces/x/pods/p/portforward",
                false,
                true
            ),
            [
                "get pods/portforward Some(\"x\") Some(\"p\")",
                "create pods/portforward Some(\"x\") Some(\"p\")"
            ]
        );
        assert_eq!(
            a("POST", "/api/v1/namespaces/x/pods/p/exec", false, false),
            ["create pods/exec Some(\"x\") Some(\"p\")"]
        );
        assert_eq!(
            a("GET", "/api/v1/pods", true, false),
            ["watch pods None None"]
        );
        assert_eq!(
            a("GET", "/apis/batch/v1/namespaces/x/cronjobs", false, false),
            ["list cronjobs Some(\"x\") None"]
        );
        assert!(attributes("GET", &["version"], &[], false).is_none());
    }

    #[test]
    fn bindings_grant_only_their_scope_and_names() {
        let objects = vec![
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "r", "namespace": "kube-system"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"],
                    "resourceNames": ["sshkeys"], "verbs": ["get"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "r", "namespace": "kube-system"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "app"}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "n"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}),
            // Bound to another account: grants this one nothing.
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "n"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "n"},
                "subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": "app"}]}),
        ];
        let rbac = Rbac::for_service_account("app", "sa", &objects);
        let get = |ns: &str, name: &str| Attributes {
            verb: "get".into(),
            namespace: Some(ns.into()),
            api_group: String::new(),
            resource: "secrets".into(),
            subresource: None,
            name: Some(name.into()),
        };
        assert!(rbac.allows(&get("kube-system", "sshkeys")));
        assert!(!rbac.allows(&get("kube-system", "admin-token")));
        assert!(!rbac.allows(&get("default", "sshkeys")));
        let nodes = Attributes {
            verb: "list".into(),
            namespace: None,
            api_group: String::new(),
            resource: "nodes".into(),
            subresource: None,
            name: None,
        };
        assert!(!rbac.allows(&nodes));
        assert_eq!(
            nodes.forbidden_message(&rbac.user()),
            "nodes is forbidden: User \"system:serviceaccount:app:sa\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
