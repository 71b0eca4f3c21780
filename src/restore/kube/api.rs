//! The admin cluster's API as the user-cluster restore uses it: the etcd StatefulSet and its
//! scale, the restore pod, exec (with stdin) into pods, readiness, and the access review that
//! tells in preflight whether the kubeconfig may do all of it. Talks to the API and reports
//! what it said, one line each; it decides nothing about the restore's order.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::io::AsyncWriteExt;

pub use crate::sources::kube::{finish, Ran};

const POLL: Duration = Duration::from_millis(500);

/// One line for an API error.
pub fn api_err(what: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{what}: {} ({} {})", s.message, s.code, s.reason),
        other => format!("{what}: {other}"),
    }
}

/// What may be done, as an access review asks it: (verb, API group, resource, subresource,
/// name).
pub type Check<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// The namespace's objects the restore touches.
pub struct UserApi {
    client: Client,
    namespace: String,
}

impl UserApi {
    /// The API of `namespace` through `client`.
    pub fn new(client: Client, namespace: &str) -> UserApi {
        UserApi {
            client,
            namespace: namespace.into(),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn sets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The StatefulSet, or `None` when there is none of that name.
    ///
    /// # Errors
    /// The API's refusal, on one line.
    pub async fn statefulset(&self, name: &str) -> Result<Option<StatefulSet>, String> {
        let what = format!("reading statefulset {}/{name}", self.namespace);
        self.sets()
            .get_opt(name)
            .await
            .map_err(|e| api_err(&what, &e))
    }

    /// Which of `checks` (verb, API group, resource, subresource, name) the kubeconfig's user
    /// may not do in the namespace, as `verb resource[/sub] [name]`.
    ///
    /// # Errors
    /// The access review itself failed.
    pub async fn denied(&self, checks: &[Check<'_>]) -> Result<Vec<String>, String> {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let mut denied = vec![];
        for (verb, group, resource, sub, name) in checks {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(self.namespace.clone()),
                        verb: Some((*verb).into()),
                        group: Some((*group).into()),
                        resource: Some((*resource).into()),
                        subresource: sub.map(String::from),
                        name: name.map(String::from),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| api_err("asking the API server what the kubeconfig may do (a SelfSubjectAccessReview)", &e))?;
            if !answer.status.is_some_and(|s| s.allowed) {
                let full = match sub {
                    Some(s) => format!("{resource}/{s}"),
                    None => (*resource).to_string(),
                };
                let full = if group.is_empty() {
                    full
                } else {
                    format!("{full}.{group}")
                };
                denied.push(match name {
                    Some(n) => format!("{verb} {full} {n}"),
                    None => format!("{verb} {full}"),
                });
            }
        }
        Ok(denied)
    }

    /// Sets the StatefulSet's replicas through its scale subresource.
    ///
    /// # Errors
    /// The API's answer, on one line.
    pub async fn scale(&self, statefulset: &str, replicas: i32) -> Result<(), String> {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.sets()
            .patch_scale(statefulset, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| {
                api_err(
                    &format!(
                        "scaling statefulset {}/{statefulset} to {replicas}",
                        self.namespace
                    ),
                    &e,
                )
            })
    }

    /// Sets (or, with `None`, removes) an annotation on the StatefulSet.
    ///
    /// # Errors
    /// The API's answer, on one line.
    pub async fn annotate(
        &self,
        statefulset: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), String> {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.sets()
            .patch(statefulset, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| {
                api_err(
                    &format!("annotating statefulset {}/{statefulset}", self.namespace),
                    &e,
                )
            })
    }

    /// Waits until `pod` is gone.
    ///
    /// # Errors
    /// A timeout or an API error.
    pub async fn wait_gone(&self, pod: &str, seconds: u64) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(seconds);
        loop {
            match self.pods().get_opt(pod).await {
                Ok(None) => return Ok(()),
                Ok(Some(_)) if Instant::now() < end => tokio::time::sleep(POLL).await,
                Ok(Some(_)) => {
                    return Err(format!(
                        "timed out after {seconds}s waiting until pod {}/{pod} is gone",
                        self.namespace
                    ))
                }
                Err(e) => {
                    return Err(api_err(
                        &format!("reading pod {}/{pod}", self.namespace),
                        &e,
                    ))
                }
            }
        }
    }

    /// Waits until `pod` is Ready (Running, its Ready condition True).
    ///
    /// # Errors
    /// A timeout (naming its phase), a pod that failed, or an API error.
    pub async fn wait_ready(&self, pod: &str, seconds: u64) -> Result<(), String> {
        self.wait_ready_other_than(pod, None, seconds).await
    }

    /// The uid of `pod`, or `None` when there is none of that name.
    ///
    /// # Errors
    /// The API's answer, on one line.
    pub async fn pod_uid(&self, pod: &str) -> Result<Option<String>, String> {
        let p = (self.pods().get_opt(pod).await)
            .map_err(|e| api_err(&format!("reading pod {}/{pod}", self.namespace), &e))?;
        Ok(p.map(|p| p.metadata.uid.unwrap_or_default()))
    }

    /// Waits until a pod named `pod` whose uid is not `old_uid` (its controller's new one) is
    /// Ready; the old one, terminating or not, never counts.
    ///
    /// # Errors
    /// As [`UserApi::wait_ready`].
    pub async fn wait_replaced(
        &self,
        pod: &str,
        old_uid: &str,
        seconds: u64,
    ) -> Result<(), String> {
        self.wait_ready_other_than(pod, Some(old_uid), seconds)
            .await
    }

    async fn wait_ready_other_than(
        &self,
        pod: &str,
        old_uid: Option<&str>,
        seconds: u64,
    ) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut last;
        loop {
            match self.pods().get_opt(pod).await {
                Ok(Some(p)) if old_uid.is_some() && p.metadata.uid.as_deref() == old_uid => {
                    last = "the old pod is still there, no new one yet".into();
                }
                Ok(Some(p)) => {
                    let status = p.status.unwrap_or_default();
                    let problem = container_problem(&status);
                    let phase = status.phase.clone().unwrap_or_default();
                    if matches!(phase.as_str(), "Failed" | "Succeeded") || problem.is_some() {
                        return Err(format!(
                            "pod {}/{pod} does not run ({phase}{})",
                            self.namespace,
                            problem.map(|p| format!("; {p}")).unwrap_or_default()
                        ));
                    }
                    let ready = (status.conditions.iter().flatten())
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if phase == "Running" && ready && p.metadata.deletion_timestamp.is_none() {
                        return Ok(());
                    }
                    last = format!("phase {phase}, not Ready");
                }
                Ok(None) => last = "not there".into(),
                Err(e) => {
                    return Err(api_err(
                        &format!("reading pod {}/{pod}", self.namespace),
                        &e,
                    ))
                }
            }
            if Instant::now() >= end {
                return Err(format!(
                    "timed out after {seconds}s waiting until pod {}/{pod} is Ready ({last})",
                    self.namespace
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates `pod` (a Pod object as JSON).
    ///
    /// # Errors
    /// The API's answer, on one line.
    pub async fn create_pod(&self, pod: &serde_json::Value) -> Result<(), String> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let what = format!("creating pod {}/{name}", self.namespace);
        let pod: Pod = serde_json::from_value(pod.clone()).map_err(|e| format!("{what}: {e}"))?;
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .map(|_| ())
            .map_err(|e| api_err(&what, &e))
    }

    /// Deletes `pod`; one that is already gone is fine.
    ///
    /// # Errors
    /// The API's answer, on one line.
    pub async fn delete_pod(&self, pod: &str) -> Result<(), String> {
        match self.pods().delete(pod, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err(
                &format!("deleting pod {}/{pod}", self.namespace),
                &e,
            )),
        }
    }

    /// Starts `argv` in `container` of `pod` with stdin open; the caller writes it, drops it,
    /// then [`finish`]es.
    ///
    /// # Errors
    /// The API's refusal, on one line.
    pub async fn exec(
        &self,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        stdin: bool,
    ) -> Result<kube::api::AttachedProcess, String> {
        let mut ap = AttachParams::default()
            .stdin(stdin)
            .stdout(true)
            .stderr(true);
        if let Some(c) = container {
            ap = ap.container(c);
        }
        self.pods()
            .exec(pod, argv.to_vec(), &ap)
            .await
            .map_err(|e| api_err(&format!("exec in pod {}/{pod}", self.namespace), &e))
    }

    /// Runs `argv` in the pod to its end, `input` on its stdin.
    ///
    /// # Errors
    /// Exec could not start; a command that ran and failed is `Ok` with `ok: false`.
    pub async fn run(
        &self,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        input: Option<&[u8]>,
    ) -> Result<Ran, String> {
        let mut p = self.exec(pod, container, argv, input.is_some()).await?;
        if let (Some(bytes), Some(mut w)) = (input, p.stdin()) {
            w.write_all(bytes)
                .await
                .map_err(|e| format!("writing to exec stdin: {e}"))?;
            w.shutdown()
                .await
                .map_err(|e| format!("closing exec stdin: {e}"))?;
        }
        Ok(finish(p).await)
    }
}

/// Why a container of the pod cannot run, as the kubelet says it: a start that failed, an
/// image that cannot be pulled, a container that ended.
fn container_problem(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<String> {
    const FATAL: [&str; 8] = [
        "RunContainerError",
        "CreateContainerError",
        "CreateContainerConfigError",
        "StartError",
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    ];
    (status.container_statuses.iter().flatten()).find_map(|c| {
        let state = c.state.as_ref()?;
        let (reason, message) = if let Some(t) = &state.terminated {
            (t.reason.clone(), t.message.clone())
        } else {
            let w = state.waiting.as_ref()?;
            let reason = w.reason.clone()?;
            if !FATAL.contains(&reason.as_str()) {
                return None;
            }
            (Some(reason), w.message.clone())
        };
        Some(format!(
            "container {}: {}: {}",
            c.name,
            reason.unwrap_or_else(|| "ended".into()),
            crate::text::escape_for_line(&message.unwrap_or_default(), 500)
        ))
    })
}
