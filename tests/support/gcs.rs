//! Test support only — never use this outside tests. Two GCS servers for the store tests.
//! [`GcsServer`] is an in-process server that speaks the Cloud Storage XML API as far as
//! object_store's GCS client uses it — simple and conditional PUT (`x-goog-if-generation-
//! match`), XML multipart upload (initiate, parts, complete, abort), GET with `Range`, HEAD,
//! DELETE, and `list-type=2` listing with continuation tokens — with GCS's status codes,
//! headers and XML error bodies, and it checks every request's credential: its bearer token,
//! or the self-signed JWT of the service account whose key it handed out, signature included.
//! Objects stay in memory as the parts they arrived in, so a large object is never copied
//! whole. Not implemented, as nothing of ours sends them: the JSON API, copy, ACLs, custom
//! metadata, `x-goog-hash` checksums (ETags are content hashes, not MD5s). [`FakeGcs`] runs
//! the real fake-gcs-server, which serves reads, listings and deletes of that API but not its
//! write path; a test seeds it through its JSON API instead.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use bucket::{abort, complete, delete, get, initiate, list, put_object, put_part};
use wire::{authenticate, error, method_not_allowed, parse_query, percent_decode};

// The bucket's operations: conditional and multipart writes, ranged reads, paginated lists.
mod bucket;
// fake-gcs-server, the real emulator, run from its PyPI package.
mod fake;
// Credentials, URL and XML encoding, GCS error responses.
mod wire;

pub use fake::FakeGcs;

type Body = BoxBody<Bytes, Infallible>;
type Shared = Arc<Mutex<State>>;

const GENERATION_MATCH: &str = "x-goog-if-generation-match";

/// How a request proved who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The server's bearer token.
    Token,
    /// A JWT signed by the service account key from [`GcsServer::service_account_vars`].
    ServiceAccount,
    /// No `Authorization`, or an empty bearer token.
    Missing,
    /// Anything else.
    Invalid,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent, still percent-encoded.
    pub target: String,
    /// The `x-goog-if-generation-match` header, if sent.
    pub generation_match: Option<String>,
    pub credential: Credential,
    pub status: u16,
}

struct Object {
    chunks: Vec<Bytes>,
    size: u64,
    generation: u64,
    etag: String,
    updated: DateTime<Utc>,
    content_type: String,
}

struct Upload {
    key: String,
    content_type: String,
    /// Part number → (data, ETag).
    parts: BTreeMap<u32, (Bytes, String)>,
}

struct Account {
    key: rcgen::KeyPair,
    key_id: String,
    email: String,
}

#[derive(Default)]
struct State {
    bucket: String,
    token: String,
    accounts: Vec<Account>,
    objects: BTreeMap<String, Object>,
    uploads: HashMap<String, Upload>,
    seen: Vec<Seen>,
    generation: u64,
    ignore_preconditions: bool,
}

/// A running GCS XML-API test server with one bucket; stops on drop.
pub struct GcsServer {
    url: String,
    bucket: String,
    token: String,
    state: Shared,
    // Last: dropping it stops the server.
    _server: super::http::HttpServer,
}

