//! How kube-apiserver names its etcd keys, read back: which resource a key belongs to and in
//! which namespace. The rule, applied to the key's `/`-separated segments after `/registry/`:
//! a first segment that contains a dot is an API group (every custom resource group has
//! one; core and built-in groups are stored without theirs) and the resource is the next
//! segment; `services/specs` and `services/endpoints` are the two built-in prefixes two
//! segments deep (services and endpoints). What remains is `<namespace>/<name>` when it is
//! two segments and `<name>` (cluster-scoped) when it is one; Kubernetes names never hold
//! `/`, so the count decides. Anything else — outside `/registry/`, or more segments — is
//! counted under "other", never guessed. Pure functions; nothing here reads a backup.

use serde::Serialize;

/// The prefix kube-apiserver stores under by default (`--etcd-prefix`).
pub const REGISTRY: &str = "/registry/";

/// Where a key belongs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Place {
    /// `resource` or `resource.group` (e.g. `pods`, `certificates.cert-manager.io`), or
    /// `(other)` for a key that does not follow the layout.
    pub resource: String,
    /// The namespace, `None` for cluster-scoped objects and other keys.
    pub namespace: Option<String>,
}

/// Label for keys outside the Kubernetes layout.
pub const OTHER: &str = "(other)";

/// The place of the etcd key `key`.
pub fn classify(key: &[u8]) -> Place {
    let other = || Place {
        resource: OTHER.into(),
        namespace: None,
    };
    let Some(rest) = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.strip_prefix(REGISTRY))
    else {
        return other();
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return other();
    }
    let (resource, tail) = match parts.as_slice() {
        [group, resource, tail @ ..] if group.contains('.') => {
            (format!("{resource}.{group}"), tail)
        }
        ["services", "specs", tail @ ..] => ("services".to_string(), tail),
        ["services", "endpoints", tail @ ..] => ("endpoints".to_string(), tail),
        [resource, tail @ ..] => ((*resource).to_string(), tail),
        [] => return other(),
    };
    match tail {
        [_name] => Place {
            resource,
            namespace: None,
        },
        [ns, _name] => Place {
            resource,
            namespace: Some((*ns).to_string()),
        },
        _ => other(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(key: &str) -> (String, Option<String>) {
        let p = classify(key.as_bytes());
        (p.resource, p.namespace)
    }

    #[test]
    fn the_kubernetes_layout_is_read_back() {
        let ns = |r: &str, n: &str| (r.to_string(), Some(n.to_string()));
        let cluster = |r: &str| (r.to_string(), None);
        assert_eq!(at("/registry/pods/default/web-1"), ns("pods", "default"));
        assert_eq!(at("/registry/minions/node-1"), cluster("minions"));
        assert_eq!(
            at("/registry/services/specs/default/kubernetes"),
            ns("services", "default")
        );
        assert_eq!(
            at("/registry/services/endpoints/kube-system/dns"),
            ns("endpoints", "kube-system")
        );
        assert_eq!(
            at("/registry/cert-manager.io/certificates/team-a/web"),
            ns("certificates.cert-manager.io", "team-a")
        );
        assert_eq!(
            at("/registry/apiextensions.k8s.io/customresourcedefinitions/certificates.cert-manager.io"),
            cluster("customresourcedefinitions.apiextensions.k8s.io")
        );
        assert_eq!(at("/registry/ranges/serviceips"), cluster("ranges"));
        for odd in [
            "compact_rev_key",
            "/registry/a/b/c/d",
            "/registry/pods//x",
            "/registry/",
            "/other/x",
        ] {
            assert_eq!(at(odd), cluster(OTHER), "{odd}");
        }
        assert_eq!(classify(&[0xff, 0xfe]).resource, OTHER);
    }
}
