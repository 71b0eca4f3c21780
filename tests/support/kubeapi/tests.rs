//! The test API server against the real kube client: REST objects, selectors, errors and
//! auth; exec streams, statuses, stdin and path mapping; refused pods and containers;
//! port-forward both ways and the error channel of a closed port; a StatefulSet's deleted pod
//! recreated by its controller.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, AttachParams, AttachedProcess, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::KubeApi;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(api: &KubeApi, dir: &Path) -> kube::Client {
    let path = dir.join("kubeconfig");
    api.write_kubeconfig(&path, "test-ctx");
    client_from(&path).await
}

async fn client_from(path: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).unwrap();
    let opts = kube::config::KubeConfigOptions::default();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Reads stdout and stderr to the end concurrently, then the status.
async fn collect(
    mut p: AttachedProcess,
) -> (
    Vec<u8>,
    Vec<u8>,
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
) {
    let status = p.take_status().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (stdout, stderr) = (p.stdout(), p.stderr());
    let read_out = async {
        if let Some(mut r) = stdout {
            r.read_to_end(&mut out).await.unwrap();
        }
    };
    let read_err = async {
        if let Some(mut r) = stderr {
            r.read_to_end(&mut err).await.unwrap();
        }
    };
    tokio::join!(read_out, read_err);
    let status = status.await.expect("a status on channel 3");
    p.join().await.unwrap();
    (out, err, status)
}

#[test]
fn rest_objects_selectors_errors_and_auth() {
    let api = KubeApi::start();
    api.add_node(
        "cp1",
        &[("node-role.kubernetes.io/control-plane", "")],
        &[("InternalIP", "127.0.0.1")],
    );
    api.add_node(
        "worker1",
        &[("kubernetes.io/os", "linux")],
        &[("InternalIP", "10.0.0.2")],
    );
    api.add_pod(
        "kube-system",
        "etcd-cp1",
        &[("component", "etcd"), ("tier", "control-plane")],
        &["etcd"],
    );
    api.add_pod(
        "kube-system",
        "kube-apiserver-cp1",
        &[("component", "kube-apiserver")],
        &["kube-apiserver"],
    );
    let secret: &[u8] = b"\x00\x01 binary \xff secret!";
    api.add_secret(
        "kube-system",
        "cpvault",
        &[("age.key", secret), ("e", b""), ("two", b"ab")],
    );
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let c = client(&api, dir.path()).await;
        let mode = std::fs::metadata(dir.path().join("kubeconfig"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let nodes: Api<Node> = Api::all(c.clone());
        let cp = nodes
            .list(&ListParams::default().labels("node-role.kubernetes.io/control-plane"))
            .await
            .unwrap();
        let names: Vec<_> = cp
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        assert_eq!(names, ["cp1"]);
        assert!(cp.metadata.resource_version.is_some());
        let addr = &cp.items[0]
            .status
            .as_ref()
            .unwrap()
            .addresses
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (addr.type_.as_str(), addr.address.as_str()),
            ("InternalIP", "127.0.0.1")
        );
        let others = nodes
            .list(&ListParams::default().labels("!node-role.kubernetes.io/control-plane"))
            .await
            .unwrap();
        assert_eq!(others.items.len(), 1);
        assert_eq!(
            nodes
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        assert_eq!(
            nodes.get("worker1").await.unwrap().metadata.name.as_deref(),
            Some("worker1")
        );

        let pods: Api<Pod> = Api::namespaced(c.clone(), "kube-system");
        let etcd = pods
            .list(&ListParams::default().labels("component=etcd,tier=control-plane"))
            .await
            .unwrap();
        assert_eq!(etcd.items.len(), 1);
        let pod = &etcd.items[0];
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(pod.spec.as_ref().unwrap().containers[0].name, "etcd");
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
        let none = pods
            .list(&ListParams::default().labels("component!=etcd,component!=kube-apiserver"))
            .await
            .unwrap();
        assert!(none.items.is_empty());
        let elsewhere: Api<Pod> = Api::namespaced(c.clone(), "default");
        assert!(elsewhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty());

        let secrets: Api<Secret> = Api::namespaced(c.clone(), "kube-system");
        let s = secrets.get("cpvault").await.unwrap();
        let data = s.data.unwrap();
        assert_eq!(data["age.key"].0, secret);
        assert!(data["e"].0.is_empty());
        assert_eq!(data["two"].0, b"ab");

        let missing = api_status(pods.get("nope").await.unwrap_err());
        assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
        assert_eq!(missing.message, "pods \"nope\" not found");
        let missing = api_status(secrets.get("nope").await.unwrap_err());
        assert_eq!(missing.message, "secrets \"nope\" not found");

        let bad = dir.path().join("bad-kubeconfig");
        let text = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
        std::fs::write(&bad, text.replace(api.token(), "wrong-token")).unwrap();
        let denied = api_status(
            Api::<Node>::all(client_from(&bad).await)
                .list(&ListParams::default())
                .await
                .unwrap_err(),
        );
        assert_eq!((denied.code, denied.reason.as_str()), (401, "Unauthorized"));
    });
    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/nodes?")
            && r.contains("labelSelector=node-role.kubernetes.io%2Fcontrol-plane")),
        "{requests:?}"
    );
    assert!(
        requests.contains(&"GET /api/v1/namespaces/kube-system/secrets/cpvault".to_string()),
        "{requests:?}"
    );
}