impl GcsServer {
    /// Binds a free loopback port and serves on a thread with its own runtime.
    pub fn start() -> GcsServer {
        let token = format!("ya29.test-{:032x}", rand::random::<u128>());
        let bucket = "cpvault-gcs-test".to_string();
        let state: Shared = Arc::new(Mutex::new(State {
            bucket: bucket.clone(),
            token: token.clone(),
            ..State::default()
        }));
        let shared = state.clone();
        let server =
            super::http::HttpServer::start("gcs-server", move |req| handle(shared.clone(), req));
        GcsServer {
            url: server.url(),
            bucket,
            token,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The settings that point a store at this server with its bearer token.
    pub fn vars(&self) -> Vec<(String, String)> {
        self.base_vars(&[("GOOGLE_BEARER_TOKEN", &self.token)])
    }

    /// Writes a service account key file (mode 0600) with a fresh RSA key this server trusts
    /// from now on, and returns the settings that name it through `variable`
    /// (`GOOGLE_SERVICE_ACCOUNT` or `GOOGLE_APPLICATION_CREDENTIALS`). Nothing but this server
    /// ever sees a request: object_store signs its own JWT with the key.
    pub fn service_account_vars(&self, file: &Path, variable: &str) -> Vec<(String, String)> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let key_id = format!("{:040x}", rand::random::<u128>());
        let email = "cpvault-backup@cpvault-test.iam.gserviceaccount.com".to_string();
        let json = json!({
            "type": "service_account",
            "project_id": "cpvault-test",
            "private_key_id": key_id,
            "private_key": key.serialize_pem(),
            "client_email": email,
            "client_id": "100000000000000000001",
            // Never used by object_store; loopback all the same.
            "token_uri": format!("{}/token", self.url),
        });
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)
            .unwrap();
        std::io::Write::write_all(&mut f, json.to_string().as_bytes()).unwrap();
        self.lock().accounts.push(Account { key, key_id, email });
        self.base_vars(&[(variable, file.to_str().unwrap())])
    }

    fn base_vars(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        [
            ("GOOGLE_BASE_URL", self.url.as_str()),
            ("GOOGLE_ALLOW_HTTP", "true"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// From now on, behave like a server that ignores `x-goog-if-generation-match` (as
    /// fake-gcs-server does): every write overwrites.
    pub fn ignore_preconditions(&self) {
        self.lock().ignore_preconditions = true;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Multipart uploads initiated and neither completed nor aborted.
    pub fn pending_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    /// Every object name in the bucket, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// The content of one object.
    pub fn object(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().objects.get(name).map(|o| o.chunks.concat())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

// A panicking test thread must not turn every later assertion into a poison error.
fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The parsed parts of a request that the handlers need, its body aside.
struct Call {
    method: Method,
    query: Vec<(String, String)>,
    headers: HeaderMap,
}

impl Call {
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn handle(state: Shared, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let credential = authenticate(&lock(&state), req.headers().get(header::AUTHORIZATION));
    let generation_match = req
        .headers()
        .get(GENERATION_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().clone();
    let response = match credential {
        Credential::Missing | Credential::Invalid => error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequired",
            "Authentication required.",
        ),
        Credential::Token | Credential::ServiceAccount => route(&state, req).await,
    };
    lock(&state).seen.push(Seen {
        method: method.to_string(),
        target,
        generation_match,
        credential,
        status: response.status().as_u16(),
    });
    Ok(response)
}

async fn route(state: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) if !k.is_empty() => (b, Some(k)),
        Some((b, _)) => (b, None),
        None => (path, None),
    };
    let (Some(bucket), Some(key)) = (
        percent_decode(bucket, false),
        key.map_or(Some(None), |k| percent_decode(k, false).map(Some)),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "Couldn't parse the specified URI.",
        );
    };
    if bucket != lock(state).bucket {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        );
    }
    let call = Call {
        method: parts.method,
        query: parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
    };
    let Some(key) = key else {
        return match call.method {
            Method::GET => list(state, &call),
            _ => method_not_allowed(),
        };
    };
    match call.method {
        Method::GET | Method::HEAD => get(state, &call, &key),
        Method::PUT if call.header("x-goog-copy-source").is_some() => error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This test server does not implement copy.",
        ),
        Method::PUT => match read_body(body).await {
            Ok(data) if call.query("uploadId").is_some() => put_part(state, &call, &key, data),
            Ok(data) => put_object(state, &call, &key, data),
            Err(r) => r,
        },
        Method::POST if call.query("uploads").is_some() => initiate(state, &call, &key),
        Method::POST if call.query("uploadId").is_some() => match read_body(body).await {
            Ok(data) => complete(state, &call, &key, &data),
            Err(r) => r,
        },
        Method::DELETE if call.query("uploadId").is_some() => abort(state, &call, &key),
        Method::DELETE => delete(state, &call, &key),
        _ => method_not_allowed(),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            "The request body is incomplete.",
        )),
    }
}