#[test]
fn exec_streams_statuses_stdin_and_mapping() {
    let api = KubeApi::start();
    api.add_pod(
        "kube-system",
        "etcd-cp1",
        &[("component", "etcd")],
        &["etcd"],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.crt");
    std::fs::write(&file, b"mapped file content\n").unwrap();
    api.map_exec("/etc/kubernetes/pki/etcd", dir.path().to_str().unwrap());
    runtime().block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "kube-system");
        let etcd = || AttachParams::default().container("etcd");
        let ap = etcd();

        let p = pods
            .exec(
                "etcd-cp1",
                ["sh", "-c", "echo out; echo err >&2; exit 3"],
                &ap,
            )
            .await
            .unwrap();
        let (out, err, status) = collect(p).await;
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(status.status.as_deref(), Some("Failure"));
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        let cause = &status.details.unwrap().causes.unwrap()[0];
        assert_eq!(
            (cause.reason.as_deref(), cause.message.as_deref()),
            (Some("ExitCode"), Some("3"))
        );

        // Container omitted: the pod's only container is used.
        let p = pods
            .exec("etcd-cp1", ["true"], &AttachParams::default())
            .await
            .unwrap();
        assert_eq!(collect(p).await.2.status.as_deref(), Some("Success"));

        let started = std::time::Instant::now();
        let mut p = pods
            .exec(
                "etcd-cp1",
                ["head", "-c", "50000000", "/dev/zero"],
                &etcd().stderr(false),
            )
            .await
            .unwrap();
        let status = p.take_status().unwrap();
        let mut stdout = p.stdout().unwrap();
        let (mut total, mut buf) = (0usize, vec![0u8; 64 * 1024]);
        loop {
            let n = stdout.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 0));
            total += n;
        }
        assert_eq!(total, 50_000_000);
        assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));
        eprintln!("50 MB through exec in {:?}", started.elapsed());

        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut p = pods
            .exec("etcd-cp1", ["cat"], &etcd().stdin(true))
            .await
            .unwrap();
        let mut stdin = p.stdin().unwrap();
        let to_send = input.clone();
        let writer = tokio::spawn(async move {
            stdin.write_all(&to_send).await.unwrap();
            stdin.shutdown().await.unwrap();
        });
        let (out, err, status) = collect(p).await;
        writer.await.unwrap();
        assert!(
            out == input,
            "cat echoed {} bytes of {}",
            out.len(),
            input.len()
        );
        assert!(err.is_empty());
        assert_eq!(status.status.as_deref(), Some("Success"));

        let p = pods
            .exec("etcd-cp1", ["cat", "/etc/kubernetes/pki/etcd/ca.crt"], &ap)
            .await
            .unwrap();
        assert_eq!(collect(p).await.0, b"mapped file content\n");

        let p = pods
            .exec("etcd-cp1", ["no-such-tool-cpvault"], &ap)
            .await
            .unwrap();
        let status = collect(p).await.2;
        assert_eq!(status.status.as_deref(), Some("Failure"));
        assert!(status
            .message
            .unwrap()
            .contains("executable file not found in $PATH"));

        // A client that goes away takes its command with it.
        let mut p = pods
            .exec("etcd-cp1", ["sh", "-c", "echo $$; exec sleep 60"], &ap)
            .await
            .unwrap();
        let mut line = vec![0u8; 32];
        let n = p.stdout().unwrap().read(&mut line).await.unwrap();
        let pid = String::from_utf8_lossy(&line[..n]).trim().to_string();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(p);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} outlived its client"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let execs = api.execs();
    assert_eq!(
        execs[0].command,
        ["sh", "-c", "echo out; echo err >&2; exit 3"]
    );
    assert_eq!(execs[0].exit_code, Some(3));
    assert_eq!(execs[0].container.as_deref(), Some("etcd"));
    assert_eq!(execs[0].protocol.as_deref(), Some("v5.channel.k8s.io"));
    assert_eq!(execs[1].container, None);
    let mapped = execs
        .iter()
        .find(|e| e.command[0] == "cat" && e.command.len() == 2)
        .unwrap();
    assert_eq!(
        mapped.command[1], "/etc/kubernetes/pki/etcd/ca.crt",
        "records the original argv"
    );
    assert_eq!(mapped.exit_code, Some(0));
    assert_eq!(execs.last().unwrap().exit_code, None);
}

#[test]
fn exec_rejects_unknown_pod_and_container() {
    let api = KubeApi::start();
    api.add_pod("kube-system", "etcd-cp1", &[], &["etcd"]);
    api.add_pod("kube-system", "two", &[], &["etcd", "sidecar"]);
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "kube-system");
        let ap = AttachParams::default().container("nope");
        let e = api_status(pods.exec("etcd-cp1", ["true"], &ap).await.err().unwrap());
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "container nope is not valid for pod etcd-cp1");
        let e = api_status(
            pods.exec("two", ["true"], &AttachParams::default())
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(
            e.message,
            "a container name must be specified for pod two, choose one of: [etcd sidecar]"
        );
        let e = api_status(
            pods.exec("ghost", ["true"], &AttachParams::default())
                .await
                .err()
                .unwrap(),
        );
        assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    });
    assert!(api
        .execs()
        .iter()
        .all(|e| e.exit_code.is_none() && e.protocol.is_none()));
}

#[test]
fn a_distroless_pod_runs_only_its_own_binaries() {
    let api = KubeApi::start();
    api.add_pod("kube-system", "etcd-cp1", &[], &["etcd"]);
    // The image's own binary, mapped to one this machine surely has.
    api.map_exec("etcdctl", "echo");
    api.add_pod("kube-system", "other", &[], &["etcd"]);
    api.make_distroless("kube-system", "etcd-cp1");
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "kube-system");
        let ap = AttachParams::default();
        let p = pods
            .exec("etcd-cp1", ["sh", "-c", "true"], &ap)
            .await
            .unwrap();
        let status = collect(p).await.2;
        assert_eq!(status.status.as_deref(), Some("Failure"));
        let message = status.message.unwrap();
        assert!(
            message.contains("exec: \"sh\": executable file not found in $PATH"),
            "{message}"
        );
        // Its own binaries still run; other pods keep their shell.
        let p = pods
            .exec("etcd-cp1", ["etcdctl", "version"], &ap)
            .await
            .unwrap();
        let (out, _, status) = collect(p).await;
        assert_eq!(status.status.as_deref(), Some("Success"));
        assert_eq!(out, b"version\n");
        let p = pods.exec("other", ["sh", "-c", "true"], &ap).await.unwrap();
        assert_eq!(collect(p).await.2.status.as_deref(), Some("Success"));
    });
}

#[test]
fn port_forward_carries_bytes_both_ways_and_reports_a_closed_port() {
    let api = KubeApi::start();
    api.add_pod("kube-system", "etcd-cp1", &[], &["etcd"]);
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        // The pod's port: an echo server on loopback that closes after one exchange.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "kube-system");
        let mut pf = pods.portforward("etcd-cp1", &[port]).await.unwrap();
        let mut stream = pf.take_stream(port).unwrap();
        let error = pf.take_error(port).unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
        // The forward ends with our side of the stream, and said nothing on the way.
        drop(stream);
        let said = tokio::time::timeout(Duration::from_secs(5), error).await;
        assert_eq!(said, Ok(None), "an error on a working port");
        drop(pf);

        // A port nothing listens on: the kubelet's error on the port's error channel.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut pf = pods.portforward("etcd-cp1", &[closed]).await.unwrap();
        let mut stream = pf.take_stream(closed).unwrap();
        let error = pf.take_error(closed).unwrap();
        let said = tokio::time::timeout(Duration::from_secs(5), error)
            .await
            .unwrap()
            .expect("an error message");
        assert!(
            said.contains(&format!("error forwarding port {closed}"))
                && said.contains("connection refused"),
            "{said}"
        );
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());

        let Err(e) = pods.portforward("nope", &[port]).await else {
            panic!("a port-forward to a pod that does not exist");
        };
        let e = api_status(e);
        assert_eq!(e.code, 404);
    });
    let forwards = api.forwards();
    assert_eq!(forwards.len(), 3);
    assert_eq!(forwards[0].protocol.as_deref(), Some("v4.channel.k8s.io"));
    assert_eq!(forwards[2].protocol, None);
}

#[test]
fn a_deleted_statefulset_pod_comes_back_as_a_new_one_unless_its_controller_is_held() {
    let api = KubeApi::start();
    api.add_statefulset(
        "user1",
        serde_json::json!({"metadata": {"name": "kube-apiserver"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "kube-apiserver", "image": "k:1"}]}}}}),
    );
    let uid = |api: &KubeApi| {
        api.pod("user1", "kube-apiserver-0")
            .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
    };
    let first = uid(&api).expect("the controller made the pod");
    let pod = api.pod("user1", "kube-apiserver-0").unwrap();
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "StatefulSet");
    assert_eq!(owner["name"], "kube-apiserver");
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "user1");
        pods.delete("kube-apiserver-0", &Default::default())
            .await
            .unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let back = loop {
            match pods.get_opt("kube-apiserver-0").await.unwrap() {
                Some(p) if p.metadata.uid.as_deref() != Some(first.as_str()) => break p,
                _ => assert!(std::time::Instant::now() < end, "not recreated"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let status = back.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"));

        // A held controller leaves the deleted pod gone.
        api.hold_controller("user1", "kube-apiserver");
        pods.delete("kube-apiserver-0", &Default::default())
            .await
            .unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while pods.get_opt("kube-apiserver-0").await.unwrap().is_some() {
            assert!(std::time::Instant::now() < end, "never deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(pods.get_opt("kube-apiserver-0").await.unwrap().is_none());
    });
}
